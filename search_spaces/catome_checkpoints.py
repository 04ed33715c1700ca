"""CA-ToMe's checkpoint genes: where the merge pairs are recomputed, guided by the study's Jaccard profile.

The rest of token merging (ToMe's ratio, CA-ToMe's threshold, the levels) is searched from the methods'
own knob declarations (search_spaces.derived); this module adds what no range describes.

- With a Jaccard profile (the model fact `jaccard_profile`, measured by `CaToMeConfig.prepare`): two genes,
  `catome.checkpoint_delta` (δ: a checkpoint wherever the Jaccard distance accumulated since the last one
  exceeds δ; log scale between half the smallest and the sum of the profile's distances) and
  `catome.checkpoint_max` (at most this many; δ is raised until the set fits). Decoded by
  `tuner.methods.catome_profile.checkpoints_from_profile` on the profile's step grid, then scaled to the trial's step
  count. Without a profile, CA-ToMe recomputes every step (`checkpoints: null`).
- DEAP mutates δ in proportion to the profile: it draws a step s with probability ∝ JD(s) and sets δ just
  below JD(s), so s and every step spiking at least as high become checkpoints. Steps where the pair
  sets change most are therefore the ones mutations add most often.

`dit_catome` (the same on a DiT's self-attentions) has the same genes, named `dit_catome.*`, over its own
profile (`DiTCaToMeConfig.prepare`).

Table keys (beside the knobs): `[space.catome]` / `[space.dit_catome]` checkpoints ("profile" | "every_step"),
max_checkpoints.
"""

from __future__ import annotations

from tuner.search_spaces.derived import EXTENSIONS, Extension
from tuner.search_spaces.params import Condition, Family, Param, TableReader, number_param
from tuner.errors import TunerError

JUST_BELOW = 1.0 - 1e-6  # δ slightly under a spike's height: that spike alone triggers a checkpoint


def profile_distances(profile) -> list[float]:
    """Mean Jaccard distance over blocks per step of the profile (index = step, step 0 = 0)."""
    from tuner.methods.catome_profile import step_distances

    dist = step_distances(profile)
    out = [0.0] * (int(dist.index.max()) + 1)
    for step, d in dist.items():
        out[int(step)] = float(d)
    return out


class CheckpointGenes(Extension):
    """The genes of one CA-ToMe method: `catome` (U-Net) or `dit_catome` (DiT), each with its own profile."""

    def __init__(self, method: str = "catome"):
        self.method = method
        self.profile = None
        self.profile_steps = 0

    def declare(self, family: Family, r: TableReader, context, on: Condition) -> None:
        profile = context.fact(self.method, "jaccard_profile")
        has_profile = profile is not None and len(profile) > 0
        if has_profile and "checkpoints" not in r.rest and not any(d > 0 for d in profile_distances(profile)):
            has_profile = False  # nothing ever changes between steps: no spike to place a checkpoint at
        mode = r.choices("checkpoints", ["profile" if has_profile else "every_step"], ("profile", "every_step"))
        if len(mode) != 1:
            raise TunerError(f"space.{self.method}.checkpoints must be one of 'profile', 'every_step'")
        if mode[0] == "profile":
            if not has_profile:
                raise TunerError(f"space.{self.method}.checkpoints = 'profile' needs the study's Jaccard profile "
                                 "(run the study's profile step first)")
            self._checkpoint_genes(family, r, context, on)
        else:
            r.rest.pop("max_checkpoints", None)

    def _checkpoint_genes(self, family: Family, r: TableReader, context, on: Condition) -> None:
        self.profile = context.fact(self.method, "jaccard_profile")
        dist = profile_distances(self.profile)
        self.profile_steps = len(dist)
        positive = [d for d in dist[1:] if d > 0]
        if not positive:
            raise TunerError(f"space.{self.method}: the Jaccard profile has no positive distance; use checkpoints = 'every_step'")
        lo, hi = 0.5 * min(positive), sum(positive)
        spikes = [(d * JUST_BELOW, d) for d in dist[1:] if d > 0]
        weights = (tuple(max(lo, v) for v, _ in spikes), tuple(w for _, w in spikes))
        family.add(Param(f"{self.method}.checkpoint_delta", "float", low=lo, high=hi, log=True, condition=on,
                       mutation_weights=weights, help="accumulated Jaccard distance between checkpoints"))
        bounds = r.number_range("max_checkpoints", [2, min(16, self.profile_steps)], 1, self.profile_steps,
                                integer=True)
        family.add(number_param(f"{self.method}.checkpoint_max", bounds, integer=True, condition=on,
                              help="most checkpoints allowed"))

    def decode(self, family: Family, values: dict, num_steps: int) -> dict:
        if self.profile is None:
            return {"checkpoints": None}
        from tuner.methods.catome_profile import checkpoints_from_profile, scale_checkpoints

        steps = checkpoints_from_profile(self.profile, float(family.get(values, f"{self.method}.checkpoint_delta")),
                                         int(family.get(values, f"{self.method}.checkpoint_max")))
        return {"checkpoints": scale_checkpoints(steps, self.profile_steps, num_steps)}


EXTENSIONS["catome"] = CheckpointGenes
EXTENSIONS["dit_catome"] = lambda: CheckpointGenes("dit_catome")  # the same genes over the DiT's profile

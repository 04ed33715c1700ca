"""Token merging: ToMe (fixed ratio r) or CA-ToMe (threshold t + cached pairs), or neither.

Parameters
- `token_merging` ∈ {none, tome, catome}: which method (none only when a table says `optional`, the
  default). The two are alternatives: both patch the same attention blocks.
- `tome.ratio` (r), `tome.max_downsample` (levels: 1 = D1/U1 only, 2 = also the next level).
- `catome.threshold` (t), `catome.max_downsample`.
- Checkpoint sets, when the study measured a Jaccard profile (`SpaceContext.jaccard_profile`): two genes,
  `catome.checkpoint_delta` (δ: a checkpoint wherever the Jaccard distance accumulated since the last one
  exceeds δ; log scale between half the smallest and the sum of the profile's distances) and
  `catome.checkpoint_max` (at most this many; δ is raised until the set fits). Decoded by
  `tuner.jaccard.checkpoints_from_profile` on the profile's step grid, then scaled to the trial's step
  count. Without a profile, CA-ToMe recomputes every step (`checkpoints: null`).
- DEAP mutates δ in proportion to the profile: it draws a step s with probability ∝ JD(s) and sets δ just
  below JD(s), so s and every step spiking at least as high become checkpoints. Steps where the pair
  sets change most are therefore the ones mutations add most often.

`max_downsample = "first"` (the default space's): the model's first level with self-attention
(`SpaceContext.first_attention_level`: D1/U1 on SD-1.x/2.x and the proxy, D2/U2 on SDXL, whose top level
has none); the family default is that level (and the next one for ToMe).

Table keys: `[space.tome]` enabled, optional, ratio, max_downsample; `[space.catome]` enabled, optional,
threshold, max_downsample, checkpoints ("profile" | "every_step"), max_checkpoints.
"""

from __future__ import annotations

from search_spaces.params import Condition, Family, Param, TableReader, number_param
from tuner.errors import TunerError

CHOICE = "token_merging"
LEVELS = (1, 2, 4, 8)
JUST_BELOW = 1.0 - 1e-6  # δ slightly under a spike's height: that spike alone triggers a checkpoint


def profile_distances(profile) -> list[float]:
    """Mean Jaccard distance over blocks per step of the profile (index = step, step 0 = 0)."""
    from tuner.jaccard import step_distances

    dist = step_distances(profile)
    out = [0.0] * (int(dist.index.max()) + 1)
    for step, d in dist.items():
        out[int(step)] = float(d)
    return out


class TokenMergingFamily(Family):
    def __init__(self, tables: dict, context):
        super().__init__()
        self.profile = None
        self.profile_steps = 0
        self.first_level = int(getattr(context, "first_attention_level", 1))
        methods, optional = [], False
        readers = {}
        for key in ("tome", "catome"):
            if key in tables:
                r = TableReader(key, tables[key])
                if r.flag("enabled", True):
                    methods.append(key)
                    optional |= r.flag("optional", True)
                    readers[key] = r
                else:
                    r.rest.clear()  # a disabled table's other keys are not checked
        choices = (["none"] if optional else []) + methods
        self.add(Param(CHOICE, "categorical", choices=tuple(choices), help="token merging method"))
        if "tome" in readers:
            self._tome(readers["tome"])
        if "catome" in readers:
            self._catome(readers["catome"], context)

    def _first_level_alias(self, r: TableReader) -> None:
        """max_downsample = "first": only the model's first level with self-attention."""
        if r.rest.get("max_downsample") == "first":
            r.rest["max_downsample"] = [self.first_level]

    def _levels(self, n: int) -> list[int]:
        """Default max_downsample choices: the first n levels from the first one with self-attention."""
        first = LEVELS.index(self.first_level) if self.first_level in LEVELS else 0
        return list(LEVELS[first:first + n])

    def _tome(self, r: TableReader) -> None:
        on = Condition(CHOICE, ("tome",))
        self.add(number_param("tome.ratio", r.number_range("ratio", [0.1, 0.7], 0.0, 0.95, integer=False),
                              integer=False, condition=on, help="share of tokens merged away"))
        self._first_level_alias(r)
        self.add(Param("tome.max_downsample", "categorical", condition=on,
                       choices=r.choices("max_downsample", self._levels(2), LEVELS), help="deepest level merged"))
        r.finish()

    def _catome(self, r: TableReader, context) -> None:
        on = Condition(CHOICE, ("catome",))
        self.add(number_param("catome.threshold",
                              r.number_range("threshold", [0.5, 1.0], 0.0, 1.5, integer=False),
                              integer=False, condition=on, help="cosine similarity needed to merge"))
        self._first_level_alias(r)
        self.add(Param("catome.max_downsample", "categorical", condition=on,
                       choices=r.choices("max_downsample", self._levels(1), LEVELS), help="deepest level merged"))
        has_profile = context.jaccard_profile is not None and len(context.jaccard_profile) > 0
        if has_profile and "checkpoints" not in r.rest and not any(d > 0 for d in profile_distances(context.jaccard_profile)):
            has_profile = False  # nothing ever changes between steps: no spike to place a checkpoint at
        mode = r.choices("checkpoints", ["profile" if has_profile else "every_step"], ("profile", "every_step"))
        if len(mode) != 1:
            raise TunerError("space.catome.checkpoints must be one of 'profile', 'every_step'")
        if mode[0] == "profile":
            if not has_profile:
                raise TunerError("space.catome.checkpoints = 'profile' needs the study's Jaccard profile "
                                 "(run the study's profile step first)")
            self._checkpoint_genes(r, context, on)
        else:
            r.rest.pop("max_checkpoints", None)
        r.finish()

    def _checkpoint_genes(self, r: TableReader, context, on: Condition) -> None:
        self.profile = context.jaccard_profile
        dist = profile_distances(self.profile)
        self.profile_steps = len(dist)
        positive = [d for d in dist[1:] if d > 0]
        if not positive:
            raise TunerError("space.catome: the Jaccard profile has no positive distance; use checkpoints = 'every_step'")
        lo, hi = 0.5 * min(positive), sum(positive)
        spikes = [(d * JUST_BELOW, d) for d in dist[1:] if d > 0]
        weights = (tuple(max(lo, v) for v, _ in spikes), tuple(w for _, w in spikes))
        self.add(Param("catome.checkpoint_delta", "float", low=lo, high=hi, log=True, condition=on,
                       mutation_weights=weights, help="accumulated Jaccard distance between checkpoints"))
        bounds = r.number_range("max_checkpoints", [2, min(16, self.profile_steps)], 1, self.profile_steps,
                                integer=True)
        self.add(number_param("catome.checkpoint_max", bounds, integer=True, condition=on,
                              help="most checkpoints allowed"))

    def checkpoints(self, values: dict, num_steps: int) -> list[int] | None:
        if self.profile is None:
            return None
        from tuner.jaccard import checkpoints_from_profile, scale_checkpoints

        steps = checkpoints_from_profile(self.profile, float(self.get(values, "catome.checkpoint_delta")),
                                         int(self.get(values, "catome.checkpoint_max")))
        return scale_checkpoints(steps, self.profile_steps, num_steps)

    def decode(self, values: dict, num_steps: int) -> dict[str, dict]:
        method = self.get(values, CHOICE)
        if method == "tome":
            return {"tome": {"ratio": float(self.get(values, "tome.ratio")),
                             "max_downsample": int(self.get(values, "tome.max_downsample"))}}
        if method == "catome":
            return {"catome": {"threshold": float(self.get(values, "catome.threshold")),
                               "max_downsample": int(self.get(values, "catome.max_downsample")),
                               "checkpoints": self.checkpoints(values, num_steps)}}
        return {}


KEYS = ("tome", "catome")


def build(tables: dict, context) -> TokenMergingFamily:
    return TokenMergingFamily(tables, context)

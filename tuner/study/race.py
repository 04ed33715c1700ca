"""Images are the budget: a trial is scored on a few images first and gets more, on the same seeds,
only while more could change what the study does with it.

Rungs (`[evaluator] race_rungs`, default 8 -> 32 -> 128): image i of every rung has seed
`seed * 1_000_003 + i` (tuner.scoring.ImageSet), so a larger rung extends a smaller one and the images
already made are kept (common random numbers; the baseline's are cached per process, `GrowingBaseline`).
After each rung the paired FID-change interval [lo, hi] (tuner/uncertainty.py, on the study's one scale,
fid_scale.py) decides, against the study's cap X:
- lo > X: infeasible. On the first rung the trial is pruned (the old cheap reject), later it completes
  with its constraint set (the sampler learns from it);
- hi <= X (from `MIN_DECIDE_IMAGES` on): feasible, decided;
- the interval straddles X: promoted to the next rung, unless a decided-feasible trial of the study
  dominates it beyond the noise (noise_front.py): then it could never be on the front; or unless, from
  `MIN_DECIDE_IMAGES` on, its point estimate is above X: more images would most likely only prove it
  infeasible, and an unproven trial is not feasible anyway (its constraint is set from hi). Below
  `MIN_DECIDE_IMAGES` the point is too noisy for that (measured: 8 images gave +52 % for a config at
  +27 % on 128);
- the last rung: undecided (its constraint is set from hi, so it is not feasible; certification may
  still prove it on held-out seeds, certify.py).
Held-out certification (certify.py) runs the same race on other seeds with larger rungs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_RUNGS = (8, 32, 128)
MIN_DECIDE_IMAGES = 32  # an interval from halves of 4 images is too rough to call a trial feasible


@dataclass(frozen=True)
class SeedRange:
    """Images start..stop of a image set (what `ScoringContext.generate` reads: conditions, seeds, steps)."""

    full: object  # tuner.scoring.ImageSet with n_images >= stop
    start: int
    stop: int

    @property
    def conditions(self) -> list:
        return self.full.conditions[self.start:self.stop]

    @property
    def seeds(self) -> list[int]:
        return self.full.seeds[self.start:self.stop]

    @property
    def steps(self) -> int:
        return self.full.steps

    @property
    def n_images(self) -> int:
        return self.stop - self.start


def sized(ps, n: int):
    """The image set `ps` with n images (same seed sequence, so it extends or truncates `ps`)."""
    from tuner.scoring import ImageSet

    return ImageSet(n, ps.steps, ps.seed, ps.prompts)


def grow_baseline(ectx, n: int) -> torch.Tensor:
    """The baseline's first n images on the context's seeds, generated once per process and extended in
    place (FID references built from the original set are fixed first)."""
    ectx.reference_features()  # a user model's reference: the original baseline set, never the grown one
    have = ectx.baseline_images
    if len(have) < n:
        more = ectx.generate(SeedRange(sized(ectx.image_set, n), len(have), n))
        ectx.__dict__["baseline_images"] = torch.cat([have, more.to(have.dtype)])
    return ectx.baseline_images[:n]


def grow_candidate(ectx, config, images: torch.Tensor | None, n: int, cost: dict | None):
    """The candidate's first n images: the ones it has, plus the missing seeds generated with `config`
    applied. Returns (images, per-image cost averaged over every image made, apply info)."""
    from tuner.apply_config import apply

    have = 0 if images is None else len(images)
    grow_baseline(ectx, n)
    handle = apply(ectx.target, config)
    try:
        info = dict(handle.info)
        more, new_cost = ectx.generate_and_count(SeedRange(sized(ectx.image_set, n), have, n), info.get("layer_bits"))
    except torch.cuda.OutOfMemoryError:
        from tuner.errors import TrialFailed

        raise TrialFailed("out of memory") from None
    finally:
        handle.remove()
    if images is None:
        return more, new_cost, info
    merged = {k: (cost[k] * have + v * (n - have)) / n if k in ("macs", "bitops") else max(cost.get(k, v), v)
              for k, v in new_cost.items()}
    return torch.cat([images, more.to(images.dtype)]), merged, info


def score(ectx, images: torch.Tensor, fid_scale) -> dict:
    """Quality of the candidate's first len(images) images, paired with the baseline's on the same seeds,
    and its FID change (point and interval) on the study's scale."""
    from tuner.uncertainty import MIN_IMAGES

    n = len(images)
    out = {**ectx.quality(images, sized(ectx.image_set, n)), "n_images": n}
    if n >= MIN_IMAGES:
        out.update(ectx.fid_interval(images))
    else:  # no interval below MIN_IMAGES: the point, paired with the baseline's FID on the same images
        base = float(ectx.quality(ectx.baseline_images[:n], sized(ectx.image_set, n))["fid"])
        out.update({f"fid_delta{s}": float(out["fid"]) - base for s in ("", "_lo", "_hi")})
    for s in ("", "_lo", "_hi"):
        out[f"fid_increase_pct{s}"] = fid_scale.change_pct(out[f"fid_delta{s}"])
    return out


def decide(lo: float, hi: float, cap: float | None, n: int, last: bool, point: float | None = None) -> str:
    """What a rung's interval says: 'infeasible', 'feasible', 'straddles' (more images could prove it
    feasible: promote), 'above cap' (straddles, but from MIN_DECIDE_IMAGES on its point estimate is above
    the cap, so more images would most likely only prove it infeasible) or 'undecided' (straddles at the
    last rung). Without a cap nothing is decided by FID."""
    if cap is None:
        return "undecided" if last else "straddles"
    if lo > cap:
        return "infeasible"
    if hi <= cap and n >= MIN_DECIDE_IMAGES:
        return "feasible"
    if point is not None and point > cap and n >= MIN_DECIDE_IMAGES:
        return "above cap"
    return "undecided" if last else "straddles"


def reason(decision: str, row: dict, cap: float | None, dominated_by: int | None = None) -> str:
    """One line: why the race stopped this trial where it did."""
    n, pt, lo, hi = row["n_images"], row["fid_increase_pct"], row["fid_increase_pct_lo"], row["fid_increase_pct_hi"]
    at = f"at {n} images: FID change {pt:+.1f} % [{lo:+.1f}, {hi:+.1f}]"
    if decision == "infeasible":
        return f"infeasible {at}, lower bound above the cap +{cap:g} %"
    if decision == "feasible":
        return f"feasible {at}, upper bound within the cap +{cap:g} %"
    if decision == "above cap":
        return f"stopped {at}: point above the cap +{cap:g} %, more images would most likely prove it infeasible"
    if decision == "dominated":
        return f"dominated {at} by decided trial {dominated_by} beyond the noise: cannot reach the front"
    what = "no cap" if cap is None else f"straddles the cap +{cap:g} %"
    return f"undecided {at} ({what}) at the last rung"

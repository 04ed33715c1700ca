"""Keyframe schedules of the feature-caching methods (DeepCache, FRDiff) and FRDiff's score-mixing weight.

Pure functions of step indices; no hooking here. A keyframe is a step on which the U-Net runs in full and
the cached features are refreshed; every other step reuses them.

Non-uniform schedule (DeepCache, §4 "non-uniform 1:N"): keyframes are denser around a `center` step.
We place ⌈T/N⌉ points evenly in a warped axis u ∈ [−c^(1/p), (T−c)^(1/p)] and map each back with the
signed power c + sign(u)·|u|^p, so the spacing grows like |step − c|^(p−1) away from the center. Like the
public code, when two points round to the same step the power is lowered by 0.02 until all are distinct
(at p = 1 they are the uniform ⌊k·T/n⌋ and always distinct). The public code writes `(-center)**(1/pow)`,
which in Python is a complex number whose real part it keeps; its schedule is therefore not centred on
`center` (for T=50, N=5, c=15, p=1.4 it gives 0,5,9,13,17,21,26,31,37,43 — only mildly denser early).
We implement the stated intent (for the same setting: 0,5,10,13,15,19,24,29,35,42).
"""

from __future__ import annotations

import math
from functools import lru_cache

POWER_STEP = 0.02  # how much the power drops per retry when keyframes collide (as in DeepCache's code)


def is_uniform_keyframe(step: int, interval: int) -> bool:
    """Same schedule without knowing the number of steps (e.g. a diffusers pipeline that did not say)."""
    return step % interval == 0


@lru_cache(maxsize=256)
def nonuniform_keyframes(num_steps: int, interval: int, center: int, power: float) -> tuple[int, ...]:
    """⌈T/N⌉ keyframes, step 0 always among them, denser around `center` (clipped into the call)."""
    n = math.ceil(num_steps / interval)
    if n >= num_steps:
        return tuple(range(num_steps))
    c = min(max(center, 0), num_steps - 1)
    p = max(float(power), 1.0)
    while True:
        keys = _warped_points(num_steps, n, c, p)
        if len(keys) == n or p == 1.0:
            return keys
        p = max(1.0, p - POWER_STEP)


def _warped_points(num_steps: int, n: int, c: int, p: float) -> tuple[int, ...]:
    lo, hi = -(c ** (1 / p)), (num_steps - c) ** (1 / p)
    points = []
    for k in range(n):  # the (n+1)-th point would be step T itself, past the end
        u = lo + (hi - lo) * k / n
        v = c + math.copysign(abs(u) ** p, u)
        points.append(min(num_steps - 1, max(0, math.floor(v + 1e-9))))  # 1e-9: k·T/n exact at p = 1
    return tuple(sorted(set(points)))


def frdiff_lambda(step: int, num_steps: int, bias: float, slope: float = 30.0) -> float:
    """FRDiff's score-mixing weight λ = clip((slope·(i/T − b) + 2)/4, 0, 1): the weight of the current
    (feature-reusing) output; 1 − λ goes to the last keyframe's output. λ = 0 before i/T = b − 2/slope
    (the U-Net is skipped there), λ = 1 after i/T = b + 2/slope."""
    lam = (slope * (step / num_steps - bias) + 2.0) / 4.0
    return min(1.0, max(0.0, lam))

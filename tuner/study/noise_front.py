"""Front membership that respects measurement noise.

Rule (documented in README, "Reading the front"): noise-tolerant dominance over intervals.
Trial a dominates trial b when
- in every objective a is no worse than b beyond the noise: a_k <= b_k + e_k, and
- in at least one objective a is better than b beyond the noise: a_k < b_k - e_k,
with e_k the larger of the two trials' half-widths in objective k: latency from the speedup's interval
over timing rounds, FID from the paired FID-change interval (the study's scale, fid_scale.py); BitOPs,
memory and CLIP have none (0). So a timing difference inside the speed interval, or an FID difference
inside the FID interval, never makes a point dominated; and with e = max of both, two trials never
dominate each other. Trials without stored intervals compare on their points (ordinary dominance).

Same executed work: trials that run the same methods and cost the same MACs per image do the same
arithmetic; their speed differs only by timing jitter. Only one of them may sit on the front: the one
with the best FID (then the lowest latency, then the lowest trial number).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import optuna

from tuner.study.fid_scale import FidScale


def half_widths(t: optuna.trial.FrozenTrial, objectives: Sequence[str], baseline: dict | None) -> list[float]:
    """The trial's noise per objective, in the objective's units (0 where nothing was measured)."""
    a = t.user_attrs
    out = []
    for name, value in zip(objectives, t.values):
        e = 0.0
        lo, hi, s = a.get("speedup_lo"), a.get("speedup_hi"), a.get("speedup")
        if name == "latency" and all(isinstance(x, (int, float)) and x > 0 for x in (lo, hi, s)):
            e = max(value * (s / lo - 1.0), value * (1.0 - s / hi))  # latency = baseline / speedup
        pt, plo, phi = a.get("fid_increase_pct"), a.get("fid_increase_pct_lo"), a.get("fid_increase_pct_hi")
        if name == "fid" and baseline and all(isinstance(x, (int, float)) for x in (pt, plo, phi)):
            e = FidScale.of(baseline).scale * max(phi - pt, pt - plo) / 100.0
        out.append(max(0.0, float(e)))
    return out


def dominates(a: np.ndarray, ea: np.ndarray, b: np.ndarray, eb: np.ndarray) -> bool:
    """a dominates b beyond the noise (all objectives minimized)."""
    e = np.maximum(ea, eb)
    return bool(np.all(a <= b + e) and np.any(a < b - e))


def work_key(t: optuna.trial.FrozenTrial):
    """Same methods and the same MACs per image (4 significant digits): the same executed work."""
    macs = t.user_attrs.get("macs")
    if not isinstance(macs, (int, float)):
        return ("trial", t.number)
    return (tuple(sorted((t.user_attrs.get("config") or {}).keys())), float(f"{macs:.4g}"))


def one_per_work(trials: list, objectives: Sequence[str]) -> list:
    fid_at = objectives.index("fid") if "fid" in objectives else None
    best: dict = {}
    for t in trials:
        rank = ((t.values[fid_at] if fid_at is not None else 0.0), t.values[0], t.number)
        k = work_key(t)
        if k not in best or rank < best[k][0]:
            best[k] = (rank, t)
    keep = {id(t) for _, t in best.values()}
    return [t for t in trials if id(t) in keep]


def noise_front(trials: list, objectives: Sequence[str], maximized: Sequence[bool], baseline: dict | None,
                candidate=None) -> list:
    """The trials no other trial dominates beyond the noise, one per executed work.
    With `candidate` (values, half-widths): the trials that dominate it instead (the race's check)."""
    sign = np.where(np.asarray(maximized, dtype=bool), -1.0, 1.0)
    pts = {t.number: (sign * np.asarray(t.values, dtype=float), np.asarray(half_widths(t, objectives, baseline)))
           for t in trials}
    if candidate is not None:
        cv, ce = sign * np.asarray(candidate[0], dtype=float), np.asarray(candidate[1], dtype=float)
        return [t for t in trials if dominates(*pts[t.number], cv, ce)]
    reps = one_per_work(trials, objectives)
    return [b for b in reps if not any(a is not b and dominates(*pts[a.number], *pts[b.number]) for a in reps)]

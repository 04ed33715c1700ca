"""Confidence intervals for a trial's FID and speedup.

FID: bootstrap over images, paired. Candidate image i and baseline image i share class and seed (common
random numbers), so one resample of image indices is applied to both sets and the candidate-minus-baseline
difference is far tighter than either FID. Resampling with replacement duplicates images and inflates every
resampled FID (fewer distinct images), so the interval is the bootstrap's spread around its own mean, placed
on the point estimate: [x - (mean_b - q_lo), x + (q_hi - mean_b)].

Speedup: the baseline and candidate are timed in alternating rounds; resampling rounds (pairs kept) gives
the spread of the ratio of medians.

LEVEL is two-sided, so each bound alone holds with (1 + LEVEL) / 2: the constraint uses the upper bound of
the FID increase at 95 % one-sided.
"""

from __future__ import annotations

import statistics

import torch

LEVEL = 0.90
N_BOOT = 400


class Frechet:
    """FID of many feature sets against one fixed reference, batched (same formula as torchmetrics:
    unbiased covariances, trace of sqrt(S_a S_r) from the eigenvalues of R S_a R with R = sqrt(S_r))."""

    def __init__(self, reference: torch.Tensor):
        ref = reference.double()
        self.mu = ref.mean(0)
        cov = torch.cov(ref.t())
        evals, evecs = torch.linalg.eigh(cov)
        self.root = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.t()
        self.trace = torch.trace(cov)

    def __call__(self, sets: torch.Tensor) -> torch.Tensor:
        """sets: [B, n, d] -> FID of each of the B sets, [B]."""
        sets = sets.double()
        mu = sets.mean(1)
        centered = sets - mu[:, None]
        cov = centered.transpose(1, 2) @ centered / (sets.shape[1] - 1)
        inner = self.root @ cov @ self.root
        cross = torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum(-1)
        mean_term = ((mu - self.mu) ** 2).sum(-1)
        return mean_term + cov.diagonal(dim1=1, dim2=2).sum(-1) + self.trace - 2 * cross


def _bounds(point: float, draws: torch.Tensor, level: float) -> tuple[float, float]:
    lo_q, hi_q = torch.quantile(draws, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=draws.dtype))
    mean = draws.mean()
    return point - float(mean - lo_q), point + float(hi_q - mean)


def fid_interval(candidate: torch.Tensor, baseline: torch.Tensor, reference: torch.Tensor,
                 n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> dict:
    """Paired bootstrap of candidate and baseline features (row i of each from the same seed).

    Returns fid_lo/fid_hi (the candidate's FID) and fid_delta, fid_delta_lo/hi (candidate - baseline)."""
    if candidate.shape != baseline.shape:
        raise ValueError("candidate and baseline features must be paired row by row (same shape)")
    n = candidate.shape[0]
    frechet = Frechet(reference)
    point_c, point_b = (float(v) for v in frechet(torch.stack([candidate, baseline])))
    idx = torch.randint(0, n, (n_boot, n), generator=torch.Generator().manual_seed(seed))
    fc, fb = frechet(candidate.double()[idx]), frechet(baseline.double()[idx])
    fid_lo, fid_hi = _bounds(point_c, fc, level)
    delta_lo, delta_hi = _bounds(point_c - point_b, fc - fb, level)
    return {"fid_lo": fid_lo, "fid_hi": fid_hi, "fid_delta": point_c - point_b,
            "fid_delta_lo": delta_lo, "fid_delta_hi": delta_hi, "ci_level": level}


def speedup_interval(baseline_seconds: list[float], candidate_seconds: list[float], n_boot: int = N_BOOT,
                     level: float = LEVEL, seed: int = 0) -> dict:
    """Ratio of median seconds (baseline / candidate) with a bootstrap over timing rounds."""
    if len(baseline_seconds) != len(candidate_seconds) or not baseline_seconds:
        raise ValueError("need the same number (>= 1) of baseline and candidate timings")
    b = torch.tensor(baseline_seconds, dtype=torch.float64)
    c = torch.tensor(candidate_seconds, dtype=torch.float64)
    point = statistics.median(baseline_seconds) / statistics.median(candidate_seconds)
    idx = torch.randint(0, len(b), (n_boot, len(b)), generator=torch.Generator().manual_seed(seed))
    ratios = b[idx].quantile(0.5, dim=1) / c[idx].quantile(0.5, dim=1)  # interpolated, as statistics.median
    lo, hi = _bounds(point, ratios, level)
    return {"speedup_lo": lo, "speedup_hi": hi, "latency_repeats": len(b)}


def increase_pct(delta: float, baseline_fid: float) -> float:
    """FID change in percent of the baseline's FID."""
    return 100.0 * delta / baseline_fid

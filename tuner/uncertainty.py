"""Confidence intervals for a trial's FID and speedup.

FID: paired seed splits (a delete-half jackknife). Candidate image i and baseline image i share class and
seed (common random numbers). The set is split at random into two halves, many times; each half gives a
candidate FID and a baseline FID on the same seeds, so the candidate-minus-baseline difference varies
far less than either FID. With halves of n/2 images the variance of a statistic across halves estimates its
variance at n images (the delete-d jackknife with d = n/2), and the interval is point ± z·sd.

Why not a bootstrap over images: resampling with replacement duplicates images, and on the 32-d proxy
features at N=64 that doubles the resampled FIDs (mean 13.8 for a point estimate of 6.4), so the interval
of the FID itself came out 1.6x too wide. Checked against 400 subsets of 64 from 256 held-out images
(BENCHMARKS.md, "Uncertainty"): the half-split sd of the difference is 0.59-0.84 for a 12-of-20-step
config (subset truth 0.74) and 1.1-1.4 for 8 steps (truth 1.36).

Speedup: the baseline and candidate are timed in alternating rounds; a bootstrap over rounds (pairs kept)
gives the spread of the ratio of medians.

LEVEL is two-sided, so each bound alone holds with (1 + LEVEL) / 2: the constraint uses the upper bound of
the FID increase at 95 % one-sided.
"""

from __future__ import annotations

import math
import statistics

import torch

LEVEL = 0.90
N_BOOT = 400  # bootstrap draws over timing rounds
N_SPLITS = 100  # random half splits of the images (200 halves)
MIN_IMAGES = 4


class Frechet:
    """FID of many feature sets against one fixed reference, batched (same formula as torchmetrics:
    unbiased covariances, trace of sqrt(S_a S_r) from the eigenvalues of R S_a R with R = sqrt(S_r)).

    Sets of fewer images than feature dimensions (Inception: 2048-d, a few dozen images) are scored in the
    samples' space instead, as `evaluators.fidelity.frechet_distance`: tr sqrt(S_a S_r) is the nuclear norm
    of A_c R_c^T / sqrt((n-1)(m-1)) (A_c, R_c: centred features), exact. The d x d form would hold 200
    half-sets x 2048 x 2048 doubles (6.7 GB per product) and run 200 eigendecompositions of that size."""

    def __init__(self, reference: torch.Tensor):
        ref = reference.double()
        self.mu = ref.mean(0)
        self.ref_centered = (ref - self.mu) / math.sqrt(max(1, len(ref) - 1))
        cov = torch.cov(ref.t())
        self.trace = torch.trace(cov)
        self._cov = cov
        self._root = None  # sqrt(S_r), only when a set has at least as many images as dimensions

    @property
    def root(self) -> torch.Tensor:
        if self._root is None:
            evals, evecs = torch.linalg.eigh(self._cov)
            self._root = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.t()
        return self._root

    def __call__(self, sets: torch.Tensor) -> torch.Tensor:
        """sets: [B, n, d] -> FID of each of the B sets, [B]."""
        sets = sets.double()
        n, d = sets.shape[1], sets.shape[2]
        mu = sets.mean(1)
        centered = sets - mu[:, None]
        mean_term = ((mu - self.mu) ** 2).sum(-1)
        if n < d:  # samples' space: [B, n, m] instead of [B, d, d]
            cross = torch.linalg.svdvals(centered @ self.ref_centered.t() / math.sqrt(n - 1)).sum(-1)
            return mean_term + centered.square().sum((1, 2)) / (n - 1) + self.trace - 2 * cross
        cov = centered.transpose(1, 2) @ centered / (n - 1)
        inner = self.root @ cov @ self.root
        cross = torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum(-1)
        return mean_term + cov.diagonal(dim1=1, dim2=2).sum(-1) + self.trace - 2 * cross


def _bounds(point: float, draws: torch.Tensor, level: float) -> tuple[float, float]:
    """Bootstrap interval: the draws' spread around their own mean, placed on the point estimate."""
    lo_q, hi_q = torch.quantile(draws, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=draws.dtype))
    mean = draws.mean()
    return point - float(mean - lo_q), point + float(hi_q - mean)


def fid_interval(candidate: torch.Tensor, baseline: torch.Tensor, reference: torch.Tensor,
                 n_splits: int = N_SPLITS, level: float = LEVEL, seed: int = 0) -> dict:
    """Paired seed splits of candidate and baseline features (row i of each from the same seed).

    Returns fid_lo/fid_hi (the candidate's FID) and fid_delta, fid_delta_lo/hi (candidate - baseline).
    Needs MIN_IMAGES: a half must hold at least 2 images for a covariance."""
    if candidate.shape != baseline.shape:
        raise ValueError("candidate and baseline features must be paired row by row (same shape)")
    n = candidate.shape[0]
    if n < MIN_IMAGES:
        raise ValueError(f"an FID interval needs at least {MIN_IMAGES} images, got {n}")
    frechet = Frechet(reference)
    point_c, point_b = (float(v) for v in frechet(torch.stack([candidate, baseline])))
    out = {"fid_delta": point_c - point_b, "ci_level": level}
    half = n // 2
    gen = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(n_splits)])
    halves = torch.cat([perms[:, :half], perms[:, half:2 * half]])
    fc, fb = frechet(candidate.double()[halves]), frechet(baseline.double()[halves])
    z = statistics.NormalDist().inv_cdf((1 + level) / 2)
    scale = z * math.sqrt(half / (n - half))  # jackknife: var_n = (kept / deleted) * var over subsets
    sd_c, sd_d = float(fc.std()) * scale, float((fc - fb).std()) * scale
    return {**out, "fid_lo": point_c - sd_c, "fid_hi": point_c + sd_c,
            "fid_delta_lo": out["fid_delta"] - sd_d, "fid_delta_hi": out["fid_delta"] + sd_d}


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

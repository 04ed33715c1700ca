"""Jaccard profile of token merging, and checkpoint sets for CA-ToMe derived from it.

The profiler runs the *baseline* pipeline (nothing is merged) and records, for every transformer block
at the patched levels and every step, the set A_n of (src, dst) pairs that CA-ToMe's threshold matching
would merge. Between adjacent steps it takes the paper's Jaccard distance

    JD(A_n, A_{n+1}) = 1 - |A_n ∩ A_{n+1}| / |A_n ∪ A_{n+1}|      (0 when both sets are empty)

per image (each row of the batched-CFG batch counts as one image: uncond and cond rows merge separately)
and averages it over images. A row of the profile is (block, step): `jaccard_distance` at step n is the
distance between steps n-1 and n (NaN at step 0); `n_pairs` is the mean pair count per image.
CA-ToMe wants checkpoints where the distance spikes: `checkpoints_from_profile` puts one at step 0 and
wherever the distance accumulated since the last checkpoint exceeds delta.
The same table for a DiT's self-attentions (blocks labelled B<i>, S<i>): tuner.methods.dit_catome.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from tuner.errors import TunerError
from tuner.methods.base import resolve_unet
from tuner.methods.merge import match_threshold
from tuner.methods.token_merge_patch import patch_unet, unpatch_unet
from tuner.step_context import get_step_context

@dataclass(frozen=True)
class ProfileSpec:
    """How a study profiles CA-ToMe before searching it (a study file's `[profile]` table): images, the
    merge threshold whose pairs are tracked, and the deepest level patched."""

    n_images: int = 8
    threshold: float = 0.7
    max_downsample: int = 1

    def __post_init__(self):
        if isinstance(self.n_images, bool) or not isinstance(self.n_images, int) or not 1 <= self.n_images <= 10_000:
            raise TunerError(f"profile.n_images={self.n_images!r} must be an integer in 1..10000")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not 0.0 <= self.threshold <= 1.0:
            raise TunerError(f"profile.threshold={self.threshold!r} must be a number in 0..1")
        if isinstance(self.max_downsample, bool) or self.max_downsample not in (1, 2, 4, 8):
            raise TunerError(f"profile.max_downsample={self.max_downsample!r} must be 1, 2, 4 or 8")
        object.__setattr__(self, "threshold", float(self.threshold))


PROFILE_COLUMNS = ["block", "level", "step", "n_pairs", "jaccard_distance", "threshold"]


def jaccard_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Paper formula on two sets given as unique int arrays (pairs encoded as src * N + dst)."""
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return 1.0 - inter / union if union else 0.0


class PairRecorder:
    """A planner that records the pairs a threshold matching selects and merges nothing."""

    def __init__(self, ctx, threshold: float, sx: int, sy: int):
        self.ctx, self.threshold, self.sx, self.sy = ctx, threshold, sx, sy
        self.image_offset = 0  # index of row 0 of the current batch in the whole profiled set
        self.pairs: dict[tuple[str, int, int], np.ndarray] = {}  # (block, step, image) -> codes
        self.labels: dict[str, str] = {}

    def reset_state(self) -> None:
        """Nothing to reset: the recorder keeps the pairs of every profiled call (keys carry the image)."""

    def plan(self, block, x: torch.Tensor, h: int, w: int):
        self.labels[block.name] = block.label
        plan = match_threshold(x, h, w, self.sx, self.sy, self.threshold)
        n = x.shape[1]
        for b in range(x.shape[0]):
            key = (block.name, self.ctx.step, self.image_offset + b)
            if plan is None:
                self.pairs[key] = np.empty(0, dtype=np.int64)
            else:
                p = plan.pairs(b).cpu().numpy()
                self.pairs[key] = np.unique(p[:, 0] * n + p[:, 1])
        return None  # profile the baseline: never merge


def check_profile_args(classes: Sequence, seeds: Sequence[int], steps: int, threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise TunerError(f"threshold={threshold} is out of range (0..1)")
    if steps < 2:
        raise TunerError("a Jaccard profile needs at least 2 steps")
    if len(classes) != len(seeds) or not len(seeds):
        raise TunerError("classes and seeds must be non-empty and of the same length")


def record_pairs(pipe, recorder: PairRecorder, classes: Sequence, seeds: Sequence[int], steps: int,
                 progress: bool = False) -> None:
    """Run the (already hooked) baseline pipeline over (classes, seeds), one pipeline batch at a time, so
    every row of every batch is recorded under its own image index."""
    chunk = getattr(pipe, "batch_size", len(seeds))
    for start in range(0, len(seeds), chunk):
        recorder.image_offset = 2 * start  # batched CFG: at most 2 rows per image
        pipe(list(classes[start:start + chunk]), list(seeds[start:start + chunk]),
             num_inference_steps=steps, progress=progress)


def profile_merges(pipe, classes: Sequence[int], seeds: Sequence[int], steps: int = 50, threshold: float = 0.7,
                   max_downsample: int = 1, sx: int = 2, sy: int = 2, progress: bool = False) -> pd.DataFrame:
    """Run the baseline pipeline over (classes, seeds) and return the per-(block, step) profile."""
    check_profile_args(classes, seeds, steps, threshold)
    unet = resolve_unet(pipe)
    recorder = PairRecorder(get_step_context(unet), threshold, sx, sy)
    mergers = patch_unet(unet, "jaccard-profile", max_downsample, lambda ref: recorder.plan)
    try:
        record_pairs(pipe, recorder, classes, seeds, steps, progress)
    finally:
        unpatch_unet(unet, mergers)
    return profile_table(recorder, threshold)


def profile_table(recorder: PairRecorder, threshold: float) -> pd.DataFrame:
    by_block: dict[str, dict[int, dict[int, np.ndarray]]] = {}
    for (block, step, image), codes in recorder.pairs.items():
        by_block.setdefault(block, {}).setdefault(step, {})[image] = codes
    rows = []
    for block, per_step in by_block.items():
        for step in sorted(per_step):
            now = per_step[step]
            prev = per_step.get(step - 1)
            jd = (float(np.mean([jaccard_distance(prev[i], now[i]) for i in now if i in prev]))
                  if prev is not None else float("nan"))
            rows.append({"block": block, "level": recorder.labels[block], "step": step,
                         "n_pairs": float(np.mean([c.size for c in now.values()])),
                         "jaccard_distance": jd, "threshold": threshold})
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def step_distances(df: pd.DataFrame) -> pd.Series:
    """Mean Jaccard distance over blocks, per step (step 0 counts as 0: nothing to compare with)."""
    if df.empty:
        raise TunerError("empty Jaccard profile")
    return df.groupby("step")["jaccard_distance"].mean().fillna(0.0).sort_index()


def _greedy_checkpoints(dist: pd.Series, delta: float) -> list[int]:
    checkpoints, acc = [int(dist.index[0])], 0.0
    for step, d in dist.iloc[1:].items():
        acc += float(d)
        if acc > delta:
            checkpoints.append(int(step))
            acc = 0.0
    return checkpoints


def checkpoints_from_profile(df: pd.DataFrame, delta: float | None = None, max_count: int | None = None) -> list[int]:
    """Checkpoint steps: step 0, then every step where the distance accumulated since the last checkpoint
    exceeds delta. With max_count, delta is raised (bisection) until at most max_count checkpoints remain;
    with max_count alone, the smallest such delta is used (the densest set within the budget)."""
    if delta is None and max_count is None:
        raise TunerError("give delta, max_count or both")
    if delta is not None and (not isinstance(delta, (int, float)) or delta < 0):
        raise TunerError(f"delta={delta} must be >= 0")
    if max_count is not None and (not isinstance(max_count, int) or max_count < 1):
        raise TunerError(f"max_count={max_count} must be an integer >= 1")
    dist = step_distances(df)
    lo = 0.0 if delta is None else float(delta)
    best = _greedy_checkpoints(dist, lo)
    if max_count is None or len(best) <= max_count:
        return best
    hi = float(dist.sum()) + 1.0  # above the total: only step 0
    for _ in range(60):  # the count never grows with delta, so bisection finds the densest set that fits
        mid = (lo + hi) / 2
        if len(_greedy_checkpoints(dist, mid)) <= max_count:
            hi = mid
        else:
            lo = mid
    return _greedy_checkpoints(dist, hi)


def scale_checkpoints(steps_list: Sequence[int], from_steps: int = 50, to_steps: int = 50) -> list[int]:
    """Map checkpoint steps of a from_steps run onto a to_steps run (same fraction of the run, rounded;
    duplicates merged, step 0 kept). Identity when the step counts are equal."""
    if from_steps < 1 or to_steps < 1:
        raise TunerError("step counts must be >= 1")
    scaled = {min(to_steps - 1, int(round(s * to_steps / from_steps))) for s in steps_list}
    return sorted(scaled)


def plot_profile(df: pd.DataFrame, path: str | Path, checkpoints: Sequence[int] | None = None,
                 title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_jd, ax_n) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for block, part in df.groupby("block", sort=False):
        label = f"{part['level'].iloc[0]} ({block.replace('.transformer_blocks.', '.tb')})"
        ax_jd.plot(part["step"], part["jaccard_distance"], marker=".", lw=1, label=label)
        ax_n.plot(part["step"], part["n_pairs"], lw=1, label=label)
    mean = step_distances(df)
    ax_jd.plot(mean.index[1:], mean.values[1:], color="k", lw=2, label="mean")
    for s in checkpoints or []:
        ax_jd.axvline(s, color="r", ls="--", lw=0.8)
        ax_n.axvline(s, color="r", ls="--", lw=0.8)
    ax_jd.set_ylabel("Jaccard distance to previous step")
    ax_n.set_ylabel("merged pairs per image")
    ax_n.set_xlabel("step")
    ax_jd.legend(fontsize=7, ncol=2)
    thr = df["threshold"].iloc[0] if len(df) else float("nan")
    ax_jd.set_title(title or f"token-merge pair profile, threshold {thr:g}"
                    + (f"; checkpoints (red) {list(checkpoints)}" if checkpoints else ""), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_profile(df: pd.DataFrame, out_dir: str | Path, checkpoints: Sequence[int] | None = None,
                 stem: str = "jaccard_profile", title: str | None = None) -> dict[str, Path]:
    """Write <stem>.csv and <stem>.png into out_dir (created if missing)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TunerError(f"cannot create output folder {out}: {e.strerror}") from None
    csv = out / f"{stem}.csv"
    df.to_csv(csv, index=False)
    png = plot_profile(df, out / f"{stem}.png", checkpoints, title)
    return {"csv": csv, "png": png}


def placeholder_profile(steps: int) -> pd.DataFrame:
    """A flat profile with the real one's shape, so a space that wants a profile can be checked before
    the study has measured it."""
    rows = [{"block": "placeholder", "level": "D1", "step": s, "n_pairs": 1.0,
             "jaccard_distance": float("nan") if s == 0 else 0.1, "threshold": 0.7} for s in range(steps)]
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def profile_to_json(df: pd.DataFrame) -> dict:
    return df.to_dict(orient="split", index=False)


def profile_from_json(data) -> pd.DataFrame:
    try:
        return pd.DataFrame(data["data"], columns=data["columns"])
    except (KeyError, TypeError, ValueError):
        raise TunerError("the study's stored Jaccard profile is unreadable") from None

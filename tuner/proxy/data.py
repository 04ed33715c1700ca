"""The digits data set that scikit-learn ships (no download), upscaled, with a fixed split."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 16
NUM_CLASSES = 10
SPLIT_SEED = 0
HELDOUT_FRACTION = 0.3
DATASET_ID = f"sklearn-digits-{IMAGE_SIZE}px-split{SPLIT_SEED}"


@lru_cache(maxsize=4)
def load_digits_split(split: str, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1], shape [N, 1, size, size], and int64 labels. split: 'train' | 'heldout'."""
    from sklearn.datasets import load_digits

    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}")
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    labels = torch.from_numpy(digits.target.astype(np.int64))
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_held = int(round(HELDOUT_FRACTION * len(labels)))
    idx = perm[:n_held] if split == "heldout" else perm[n_held:]
    images = F.interpolate(images[idx], size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1).contiguous(), labels[idx].contiguous()

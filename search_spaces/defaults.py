"""The default joint space (what `studies/default.toml` searches when its [space] table is empty).

Sized for ~40 trials on a 2-core CPU: every family contributes one method choice and at most two
numeric genes, so a 10-member population explores every method combination within a few generations.

Included, and why:
- token merging (none | ToMe r ∈ [0.1, 0.7] | CA-ToMe t ∈ [0.5, 1.0], with checkpoint genes from the
  study's Jaccard profile): the attention blocks at D1/U1 are where merging pays; levels stay at D1/U1
  (tomesd's and CA-ToMe's default) to keep the space small.
- feature caching (none | DeepCache N ∈ [2, 5], all branches, uniform keyframes | FRDiff M ∈ [2, 4],
  b ∈ [0.2, 0.8]): the largest latency lever; non-uniform keyframes are left out (two more genes for a
  second-order effect).
- timestep count (the baseline count and 3/5, 2/5, 1/5 of it, uniform spacing): the cheapest speedup of
  all; TMPQ groupings add one gene per group and are opt-in (`[space.timesteps] groups = [...]`).
- sampler (DDIM | DDPM baseline | DDPM Li & Yan): one or two categorical genes, interacts with the
  step count.
- quantization only when BitOPs is an objective: fake-quantized layers cost float time, so without a
  BitOPs objective the search would see noise, never a gain.
"""

from __future__ import annotations

import copy
from typing import Sequence

DEFAULT_SPACE: dict = {
    # max_downsample: the model's first level with self-attention (D1/U1 on SD-1.x and the proxy, D2/U2 on SDXL)
    "tome": {"ratio": [0.1, 0.7], "max_downsample": "first"},
    "catome": {"threshold": [0.5, 1.0], "max_downsample": "first"},  # checkpoints from the profile if measured
    "deepcache": {"interval": [2, 5], "schedule": ["uniform"]},
    "frdiff": {"interval": [2, 4], "bias": [0.2, 0.8]},
    "timesteps": {},
    "sampler": {},
}

QUANT_SPACE: dict = {"quant": {"bits": [4, 6, 8, 32]}}


def default_families(objectives: Sequence[str] = ("latency", "fid")) -> dict:
    """A fresh copy of the default [space] table; adds per-block quantization when BitOPs is an objective."""
    space = copy.deepcopy(DEFAULT_SPACE)
    if any(str(o).lower() == "bitops" for o in objectives):
        space.update(copy.deepcopy(QUANT_SPACE))
    return space

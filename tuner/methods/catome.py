"""CA-ToMe, cached adaptive token merging (Saghatchian et al., arXiv 2501.00946), registered as `catome`.

Like ToMe, but every image merges its own src whose best cosine similarity to a (top-left) dst of its
sx×sy cell is >= threshold, instead of a fixed share (per-image counts: see `merge.py` for the padding).
The similarity is computed only at checkpoint steps; on the other steps every block reuses the index
tensors it cached at the last checkpoint. The cache lives in per-block state that the step context
resets at every pipeline call, so nothing leaks from one call (or image set) to the next.
threshold > 1 merges nothing and leaves every tensor untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tuner.methods.base import Handle, MethodConfig, register_method, resolve_unet
from tuner.methods.merge import MergePlan, match_threshold
from tuner.methods.token_merge_patch import LEVELS, TransformerBlockRef, patch_unet, unpatch_unet
from tuner.step_context import StepContext, get_step_context

# The paper's caching configurations, as step indices of a 50-step run (see tuner.jaccard.scale_checkpoints).
PAPER_CHECKPOINTS = {
    "CONFIG_1": [0, 1, 2, 3, 5, 10, 15, 25, 35],
    "CONFIG_2": [0, 10, 11, 12, 15, 20, 25, 30, 35, 45],
    "CONFIG_3": [0, 8, 11, 13, 20, 25, 30, 35, 45, 46, 47, 48, 49],
}


@dataclass
class CaToMeConfig(MethodConfig):
    method_name = "catome"

    threshold: float = 0.7  # cosine similarity a src needs to merge; > 1 = neutral
    checkpoints: list[int] | None = None  # steps where similarity is recomputed; None = every step
    sx: int = 2
    sy: int = 2
    max_downsample: int = 1  # D1/U1, as in the paper
    merge_crossattn: bool = False
    merge_mlp: bool = False

    def validate(self) -> None:
        self._check_range("threshold", 0.0, 1.5)
        if self.checkpoints is not None:
            if not isinstance(self.checkpoints, (list, tuple)) or not all(
                    isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.checkpoints):
                self._fail(f"checkpoints must be a list of step indices >= 0 or null, got {self.checkpoints!r}")
            if len(set(self.checkpoints)) != len(self.checkpoints):
                self._fail("checkpoints must not repeat a step")
        self._check_range("sx", 1, 16, integer=True)
        self._check_range("sy", 1, 16, integer=True)
        if self.max_downsample not in LEVELS or isinstance(self.max_downsample, bool):
            self._fail(f"max_downsample must be one of {LEVELS}, got {self.max_downsample!r}")
        for key in ("merge_crossattn", "merge_mlp"):
            if not isinstance(getattr(self, key), bool):
                self._fail(f"{key} must be true or false, got {getattr(self, key)!r}")


@dataclass
class BlockCache:
    """Plans of one block cached at the last checkpoint, one per U-Net forward of a step (a pipeline that
    runs CFG as two forwards per step caches the uncond and cond plans separately)."""

    plans: dict[int, MergePlan | None] = field(default_factory=dict)
    step: int = -1  # step of the last forward seen
    forward_in_step: int = -1  # index of the current forward within that step


class CaToMeState:
    """Per-call state of every patched block; `similarity_computations` counts this call's matchings."""

    def __init__(self, cfg: CaToMeConfig, ctx: StepContext):
        self.cfg = cfg
        self.ctx = ctx
        self.checkpoints = None if cfg.checkpoints is None else frozenset(cfg.checkpoints)
        self.caches: dict[str, BlockCache] = {}
        self.similarity_computations = 0
        self.per_block: dict[str, int] = {}

    def reset_state(self) -> None:
        self.caches.clear()
        self.similarity_computations = 0
        self.per_block.clear()

    def plan(self, block, x: torch.Tensor, h: int, w: int) -> MergePlan | None:
        cache = self.caches.setdefault(block.name, BlockCache())
        step = self.ctx.step
        if step != cache.step:
            cache.step, cache.forward_in_step = step, 0
        else:
            cache.forward_in_step += 1
        key = cache.forward_in_step
        is_checkpoint = self.checkpoints is None or step in self.checkpoints
        cached = cache.plans.get(key, False)
        usable = cached is None or (cached is not False and cached.assign.shape == (x.shape[0], x.shape[1]))
        if is_checkpoint or not usable:  # a step before the first checkpoint also has to compute
            cached = match_threshold(x, h, w, self.cfg.sx, self.cfg.sy, self.cfg.threshold)
            cache.plans[key] = cached
            self.similarity_computations += 1
            self.per_block[block.name] = self.per_block.get(block.name, 0) + 1
        return cached


@register_method("catome", CaToMeConfig, order=31)
def apply(target, cfg: CaToMeConfig) -> Handle:
    cfg.validate()
    unet = resolve_unet(target)
    ctx = get_step_context(unet)
    state = CaToMeState(cfg, ctx)

    def make_planner(ref: TransformerBlockRef):
        return state.plan

    mergers = patch_unet(unet, "catome", cfg.max_downsample, make_planner, True, cfg.merge_crossattn, cfg.merge_mlp)
    ctx.register(state)

    def undo():
        ctx.unregister(state)
        unpatch_unet(unet, mergers)

    handle = Handle("catome", undo=[undo], info={"catome_blocks": len(mergers)})
    handle.state = state  # live counters (similarity_computations, per_block) for tests and benchmarks
    return handle

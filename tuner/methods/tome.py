"""ToMe for Stable Diffusion (Bolya & Hoffman; tomesd semantics), registered as `tome`.

Before self-attention of every transformer block at levels <= max_downsample, each image merges its
r = int(N * ratio) src tokens most similar (cosine, on the block input) to a dst token of their sx×sy
cell, and copies the result back after attention. dst is the top-left token of each cell, or a random one
(use_rand) drawn from a CPU generator seeded with `seed` and reseeded at every pipeline call, so a call is
reproducible and independent of the previous ones. ratio=0 leaves every tensor untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tuner.methods.base import Handle, MethodConfig, register_method, resolve_unet
from tuner.methods.merge import MergePlan, match_ratio
from tuner.methods.token_merge_patch import LEVELS, patch_unet, unpatch_unet
from tuner.step_context import get_step_context


@dataclass
class ToMeConfig(MethodConfig):
    method_name = "tome"

    ratio: float = 0.5  # share of the tokens of a block merged away; 0 = neutral
    sx: int = 2
    sy: int = 2
    max_downsample: int = 1  # deepest level patched: 1 = highest resolution only (SD's D1/U1)
    use_rand: bool = True  # random dst per cell (tomesd default) instead of top-left
    merge_attn: bool = True
    merge_crossattn: bool = False
    merge_mlp: bool = False
    seed: int = 0

    def validate(self) -> None:
        self._check_range("ratio", 0.0, 0.95)
        self._check_range("sx", 1, 16, integer=True)
        self._check_range("sy", 1, 16, integer=True)
        if self.max_downsample not in LEVELS or isinstance(self.max_downsample, bool):
            self._fail(f"max_downsample must be one of {LEVELS}, got {self.max_downsample!r}")
        for key in ("use_rand", "merge_attn", "merge_crossattn", "merge_mlp"):
            if not isinstance(getattr(self, key), bool):
                self._fail(f"{key} must be true or false, got {getattr(self, key)!r}")
        self._check_range("seed", 0, 2**63 - 1, integer=True)


class ToMeState:
    """Per-call state shared by the blocks: the dst generator. Reset by the step context."""

    def __init__(self, cfg: ToMeConfig):
        self.cfg = cfg
        self.generator = torch.Generator()
        self.reset_state()

    def reset_state(self) -> None:
        self.generator.manual_seed(self.cfg.seed)

    def plan(self, block, x: torch.Tensor, h: int, w: int) -> MergePlan | None:
        c = self.cfg
        return match_ratio(x, h, w, c.sx, c.sy, c.ratio, self.generator if c.use_rand else None)


@register_method("tome", ToMeConfig, order=30)
def apply(target, cfg: ToMeConfig) -> Handle:
    cfg.validate()
    unet = resolve_unet(target)
    state = ToMeState(cfg)
    mergers = patch_unet(unet, "tome", cfg.max_downsample, lambda ref: state.plan,
                         cfg.merge_attn, cfg.merge_crossattn, cfg.merge_mlp)
    ctx = get_step_context(unet)
    ctx.register(state)

    def undo():
        ctx.unregister(state)
        unpatch_unet(unet, mergers)

    return Handle("tome", undo=[undo], info={"tome_blocks": len(mergers)})

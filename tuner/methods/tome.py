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
from tuner.methods.knobs import INT64_MAX, knob
from tuner.methods.merge import MergePlan, match_ratio
from tuner.methods.token_merge_patch import LEVELS, first_attention_level, patch_unet, resolved_level, unpatch_unet
from tuner.step_context import get_step_context


@register_method("tome", order=30, family="token_merging", default_space=True)
@dataclass
class ToMeConfig(MethodConfig):
    """ToMe: merge a fixed share of each block's tokens before self-attention (tomesd semantics)."""

    ratio: float = knob(0.5, low=0.0, high=0.95, search=(0.1, 0.7), help="share of tokens merged away; 0 = neutral")
    sx: int = knob(2, low=1, high=16, help="cell width (one dst per sx x sy cell)")
    sy: int = knob(2, low=1, high=16, help="cell height")
    max_downsample: int | None = knob(None, choices=LEVELS, nullable=True, search=("first_attention_level",),
                                      help="deepest level patched: 1 = highest resolution only (SD's D1/U1); "
                                           "null = the model's first level with attention (1 on SD-1.x/2.x, 2 on SDXL)")
    use_rand: bool = knob(True, help="random dst per cell (tomesd default) instead of top-left")
    merge_attn: bool = knob(True, help="merge before self-attention")
    merge_crossattn: bool = knob(False, help="merge before cross-attention")
    merge_mlp: bool = knob(False, help="merge before the feed-forward")
    seed: int = knob(0, low=0, high=INT64_MAX, help="seed of the random dst choice, reset every call")

    unmeasured_facts = {"first_attention_level": 1}

    @classmethod
    def prepare(cls, study) -> dict:
        """Where merging starts on this U-Net: the default search patches its first attention level."""
        return {"first_attention_level": first_attention_level(study.pipe.unet)}


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


@ToMeConfig.register_apply
def apply(target, cfg: ToMeConfig) -> Handle:
    unet = resolve_unet(target)
    state = ToMeState(cfg)
    mergers = patch_unet(unet, "tome", resolved_level(cfg.max_downsample, unet), lambda ref: state.plan,
                         cfg.merge_attn, cfg.merge_crossattn, cfg.merge_mlp)
    ctx = get_step_context(unet)
    ctx.register(state)

    def undo():
        ctx.unregister(state)
        unpatch_unet(unet, mergers)

    return Handle("tome", undo=[undo], info={"tome_blocks": len(mergers)})

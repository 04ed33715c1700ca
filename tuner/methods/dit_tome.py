"""Token merging on a diffusion transformer's self-attention (ToMe, Bolya & Hoffman, arXiv 2303.17604,
moved from U-Net blocks to DiT blocks), registered as `dit_tome`.

Before each block's self-attention the image tokens are merged by bipartite soft matching over the 2-D
patch grid (one dst token per sx x sy cell, the `ratio` x N most similar src tokens merged into their best
dst: tuner.methods.merge, the same math as `tome`); attention runs on the merged sequence and its output is
copied back to every token. The hooking (which attention of PixArt, SD3 and Flux, the patch grid, Flux's
RoPE rows of the kept tokens) is shared with `dit_catome`: tuner.methods.dit_merge_hook.
ratio 0 is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.methods.base import Handle, MethodConfig, register_method, resolve_denoiser
from tuner.methods.dit_merge_hook import hook_attentions, self_attentions
from tuner.methods.knobs import knob
from tuner.methods.merge import match_ratio

__all__ = ["DiTToMeConfig", "apply", "self_attentions"]  # self_attentions: where tests and benchmarks look


@register_method("dit_tome", order=32, family="dit_token_merging", default_space=True)
@dataclass
class DiTToMeConfig(MethodConfig):
    """ToMe on a DiT's self-attention image tokens (PixArt attn1, SD3 joint attention's image stream)."""

    ratio: float = knob(0.5, low=0.0, high=0.95, search=(0.1, 0.6), help="fraction of image tokens merged away "
                        "before each self-attention; 0 = neutral")
    sx: int = knob(2, low=1, high=8, help="stride cell width on the patch grid (one dst per cell)")
    sy: int = knob(2, low=1, high=8, help="stride cell height on the patch grid")

    denoisers = ("dit",)

    def is_neutral(self) -> bool:
        return self.ratio == 0.0


@DiTToMeConfig.register_apply
def apply(target, cfg: DiTToMeConfig) -> Handle:
    transformer = resolve_denoiser(target, "dit", "dit_tome")

    def planner(site, x, h, w):
        return match_ratio(x, h, w, cfg.sx, cfg.sy, cfg.ratio)

    undo, hooks = hook_attentions(transformer, "dit_tome", planner)
    return Handle("dit_tome", undo=undo, info={"dit_tome_layers": len(hooks)})

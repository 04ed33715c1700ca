"""Token merging on a diffusion transformer's self-attention (ToMe, Bolya & Hoffman, arXiv 2303.17604,
moved from U-Net blocks to DiT blocks), registered as `dit_tome`.

Before each block's self-attention the image tokens are merged by bipartite soft matching over the 2-D
patch grid (the latent's height and width divided by the patch size, read from the transformer's input at
every forward): one dst token per sx x sy cell, the `ratio` x N most similar src tokens merged into their
best dst (tuner.methods.merge, the same math as `tome`); attention runs on the merged sequence and its
output is copied back to every token. PixArt: the blocks' `attn1`. SD3: the image stream of the joint
attention (`attn`, hidden_states), whose text stream is untouched. Flux is refused: its attention rotates
every image token by its own position (RoPE), which a merged token does not have. ratio 0 is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks import ModelHook

from tuner.errors import TunerError
from tuner.methods.base import Handle, MethodConfig, register_method, resolve_denoiser
from tuner.methods.keyframe_cache import install_hooks
from tuner.methods.knobs import knob
from tuner.methods.merge import match_ratio, merge, unmerge

HOOK_NAME = "tuner.dit_tome"


@register_method("dit_tome", order=32, family="dit_token_merging", default_space=True)
@dataclass
class DiTToMeConfig(MethodConfig):
    """ToMe on a DiT's self-attention image tokens (PixArt attn1, SD3 joint attention's image stream)."""

    ratio: float = knob(0.5, low=0.0, high=0.95, search=(0.1, 0.6), help="fraction of image tokens merged away "
                        "before each self-attention; 0 = neutral")
    sx: int = knob(2, low=1, high=8, help="stride cell width on the patch grid (one dst per cell)")
    sy: int = knob(2, low=1, high=8, help="stride cell height on the patch grid")

    denoisers = ("dit",)
    refuses = ("FluxTransformer2DModel",)  # RoPE per image token

    def is_neutral(self) -> bool:
        return self.ratio == 0.0


class _Grid:
    """The patch grid of the transformer's current input, set by a forward pre-hook."""

    def __init__(self, patch: int):
        self.patch, self.h, self.w = patch, 0, 0

    def __call__(self, module, args, kwargs):
        x = kwargs.get("hidden_states", args[0] if args else None)
        self.h, self.w = x.shape[-2] // self.patch, x.shape[-1] // self.patch


class _MergeAttention(ModelHook):
    def __init__(self, cfg: DiTToMeConfig, grid: _Grid):
        super().__init__()
        self.cfg, self.grid = cfg, grid

    def new_forward(self, module, *args, **kwargs):
        key = "hidden_states" if "hidden_states" in kwargs else None
        x = kwargs[key] if key else args[0]
        plan = None
        if x.dim() == 3 and x.shape[1] == self.grid.h * self.grid.w:
            plan = match_ratio(x, self.grid.h, self.grid.w, self.cfg.sx, self.cfg.sy, self.cfg.ratio)
        if plan is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        merged = merge(x, plan)
        if key:
            kwargs = {**kwargs, key: merged}
        else:
            args = (merged,) + args[1:]
        out = self.fn_ref.original_forward(*args, **kwargs)
        if isinstance(out, tuple):  # joint attention: (image stream, text stream)
            return (unmerge(out[0], plan),) + out[1:]
        return unmerge(out, plan)


def self_attentions(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention of every block: PixArt's attn1, SD3's joint attn."""
    out = []
    for block in getattr(transformer, "transformer_blocks", []):
        attn = getattr(block, "attn1", None) or getattr(block, "attn", None)
        if attn is not None:
            out.append(attn)
    return out


@DiTToMeConfig.register_apply
def apply(target, cfg: DiTToMeConfig) -> Handle:
    transformer = resolve_denoiser(target, "dit", "dit_tome")
    name = type(transformer).__name__
    if name in DiTToMeConfig.refuses:
        raise TunerError(f"method 'dit_tome' cannot patch {name}: its attention rotates each image token by its "
                         "position (RoPE), which a merged token does not have")
    patch = int(getattr(transformer.config, "patch_size", 1) or 1)
    grid = _Grid(patch)
    attentions = self_attentions(transformer)
    remove_hooks = install_hooks([(a, _MergeAttention(cfg, grid)) for a in attentions], HOOK_NAME, "dit_tome")
    pre = transformer.register_forward_pre_hook(grid, with_kwargs=True)
    return Handle("dit_tome", undo=[remove_hooks, pre.remove], info={"dit_tome_layers": len(attentions)})

"""Token merging on a diffusion transformer's self-attention (ToMe, Bolya & Hoffman, arXiv 2303.17604,
moved from U-Net blocks to DiT blocks), registered as `dit_tome`.

Before each block's self-attention the image tokens are merged by bipartite soft matching over the 2-D
patch grid (one dst token per sx x sy cell, the `ratio` x N most similar src tokens merged into their best
dst: tuner.methods.merge, the same math as `tome`); attention runs on the merged sequence and its output is
copied back to every token. The grid is read from the transformer's input at every forward. PixArt: the
blocks' `attn1`. SD3: the image stream of the joint attention (`attn`, hidden_states), whose text stream is
untouched. Flux: the joint attention of the double-stream blocks (image stream) and the attention of the
single-stream blocks (the image tokens after the text tokens). Flux rotates every token by its position
(RoPE): a merged token sits at its dst's position, so the rotary rows of the kept tokens are passed on; as
kept tokens differ per image and diffusers' rotary takes one row set, each image then attends on its own.
ratio 0 is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks import ModelHook

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

    def is_neutral(self) -> bool:
        return self.ratio == 0.0


class _Grid:
    """The patch grid of the transformer's current input, set by a forward pre-hook: from the latent's
    height and width (PixArt, SD3), or from the image tokens' (row, column) ids (Flux packs its latents)."""

    def __init__(self, patch: int):
        self.patch, self.h, self.w = patch, 0, 0

    def __call__(self, module, args, kwargs):
        x = kwargs.get("hidden_states", args[0] if args else None)
        ids = kwargs.get("img_ids")
        if ids is not None:
            ids = ids[0] if ids.dim() == 3 else ids
            self.h, self.w = int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1
            if self.h * self.w != ids.shape[0]:  # not one plain grid (e.g. reference-image tokens): no merging
                self.h = self.w = 0
        else:
            self.h, self.w = x.shape[-2] // self.patch, x.shape[-1] // self.patch


class _MergeAttention(ModelHook):
    """Merges the trailing h x w image tokens of the attention's hidden_states (text tokens, if any, come
    first: Flux's single-stream blocks) and copies the output back to every token."""

    def __init__(self, cfg: DiTToMeConfig, grid: _Grid):
        super().__init__()
        self.cfg, self.grid = cfg, grid

    def new_forward(self, module, *args, **kwargs):
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        n_img = self.grid.h * self.grid.w
        plan = None
        if n_img and x.dim() == 3 and x.shape[1] >= n_img and kwargs.get("attention_mask") is None:
            plan = match_ratio(x[:, -n_img:], self.grid.h, self.grid.w, self.cfg.sx, self.cfg.sy, self.cfg.ratio)
        if plan is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        n_text = x.shape[1] - n_img
        merged = torch.cat([x[:, :n_text], merge(x[:, n_text:], plan)], dim=1)
        if kwargs.get("image_rotary_emb") is None:
            out = self._attend(args, kwargs, merged)
        else:
            out = _concat([self._attend(args, _image_kwargs(kwargs, b, plan, n_img), merged[b:b + 1])
                           for b in range(x.shape[0])])
        first = out[0] if isinstance(out, tuple) else out  # joint attention: (image stream, text stream)
        first = torch.cat([first[:, :n_text], unmerge(first[:, n_text:], plan)], dim=1)
        return (first,) + tuple(out[1:]) if isinstance(out, tuple) else first

    def _attend(self, args, kwargs, hidden):
        if "hidden_states" in kwargs:
            return self.fn_ref.original_forward(*args, **{**kwargs, "hidden_states": hidden})
        return self.fn_ref.original_forward(hidden, *args[1:], **kwargs)


def _image_kwargs(kwargs: dict, b: int, plan, n_img: int) -> dict:
    """Image b's attention arguments: its text stream and the rotary rows of its kept tokens (the text's
    rows first, then the kept image tokens' in their merged order)."""
    cos, sin = kwargs["image_rotary_emb"]
    n_rest = cos.shape[0] - n_img
    kept = torch.cat([torch.arange(n_rest, device=cos.device),
                      n_rest + (plan.partner[b] < 0).nonzero().flatten().to(cos.device)])
    out = {**kwargs, "image_rotary_emb": (cos[kept], sin[kept])}
    if out.get("encoder_hidden_states") is not None:
        out["encoder_hidden_states"] = out["encoder_hidden_states"][b:b + 1]
    return out


def _concat(outs: list):
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts, dim=0) for parts in zip(*outs))
    return torch.cat(outs, dim=0)


def self_attentions(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention of every block: PixArt's attn1, SD3's joint attn, Flux's attn of its double- and
    single-stream blocks."""
    out = []
    blocks = list(getattr(transformer, "transformer_blocks", [])) + list(getattr(transformer, "single_transformer_blocks", []))
    for block in blocks:
        attn = getattr(block, "attn1", None) or getattr(block, "attn", None)
        if attn is not None:
            out.append(attn)
    return out


@DiTToMeConfig.register_apply
def apply(target, cfg: DiTToMeConfig) -> Handle:
    transformer = resolve_denoiser(target, "dit", "dit_tome")
    patch = int(getattr(transformer.config, "patch_size", 1) or 1)
    grid = _Grid(patch)
    attentions = self_attentions(transformer)
    remove_hooks = install_hooks([(a, _MergeAttention(cfg, grid)) for a in attentions], HOOK_NAME, "dit_tome")
    pre = transformer.register_forward_pre_hook(grid, with_kwargs=True)
    return Handle("dit_tome", undo=[remove_hooks, pre.remove], info={"dit_tome_layers": len(attentions)})

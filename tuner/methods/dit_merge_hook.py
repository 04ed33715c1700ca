"""Token merging hooked onto a diffusion transformer's self-attentions, shared by `dit_tome` (fixed ratio)
and `dit_catome` (threshold, cached pairs). The tensor math is tuner.methods.merge; which tokens merge is
the method's `planner(site, x, h, w) -> MergePlan | None`, called with the image tokens of the attention's
input (site: the hooked attention, with its `name` and `label`); None leaves every tensor untouched.

Before each block's self-attention the image tokens are merged over the 2-D patch grid (read from the
transformer's input at every forward); attention runs on the merged sequence and its output is copied back
to every token. PixArt: the blocks' `attn1`. SD3: the image stream of the joint attention (`attn`,
hidden_states), whose text stream is untouched. Flux: the joint attention of the double-stream blocks (image
stream) and the attention of the single-stream blocks (the image tokens after the text tokens).

How the merged sequence is attended:
- every image keeps the same count (ToMe), no RoPE: the whole batch at once;
- per-image counts (CA-ToMe; merge.py pads every image to the batch's largest count): a plain
  self-attention (PixArt's attn1: its AttnProcessor2_0 takes `attention_mask`, broadcast over heads and
  queries) gets the plan's additive key mask [B, 1, M], which hides the padding slots as keys; a joint
  attention cannot take it (SD3's JointAttnProcessor2_0 ignores `attention_mask`; Flux's would need entries
  for the text keys too), so each image attends on its own kept tokens, unpadded;
- RoPE (Flux rotates every token by its position): a merged token sits at its dst's position, so the rotary
  rows of the kept tokens are passed on; kept tokens differ per image and diffusers' rotary takes one row
  set, so each image attends on its own.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers.hooks import ModelHook

from tuner.errors import TunerError
from tuner.methods.keyframe_cache import install_hooks
from tuner.methods.merge import MergePlan, merge, unmerge

Planner = Callable[["MergeAttention", torch.Tensor, int, int], "MergePlan | None"]
# every DiT token-merging method's hook name: two of them on one transformer would merge twice
HOOK_NAMES = {"dit_tome": "tuner.dit_tome", "dit_catome": "tuner.dit_catome"}


class Grid:
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


class MergeAttention(ModelHook):
    """Merges the trailing h x w image tokens of the attention's hidden_states (text tokens, if any, come
    first: Flux's single-stream blocks) and copies the output back to every token."""

    def __init__(self, planner: Planner, grid: Grid, name: str, label: str):
        super().__init__()
        self.planner, self.grid, self.name, self.label = planner, grid, name, label

    def new_forward(self, module, *args, **kwargs):
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        n_img = self.grid.h * self.grid.w
        plan = None
        if n_img and x.dim() == 3 and x.shape[1] >= n_img and kwargs.get("attention_mask") is None:
            plan = self.planner(self, x[:, -n_img:], self.grid.h, self.grid.w)
        if plan is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        n_text = x.shape[1] - n_img
        merged = torch.cat([x[:, :n_text], merge(x[:, n_text:], plan)], dim=1)
        joint = n_text > 0 or kwargs.get("encoder_hidden_states") is not None
        if kwargs.get("image_rotary_emb") is not None or (plan.key_mask is not None and joint):
            out = _concat([_pad_image_stream(self._attend(args, _image_kwargs(kwargs, b, plan, n_img),
                                                          merged[b:b + 1, :n_text + _kept(plan, b)]),
                                             n_text + plan.num_slots)
                           for b in range(x.shape[0])])
        elif plan.key_mask is not None:
            out = self._attend(args, {**kwargs, "attention_mask": plan.key_mask.to(x.dtype)}, merged)
        else:
            out = self._attend(args, kwargs, merged)
        first = out[0] if isinstance(out, tuple) else out  # joint attention: (image stream, text stream)
        first = torch.cat([first[:, :n_text], unmerge(first[:, n_text:], plan)], dim=1)
        return (first,) + tuple(out[1:]) if isinstance(out, tuple) else first

    def _attend(self, args, kwargs, hidden):
        if "hidden_states" in kwargs:
            return self.fn_ref.original_forward(*args, **{**kwargs, "hidden_states": hidden})
        return self.fn_ref.original_forward(hidden, *args[1:], **kwargs)


def _kept(plan: MergePlan, b: int) -> int:
    """Image b's real slots: its kept tokens come first, the batch's padding after them."""
    return plan.num_slots if plan.key_mask is None else plan.num_tokens - int(plan.n_merged[b])


def _pad_image_stream(out, length: int):
    """Zero slots after one image's attention output, so a batch of images of different counts stacks
    (unmerge never reads them)."""
    first = out[0] if isinstance(out, tuple) else out
    if first.shape[1] < length:
        first = torch.cat([first, first.new_zeros(first.shape[0], length - first.shape[1], first.shape[2])], dim=1)
    return (first,) + tuple(out[1:]) if isinstance(out, tuple) else first


def _image_kwargs(kwargs: dict, b: int, plan: MergePlan, n_img: int) -> dict:
    """Image b's attention arguments: its text stream and (RoPE) the rotary rows of its kept tokens (the
    text's rows first, then the kept image tokens' in their merged order)."""
    out = dict(kwargs)
    if kwargs.get("image_rotary_emb") is not None:
        cos, sin = kwargs["image_rotary_emb"]
        n_rest = cos.shape[0] - n_img
        kept = torch.cat([torch.arange(n_rest, device=cos.device),
                          n_rest + (plan.partner[b] < 0).nonzero().flatten().to(cos.device)])
        out["image_rotary_emb"] = (cos[kept], sin[kept])
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
    return [attn for _, _, attn in _named_attentions(transformer)]


def _named_attentions(transformer: torch.nn.Module) -> list[tuple[str, str, torch.nn.Module]]:
    """(module path, label, attention) of every block's self-attention; label B<i> for a (double-stream)
    transformer block, S<i> for a Flux single-stream block."""
    out = []
    for attr, tag in (("transformer_blocks", "B"), ("single_transformer_blocks", "S")):
        for i, block in enumerate(getattr(transformer, attr, [])):
            for name in ("attn1", "attn"):
                attn = getattr(block, name, None)
                if attn is not None:
                    out.append((f"{attr}.{i}.{name}", f"{tag}{i}", attn))
                    break
    return out


def hook_attentions(transformer: torch.nn.Module, method: str, planner: Planner) -> tuple[list, list[MergeAttention]]:
    """Hook every block's self-attention of `transformer` with `planner`. Returns (undo callables in the
    order a Handle takes them, the hooks). Refuses a transformer another DiT token-merging method hooked."""
    attentions = _named_attentions(transformer)
    for other, name in HOOK_NAMES.items():
        if other != method and any(_has_hook(a, name) for _, _, a in attentions):
            raise TunerError(f"method '{method}' cannot be combined with '{other}' on one model (both merge tokens)")
    grid = Grid(int(getattr(transformer.config, "patch_size", 1) or 1))
    hooks = [MergeAttention(planner, grid, name, label) for name, label, _ in attentions]
    remove_hooks = install_hooks([(a, h) for (_, _, a), h in zip(attentions, hooks)], HOOK_NAMES[method], method)
    pre = transformer.register_forward_pre_hook(grid, with_kwargs=True)
    return [remove_hooks, pre.remove], hooks


def _has_hook(module: torch.nn.Module, name: str) -> bool:
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(name) is not None

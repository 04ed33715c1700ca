"""Hooking shared by ToMe and CA-ToMe (the tensor math is in `merge.py`).

Every diffusers `BasicTransformerBlock` at the chosen U-Net levels gets forward hooks, nothing is
replaced: a pre-hook on its parent `Transformer2DModel` records the token grid (h, w); a pre-hook on the
block asks the method's planner for a `MergePlan` computed from the block input (tomesd's metric); the
sub-layers chosen (self-attention, optionally cross-attention and MLP) get their input merged by a
pre-hook and their output unmerged by a hook, before the block's own residual add, as in tomesd.
A planner that returns None leaves every tensor untouched, so neutral settings are bit-identical.
Removing the hook handles restores the model exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from tuner.errors import TunerError
from tuner.methods.merge import MergePlan, merge, unmerge

LEVELS = (1, 2, 4, 8)  # max_downsample choices: downsampling factor of the deepest level patched
_OWNER_ATTR = "_tuner_token_merging"  # the method currently merging tokens on this U-Net


class Planner(Protocol):
    def __call__(self, block: "BlockMerger", x: torch.Tensor, h: int, w: int) -> MergePlan | None: ...


@dataclass(frozen=True)
class TransformerBlockRef:
    name: str  # module path in the U-Net, e.g. down_blocks.0.attentions.0.transformer_blocks.0
    label: str  # paper-style level name: D1, D2, ..., M, ..., U2, U1 (1 = highest resolution)
    downsample: int  # 1, 2, 4, ...: resolution of the level relative to the U-Net input
    block: torch.nn.Module
    transformer: torch.nn.Module  # the Transformer2DModel that holds the block (knows h, w)


def transformer_blocks(unet: torch.nn.Module, max_downsample: int) -> list[TransformerBlockRef]:
    """The BasicTransformerBlocks of every level whose downsampling factor is <= max_downsample."""
    from diffusers.models.attention import BasicTransformerBlock

    n_levels = len(unet.config.block_out_channels)
    found = []
    for name, module in unet.named_modules():
        if not isinstance(module, BasicTransformerBlock):
            continue
        m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.|mid_block\.", name)
        if m is None:
            continue
        if m.group(1) == "down_blocks":
            level = int(m.group(2))
            label = f"D{level + 1}"
        elif m.group(1) == "up_blocks":
            level = n_levels - 1 - int(m.group(2))
            label = f"U{level + 1}"
        else:
            level, label = n_levels - 1, "M"
        if 2 ** level > max_downsample:
            continue
        parent = unet.get_submodule(name.rsplit(".transformer_blocks.", 1)[0])
        found.append(TransformerBlockRef(name, label, 2 ** level, module, parent))
    return found


def attention_levels(unet: torch.nn.Module) -> list[int]:
    """Downsampling factors (ascending) of the U-Net's levels that hold transformer blocks: [1, 2, 4] on
    SD-1.x, [2, 4] on SDXL (its top level has no attention)."""
    deepest = 2 ** (len(unet.config.block_out_channels) - 1)
    return sorted({ref.downsample for ref in transformer_blocks(unet, deepest)})


def first_attention_level(unet: torch.nn.Module) -> int:
    """Downsampling factor (1, 2, 4, ...) of the highest-resolution level with a transformer block: where
    token merging starts (ToMe's and CA-ToMe's model fact). 1 on SD-1.x/2.x and the proxy, 2 on SDXL."""
    return min(attention_levels(unet), default=1)


def resolved_level(max_downsample: int | None, unet: torch.nn.Module) -> int:
    """A config's max_downsample, or (null, the default) the U-Net's first level with attention: the
    one-liner `{"tome": {"ratio": 0.5}}` patches SD-1.x/2.x at D1/U1 and SDXL at its first attention level."""
    return first_attention_level(unet) if max_downsample is None else max_downsample


def _hidden(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args, kwargs, x):
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": x}


class BlockMerger:
    """Hooks of one transformer block. `plan` lives only during the block's forward."""

    def __init__(self, ref: TransformerBlockRef, planner: Planner, merge_attn: bool, merge_crossattn: bool,
                 merge_mlp: bool):
        self.ref = ref
        self.name = ref.name
        self.planner = planner
        self.hw: tuple[int, int] | None = None
        self.plan: MergePlan | None = None
        block = ref.block
        if merge_mlp and getattr(block, "_chunk_size", None) is not None:
            raise TunerError(f"token merging of the MLP cannot be combined with chunked feed-forward ({ref.name})")
        self._handles = [
            ref.transformer.register_forward_pre_hook(self._record_grid, with_kwargs=True),
            # planning (random dst, data-dependent counts, cached plans per step) is opaque to torch.compile:
            # one graph break per merged block; merge/unmerge (scatter/gather) are traced
            block.register_forward_pre_hook(torch.compiler.disable(self._make_plan), with_kwargs=True),
            block.register_forward_hook(self._drop_plan),
        ]
        targets = [(block.attn1, True)] if merge_attn else []
        if merge_crossattn and getattr(block, "attn2", None) is not None:
            targets.append((block.attn2, False))
        if merge_mlp:
            targets.append((block.ff, False))
        for module, is_self_attention in targets:
            self._handles.append(module.register_forward_pre_hook(
                self._merge_input_self if is_self_attention else self._merge_input, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._unmerge_output))

    @property
    def label(self) -> str:
        """Paper-style level name (D1, ..., U1): what a Jaccard profile groups blocks by."""
        return self.ref.label

    # --- hooks -----------------------------------------------------------------------------------
    def _record_grid(self, module, args, kwargs):
        x = _hidden(args, kwargs)
        self.hw = (int(x.shape[-2]), int(x.shape[-1])) if x.ndim == 4 else None

    def _make_plan(self, module, args, kwargs):
        x = _hidden(args, kwargs)
        if self.hw is None or x.ndim != 3:
            raise RuntimeError(f"token merging: unknown token grid at {self.name}")
        self.plan = self.planner(self, x, *self.hw)

    def _drop_plan(self, module, args, output):
        self.plan = None

    def _merge_input(self, module, args, kwargs):
        if self.plan is None:
            return None
        return _with_hidden(args, kwargs, merge(_hidden(args, kwargs), self.plan))

    def _merge_input_self(self, module, args, kwargs):
        """Self-attention also needs padded slots hidden as keys (images of a batch keep different counts)."""
        if self.plan is None:
            return None
        args, kwargs = _with_hidden(args, kwargs, merge(_hidden(args, kwargs), self.plan))
        if self.plan.key_mask is not None:
            if kwargs.get("attention_mask") is not None:
                raise RuntimeError(f"token merging with per-image counts needs attention_mask=None ({self.name})")
            kwargs = {**kwargs, "attention_mask": self.plan.key_mask.to(_hidden(args, kwargs).dtype)}
        return args, kwargs

    def _unmerge_output(self, module, args, output):
        if self.plan is None:
            return None
        return unmerge(output, self.plan)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.plan = None


def patch_unet(unet: torch.nn.Module, method: str, max_downsample: int, make_planner: Callable[[TransformerBlockRef], Planner],
               merge_attn: bool = True, merge_crossattn: bool = False, merge_mlp: bool = False) -> list[BlockMerger]:
    """Hook every transformer block at levels <= max_downsample. Raises TunerError if there is none, or if
    another token-merging method already patched this U-Net. Call `unpatch_unet` to undo."""
    if max_downsample not in LEVELS:
        raise TunerError(f"method '{method}': max_downsample must be one of {LEVELS}, got {max_downsample}")
    owner = getattr(unet, _OWNER_ATTR, None)
    if owner is not None:
        raise TunerError(f"method '{method}' cannot be combined with '{owner}' on one model (both merge tokens)")
    refs = transformer_blocks(unet, max_downsample)
    if not refs:  # refused rather than a handle that changes nothing (tomesd patches nothing silently)
        reachable = [level for level in attention_levels(unet) if level in LEVELS]
        fix = (f"the smallest max_downsample that patches one is {reachable[0]}" if reachable
               else "this U-Net has no transformer blocks to merge tokens in")
        raise TunerError(f"method '{method}': max_downsample={max_downsample} reaches no transformer block (no "
                         f"level with downsampling <= {max_downsample} has attention), so it would change nothing; {fix}")
    mergers: list[BlockMerger] = []
    try:
        for ref in refs:
            mergers.append(BlockMerger(ref, make_planner(ref), merge_attn, merge_crossattn, merge_mlp))
    except BaseException:
        for m in mergers:
            m.remove()
        raise
    setattr(unet, _OWNER_ATTR, method)
    return mergers


def unpatch_unet(unet: torch.nn.Module, mergers: list[BlockMerger]) -> None:
    for m in mergers:
        m.remove()
    if hasattr(unet, _OWNER_ATTR):
        delattr(unet, _OWNER_ATTR)

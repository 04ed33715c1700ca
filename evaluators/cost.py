"""Analytic cost of a generation: MACs and BitOPs, per layer, summed over the U-Net calls actually run.

Forward hooks count what really executes, so a skipped block (feature caching), fewer tokens (merging)
or fewer steps all lower the count. BitOPs of a layer = MACs × b_w × b_a (32/32 at full precision).
Attention's two matmuls (QKᵀ and AV) are counted as layers named `<attention>.sdpa`, at 32/32.
BitOPs are a cost model, not a latency: simulated low-bit layers run at full precision speed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch
from torch import nn

FULL_PRECISION = (32, 32)


def _conv_macs(m: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    return out.numel() * (m.in_channels // m.groups) * kh * kw


def _linear_macs(m: nn.Linear, out: torch.Tensor) -> int:
    return out.numel() * m.in_features


def count_macs(model: nn.Module, run: Callable[[], object]) -> dict[str, int]:
    """Run `run()` with counting hooks on `model`; returns MACs per layer name (all calls summed)."""
    from diffusers.models.attention_processor import Attention

    macs: dict[str, int] = defaultdict(int)
    handles = []

    def conv_hook(name):
        def hook(m, args, out):
            macs[name] += _conv_macs(m, out)
        return hook

    def linear_hook(name):
        def hook(m, args, out):
            macs[name] += _linear_macs(m, out)
        return hook

    def attn_hook(name):
        def hook(m, args, kwargs, out):
            hs = kwargs.get("hidden_states", args[0] if args else None)
            enc = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
            if hs is None or hs.dim() != 3:
                return
            b, n_q, _ = hs.shape
            n_k = enc.shape[1] if enc is not None else n_q
            inner = m.inner_dim if hasattr(m, "inner_dim") else hs.shape[-1]
            macs[f"{name}.sdpa"] += 2 * b * n_q * n_k * inner
        return hook

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook(name)))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook(name)))
        elif isinstance(m, Attention):
            handles.append(m.register_forward_hook(attn_hook(name), with_kwargs=True))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return dict(macs)


def bitops(macs: dict[str, int], bits: dict[str, tuple[int, int]] | None = None) -> int:
    """Σ MACs × b_w × b_a; layers missing from `bits` count at 32/32."""
    bits = bits or {}
    return sum(n * bits.get(name, FULL_PRECISION)[0] * bits.get(name, FULL_PRECISION)[1] for name, n in macs.items())

"""Tensor math of uniform symmetric quantization (no hooking here; see quant.py).

Weights: per output channel, scale = clip_c / (2^(b-1) - 1). Activations: one range per layer input,
scale = clip / (2^(b-1) - 1); values beyond the clipping range saturate. The clipping range is either
the absmax ('max': one range shared by every bit-width) or, per bit-width, the fraction of the absmax
that minimises the squared quantization error on the calibration statistics ('mse', the usual
post-training choice; low bit-widths clip harder). Either way the ranges come from one calibration.

`int8_linear` is the real-kernel version of a W8A8 linear layer: int8 × int8 → int32 with
`torch._int_mm`, then one float rescale. It computes the same quantized function as the fake-quantized
layer (up to float summation order).
"""

from __future__ import annotations

import torch

BITS = (4, 5, 6, 7, 8, 16, 32)
FULL = 32


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def weight_absmax(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel max |w| (shape [out])."""
    return weight.detach().abs().flatten(1).amax(dim=1)


CLIP_GRID = torch.linspace(0.1, 1.0, 19)  # fractions of the absmax tried by the MSE search


def mse_clip(sample: torch.Tensor, absmax: torch.Tensor, bits: int) -> torch.Tensor:
    """Clipping range (scalar) minimising E[(Q(x) - x)^2] over `sample` (a flat tensor of inputs)."""
    x = sample.float().flatten()
    best, best_err = absmax, None
    for f in CLIP_GRID.tolist():
        c = absmax * f
        err = (fake_quant(x, _scale(c, bits), bits) - x).pow(2).mean()
        if best_err is None or err < best_err:
            best, best_err = c, err
    return best


def mse_clip_per_channel(weight: torch.Tensor, absmax: torch.Tensor, bits: int, max_cols: int = 512) -> torch.Tensor:
    """Per-output-channel clipping range minimising the channel's squared weight error ([out]).
    Wide channels are scored on a fixed subset of their columns (the absmax stays exact)."""
    w = weight.detach().float().flatten(1)
    if w.shape[1] > max_cols:
        cols = torch.randperm(w.shape[1], generator=torch.Generator().manual_seed(0))[:max_cols]
        w = w[:, cols.to(w.device)]
    amax = absmax.float().to(w.device)
    best, best_err = amax.clone(), torch.full_like(amax, float("inf"))
    for f in CLIP_GRID.tolist():
        c = amax * f
        err = (fake_quant(w, _scale(c, bits)[:, None], bits) - w).pow(2).mean(dim=1)
        better = err < best_err
        best = torch.where(better, c, best)
        best_err = torch.where(better, err, best_err)
    return best


def _scale(absmax: torch.Tensor, bits: int) -> torch.Tensor:
    # An all-zero channel/input quantizes to zero with any scale; 1 avoids dividing by zero.
    return torch.where(absmax > 0, absmax, torch.ones_like(absmax)) / qmax(bits)


act_scale = _scale


def fake_quant(x: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    q = qmax(bits)
    return torch.clamp(torch.round(x / scale), -q, q) * scale


def fake_quant_weight(weight: torch.Tensor, absmax: torch.Tensor, bits: int) -> torch.Tensor:
    scale = _scale(absmax.to(weight), bits).view(-1, *([1] * (weight.dim() - 1)))
    return fake_quant(weight.detach(), scale, bits)


def fake_quant_activation(x: torch.Tensor, absmax: torch.Tensor, bits: int) -> torch.Tensor:
    return fake_quant(x, _scale(absmax.to(x), bits), bits)


# --- real int8 kernel ----------------------------------------------------------------------------
def int8_available(device: torch.device) -> bool:
    return hasattr(torch, "_int_mm") and device.type in ("cpu", "cuda")


def quantize_int8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(x / scale), -127, 127).to(torch.int8)


class Int8LinearWeights:
    """A linear layer's weight as int8 [in, out] plus per-output-channel scales (prepared once)."""

    def __init__(self, weight: torch.Tensor, absmax: torch.Tensor, act_absmax: torch.Tensor):
        w_scale = _scale(absmax.to(weight), 8)
        self.w_int8_t = quantize_int8(weight.detach(), w_scale[:, None]).t().contiguous()
        self.w_scale = w_scale.float()
        self.a_scale = _scale(act_absmax.to(weight), 8).float()


def int8_linear(x: torch.Tensor, packed: Int8LinearWeights, bias: torch.Tensor | None,
                a_scale: torch.Tensor | None = None) -> torch.Tensor:
    """`a_scale` overrides the packed activation scale (the current timestep group's)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    a = packed.a_scale if a_scale is None else a_scale
    if x2.is_cuda and x2.shape[0] <= 16:  # cuBLAS int8 GEMM needs more than 16 rows: same math in float
        xq = quantize_int8(x2, a.to(x2)).float()
        acc = xq @ packed.w_int8_t.float()
    else:
        acc = torch._int_mm(quantize_int8(x2, a.to(x2)), packed.w_int8_t).float()
    y = acc * (a * packed.w_scale)
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*shape[:-1], y.shape[-1])

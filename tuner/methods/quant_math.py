"""Tensor math of uniform symmetric quantization (no hooking here; see quant.py).

Weights: per output channel, scale = absmax_c / (2^(b-1) - 1). Activations: one range per layer input,
scale = absmax / (2^(b-1) - 1), values outside the calibrated range are clipped. Ranges (absmax) are
measured once and shared by every bit-width: only the divisor changes with b, as in TMPQ-DM where the
quantizer parameters are shared across candidates so none needs re-calibration.

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


def _scale(absmax: torch.Tensor, bits: int) -> torch.Tensor:
    # An all-zero channel/input quantizes to zero with any scale; 1 avoids dividing by zero.
    return torch.where(absmax > 0, absmax, torch.ones_like(absmax)) / qmax(bits)


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


def int8_linear(x: torch.Tensor, packed: Int8LinearWeights, bias: torch.Tensor | None) -> torch.Tensor:
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.is_cuda and x2.shape[0] <= 16:  # cuBLAS int8 GEMM needs more than 16 rows: same math in float
        xq = quantize_int8(x2, packed.a_scale.to(x2)).float()
        acc = xq @ packed.w_int8_t.float()
    else:
        acc = torch._int_mm(quantize_int8(x2, packed.a_scale.to(x2)), packed.w_int8_t).float()
    y = acc * (packed.a_scale * packed.w_scale)
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*shape[:-1], y.shape[-1])

"""Which dtype a model runs in on which device, checked before anything is created."""

from __future__ import annotations

import torch

from tuner.errors import TunerError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def default_dtype(device: torch.device) -> str:
    """fp16 on CUDA (what SD checkpoints are deployed in), fp32 on CPU."""
    return "float16" if device.type == "cuda" else "float32"


def check_dtype(name: str | None, device: torch.device, cuda=None) -> torch.dtype:
    """torch dtype for `name` on `device`; TunerError when the device cannot run it. `cuda` replaces
    `torch.cuda` (tests)."""
    name = name or default_dtype(device)
    if name not in DTYPES:
        raise TunerError(f"model.dtype={name!r}: use one of {', '.join(DTYPES)}")
    if device.type == "cpu" and name == "float16":
        raise TunerError("model.dtype='float16' cannot run on the CPU (half-precision convolutions are missing "
                         "or emulated there); use float32 or bfloat16, or device = \"cuda\"")
    if device.type == "cuda" and name == "bfloat16":
        cuda = cuda or torch.cuda
        with cuda.device(device):  # asked of the chosen GPU (is_bf16_supported reads the current one)
            supported = cuda.is_bf16_supported()
        if not supported:
            raise TunerError(f"model.dtype='bfloat16': this GPU ({cuda.get_device_name(device)}) has no bfloat16 "
                             "support; use float16")
    return DTYPES[name]

"""Weights are data, never code: every weights file a user, a study or a config names is read here first.

`torch.load` without `weights_only=True` unpickles, and a pickle can run any code while it loads; so a
config shared "for other tools" could run code on whoever evaluates it. Here a file is read with
safetensors (.safetensors) or `torch.load(weights_only=True)`, which rebuilds tensors and plain
containers only, and must hold a flat {name: tensor} mapping. Libraries (torch-fidelity, transformers,
diffusers) are then handed the verified tensors, or are only pointed at files this module has read.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from tuner.errors import TunerError

SAFETENSORS = ".safetensors"


def describe_path(path: Path, what: str) -> TunerError | None:
    """Why `path` cannot be read as a file (None when it can): a folder or a device is not "not found"."""
    if not path.exists():
        return TunerError(f"{what}: file not found: {path}")
    if path.is_dir():
        return TunerError(f"{what}: {path} is a folder, not a file")
    if not path.is_file():
        return TunerError(f"{what}: {path} is not a regular file")
    return None


def load_tensors(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """{name: tensor} from a safetensors file or a tensors-only torch file; anything else is refused in one
    line, and nothing in the file is executed."""
    p = Path(path)
    problem = describe_path(p, what)
    if problem is not None:
        raise problem
    if p.name.endswith(SAFETENSORS):
        from safetensors.torch import load_file

        try:
            state = load_file(str(p))
        except Exception as e:  # safetensors raises several types for corrupt or foreign files
            raise TunerError(f"{what}: {p} is corrupt or not a safetensors file ({type(e).__name__})") from None
    else:
        try:
            state = _torch_load(p)
        except Exception as e:  # UnpicklingError for code in the pickle; others for truncated files
            raise TunerError(f"{what}: {p} is not a file of plain tensors ({type(e).__name__}); refused: a pickle "
                             "can run code when loaded (convert it with `torch.load` on a trusted machine and "
                             "`safetensors.torch.save_file`)") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise TunerError(f"{what}: {p} does not hold a {{name: tensor}} state dict")
    return dict(state)


def _torch_load(p: Path):
    try:  # memory-mapped: a multi-GB .bin is checked without being read into memory twice
        return torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):  # files of the legacy (non-zip) format cannot be mapped
            raise
    return torch.load(str(p), map_location="cpu", weights_only=True)


def check_tensors_file(path: str | Path, what: str) -> None:
    """Read a weights file as plain tensors (see load_tensors) and drop the result."""
    load_tensors(path, what)


def as_buffer(state: dict[str, torch.Tensor]) -> io.BytesIO:
    """The verified tensors as an in-memory torch file, for a library that only takes a path to
    `torch.load` (torch-fidelity): it then reads what this process wrote, not the user's file."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf

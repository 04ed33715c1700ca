"""`[model] compile = true`: a study's model runs its U-Net through `torch.compile`, as GPU users deploy.

The model keeps its plain U-Net as `model.unet` (what methods patch, what MACs are counted and facts are
read on); only the call path goes through the compiled wrapper (`pipe.unet` of a diffusers pipeline, the
proxy pipeline's `compiled_unet`). Every apply and remove rebuilds the compiled graph
(tuner.methods.compiled), so a compiled study pays one compilation per trial and per baseline timing
block, outside the timed calls (tuner.scoring times compiled models in blocks, warm-up first).

On the CPU, inductor (the default backend) needs a C++ compiler; `backend = "eager"` or `"aot_eager"`
exercise dynamo alone (tests, machines without one).
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import torch

from tuner.errors import TunerError

BACKENDS = ("inductor", "eager", "aot_eager", "cudagraphs")


def parse_compile(value) -> str | None:
    """`[model] compile`: true (inductor), false, or a backend name -> the backend, or None."""
    if value is None or value is False:
        return None
    if value is True:
        return "inductor"
    if isinstance(value, str) and value in BACKENDS:
        return value
    raise TunerError(f"model.compile={value!r}: use true, false or a torch.compile backend ({', '.join(BACKENDS)})")


def check_backend(backend: str, device: torch.device) -> None:
    """Inductor on the CPU compiles C++: refuse it in one line when no compiler is installed."""
    if backend == "inductor" and device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")
                                                               or shutil.which("clang++")):
        raise TunerError("model.compile: inductor on the CPU needs a C++ compiler (g++ or clang++), and none is on "
                         "PATH; install one, or use compile = \"eager\" / \"aot_eager\"")


def compile_model(model, backend: str):
    """Route `model`'s U-Net calls through torch.compile(backend); returns the model."""
    check_backend(backend, model.device)
    compiled = torch.compile(model.unet, backend=backend)
    if getattr(model, "kind", "proxy") == "proxy":
        model.compiled_unet = compiled
    else:
        model.pipe.unet = compiled
    model.compiled = backend
    return model


def is_compiled_model(model) -> bool:
    return getattr(model, "compiled", None) is not None


@contextmanager
def uncompiled(model):
    """Within: the model calls its plain U-Net (hooks that count MACs are seen; nothing recompiles)."""
    if not is_compiled_model(model):
        yield model
        return
    if getattr(model, "kind", "proxy") == "proxy":
        saved, model.compiled_unet = model.compiled_unet, None
        try:
            yield model
        finally:
            model.compiled_unet = saved
    else:
        saved, model.pipe.unet = model.pipe.unet, model.unet
        try:
            yield model
        finally:
            model.pipe.unet = saved

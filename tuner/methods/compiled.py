"""`torch.compile`d U-Nets: find the module behind the wrapper, and make the compiled code see a patch.

`torch.compile(unet)` returns an `OptimizedModule` whose `_orig_mod` is the U-Net; tuner patches that
module (hooks, swapped layers), never the wrapper. Dynamo does not guard on a module's hooks
(`torch._dynamo.config.skip_nnmodule_hook_guards`), so code compiled before a patch would keep running
the unpatched graph: after apply and after remove we drop the compiled code with `torch._dynamo.reset()`,
and the next call recompiles (the cost of one compilation, said once in a warning and in the handle's
info). The reset is process-wide: other compiled modules recompile too, at their next call.
"""

from __future__ import annotations

import warnings

import torch

from tuner.denoiser import unwrap  # noqa: F401  (where the wrapper is seen through; used by the methods)

REBUILT = "compiled U-Net: its graph is rebuilt at the next call (torch._dynamo.reset())"


def is_compiled(target) -> bool:
    """True for a compiled U-Net, or a pipeline whose `unet` (or `denoiser`, or `compiled_unet`) is one."""
    for m in (target, getattr(target, "unet", None), getattr(target, "denoiser", None),
              getattr(target, "compiled_unet", None)):  # the proxy pipeline keeps its wrapper aside
        if m is not None and unwrap(m) is not m:
            return True
    return False


def rebuild_compiled(warn: bool = True) -> None:
    """Forget every compiled graph, so the next call of a compiled U-Net traces the patched module."""
    torch._dynamo.reset()
    if warn:
        warnings.warn(f"tuner: {REBUILT}", stacklevel=3)

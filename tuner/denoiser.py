"""Which network denoises, and what kind it is: a U-Net or a diffusion transformer (DiT).

Every place that needs "the denoiser" asks here, so the U-Net methods and the DiT methods find their
module the same way and refuse the other kind in one line:

    denoiser_of(target) -> (module, kind)      kind: "unet" | "dit"

`target` is a tuner pipeline, a diffusers pipeline (its `unet`, else its `transformer`), or the network
itself. DiTs are the diffusers transformers whose pipelines tuner runs: PixArt-α/Σ
(`PixArtTransformer2DModel`), SD3 (`SD3Transformer2DModel`) and Flux (`FluxTransformer2DModel`).
`kind_of_class(name)` answers the same from a class name (a folder's model_index.json, before loading).
"""

from __future__ import annotations

import torch

from tuner.errors import TunerError

UNET_CLASSES = ("UNet2DConditionModel",)
DIT_CLASSES = ("PixArtTransformer2DModel", "SD3Transformer2DModel", "FluxTransformer2DModel")
KINDS = ("unet", "dit")
# noise schedules of flow-matching pipelines (SD3, Flux): their solvers are not the DDPM-family schedulers
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")


def kind_of_class(name: str | None) -> str | None:
    """"unet" | "dit" for a denoiser class name tuner can patch, else None."""
    if name in UNET_CLASSES:
        return "unet"
    if name in DIT_CLASSES:
        return "dit"
    return None


def kind_of(module) -> str | None:
    """The kind of a denoiser module (by its class or a base class), else None."""
    for cls in type(module).__mro__:
        kind = kind_of_class(cls.__name__)
        if kind is not None:
            return kind
    return None


def unwrap(module):
    """The module behind `torch.compile`'s wrapper (nested wrappers too); anything else unchanged."""
    while isinstance(module, torch.nn.Module) and isinstance(getattr(module, "_orig_mod", None), torch.nn.Module):
        module = module._orig_mod
    return module


def denoiser_of(target):
    """(module, kind) of the denoiser inside `target`; TunerError when there is none tuner can patch.
    Behind `torch.compile`'s wrapper it is the module the wrapper runs (tuner.methods.compiled)."""
    target = unwrap(target)
    if kind_of(target) is not None:
        return target, kind_of(target)
    for attr in ("unet", "transformer"):
        module = unwrap(getattr(target, attr, None))
        if module is not None and kind_of(module) is not None:
            return module, kind_of(module)
    raise TunerError(f"cannot patch {type(target).__name__}: expected a denoiser ({', '.join(UNET_CLASSES + DIT_CLASSES)}) "
                     "or a pipeline with one")


def is_flow_matching(scheduler) -> bool:
    """True for a flow-matching scheduler (instance or class name): SD3's and Flux's."""
    name = scheduler if isinstance(scheduler, str) else type(scheduler).__name__
    return name in FLOW_SCHEDULERS

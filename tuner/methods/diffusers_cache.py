"""diffusers' own cache hooks (First Block Cache, Pyramid Attention Broadcast, TaylorSeer) as
tuner methods on a diffusion transformer: what every one of them shares.

Each hook method builds diffusers' config from its knobs and calls diffusers' `apply_*` on the transformer
(never `enable_cache`, which leaves a `_cache_config` attribute behind). Around that, this module:
- gives the hooks a cache context on every forward when the pipeline sets none (PixArt and SD3 call the
  transformer without `cache_context`; Flux wraps its calls in one, which is then kept), through one more
  HookRegistry hook on the transformer, outermost;
- resets the hooks' state at the start of every pipeline call, from the step context (tuner/step_context.py),
  so a cache never carries one image's features into the next call;
- tells timestep-based hooks the current timestep in training units (0..1000: Flux passes t/1000);
- removes exactly: every hook by name, then the `_diffusers_hook` registries and instance-level `forward`s
  that applying created, so every module's attributes are what they were.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook

from tuner.errors import TunerError
from tuner.methods.base import Handle, resolve_denoiser
from tuner.step_context import get_step_context

CONTEXT_HOOK = "tuner.cache_context"
CONTEXT_NAME = "tuner"


class _CacheContextHook(ModelHook):
    """Sets diffusers' cache context for one forward when the caller set none."""

    def __init__(self, managers: list):
        super().__init__()
        self.managers = managers

    def new_forward(self, module, *args, **kwargs):
        from diffusers.hooks.hooks import CacheContext, _set_cache_context

        if any(m._context is not None for m in self.managers):
            return self.fn_ref.original_forward(*args, **kwargs)
        _set_cache_context(module, CacheContext(CONTEXT_NAME))
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            _set_cache_context(module, None)


class _ResetPerCall:
    """Registered on the step context: a new pipeline call resets the hooks' state."""

    def __init__(self, transformer: torch.nn.Module):
        self.transformer = transformer

    def reset_state(self) -> None:
        HookRegistry.check_if_exists_or_initialize(self.transformer).reset_stateful_hooks(recurse=True)


def timestep_callback(transformer: torch.nn.Module) -> Callable[[], float]:
    """The current timestep in training units (0..1000), from the step context's last observation."""
    ctx = get_step_context(transformer)
    scale = 1000.0 if type(transformer).__name__ == "FluxTransformer2DModel" else 1.0  # Flux is called with t/1000

    def current() -> float:
        return (ctx.last_t if ctx.last_t is not None else 1000.0 / scale) * scale

    return current


def _state_managers(transformer: torch.nn.Module) -> list:
    from diffusers.hooks.hooks import StateManager

    out = []
    for m in transformer.modules():
        registry = getattr(m, "_diffusers_hook", None)
        for hook in (registry.hooks.values() if registry is not None else ()):
            out += [v for v in vars(hook).values() if isinstance(v, StateManager)]
    return out


def install_cache(target, method: str, hook_names: tuple[str, ...], apply_fn: Callable[[torch.nn.Module], None],
                  info: dict | None = None) -> Handle:
    """Run `apply_fn(transformer)` (diffusers' apply_*), add the context hook and the per-call reset;
    the handle removes all of it and what it created."""
    transformer = resolve_denoiser(target, "dit", method)
    for m in transformer.modules():
        registry = getattr(m, "_diffusers_hook", None)
        if registry is not None and any(n in registry.hooks for n in hook_names + (CONTEXT_HOOK,)):
            raise TunerError(f"method '{method}': a diffusers cache is already applied to this transformer; "
                             "remove it first")
    had = {id(m): ("_diffusers_hook" in vars(m), "forward" in vars(m)) for m in transformer.modules()}
    ctx = get_step_context(transformer)
    resetter = _ResetPerCall(transformer)
    try:
        apply_fn(transformer)
    except (ValueError, TypeError, AttributeError, NotImplementedError) as e:
        _remove(transformer, hook_names, had)
        ctx.unregister(resetter)  # detaches the step context when nothing else uses it
        raise TunerError(f"method '{method}': diffusers cannot apply it to {type(transformer).__name__} "
                         f"({str(e).splitlines()[0][:160]})") from None
    root = HookRegistry.check_if_exists_or_initialize(transformer)
    root.invalidate_child_registries_cache()
    root.register_hook(_CacheContextHook(_state_managers(transformer)), CONTEXT_HOOK)
    ctx.register(resetter)

    def undo():
        ctx.unregister(resetter)
        _remove(transformer, hook_names, had)

    return Handle(method, undo=[undo], info=dict(info or {}))


def _remove(transformer: torch.nn.Module, hook_names: tuple[str, ...], had: dict) -> None:
    root = HookRegistry.check_if_exists_or_initialize(transformer)
    for name in (CONTEXT_HOOK,) + hook_names:
        root.remove_hook(name, recurse=True)
    for m in transformer.modules():
        registry_before, forward_before = had.get(id(m), (False, False))
        registry = vars(m).get("_diffusers_hook")
        if registry is not None:
            registry._child_registries_cache = None
            if not registry.hooks and not forward_before:  # remove_hook leaves the bound forward behind
                m.__dict__.pop("forward", None)
            if not registry.hooks and not registry_before:
                del m._diffusers_hook

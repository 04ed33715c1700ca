"""Per-call state shared by the keyframe methods (DeepCache, FRDiff), and their block hooks' plumbing.

`KeyframeCache` watches every U-Net forward (a pre-hook that runs after the step context's own, so the
step is already advanced) and decides once per forward whether it runs in full (`full`) or reuses what the
last full forward saved. Saved tensors are keyed by the forward's slot within its step: a pipeline that
splits classifier-free guidance into two forwards per step gets one cache per branch, never the other
branch's features. A forward whose input shape differs from the one its slot saved at (another batch
size) runs in full. Everything is cleared by `reset_state()`, which the step context calls at the start
of every pipeline call.

The number of steps of a call (non-uniform keyframes, FRDiff's mixing weight) comes from the step context
when the pipeline announced its timesteps (tuner pipelines do). A diffusers pipeline does not; it sets its
scheduler's timesteps before the first U-Net forward of each call, so `steps_source` gives a reader of
`pipe.scheduler.timesteps` (read through the pipeline, so a swapped scheduler is still seen) and the cache
calls it once per call, at that first forward. Targets that can say neither are refused at apply time.

Block hooks use diffusers' `HookRegistry` (forward replacement with a clean removal), one name per method.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook

from tuner.errors import TunerError
from tuner.step_context import get_step_context


class KeyframeCache:
    def __init__(self, unet: torch.nn.Module, is_keyframe: Callable[[int, int | None], bool],
                 steps_source: Callable[[], int | None] | None = None):
        self.unet = unet
        self.ctx = get_step_context(unet)  # attached first, so its pre-hook runs before ours
        self._is_keyframe = is_keyframe
        self._steps_source = steps_source
        self.reset_state()

    def reset_state(self) -> None:
        self._saved: dict[tuple[int, str], object] = {}
        self._slot_shapes: dict[int, tuple[int, ...]] = {}
        self._last_step: int | None = None
        self.slot = 0  # index of the current forward within its step
        self.full = True  # this forward runs in full (keyframe, or nothing usable saved for it)
        self._call_steps: int | None = None  # the call's step count from `steps_source`, read once per call

    @property
    def step(self) -> int:
        return self.ctx.step

    @property
    def num_steps(self) -> int | None:
        n = self.ctx.num_steps
        return n if n is not None else self._call_steps

    def begin_forward(self, sample: torch.Tensor) -> None:
        step = self.ctx.step
        if self._last_step is None and self._steps_source is not None and self.ctx.num_steps is None:
            self._call_steps = self._steps_source()  # first forward of this call
        self.slot = self.slot + 1 if step == self._last_step else 0
        self._last_step = step
        shape = tuple(sample.shape)
        self.full = self._is_keyframe(step, self.num_steps) or self._slot_shapes.get(self.slot) != shape
        if self.full:
            self._slot_shapes[self.slot] = shape

    def save(self, name: str, value) -> None:
        self._saved[(self.slot, name)] = value

    def load(self, name: str):
        return self._saved[(self.slot, name)]

    def attach(self) -> Callable[[], None]:
        """Start watching U-Net forwards; returns the undo."""

        def pre_hook(module, args, kwargs):
            self.begin_forward(kwargs.get("sample", args[0] if args else None))

        # opaque to torch.compile (Python step bookkeeping): one graph break per forward, no recompiles
        handle = self.unet.register_forward_pre_hook(torch.compiler.disable(pre_hook), with_kwargs=True)
        self.ctx.register(self)

        def undo():
            handle.remove()
            self.ctx.unregister(self)
            self.reset_state()  # drop the saved tensors

        return undo


def steps_source(target, method: str, what: str, needed: bool) -> Callable[[], int | None] | None:
    """How a keyframe method learns each call's number of steps on `target` (see the module docstring).
    None when the target announces it itself (tuner pipeline) or when it is a bare U-Net (the caller
    drives the steps and announces them with `get_step_context(unet).begin(timesteps)`)."""
    from diffusers import UNet2DConditionModel

    from tuner.methods.diffusers_schedule import is_diffusers_pipeline
    from tuner.pipeline import ProxyPipeline

    if isinstance(target, (ProxyPipeline, UNet2DConditionModel)):
        return None
    if is_diffusers_pipeline(target):
        def read() -> int | None:
            timesteps = getattr(target.scheduler, "timesteps", None)
            return len(timesteps) if timesteps is not None else None

        return read
    if needed:
        raise TunerError(f"method '{method}': {what} needs the number of steps, which a "
                         f"{type(target).__name__} does not tell; use a tuner or diffusers pipeline")
    return None


def install_hooks(pairs: list[tuple[torch.nn.Module, ModelHook]], name: str, method: str) -> Callable[[], None]:
    """Register `hook` on each module under `name`; returns the undo (removes them all)."""
    for module, _ in pairs:
        existing = getattr(module, "_diffusers_hook", None)
        if existing is not None and existing.get_hook(name) is not None:
            raise TunerError(f"method '{method}' is already applied to this U-Net; remove it first")
    done: list[torch.nn.Module] = []
    created: set[int] = set()  # modules whose registry (and instance-level forward) we made

    def undo():
        for module in reversed(done):
            registry = module._diffusers_hook
            registry.remove_hook(name, recurse=False)
            if not registry.hooks and id(module) in created:  # leave the module exactly as it was
                del module._diffusers_hook
                module.__dict__.pop("forward", None)
        done.clear()

    try:
        for module, hook in pairs:
            if getattr(module, "_diffusers_hook", None) is None and "forward" not in module.__dict__:
                created.add(id(module))
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
            done.append(module)
    except BaseException:
        undo()
        raise
    return undo


def output_sample(out) -> torch.Tensor:
    """The tensor of a diffusers model output (dataclass with `.sample`, or a tuple)."""
    return out[0] if isinstance(out, tuple) else out.sample


def like_output(out_cls, sample: torch.Tensor, return_dict: bool):
    """Wrap `sample` the way the hooked module would have returned it."""
    return out_cls(sample=sample) if return_dict else (sample,)

"""The one place the current denoising step comes from.

A forward pre-hook on the U-Net observes the timestep and input of every call. The step index counts model
calls: it advances when the timestep changes, or when it repeats with another input (Heun evaluates most
timesteps twice, on different latents), while a second forward on the same input at the same timestep
(classifier-free guidance split into two forwards) stays in its step. A timestep higher than the
previous one starts a new pipeline call, which resets every stateful hook.
Our own pipeline also calls `begin()` explicitly with its timestep list, so the reset never depends on
guessing; diffusers pipelines get the same behaviour through the observation alone.
We never look the step up with `timesteps.index(t)`: a timestep list may repeat values or be edited.
"""

from __future__ import annotations

import weakref
from typing import Protocol, Sequence

import torch


class Stateful(Protocol):
    def reset_state(self) -> None: ...


class StepContext:
    def __init__(self) -> None:
        self.step = -1  # index of the step being run; -1 before the first U-Net call of a pipeline call
        self.timesteps: list[int] | None = None  # the call's timestep list, when the pipeline told us
        self.last_t: float | None = None
        self._last_sample: torch.Tensor | None = None  # the last forward's input (same step when reused)
        self._stateful: list[Stateful] = []
        self.pinned = False  # a pipeline that owns the context keeps it attached
        self.detach = None  # removes the context from its U-Net

    # --- lifecycle -------------------------------------------------------------------------------
    def register(self, hook: Stateful) -> None:
        if hook not in self._stateful:
            self._stateful.append(hook)

    def unregister(self, hook: Stateful) -> None:
        if hook in self._stateful:
            self._stateful.remove(hook)
        if not self._stateful and not self.pinned and self.detach is not None:
            self.detach()  # the last method is gone: the U-Net is left exactly as before

    def begin(self, timesteps: Sequence[int] | None = None) -> None:
        """Start a pipeline call: reset every hook's state."""
        self.step = -1
        self.last_t = None
        self._last_sample = None
        self.timesteps = [int(t) for t in timesteps] if timesteps is not None else None
        for hook in self._stateful:
            hook.reset_state()

    def observe(self, t: float, sample: torch.Tensor | None = None) -> None:
        """Called once per U-Net forward with the (scalar) timestep and the input sample."""
        if self.last_t is not None and t == self.last_t and self._same_input(sample):
            return  # same step (e.g. CFG split into two forwards)
        self._last_sample = sample
        if self.last_t is not None and t > self.last_t:
            self.begin(None)  # timestep went up: a new pipeline call that did not announce itself
        elif self.last_t is None and self.step >= 0:
            self.begin(None)
        self.step += 1
        self.last_t = t

    def _same_input(self, sample) -> bool:
        last = self._last_sample
        if sample is None or last is None or sample is last:
            return True
        return sample.shape == last.shape and torch.equal(sample, last)

    @property
    def num_steps(self) -> int | None:
        return len(self.timesteps) if self.timesteps is not None else None


def _scalar_timestep(args, kwargs) -> float:
    t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
    if t is None:
        raise RuntimeError("U-Net called without a timestep")
    if torch.is_tensor(t):
        t = t.flatten()[0].item() if t.numel() else 0.0
    return float(t)


def get_step_context(unet: torch.nn.Module, pin: bool = False) -> StepContext:
    """The U-Net's step context, attached on first use (one per U-Net). It detaches itself when the last
    method using it is removed, unless a pipeline pinned it."""
    ctx = _CONTEXTS.get(unet)
    if ctx is None:
        ctx = StepContext()

        def _pre_hook(module, args, kwargs):
            sample = kwargs.get("sample", kwargs.get("hidden_states"))  # a U-Net's input, or a DiT's
            ctx.observe(_scalar_timestep(args, kwargs), sample if sample is not None else (args[0] if args else None))

        # Opaque to torch.compile: reading the timestep is a host sync (`.item()`) and the step counter a
        # Python int, so tracing it would break the graph anyway and recompile at every step; disabled, it
        # costs one graph break per U-Net forward and no recompilation.
        handle = unet.register_forward_pre_hook(torch.compiler.disable(_pre_hook), with_kwargs=True)
        _CONTEXTS[unet] = ctx

        def detach():
            handle.remove()
            _CONTEXTS.pop(unet, None)

        ctx.detach = detach
    ctx.pinned |= pin
    return ctx


_CONTEXTS: "weakref.WeakKeyDictionary[torch.nn.Module, StepContext]" = weakref.WeakKeyDictionary()

"""One pipeline call's reverse process on a tuner pipeline: the model-call timesteps, the input scaling
and the update, for a `tuner.solvers.Solver`.

    run = start_run(solver, noise_scheduler, count=20)          # or timesteps=[...]
    x = x * run.init_noise_sigma
    for t in run.timesteps:                                       # one entry per model call
        eps = model(run.scale(x, t), t)
        x = run.step(eps, t, x, generators)

`TunerRule` is tuner's DDIM/DDPM update (any descending list, Li & Yan exact); `SchedulerRule` drives the
diffusers scheduler object, as a diffusers pipeline's loop does (Heun's list has two entries per step).
"""

from __future__ import annotations

import torch

from tuner.solvers import Solver, TUNER_RULES, ddpm_coefficients, make_scheduler, per_image_noise, set_schedule


class TunerRule:
    """DDIM (η=0) or DDPM (baseline / liyan coefficients) on ᾱ (float64, read as Python floats for DDPM so
    the math is the same on any device)."""

    init_noise_sigma = 1.0

    def __init__(self, alphas_cumprod: torch.Tensor, timesteps: list[int], name: str = "ddim",
                 coefficients: str = "baseline", clip_sample: bool = False):
        self.alphas_cumprod = alphas_cumprod
        self.timesteps = list(timesteps)
        self.name, self.coefficients, self.clip_sample = name, coefficients, clip_sample
        self._prev = {t: (self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1)
                      for i, t in enumerate(self.timesteps)}

    def alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def scale(self, x: torch.Tensor, t: int) -> torch.Tensor:
        return x

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor, generators=None, t_prev: int | None = None):
        t_prev = self._prev[int(t)] if t_prev is None else t_prev
        if self.name == "ddim":
            return self._ddim(x, eps, t, t_prev)
        return self._ddpm(x, eps, t, t_prev, generators)

    def _ddim(self, x, eps, t, t_prev):
        # Same operations, in the same order, as diffusers' DDIMScheduler.step with eta=0.
        a_t = self.alphas_cumprod[t].to(x.dtype)
        a_prev = (self.alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)).to(x.dtype)
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        if self.clip_sample:
            x0 = x0.clamp(-1, 1)
        return a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps

    def _ddpm(self, x, eps, t, t_prev, generators):
        a_bar_t = self.alpha_bar(t)
        alpha, eta, var = ddpm_coefficients(a_bar_t, self.alpha_bar(t_prev), self.coefficients)
        score = -eps / (1.0 - a_bar_t) ** 0.5
        out = x + eta * score
        if var > 0:
            out = out + var**0.5 * per_image_noise(x.shape, generators, x.device, x.dtype)
        return out / alpha**0.5


class SchedulerRule:
    """A diffusers scheduler, set for this call, stepped the way a diffusers pipeline's loop steps it: with its
    own timestep tensors (Euler's are floats; Karras sigmas make them non-integer), in order."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self._raw = list(scheduler.timesteps)
        self.timesteps = [t.item() for t in self._raw]  # what the U-Net is called with (same values)
        self.init_noise_sigma = float(scheduler.init_noise_sigma)
        self._takes_generator = "generator" in _step_parameters(scheduler)
        self._i = 0

    def scale(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.scheduler.scale_model_input(x, self._raw[self._i])

    def step(self, eps: torch.Tensor, t, x: torch.Tensor, generators=None) -> torch.Tensor:
        extra = {"generator": generators} if self._takes_generator and generators is not None else {}
        out = self.scheduler.step(eps, self._raw[self._i], x, **extra).prev_sample  # randn_tensor takes a list
        self._i += 1
        return out


def _step_parameters(scheduler) -> tuple:
    import inspect

    return tuple(inspect.signature(scheduler.step).parameters)


def start_run(solver: Solver, noise_scheduler, count: int | None = None, timesteps: list[int] | None = None,
              cache: dict | None = None):
    """The rule of `solver` set for one call of `count` steps or on `timesteps` (a descending list).
    `cache` keeps one scheduler object per solver between calls (set_timesteps resets its state)."""
    if solver.name in TUNER_RULES:
        if timesteps is None:  # the list the model's scheduler makes for this count, at the solver's spacing
            probe = make_scheduler(noise_scheduler.config, Solver("ddim", spacing=solver.spacing))
            probe.set_timesteps(count)
            timesteps = [int(t) for t in probe.timesteps]
        return TunerRule(noise_scheduler.alphas_cumprod.double(), timesteps, solver.name, solver.coefficients,
                         bool(noise_scheduler.config.clip_sample))
    scheduler = cache.get(solver) if cache is not None else None
    if scheduler is None:
        scheduler = make_scheduler(noise_scheduler.config, solver)
        if cache is not None:
            cache[solver] = scheduler
    set_schedule(scheduler, count, timesteps)
    return SchedulerRule(scheduler)

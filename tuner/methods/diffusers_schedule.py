"""The pipeline-level methods (timesteps, sampler) on a diffusers pipeline, through its scheduler.

A tuner pipeline runs its own reverse step on any timestep list; a diffusers pipeline runs whatever its
`scheduler` says, so here the methods act on the scheduler and never on the pipeline's `__call__`:
- timesteps: the scheduler instance's `set_timesteps` is wrapped to install the list. Schedulers whose
  `set_timesteps` accepts `timesteps=` (DDPM, Euler, DPM-Solver++) take a list when their own
  `set_timesteps(timesteps=...)` does (probed on a copy at apply time: e.g. Karras sigmas refuse custom
  lists); count-only schedulers (DDIM) compute the previous step as t - T/n, so they accept only the list
  they would make themselves for that count. PNDM's own lists repeat a timestep, so it takes none.
  Anything else is refused at apply time rather than run wrongly. Without a `sampler` entry the list runs
  with the pipeline's own scheduler (the proxy study measured it with DDIM).
- sampler: the scheduler is swapped for one with the same noise schedule. `ddim` = DDIMScheduler;
  `ddpm` + `liyan` = DDPMScheduler with `fixed_small` variance and no clipping, which is Li & Yan's design
  exactly: their update (Y + η* s + σ* Z)/√α_t has mean and variance σ*²/α_t = (1-ᾱ_prev)/(1-ᾱ_t)·(1-α_t),
  DDPM's posterior ones (tests/test_diffusers_schedule.py checks both). `ddpm` + `baseline`
  (η = σ² = 1-α_t) matches no diffusers scheduler and is refused.
"""

from __future__ import annotations

import copy
import inspect

from tuner.errors import TunerError
from tuner.methods.base import Handle


def is_diffusers_pipeline(target) -> bool:
    from diffusers import DiffusionPipeline

    return isinstance(target, DiffusionPipeline) and getattr(target, "scheduler", None) is not None


def _takes_custom_timesteps(scheduler) -> bool:
    return "timesteps" in inspect.signature(scheduler.set_timesteps).parameters


def apply_timesteps(pipe, timesteps: list[int]) -> Handle:
    scheduler = pipe.scheduler
    ts = [int(t) for t in timesteps]
    original = scheduler.set_timesteps  # the bound method of this instance's class
    if _takes_custom_timesteps(scheduler):
        try:
            copy.deepcopy(scheduler).set_timesteps(timesteps=ts)
        except (ValueError, TypeError, NotImplementedError) as e:
            raise TunerError(f"method 'timesteps': {type(scheduler).__name__} refuses this timestep list "
                             f"({str(e).splitlines()[0][:160]})") from None

        def set_timesteps(num_inference_steps=None, device=None, **kwargs):
            kwargs.pop("timesteps", None)
            return original(device=device, timesteps=ts)
    else:
        probe = copy.deepcopy(scheduler)
        probe.set_timesteps(len(ts))
        made = [int(t) for t in probe.timesteps]
        if made != ts:
            raise TunerError(f"method 'timesteps': {type(scheduler).__name__} cannot run this timestep list "
                             f"(for {len(ts)} steps it makes {made[:4]}...); use a scheduler whose set_timesteps "
                             "accepts timesteps= (DDPM, Euler, DPM-Solver++) or a tuner pipeline")

        def set_timesteps(num_inference_steps=None, device=None, **kwargs):
            return original(len(ts), device=device, **kwargs)

    scheduler.set_timesteps = set_timesteps  # instance attribute: shadows the class method until removed

    def restore():
        if scheduler.__dict__.get("set_timesteps") is set_timesteps:
            del scheduler.set_timesteps

    return Handle("timesteps", undo=[restore], info={"num_steps": len(ts)})


def apply_sampler(pipe, name: str, coefficients: str) -> Handle:
    from diffusers import DDIMScheduler, DDPMScheduler

    previous = pipe.scheduler
    if name == "ddim":
        scheduler = DDIMScheduler.from_config(previous.config)
    elif coefficients == "liyan":
        scheduler = DDPMScheduler.from_config(previous.config, variance_type="fixed_small", clip_sample=False,
                                              thresholding=False)
    else:
        raise TunerError("method 'solver': DDPM with the baseline coefficients (eta = sigma^2 = 1 - alpha_t) has no "
                         "diffusers scheduler; use coefficients 'liyan' (DDPMScheduler, fixed_small) or a tuner pipeline")
    pipe.scheduler = scheduler

    def restore():
        pipe.scheduler = previous

    return Handle("solver", undo=[restore], info={"solver": name if name == "ddim" else f"ddpm-{coefficients}",
                                                   "scheduler": type(scheduler).__name__})

"""The pipeline-level methods (timesteps, solver) on a diffusers pipeline, through its scheduler.

A tuner pipeline runs its own reverse loop; a diffusers pipeline runs whatever its `scheduler` says, so here
the methods act on the scheduler and never on the pipeline's `__call__`:
- timesteps: the scheduler instance's `set_timesteps` is wrapped to install a step count (at the
  scheduler's own spacing) or a list. Schedulers whose `set_timesteps` accepts `timesteps=` (DDPM, Euler,
  Heun, DPM-Solver++) take a list when their own `set_timesteps(timesteps=...)` does (probed on a copy at
  apply time: e.g. Karras sigmas refuse custom lists); count-only schedulers (DDIM, PNDM, UniPC, DEIS)
  accept only the list they would make themselves for that count (repeats removed: PNDM's PLMS warm-up
  repeats one). Anything else is refused at apply time rather than run wrongly.
- solver: the scheduler is swapped for the named one on the same noise schedule (tuner.solvers.make_scheduler).
  `ddpm` + `liyan` = DDPMScheduler with `fixed_small` variance and no clipping, which is Li & Yan's design
  exactly: their update (Y + η* s + σ* Z)/√α_t has mean and variance σ*²/α_t = (1-ᾱ_prev)/(1-ᾱ_t)·(1-α_t),
  DDPM's posterior ones (tests/test_diffusers_schedule.py checks both). `ddpm` + `baseline`
  (η = σ² = 1-α_t) matches no diffusers scheduler and is refused.
"""

from __future__ import annotations

import copy

from tuner.errors import TunerError
from tuner.methods.base import Handle
from tuner.solvers import make_scheduler, takes_custom_timesteps


def is_diffusers_pipeline(target) -> bool:
    from diffusers import DiffusionPipeline

    return isinstance(target, DiffusionPipeline) and getattr(target, "scheduler", None) is not None


def own_timesteps(scheduler, count: int) -> list[int]:
    """The distinct timesteps, descending, that `scheduler` runs for `count` steps (PNDM's PLMS warm-up
    repeats one; second-order schedulers visit some twice): what a user model's `timesteps` family
    proposes, so every scheduler can run it."""
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(count)
    return sorted({int(t) for t in probe.timesteps}, reverse=True)


def apply_steps(pipe, count: int) -> Handle:
    """Every later call runs `count` steps (at the scheduler's own spacing), whatever num_inference_steps says."""
    scheduler = pipe.scheduler
    original = scheduler.set_timesteps

    def set_timesteps(num_inference_steps=None, device=None, timesteps=None, sigmas=None, **kwargs):
        # timesteps/sigmas are named so pipelines that check the signature (Flux) may pass them; both dropped
        return call_set_timesteps(original, count, device, kwargs)

    return _install(scheduler, set_timesteps, count)


def call_set_timesteps(original, count: int, device, kwargs: dict):
    """`original(count, ...)` without the schedule the pipeline computed for its own count (a list of
    timesteps or sigmas: Flux passes linspace sigmas) and without keywords `original` does not take (a
    scheduler swapped in under a pipeline that passes `mu`)."""
    import inspect

    takes = inspect.signature(original).parameters
    kept = {k: v for k, v in kwargs.items() if k not in ("timesteps", "sigmas") and k in takes}
    return original(count, device=device, **kept)


def _install(scheduler, set_timesteps, num_steps: int) -> Handle:
    scheduler.set_timesteps = set_timesteps  # instance attribute: shadows the class method until removed

    def restore():
        if scheduler.__dict__.get("set_timesteps") is set_timesteps:
            del scheduler.set_timesteps

    return Handle("timesteps", undo=[restore], info={"num_steps": num_steps})


def apply_timesteps(pipe, timesteps: list[int]) -> Handle:
    scheduler = pipe.scheduler
    ts = [int(t) for t in timesteps]
    original = scheduler.set_timesteps  # the bound method of this instance's class
    if takes_custom_timesteps(scheduler):
        try:
            copy.deepcopy(scheduler).set_timesteps(timesteps=ts)
        except (ValueError, TypeError, NotImplementedError) as e:
            raise TunerError(f"method 'timesteps': {type(scheduler).__name__} refuses this timestep list "
                             f"({str(e).splitlines()[0][:160]})") from None

        def set_timesteps(num_inference_steps=None, device=None, **kwargs):
            kwargs.pop("timesteps", None)
            return original(device=device, timesteps=ts)
    else:
        made = own_timesteps(scheduler, len(ts))
        if made != ts:
            raise TunerError(f"method 'timesteps': {type(scheduler).__name__} cannot run this timestep list "
                             f"(for {len(ts)} steps it makes {made[:4]}...); use a scheduler whose set_timesteps "
                             "accepts timesteps= (DDPM, Euler, Heun, DPM-Solver++), a step count, or a tuner pipeline")

        def set_timesteps(num_inference_steps=None, device=None, **kwargs):
            return original(len(ts), device=device, **kwargs)

    return _install(scheduler, set_timesteps, len(ts))


def apply_solver(pipe, solver) -> Handle:
    """`pipe.scheduler` becomes `solver`'s scheduler (tuner.solvers.Solver) on the same noise schedule."""
    from tuner.denoiser import is_flow_matching

    previous = pipe.scheduler
    if is_flow_matching(previous):
        raise TunerError(f"method 'solver': {type(previous).__name__} is a flow-matching schedule; its solvers are "
                         "the method 'flow_solver'")
    scheduler = make_scheduler(previous.config, solver)
    pipe.scheduler = scheduler

    def restore():
        pipe.scheduler = previous

    return Handle("solver", undo=[restore], info={"solver": solver.label(), "scheduler": type(scheduler).__name__})

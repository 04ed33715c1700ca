"""The solver of a flow-matching pipeline (SD3, Flux), registered as `flow_solver`: the `solver` family's
member for models trained on flow matching, where the DDPM-family schedulers of `solver` do not apply.

    euler        FlowMatchEulerDiscreteScheduler (SD3's and Flux's own) at a static `shift`
    dpmsolver++  DPMSolverMultistepScheduler 2M with flow sigmas (prediction_type="flow_prediction")
    unipc        UniPCMultistepScheduler (order 2) with flow sigmas

`shift` is the flow-matching time shift σ' = sσ / (1 + (s-1)σ) (SD3 trains at 3.0; Flux shifts by the
image's token count, "dynamic shifting"): a fixed shift replaces the dynamic one, so searching it also
searches Flux's. The scheduler is swapped on the pipeline (put back on remove), built from the pipeline's
scheduler config, and its `set_timesteps` adapted to what the pipeline passes: Flux hands linspace
`sigmas` for its step count, which a multistep scheduler does not take, so they become that count.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.methods.base import Handle, MethodConfig, register_method
from tuner.methods.diffusers_schedule import is_diffusers_pipeline
from tuner.methods.knobs import knob

FLOW_SOLVERS = ("euler", "dpmsolver++", "unipc")
CLASSES = {"euler": "FlowMatchEulerDiscreteScheduler", "dpmsolver++": "DPMSolverMultistepScheduler",
           "unipc": "UniPCMultistepScheduler"}


@register_method("flow_solver", order=10, family="solver", default_space=True)
@dataclass
class FlowSolverConfig(MethodConfig):
    """The solver of a flow-matching pipeline (SD3, Flux): Euler, DPM-Solver++ 2M or UniPC on flow sigmas, at a shift."""

    name: str = knob("euler", choices=FLOW_SOLVERS, search=FLOW_SOLVERS, help="flow-matching solver")
    shift: float = knob(3.0, low=0.1, high=100.0, search=(1.0, 6.0),
                        help="time shift s of the sigmas (SD3: 3; replaces Flux's resolution-dependent shift)")

    search_optional = False  # a solver always runs
    denoisers = ("dit",)
    schedules = ("flow",)


def make_flow_scheduler(config, name: str, shift: float):
    import diffusers

    cls = getattr(diffusers, CLASSES[name])
    if name == "euler":
        return cls.from_config(config, shift=shift, use_dynamic_shifting=False)
    kwargs = dict(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift, solver_order=2,
                  use_dynamic_shifting=False)
    if name == "dpmsolver++":
        kwargs["algorithm_type"] = "dpmsolver++"
    return cls.from_config(config, **kwargs)


def _adapt(scheduler) -> None:
    """An instance-level `set_timesteps` taking what flow pipelines pass (sigmas -> their count)."""
    original = scheduler.set_timesteps
    takes = inspect.signature(original).parameters

    def set_timesteps(num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None, **kwargs):
        if sigmas is not None and "sigmas" not in takes:
            num_inference_steps = len(sigmas)
            sigmas = None
        kept = {k: v for k, v in kwargs.items() if k in takes}  # mu: a static shift replaced it
        if sigmas is not None:
            kept["sigmas"] = sigmas
        return original(num_inference_steps, device=device, **kept)

    scheduler.set_timesteps = set_timesteps


@FlowSolverConfig.register_apply
def apply(target, cfg: FlowSolverConfig) -> Handle:
    if not is_diffusers_pipeline(target):
        raise TunerError(f"method 'flow_solver' applies to a diffusers flow-matching pipeline, not to "
                         f"{type(target).__name__}")
    from tuner.denoiser import is_flow_matching

    previous = target.scheduler
    if not is_flow_matching(previous):
        raise TunerError(f"method 'flow_solver' needs a flow-matching pipeline (SD3, Flux); this one runs "
                         f"{type(previous).__name__} (use the method 'solver')")
    scheduler = make_flow_scheduler(previous.config, cfg.name, cfg.shift)
    _adapt(scheduler)
    target.scheduler = scheduler

    def restore():
        target.scheduler = previous

    return Handle("flow_solver", undo=[restore], info={"solver": f"flow-{cfg.name}-shift{cfg.shift:g}",
                                                       "scheduler": type(scheduler).__name__})

"""The diffusion solvers (reverse-step rules) a tuner pipeline runs, by their public names.

    ddim          tuner's DDIM rule (η=0) on any descending list: the same operations, in the same order,
                  as diffusers' DDIMScheduler.step, with the real previous timestep (DDIMScheduler assumes
                  uniform spacing, prev = t - T//n, so it cannot run the lists timestep search proposes).
    ddpm          tuner's DDPM rule with the `baseline` or Li & Yan's `liyan` coefficients (below); no
                  diffusers scheduler has the baseline ones, and Li & Yan's closed form is checked to 1e-12
                  against this code (benchmarks/liyan_check.py).
    dpmsolver++   DPMSolverMultistepScheduler (algorithm dpmsolver++, `order` 2 or 3)
    unipc         UniPCMultistepScheduler (`order` 1..3)
    deis          DEISMultistepScheduler (`order` 2 or 3)
    euler         EulerDiscreteScheduler
    heun          HeunDiscreteScheduler (two model calls per step but the last)
The last five run through the diffusers scheduler object itself (`make_scheduler` builds it from the
model's noise schedule), so a name means the same maths on the proxy and on a diffusers pipeline
(tests/test_solver.py runs both and compares). `spacing` (leading/trailing/linspace) and `karras` are
the schedulers' own `timestep_spacing` and `use_karras_sigmas`.

DDPM with Li & Yan's coefficients (arXiv 2405.14861): Y_{t-1} = (Y_t + η_t s_t(Y_t) + σ_t Z) / √α_t,
with s_t = -ε/√(1-ᾱ_t) and, for a jump t -> t_prev, α_t = ᾱ_t / ᾱ_{t_prev}.
  baseline: η_t = σ_t² = 1 - α_t
  liyan:    η_t = 1 - α_t,  σ_t² = (1 - α_t)(α_t - ᾱ_t) / (1 - ᾱ_t)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from tuner.errors import TunerError

SOLVERS = ("ddim", "ddpm", "dpmsolver++", "unipc", "deis", "euler", "heun")
SCHEDULER_CLASS = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "dpmsolver++": "DPMSolverMultistepScheduler",
                   "unipc": "UniPCMultistepScheduler", "deis": "DEISMultistepScheduler",
                   "euler": "EulerDiscreteScheduler", "heun": "HeunDiscreteScheduler"}
ORDERS = {"dpmsolver++": (2, 3), "unipc": (1, 2, 3), "deis": (2, 3)}  # multistep solvers: their solver_order
KARRAS = ("dpmsolver++", "unipc", "deis", "euler", "heun")  # schedulers with use_karras_sigmas
SPACINGS = ("leading", "trailing", "linspace")
# The warm start's solver ladder (search_spaces.space): the solvers users swap in first, best first on the
# proxy at 5-12 steps (BENCHMARKS.md, "Solvers users already run").
LADDER = (("unipc", 2), ("dpmsolver++", 2))
TUNER_RULES = ("ddim", "ddpm")  # run by tuner's own step on any list (the others by their scheduler)


@dataclass(frozen=True)
class Solver:
    """A solver by its public knobs (what the `solver` method and `[model] solver` name)."""

    name: str = "dpmsolver++"
    order: int = 2  # multistep solvers only (ORDERS)
    coefficients: str = "baseline"  # ddpm only
    spacing: str = "leading"
    karras: bool = False

    def label(self) -> str:
        extra = f"-{self.coefficients}" if self.name == "ddpm" else (f"-{self.order}" if self.name in ORDERS else "")
        return self.name + extra + ("" if self.spacing == "leading" else f"-{self.spacing}") + \
            ("-karras" if self.karras else "")


def make_scheduler(config, solver: Solver):
    """The diffusers scheduler of `solver` on the noise schedule of `config` (a scheduler's config)."""
    import diffusers

    cls = getattr(diffusers, SCHEDULER_CLASS[solver.name])
    kwargs: dict = {"timestep_spacing": solver.spacing}
    if solver.name in ORDERS:
        kwargs["solver_order"] = solver.order
    if solver.name == "dpmsolver++":
        kwargs["algorithm_type"] = "dpmsolver++"
    if solver.name == "deis":
        kwargs["algorithm_type"] = "deis"
    if solver.name in KARRAS:
        kwargs["use_karras_sigmas"] = solver.karras
    if solver.name == "ddpm":
        if solver.coefficients != "liyan":
            raise TunerError("method 'solver': DDPM with the baseline coefficients (eta = sigma^2 = 1 - alpha_t) "
                             "has no diffusers scheduler; use coefficients 'liyan' (DDPMScheduler, fixed_small) "
                             "or a tuner pipeline")
        kwargs.update(variance_type="fixed_small", clip_sample=False, thresholding=False)
    return cls.from_config(config, **kwargs)


LIST_SCHEDULERS = ("ddpm", "dpmsolver++", "euler", "heun")  # diffusers schedulers that take timesteps= (no Karras)


def runs_timestep_lists(name: str, karras: bool = False, tuner_pipeline: bool = True) -> bool:
    """Can this solver run an arbitrary descending timestep list (a TMPQ grouping)? tuner's own rules
    (ddim, ddpm) run any list on a tuner pipeline; of the schedulers, those whose `set_timesteps` takes
    `timesteps=`, and none with Karras sigmas. UniPC and DEIS run only their own spacing of a count
    (tests/test_solver.py checks this table against the schedulers themselves)."""
    if tuner_pipeline and name in TUNER_RULES:
        return True
    return name in LIST_SCHEDULERS and not karras


def takes_custom_timesteps(scheduler) -> bool:
    return "timesteps" in inspect.signature(scheduler.set_timesteps).parameters


def set_schedule(scheduler, count: int | None, timesteps: list[int] | None) -> None:
    """`scheduler.set_timesteps` for a step count, or for an explicit list where the scheduler can run one
    (a count-only scheduler runs a list only when it is the one it makes for that count)."""
    if timesteps is None:
        scheduler.set_timesteps(count)
        return
    name = type(scheduler).__name__
    if takes_custom_timesteps(scheduler):
        try:
            scheduler.set_timesteps(timesteps=list(timesteps))
            return
        except (ValueError, TypeError, NotImplementedError) as e:
            raise TunerError(f"solver: {name} refuses this timestep list ({str(e).splitlines()[0][:160]})") from None
    scheduler.set_timesteps(len(timesteps))
    made = sorted({int(t) for t in scheduler.timesteps}, reverse=True)
    if made != list(timesteps):
        raise TunerError(f"solver: {name} cannot run this timestep list (for {len(timesteps)} steps it makes "
                         f"{made[:4]}...); use a step count, or a solver that takes lists (ddim, ddpm, "
                         "dpmsolver++ without karras, euler, heun)")


def ddpm_coefficients(alpha_bar_t: float, alpha_bar_prev: float, design: str) -> tuple[float, float, float]:
    """(α_t, η_t, σ_t²) of one DDPM step for the named coefficient design."""
    alpha = alpha_bar_t / alpha_bar_prev
    eta = 1.0 - alpha
    if design == "baseline":
        var = 1.0 - alpha
    elif design == "liyan":
        var = (1.0 - alpha) * (alpha - alpha_bar_t) / (1.0 - alpha_bar_t)
    else:
        raise ValueError(f"unknown coefficient design {design!r}")
    return alpha, eta, max(var, 0.0)


def per_image_noise(shape, generators, device, dtype) -> torch.Tensor:
    """Noise drawn image by image from each image's own generator (common random numbers)."""
    if generators is None:
        return torch.randn(shape, dtype=dtype).to(device)
    one = tuple(shape[1:])
    return torch.stack([torch.randn(one, generator=g, dtype=torch.float32) for g in generators]).to(device, dtype)

"""The diffusion solver (reverse-step rule), registered as `solver`: DDIM (η=0) or DDPM with the baseline or Li & Yan coefficients.

The rules live in `tuner.sampling` (DDPM: Y_{t-1} = (Y_t + η_t s_t + σ_t Z)/√α_t; 'baseline' η=σ²=1-α,
'liyan' η*=1-α, σ*² = (1-α)(α-ᾱ_t)/(1-ᾱ_t), arXiv 2405.14861). This method only swaps the pipeline's
`sampler` for one with the chosen name and coefficients, sharing the same ᾱ table, and puts the old
one back on remove.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tuner.methods.diffusers_schedule import apply_sampler, is_diffusers_pipeline
from tuner.methods.base import Handle, MethodConfig, register_method, resolve_pipeline
from tuner.methods.knobs import knob

SOLVERS = ("ddim", "ddpm")
COEFFICIENTS = ("baseline", "liyan")


@register_method("solver", order=10, family="solver", default_space=True)  # before timesteps: it may swap the scheduler
@dataclass
class SolverConfig(MethodConfig):
    """The reverse-step rule (the diffusion solver): DDIM, or DDPM with baseline or Li & Yan coefficients."""

    name: str = knob("ddim", choices=SOLVERS, search=SOLVERS, help="reverse-step rule")
    coefficients: str = knob("baseline", choices=COEFFICIENTS, search=("solver_coefficients",), when=("name", ("ddpm",)),
                             help="DDPM noise coefficients (ddpm only; liyan = arXiv 2405.14861)")

    def check(self) -> None:
        if self.name == "ddim" and self.coefficients != "baseline":
            self._fail("coefficients apply to name 'ddpm' only (DDIM with eta=0 has no noise coefficients)")

    @classmethod
    def schema_rules(cls) -> list[dict]:
        not_ddpm = {"not": {"properties": {"name": {"const": "ddpm"}}, "required": ["name"]}}
        return [{"if": not_ddpm, "then": {"properties": {"coefficients": {"const": "baseline"}}}}]

    def is_neutral(self) -> bool:
        # DDIM is the baseline's own solver: a search that picks it emits no entry, so the config keeps
        # any pipeline's scheduler
        return self.name == "ddim"


@SolverConfig.register_apply
def apply(target, cfg: SolverConfig) -> Handle:
    cfg.validate()
    if is_diffusers_pipeline(target):
        return apply_sampler(target, cfg.name, cfg.coefficients)
    pipe = resolve_pipeline(target, "solver")
    previous = pipe.sampler

    def restore():
        pipe.sampler = previous

    pipe.sampler = dataclasses.replace(previous, name=cfg.name, coefficients=cfg.coefficients)
    return Handle("solver", undo=[restore],
                  info={"solver": cfg.name if cfg.name == "ddim" else f"ddpm-{cfg.coefficients}"})

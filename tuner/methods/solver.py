"""The diffusion solver (reverse-step rule), registered as `solver`: diffusers' schedulers by the public names
of `tuner.solvers` (ddim, ddpm with baseline/liyan coefficients, dpmsolver++, unipc, deis, euler, heun), with
their order, timestep spacing and Karras sigmas.

On a tuner pipeline this swaps `pipe.solver`; on a diffusers pipeline it swaps `pipe.scheduler` for the
named scheduler on the same noise schedule (tuner.methods.diffusers_schedule). Either is put back on remove.
A config always names its solver: the entry is never dropped as "the baseline's own", because the baseline
differs between pipelines (the proxy's DPM-Solver++ 2M, a user pipeline's own scheduler), so a config that
omitted it would run another solver elsewhere.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.methods.base import Handle, MethodConfig, register_method, resolve_pipeline
from tuner.methods.diffusers_schedule import apply_solver, is_diffusers_pipeline
from tuner.methods.knobs import knob
from tuner.solvers import KARRAS, ORDERS, SOLVERS, SPACINGS, Solver

COEFFICIENTS = ("baseline", "liyan")
ORDER_CHOICES = (1, 2, 3)
MULTISTEP = tuple(ORDERS)


@register_method("solver", order=10, family="solver", default_space=True)  # before timesteps: it may swap the scheduler
@dataclass
class SolverConfig(MethodConfig):
    """The diffusion solver (reverse-step rule): a diffusers scheduler by name, or tuner's DDIM/DDPM rules."""

    # Default search: every solver. UniPC/DPM-Solver++ at 5-10 steps beat DDIM-20 on the proxy
    # (BENCHMARKS.md, "Solvers users already run"), so the search must start from them.
    name: str = knob("dpmsolver++", choices=SOLVERS, search=SOLVERS, help="reverse-step rule (solver)")
    order: int = knob(2, choices=ORDER_CHOICES, search=(2, 3), when=("name", MULTISTEP),
                      help="multistep order (dpmsolver++: 2|3, unipc: 1..3, deis: 2|3; others: 2)")
    coefficients: str = knob("baseline", choices=COEFFICIENTS, search=("solver_coefficients",), when=("name", ("ddpm",)),
                             help="DDPM noise coefficients (ddpm only; liyan = arXiv 2405.14861)")
    # Trailing spacing was far worse on the proxy (DPM-Solver++ 2M at 5 steps: +225 % FID); searched on request.
    spacing: str = knob("leading", choices=SPACINGS, help="timestep spacing of a step count (the scheduler's "
                        "timestep_spacing); a timesteps list ignores it")
    karras: bool = knob(False, when=("name", KARRAS), help="Karras sigmas (dpmsolver++, unipc, deis, euler, heun)")

    search_optional = False  # a solver always runs: the search picks one, never "none"
    denoisers = ("unet", "dit")  # PixArt runs DPM-Solver++; flow-matching models have `flow_solver`
    schedules = ("ddpm",)
    # The DDPM coefficients a model's pipeline can run: both on tuner's own pipeline (the proxy); `prepare`
    # narrows it on a diffusers pipeline, which has no scheduler with DDPM's 'baseline' coefficients.
    unmeasured_facts = {"solver_coefficients": ("baseline", "liyan")}

    @classmethod
    def prepare(cls, study) -> dict:
        if getattr(study.pipe, "kind", "proxy") == "proxy":
            return {}
        return {"solver_coefficients": ("liyan",)}  # DDPM 'baseline' trials could only fail there

    @classmethod
    def from_dict(cls, data):
        # `name` is required: its default changed from ddim (schema 2 before issue 17) to dpmsolver++, and a
        # config must not silently change meaning, nor depend on which pipeline it lands on
        if isinstance(data, dict) and "name" not in data and set(data) <= {f.name for f in dataclasses.fields(cls)}:
            raise TunerError("method 'solver': 'name' is required (ddim, ddpm, dpmsolver++, unipc, deis, euler, heun)")
        return super().from_dict(data)

    def check(self) -> None:
        if self.name != "ddpm" and self.coefficients != "baseline":
            self._fail(f"coefficients apply to name 'ddpm' only ({self.name} has no noise coefficients)")
        if self.name in ORDERS and self.order not in ORDERS[self.name]:
            self._fail(f"order {self.order} is not one of {self.name}'s ({', '.join(map(str, ORDERS[self.name]))})")
        if self.name not in ORDERS and self.order != 2:
            self._fail(f"order applies to {', '.join(MULTISTEP)} only")
        if self.karras and self.name not in KARRAS:
            self._fail(f"karras applies to {', '.join(KARRAS)} only")

    @classmethod
    def schema_rules(cls) -> list[dict]:
        default = cls.knobs()["name"][1]

        def when_name(names, then):  # the rule for these names; an absent name is the default one
            names = list(names)
            cond = {"properties": {"name": {"enum": names}}} if default in names else \
                {"required": ["name"], "properties": {"name": {"enum": names}}}
            return {"if": cond, "then": {"properties": then}}

        others = lambda group: [n for n in SOLVERS if n not in group]  # noqa: E731
        rules = [when_name(others(("ddpm",)), {"coefficients": {"const": "baseline"}}),
                 when_name(others(MULTISTEP), {"order": {"const": 2}}),
                 when_name(others(KARRAS), {"karras": {"const": False}})]
        rules += [when_name((name,), {"order": {"enum": list(orders)}}) for name, orders in ORDERS.items()]
        return [{"required": ["name"]}] + rules

    def solver(self) -> Solver:
        return Solver(self.name, self.order, self.coefficients, self.spacing, self.karras)


@SolverConfig.register_apply
def apply(target, cfg: SolverConfig) -> Handle:
    cfg.validate()
    solver = cfg.solver()
    if is_diffusers_pipeline(target):
        return apply_solver(target, solver)
    pipe = resolve_pipeline(target, "solver")
    previous = pipe.solver

    def restore():
        pipe.solver = previous

    pipe.solver = solver
    return Handle("solver", undo=[restore], info={"solver": solver.label()})

"""Reverse-step rule: DDIM, or DDPM with the baseline or Li & Yan (arXiv 2405.14861) coefficients.

Parameters
- `sampler.name` ∈ names (default ddim, ddpm).
- `sampler.coefficients` ∈ coefficients (default baseline, liyan), only for ddpm (DDIM with η=0 has no
  noise coefficients). On a user model the default is liyan only: diffusers has no scheduler with the
  baseline coefficients, so those trials would only fail. `ddim` there keeps the model's own scheduler.

Table keys: `[space.sampler]` enabled, names, coefficients.
"""

from __future__ import annotations

from search_spaces.params import Condition, Family, Param, TableReader

NAMES = ("ddim", "ddpm")
COEFFICIENTS = ("baseline", "liyan")


class SamplerFamily(Family):
    def __init__(self, table, context):
        super().__init__()
        r = TableReader("sampler", table)
        self.enabled = r.flag("enabled", True)
        if not self.enabled:
            r.rest.clear()
            return
        names = r.choices("names", list(NAMES), NAMES)
        # a user model's DDPM runs as diffusers' DDPMScheduler, which has Li & Yan's coefficients only
        pipeline_coefficients = ["liyan"] if getattr(context, "scheduler", None) is not None else list(COEFFICIENTS)
        coefficients = r.choices("coefficients", pipeline_coefficients, COEFFICIENTS)
        r.finish()
        self.add(Param("sampler.name", "categorical", choices=names, help="reverse-step rule"))
        self.add(Param("sampler.coefficients", "categorical", choices=coefficients,
                       condition=Condition("sampler.name", ("ddpm",)), help="DDPM noise coefficients"))

    def decode(self, values: dict, num_steps: int) -> dict[str, dict]:
        if not self.enabled:
            return {}
        name = self.get(values, "sampler.name")
        if name == "ddim":  # the baseline's own sampler: no entry, so the config keeps any pipeline's scheduler
            return {}
        return {"sampler": {"name": name, "coefficients": self.get(values, "sampler.coefficients")}}


KEYS = ("sampler",)


def build(tables: dict, context) -> SamplerFamily:
    return SamplerFamily(tables["sampler"], context)

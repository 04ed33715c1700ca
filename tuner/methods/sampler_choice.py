"""Choice of reverse-step rule: DDIM (η=0) or DDPM with the baseline or Li & Yan coefficients.

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

SAMPLERS = ("ddim", "ddpm")
COEFFICIENTS = ("baseline", "liyan")


@dataclass
class SamplerConfig(MethodConfig):
    method_name = "sampler"

    name: str = "ddim"
    coefficients: str = "baseline"  # ddpm only

    def validate(self) -> None:
        if self.name not in SAMPLERS:
            self._fail(f"name must be one of {', '.join(SAMPLERS)}, got {self.name!r}")
        if self.coefficients not in COEFFICIENTS:
            self._fail(f"coefficients must be one of {', '.join(COEFFICIENTS)}, got {self.coefficients!r}")
        if self.name == "ddim" and self.coefficients != "baseline":
            self._fail("coefficients apply to name 'ddpm' only (DDIM with eta=0 has no noise coefficients)")


@register_method("sampler", SamplerConfig, order=10)  # before timesteps: it may swap the scheduler
def apply(target, cfg: SamplerConfig) -> Handle:
    cfg.validate()
    if is_diffusers_pipeline(target):
        return apply_sampler(target, cfg.name, cfg.coefficients)
    pipe = resolve_pipeline(target, "sampler")
    previous = pipe.sampler

    def restore():
        pipe.sampler = previous

    pipe.sampler = dataclasses.replace(previous, name=cfg.name, coefficients=cfg.coefficients)
    return Handle("sampler", undo=[restore],
                  info={"sampler": cfg.name if cfg.name == "ddim" else f"ddpm-{cfg.coefficients}"})

"""Reverse-step rules on any descending timestep list.

diffusers' DDIMScheduler assumes uniform spacing (prev = t - T // n), so for the arbitrary lists that
timestep search proposes we apply the same update with the real previous timestep. The noise schedule
(ᾱ) comes from the diffusers scheduler. `tests/test_sampling.py` checks the DDIM rule against
DDIMScheduler.step on its own uniform list.

DDPM with Li & Yan's coefficients (arXiv 2405.14861): Y_{t-1} = (Y_t + η_t s_t(Y_t) + σ_t Z) / √α_t,
with s_t = -ε/√(1-ᾱ_t) and, for a jump t -> t_prev, α_t = ᾱ_t / ᾱ_{t_prev}.
  baseline: η_t = σ_t² = 1 - α_t
  liyan:    η_t = 1 - α_t,  σ_t² = (1 - α_t)(α_t - ᾱ_t) / (1 - ᾱ_t)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


@dataclass
class Sampler:
    """Holds ᾱ (float64 on CPU, read as Python floats so the math is the same on any device)."""

    alphas_cumprod: torch.Tensor
    name: str = "ddim"  # ddim | ddpm
    coefficients: str = "baseline"  # ddpm only: baseline | liyan
    clip_sample: bool = True

    def alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def step(self, x: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
             generators: list[torch.Generator] | None = None) -> torch.Tensor:
        if self.name == "ddim":
            return self._ddim(x, eps, t, t_prev)
        if self.name == "ddpm":
            return self._ddpm(x, eps, t, t_prev, generators)
        raise ValueError(f"unknown sampler {self.name!r}")

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


def per_image_noise(shape, generators, device, dtype) -> torch.Tensor:
    """Noise drawn image by image from each image's own generator (common random numbers)."""
    if generators is None:
        return torch.randn(shape, dtype=dtype).to(device)
    one = tuple(shape[1:])
    return torch.stack([torch.randn(one, generator=g, dtype=torch.float32) for g in generators]).to(device, dtype)

"""A small class-conditional pipeline around the proxy U-Net.

Written for this project (not a copy of a diffusers `__call__`): per-image seeds so that every candidate
sees the same noise as the baseline (common random numbers), batched classifier-free guidance, and the
reverse-step rules of `tuner.sampling` on any descending timestep list. Methods reach it only through
the attributes `timesteps_override` and `sampler`, and the U-Net's step context.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from tuner.sampling import Sampler, per_image_noise
from tuner.step_context import get_step_context

DEFAULT_STEPS = 50


class ProxyPipeline:
    def __init__(self, unet, class_encoder, scheduler, guidance_scale: float = 2.0, batch_size: int = 32):
        self.unet = unet
        self.class_encoder = class_encoder
        self.scheduler = scheduler
        self.guidance_scale = guidance_scale
        self.batch_size = batch_size
        self.model_id = "custom"
        self.timesteps_override: list[int] | None = None  # set by the `timesteps` method
        self.sampler = Sampler(scheduler.alphas_cumprod.double(), clip_sample=bool(scheduler.config.clip_sample))
        self.step_context = get_step_context(unet, pin=True)
        self.resolution = int(unet.config.sample_size)  # pixels; any multiple of the U-Net's downsampling

    def set_resolution(self, resolution: int) -> None:
        from tuner.errors import TunerError

        factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        if not isinstance(resolution, int) or resolution < factor or resolution > 1024 or resolution % factor:
            raise TunerError(f"impossible resolution {resolution}: must be a multiple of {factor} in {factor}..1024")
        self.resolution = resolution

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.unet.config.in_channels, self.resolution, self.resolution)

    def timesteps(self, num_inference_steps: int = DEFAULT_STEPS) -> list[int]:
        if self.timesteps_override is not None:
            return list(self.timesteps_override)
        self.scheduler.set_timesteps(num_inference_steps)
        return [int(t) for t in self.scheduler.timesteps]

    def initial_noise(self, seeds: Sequence[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        return per_image_noise((len(seeds), *self.sample_shape), gens, self.device, torch.float32), gens

    @torch.no_grad()
    def __call__(self, classes: Sequence[int] | torch.Tensor, seeds: Sequence[int],
                 num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float | None = None,
                 progress: bool = False) -> torch.Tensor:
        """Images in [0, 1], shape [N, C, H, W]; image i depends only on (classes[i], seeds[i])."""
        classes = torch.as_tensor(classes, dtype=torch.long)
        if len(classes) != len(seeds):
            raise ValueError("classes and seeds must have the same length")
        out = []
        chunks = range(0, len(seeds), self.batch_size)
        for start in tqdm(chunks, desc="generate", disable=not progress, leave=False):
            sl = slice(start, start + self.batch_size)
            out.append(self._generate(classes[sl], list(seeds)[sl], num_inference_steps, guidance_scale))
        return torch.cat(out)

    def _generate(self, classes, seeds, num_inference_steps, guidance_scale):
        g = self.guidance_scale if guidance_scale is None else guidance_scale
        timesteps = self.timesteps(num_inference_steps)
        x, gens = self.initial_noise(seeds)
        dev = self.device
        null = torch.full_like(classes, self.class_encoder.embedding.num_embeddings - 1)
        tokens = self.class_encoder(torch.cat([null, classes]).to(dev))
        self.step_context.begin(timesteps)  # resets every method's per-call state
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            eps = self.unet(torch.cat([x, x]), torch.tensor(t, device=dev), encoder_hidden_states=tokens).sample
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + g * (eps_cond - eps_uncond)
            x = self.sampler.step(x, eps, t, t_prev, gens)
        return ((x.clamp(-1, 1) + 1) / 2).float()

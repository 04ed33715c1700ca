"""A small class-conditional pipeline around the proxy U-Net.

Written for this project (not a copy of a diffusers `__call__`): per-image seeds so that every candidate
sees the same noise as the baseline (common random numbers), batched classifier-free guidance, and the
solvers of `tuner.solvers` (diffusers' schedulers, and tuner's DDIM/DDPM rules on any descending timestep
list). Methods reach it only through the attributes `solver`, `timesteps_override` and `steps_override`,
and the U-Net's step context. `baseline_solver` is the study's baseline (`[model] solver`; default
DPM-Solver++ 2M, what users already run).
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from tuner.solver_run import start_run
from tuner.solvers import Solver, per_image_noise
from tuner.step_context import get_step_context

DEFAULT_STEPS = 50


class ProxyPipeline:
    """The proxy model, and already a model of `tuner.models`: conditions are digit classes."""

    kind = "proxy"

    def __init__(self, unet, class_encoder, scheduler, guidance_scale: float = 2.0, batch_size: int = 32,
                 solver: Solver | None = None):
        self.unet = unet
        self.class_encoder = class_encoder
        self.scheduler = scheduler
        self.guidance_scale = guidance_scale
        self.batch_size = batch_size
        self.model_id = "custom"
        self.timesteps_override: list[int] | None = None  # set by the `timesteps` method (a list)
        self.steps_override: int | None = None  # set by the `timesteps` method (a count)
        self.baseline_solver = solver or Solver()  # the noise schedule is `scheduler`'s; the rule is the solver's
        self.solver = self.baseline_solver  # swapped by the `solver` method
        self._schedulers: dict = {}  # one diffusers scheduler object per solver, reused between calls
        self.step_context = get_step_context(unet, pin=True)
        self.compiled_unet = None  # torch.compile(unet) when the study compiles (tuner.models.compile)
        self.resolution = int(unet.config.sample_size)  # pixels; any multiple of the U-Net's downsampling

    def set_resolution(self, resolution: int) -> None:
        from tuner.errors import TunerError

        factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        if not isinstance(resolution, int) or resolution < factor or resolution > 1024 or resolution % factor:
            raise TunerError(f"impossible resolution {resolution}: must be a multiple of {factor} in {factor}..1024")
        self.resolution = resolution

    @property
    def target(self) -> "ProxyPipeline":
        """What `tuner.apply` patches: this pipeline (its U-Net, timesteps and solver)."""
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.unet.config.in_channels, self.resolution, self.resolution)

    def start_run(self, num_inference_steps: int = DEFAULT_STEPS):
        """The solver set for one call (tuner.solver_run): a `timesteps` method's list or count wins."""
        count = self.steps_override or num_inference_steps
        return start_run(self.solver, self.scheduler, count, self.timesteps_override, self._schedulers)

    def timesteps(self, num_inference_steps: int = DEFAULT_STEPS) -> list[int]:
        """The timesteps of one call's model calls, in order (Heun visits most twice)."""
        return list(self.start_run(num_inference_steps).timesteps)

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
        run = self.start_run(num_inference_steps)
        x, gens = self.initial_noise(seeds)
        x = x * run.init_noise_sigma if run.init_noise_sigma != 1.0 else x
        dev = self.device
        null = torch.full_like(classes, self.class_encoder.embedding.num_embeddings - 1)
        tokens = self.class_encoder(torch.cat([null, classes]).to(dev))
        self.step_context.begin(run.timesteps)  # resets every method's per-call state
        unet = self.unet if self.compiled_unet is None else self.compiled_unet
        for t in run.timesteps:
            inp = run.scale(x, t)
            eps = unet(torch.cat([inp, inp]), torch.tensor(t, device=dev), encoder_hidden_states=tokens).sample
            eps_uncond, eps_cond = eps.chunk(2)
            eps = eps_uncond + g * (eps_cond - eps_uncond)
            x = run.step(eps, t, x, gens)
        return ((x.clamp(-1, 1) + 1) / 2).float()

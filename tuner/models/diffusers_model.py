"""A user's diffusers pipeline (SD-1.x/2.x/SDXL: any pipeline whose denoiser is a UNet2DConditionModel; PixArt,
SD3, Flux: a diffusion transformer, tuner.denoiser) behind the model interface of `tuner.models`.

Generation calls the pipeline's own `__call__` (its text encoders, its scheduler, its guidance, its VAE),
with one CPU `torch.Generator` per image, so image i depends only on (prompt i, seed i) whatever the batch
and device, and candidate and baseline share their noise. Before each call the step context is told the
timestep list the scheduler will run, so methods that need the step count (DeepCache's non-uniform
keyframes, FRDiff's mixing) work as on the proxy. The safety checker, when the folder has one, is not
loaded: it post-processes images (it can black them out), costs time outside the U-Net, and is not part
of what the methods accelerate.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch

from tuner.errors import TunerError
from tuner.models.source import ModelSource
from tuner.step_context import get_step_context

DEFAULT_BATCH = 4


class DiffusersModel:
    kind = "diffusers"

    def __init__(self, pipe, model_id: str, guidance_scale: float | None = None, resolution: int | None = None,
                 batch_size: int | None = None):
        self.pipe = pipe
        self.model_id = model_id
        from tuner.denoiser import denoiser_of

        # `unet` stays the name every evaluator reads (MACs, calibration): it is the denoiser of either kind
        self.unet, self.denoiser_kind = denoiser_of(pipe)
        self.guidance_scale = guidance_scale  # None: the pipeline's own default
        self.batch_size = batch_size or DEFAULT_BATCH
        self.step_context = get_step_context(self.unet, pin=True)  # the model owns its denoiser's context
        self.resolution = self.default_resolution
        if resolution is not None:
            self.set_resolution(resolution)
        pipe.set_progress_bar_config(disable=True)

    # --- what methods and evaluators read ------------------------------------------------------------
    @property
    def target(self):
        """What `tuner.apply` patches: the diffusers pipeline (its U-Net and its scheduler)."""
        return self.pipe

    @property
    def scheduler(self):
        return self.pipe.scheduler

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def default_resolution(self) -> int:
        size = getattr(self.unet.config, "sample_size", None) or getattr(self.pipe, "default_sample_size", 64)
        return int(size) * int(self.pipe.vae_scale_factor)

    @property
    def size_factor(self) -> int:
        """Pixel sizes must be multiples of this: VAE downsampling x U-Net downsampling (a DiT: its patch;
        Flux packs 2x2 latent patches whatever its config says)."""
        if self.denoiser_kind == "dit":
            patch = 2 if type(self.unet).__name__ == "FluxTransformer2DModel" else int(self.unet.config.patch_size)
            return int(self.pipe.vae_scale_factor) * patch
        return int(self.pipe.vae_scale_factor) * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def set_resolution(self, resolution: int) -> None:
        f = self.size_factor
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < f or resolution > 4096 \
                or resolution % f:
            raise TunerError(f"impossible resolution {resolution}: must be a multiple of {f} in {f}..4096")
        self.resolution = resolution

    def timesteps(self, num_inference_steps: int) -> list[int]:
        """The list the scheduler runs for this count (a `timesteps` method installed on it included)."""
        # Flux's dynamic shift needs the image's mu, which only its pipeline computes: any mu gives the same
        # count, and the step context needs the count (the timesteps observed at run time are the real ones)
        dynamic = {"mu": 0.0} if self.pipe.scheduler.config.get("use_dynamic_shifting", False) else {}
        self.pipe.scheduler.set_timesteps(num_inference_steps, device="cpu", **dynamic)
        return [int(t) for t in self.pipe.scheduler.timesteps]

    # --- generation --------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], num_inference_steps: int = 25,
                 guidance_scale: float | None = None, progress: bool = False) -> torch.Tensor:
        """Images in [0, 1], float32 on the CPU, [N, 3, H, W]; image i depends only on (prompts[i], seeds[i])."""
        prompts = [str(p) for p in prompts]
        if len(prompts) != len(seeds):
            raise ValueError("prompts and seeds must have the same length")
        g = self.guidance_scale if guidance_scale is None else guidance_scale
        extra = {} if g is None else {"guidance_scale": float(g)}
        self.pipe.set_progress_bar_config(disable=not progress, leave=False)
        extra.update(self._fixed_call_options())
        out = []
        for start in range(0, len(seeds), self.batch_size):
            batch = slice(start, start + self.batch_size)
            gens = [torch.Generator().manual_seed(int(s)) for s in list(seeds)[batch]]
            # the context attached now (a removed method may have detached the one of __init__)
            self.step_context = get_step_context(self.unet, pin=True)
            self.step_context.begin(self.timesteps(num_inference_steps))  # resets every method's state
            images = self.pipe(prompt=prompts[batch], generator=gens, num_inference_steps=num_inference_steps,
                               height=self.resolution, width=self.resolution, output_type="pt", **extra).images
            out.append(images.float().cpu())
        return torch.cat(out)


    def _fixed_call_options(self) -> dict:
        """PixArt snaps sizes to its aspect-ratio bins and cleans captions with bs4: neither, so the image
        has the study's resolution and the prompt is the study's."""
        import inspect

        params = inspect.signature(self.pipe.__call__).parameters
        return {k: False for k in ("use_resolution_binning", "clean_caption") if k in params}


def load_diffusers_model(source: ModelSource, device: str | None = None, dtype: str | None = None,
                         scheduler: str | None = None, guidance_scale: float | None = None,
                         resolution: int | None = None, batch_size: int | None = None,
                         unet_weights: str | None = None, solver: dict | None = None) -> DiffusersModel:
    from diffusers import DiffusionPipeline

    from tuner.models.dtype import check_dtype
    from tuner.proxy.model import resolve_device

    dev = resolve_device(device)
    torch_dtype = check_dtype(dtype, dev)
    where = str(source.folder) if source.folder is not None else source.id
    kwargs = {"torch_dtype": torch_dtype}
    if source.folder is not None:
        kwargs["local_files_only"] = True
        if _has_component(source.folder, "safety_checker"):
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        kwargs.update({name: None for name in _absent_components(source.folder)})  # SD3 without T5
    _quiet_loading()
    try:
        with warnings.catch_warnings():  # torch_dtype is renamed dtype in newer diffusers; both work on >= 0.40
            warnings.simplefilter("ignore", FutureWarning)
            pipe = DiffusionPipeline.from_pretrained(where, **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        raise TunerError(f"model.id={source.id!r} could not be loaded: {str(e).splitlines()[0][:200]}") from None
    from tuner.denoiser import denoiser_of

    try:
        denoiser, _ = denoiser_of(pipe)
    except TunerError:
        raise TunerError(f"model.id={source.id!r}: {type(pipe).__name__} has no denoiser tuner can patch") from None
    if unet_weights is not None:
        _load_unet_weights(denoiser, unet_weights)
    if scheduler is not None:
        pipe.scheduler = scheduler_class(scheduler).from_config(pipe.scheduler.config)
    if solver is not None:  # a baseline solver by tuner's name, on the pipeline's noise schedule
        from tuner.models.proxy import solver_of
        from tuner.solvers import make_scheduler

        pipe.scheduler = make_scheduler(pipe.scheduler.config, solver_of(solver))
    pipe = pipe.to(dev)
    denoiser.eval()
    return DiffusersModel(pipe, source.id, guidance_scale, resolution, batch_size)


def _quiet_loading() -> None:
    """No per-component loading bars and notices: the study logs one line per step instead."""
    import diffusers.utils.logging as dlog

    dlog.disable_progress_bar()
    dlog.set_verbosity_error()
    try:
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except ImportError:
        pass


def scheduler_class(name: str):
    """A diffusers scheduler class by name (e.g. 'DPMSolverMultistepScheduler'); TunerError otherwise."""
    import diffusers
    from diffusers import SchedulerMixin

    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.endswith("Scheduler") else None
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise TunerError(f"model.scheduler={name!r} is not a diffusers scheduler class (e.g. DDIMScheduler, "
                         "EulerDiscreteScheduler, DPMSolverMultistepScheduler)")
    return cls


def _has_component(folder, name: str) -> bool:
    import json

    info = json.loads((folder / "model_index.json").read_text())
    entry = info.get(name)
    return isinstance(entry, list) and entry[0] is not None


def _absent_components(folder) -> list[str]:
    """Components model_index.json lists as [null, null] that the pipeline still expects by name."""
    import json

    info = json.loads((folder / "model_index.json").read_text())
    return [k for k, v in info.items() if not k.startswith("_") and isinstance(v, list) and v and v[0] is None
            and k not in ("safety_checker",)]


def _load_unet_weights(unet, path: str) -> None:
    from tuner.weights import load_tensors

    state = load_tensors(path, "model.unet_weights")  # safetensors, or plain tensors: never a pickle's code
    try:
        unet.load_state_dict({k: v.to(unet.dtype) for k, v in state.items()}, strict=True)
    except RuntimeError:
        raise TunerError(f"model.unet_weights: {path} does not match the pipeline's U-Net") from None

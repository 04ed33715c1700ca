"""The same seeds' images for the baseline and for each config, generated through the model's own
pipeline call (proxy, diffusers U-Net pipelines, and whatever else `tuner.models` loads), with the steps
each call really ran and its wall time."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


@dataclass
class Row:
    """One config's images on the gallery's seeds."""

    images: torch.Tensor  # [N, C, H, W] in [0, 1]
    steps_run: int | None  # denoising steps the pipeline call ran (counted by the U-Net's step context)
    seconds: float  # wall time of the generation call


@dataclass
class Gallery:
    conditions: list  # digit classes (proxy) or prompts, one per image
    seeds: list[int]
    steps: int  # num_inference_steps asked of every call (a `timesteps` entry may run another count)
    baseline: Row
    rows: dict = field(default_factory=dict)  # key (e.g. trial number) -> Row

    def caption(self, i: int) -> str:
        c = self.conditions[i]
        return f"class {c}" if isinstance(c, int) else str(c)


DENOISER_ATTRS = ("unet", "denoiser", "transformer")  # where tuner's models keep the network run once per step


def steps_text(n: int | None) -> str:
    return "?" if n is None else str(n)


@contextmanager
def step_counter(pipe):
    """Yields a function that returns the steps the last pipeline call ran, counted by a StepContext of our
    own on the denoiser (the rule every method uses: Heun's repeated timesteps and split CFG count right).
    Our own, so it counts whether or not a method holds the model's context; removed on exit."""
    from tuner.step_context import StepContext, _scalar_timestep

    ctx = StepContext()
    denoiser = next((m for m in (getattr(pipe, a, None) for a in DENOISER_ATTRS) if m is not None), None)
    if denoiser is None:  # no denoiser found: no count rather than a wrong one
        yield lambda: None
        return
    hook = denoiser.register_forward_pre_hook(
        lambda module, args, kwargs: ctx.observe(_scalar_timestep(args, kwargs),
                                                 kwargs.get("sample", args[0] if args else None)), with_kwargs=True)
    try:
        yield lambda: ctx.step + 1 if ctx.step >= 0 else None
    finally:
        hook.remove()


def generate_row(pipe, config, conditions: Sequence, seeds: Sequence[int], steps: int) -> Row:
    """Images of `config` (None: the baseline) on the given seeds; the model is left as it was."""
    from tuner.apply_config import apply

    handle = apply(pipe.target, config) if config is not None else None
    try:
        with step_counter(pipe) as steps_run:
            t0 = time.perf_counter()
            images = pipe(list(conditions), list(seeds), num_inference_steps=steps)
            seconds = time.perf_counter() - t0
        run = steps_run()
    finally:
        if handle is not None:
            handle.remove()
    return Row(images.detach().float().cpu(), run, seconds)


def make_gallery(pipe, configs: dict, conditions: Sequence, seeds: Sequence[int], steps: int,
                 on_row: Callable[[str, Row], None] = lambda key, row: None) -> Gallery:
    """Baseline first, then each of `configs` ({key: AccelConfig}); `on_row` reports progress."""
    with torch.no_grad():
        base = generate_row(pipe, None, conditions, seeds, steps)
        on_row("baseline", base)
        gallery = Gallery(list(conditions), list(seeds), steps, base)
        for key, config in configs.items():
            gallery.rows[key] = generate_row(pipe, config, conditions, seeds, steps)
            on_row(key, gallery.rows[key])
    return gallery

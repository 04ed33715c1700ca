"""A model is a pipeline folder: load -> generate(conditions, seeds, steps) -> images in [0, 1].

Every model the study, `tuner evaluate` and `tuner apply` reach has the same small interface:

    model(conditions, seeds, num_inference_steps=N, progress=False) -> float tensor [N, C, H, W] in [0, 1]
    model.target      what `tuner.apply` patches (a tuner pipeline or the diffusers pipeline itself)
    model.unet        its denoiser: a UNet2DConditionModel, or a DiT (model.denoiser_kind "dit", tuner.denoiser)
    model.scheduler   the scheduler the pipeline runs (its own reverse-step rule)
    model.device, model.model_id, model.kind ("proxy" | "diffusers"), model.batch_size

Conditions are digit classes for the proxy and prompts for a text-to-image pipeline (tuner.scoring.ImageSet
holds them, with the seeds).

Image i depends only on (conditions[i], seeds[i]): one generator per image, so every candidate sees the
baseline's noise. `[model] id` chooses the model: "proxy" (tuner/models/proxy.py) or a diffusers pipeline
folder / hub id (tuner/models/diffusers_model.py, checked by tuner/models/source.py).
"""

from __future__ import annotations

from tuner.models.source import PROXY_ID, ModelSource, resolve_source


def load_model(source: "ModelSource | str" = PROXY_ID, device: str | None = None, dtype: str | None = None,
               unet_weights: str | None = None, scheduler: str | None = None, guidance_scale: float | None = None,
               resolution: int | None = None, batch_size: int | None = None, solver: dict | None = None):
    """The model named by `source` (a resolved ModelSource, "proxy", a folder or a hub id), ready to
    generate on `device`. `solver` ({"name": ..., "order": ...}, the `solver` method's keys) is the baseline's
    solver: the proxy's default is DPM-Solver++ 2M, a user pipeline's its own scheduler. Bad input raises a
    one-line TunerError."""
    if isinstance(source, str):
        source = resolve_source(source)
    if source.kind == "proxy":
        from tuner.models.proxy import load_proxy_model

        if dtype not in (None, "float32"):
            from tuner.errors import TunerError

            raise TunerError(f"model.dtype={dtype!r}: the proxy model runs in float32 only")
        return load_proxy_model(device, unet_weights, guidance_scale, resolution, solver)
    from tuner.models.diffusers_model import load_diffusers_model

    return load_diffusers_model(source, device, dtype, scheduler, guidance_scale, resolution, batch_size,
                                unet_weights, solver)


__all__ = ["PROXY_ID", "ModelSource", "load_model", "resolve_source"]

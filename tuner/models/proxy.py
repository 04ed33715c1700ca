"""The embedded proxy (16 px digits) as a model: `tuner.pipeline.ProxyPipeline` already has the interface
(conditions are digit classes); this only applies the [model] keys it shares with user models."""

from __future__ import annotations


def load_proxy_model(device: str | None = None, unet_weights: str | None = None,
                     guidance_scale: float | None = None, resolution: int | None = None, solver: dict | None = None):
    from tuner.proxy.model import load_proxy_pipeline

    pipe = load_proxy_pipeline(device, unet_weights)
    if guidance_scale is not None:
        pipe.guidance_scale = float(guidance_scale)
    if resolution is not None:
        pipe.set_resolution(resolution)
    if solver is not None:  # the baseline's solver ([model] solver)
        pipe.baseline_solver = pipe.solver = solver_of(solver)
    return pipe


def solver_of(table: dict):
    """A tuner.solvers.Solver from the `solver` method's keys (checked like a config's)."""
    from tuner.methods.solver import SolverConfig

    return SolverConfig.from_dict(dict(table)).solver()

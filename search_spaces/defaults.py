"""The default joint space (what a study searches when its [space] table is empty), derived from the
method registry: every method registered with `default_space=True`, at its knobs' `search` ranges, and
the methods whose `default_space` names an objective (quantization: "bitops") when that objective is in
the study. Why each range is what it is lives beside the knob, in the method's module.

Sized for ~40 trials on a 2-core CPU: every family contributes one method choice and at most two
numeric genes by default; DeepCache's non-uniform keyframes and TMPQ groupings are opt-in
(`[space.deepcache] schedule = ["uniform", "nonuniform"]`, `[space.timesteps] groups = [...]`).
Quantization joins only with BitOPs as an objective: fake-quantized layers cost float time, so against
measured latency alone the search would see noise, never a gain.
"""

from __future__ import annotations

from typing import Sequence

from tuner.config import method_specs


def default_families(objectives: Sequence[str] = ("latency", "fid"), denoiser: str = "UNet2DConditionModel",
                     flow: bool = False) -> dict:
    """A fresh [space] table: {method: {}} for every method in the default space of these objectives that
    fits the model (its denoiser class and whether its schedule is flow matching: `MethodConfig.fits`)."""
    wanted = {str(o).lower() for o in objectives}
    specs = method_specs()
    return {name: {} for name in sorted(specs, key=lambda n: specs[n].order)
            if (specs[name].default_space is True or specs[name].default_space in wanted)
            and specs[name].config_cls.fits(denoiser, flow)}

"""Pyramid Attention Broadcast (Zhao et al., arXiv 2408.12588), diffusers' `apply_pyramid_attention_broadcast`,
as the method `pab`: inside a timestep window [t_low, t_high] (training units, 0..1000), a self-attention
layer computes every `self_skip`-th forward and broadcasts its last output in between; cross-attention
(PixArt) likewise every `cross_skip`-th (0: never skipped). Joint attention (SD3, Flux) counts as
self-attention. Outside the window every attention runs. The timestep comes from the step context.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.methods.base import Handle, MethodConfig, register_method
from tuner.methods.diffusers_cache import install_cache, timestep_callback
from tuner.methods.knobs import knob

HOOKS = ("pyramid_attention_broadcast",)


@register_method("pab", order=46, family="dit_cache", default_space=True)
@dataclass
class PABConfig(MethodConfig):
    """Pyramid Attention Broadcast (diffusers hook): reuse attention outputs inside a timestep window."""

    self_skip: int = knob(2, low=1, high=100, search=(2, 4), help="self-attention computes every N-th forward "
                          "inside the window; 1 = always (neutral)")
    cross_skip: int = knob(0, low=0, high=100, help="cross-attention every N-th forward (0 = never skipped)")
    t_low: int = knob(100, low=0, high=1000, search=(0, 300), help="window start (training timesteps)")
    t_high: int = knob(800, low=0, high=1000, search=(500, 1000), help="window end (training timesteps); t_low >= t_high: an empty window")

    denoisers = ("dit",)

    def is_neutral(self) -> bool:  # an empty window (t_low >= t_high) skips nothing either
        return (self.self_skip == 1 and self.cross_skip in (0, 1)) or self.t_low >= self.t_high


@PABConfig.register_apply
def apply(target, cfg: PABConfig) -> Handle:
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

    def run(transformer):
        window = (cfg.t_low, cfg.t_high)
        config = PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=cfg.self_skip, spatial_attention_timestep_skip_range=window,
            cross_attention_block_skip_range=cfg.cross_skip or None, cross_attention_timestep_skip_range=window,
            current_timestep_callback=timestep_callback(transformer))
        apply_pyramid_attention_broadcast(transformer, config)

    return install_cache(target, "pab", HOOKS, run)

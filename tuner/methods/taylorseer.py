"""TaylorSeer (Liu et al., arXiv 2503.06923), diffusers' `apply_taylorseer_cache`, as the method
`taylorseer`: the transformer blocks run in full every `interval` steps and after the first `warmup`
steps; in between their outputs are predicted by a Taylor expansion (finite differences up to `order`)
of the last full outputs. `lite` caches only the output projection (TaylorSeer-Lite).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.methods.base import Handle, MethodConfig, register_method
from tuner.methods.diffusers_cache import install_cache
from tuner.methods.knobs import knob

HOOKS = ("taylorseer_cache",)
PIXART_ATTENTION = r"^transformer_blocks.*attn\d"


@register_method("taylorseer", order=47, family="dit_cache", default_space=True)
@dataclass
class TaylorSeerConfig(MethodConfig):
    """TaylorSeer (diffusers hook): predict the blocks' outputs between full steps by a Taylor expansion."""

    interval: int = knob(5, low=1, high=100, search=(2, 6), help="a full step every N steps; 1 = neutral")
    warmup: int = knob(3, low=0, high=1000, search=(1, 4), help="steps that always run in full first")
    order: int = knob(1, low=0, high=4, search=(1, 2), help="Taylor order of the prediction")
    lite: bool = knob(False, help="cache only the output projection (TaylorSeer-Lite)")

    denoisers = ("dit",)

    def is_neutral(self) -> bool:
        return self.interval == 1


@TaylorSeerConfig.register_apply
def apply(target, cfg: TaylorSeerConfig) -> Handle:
    import torch
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

    from diffusers.hooks.taylorseer_cache import _TRANSFORMER_BLOCK_IDENTIFIERS

    # diffusers' patterns must match whole names and end in "attn" (SD3, Flux); PixArt's are attn1/attn2
    patterns = None if cfg.lite else [*_TRANSFORMER_BLOCK_IDENTIFIERS, PIXART_ATTENTION]
    config = TaylorSeerCacheConfig(cache_interval=cfg.interval, disable_cache_before_step=cfg.warmup,
                                   max_order=cfg.order, taylor_factors_dtype=torch.float32, use_lite_mode=cfg.lite,
                                   cache_identifiers=patterns)
    return install_cache(target, "taylorseer", HOOKS, lambda t: apply_taylorseer_cache(t, config))

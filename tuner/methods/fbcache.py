"""First Block Cache (ParaAttention; TeaCache's idea), diffusers' `apply_first_block_cache`, as the method
`fbcache`: the first transformer block always runs; when its output residual moved less than `threshold`
(relative mean absolute change) since the last full step, the remaining blocks are skipped and their
cached residual is added instead. Adaptive: the step pattern follows the model, no schedule is set.
Installed and removed exactly through tuner.methods.diffusers_cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.methods.base import Handle, MethodConfig, register_method
from tuner.methods.diffusers_cache import install_cache
from tuner.methods.knobs import knob

HOOKS = ("fbc_leader_block_hook", "fbc_block_hook")  # diffusers.hooks.first_block_cache's hook names


@register_method("fbcache", order=45, family="dit_cache", default_space=True)
@dataclass
class FBCacheConfig(MethodConfig):
    """First Block Cache (diffusers hook): skip the blocks after the first while its residual barely changes."""

    # diffusers' default 0.05; ParaAttention uses 0.08-0.12 on Flux. 0 = every step runs in full (neutral)
    threshold: float = knob(0.05, low=0.0, high=10.0, search=(0.02, 0.4), log=False,
                            help="relative change of the first block's residual below which the rest is reused")

    denoisers = ("dit",)
    # diffusers' hook subtracts the last block's encoder stream, which SD3's last (context_pre_only) block
    # returns as None: it fails on SD3 (diffusers 0.42)
    refuses = ("SD3Transformer2DModel",)

    def is_neutral(self) -> bool:
        return self.threshold == 0.0


@FBCacheConfig.register_apply
def apply(target, cfg: FBCacheConfig) -> Handle:
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    from tuner.methods.base import resolve_denoiser

    name = type(resolve_denoiser(target, "dit", "fbcache")).__name__
    if name in FBCacheConfig.refuses:
        raise TunerError(f"method 'fbcache' cannot patch {name}: diffusers' First Block Cache fails on its last "
                         "block (no encoder stream); use pab or taylorseer")
    return install_cache(target, "fbcache", HOOKS,
                         lambda t: apply_first_block_cache(t, FirstBlockCacheConfig(threshold=cfg.threshold)))

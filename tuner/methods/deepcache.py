"""DeepCache (Ma, Fang, Wang; arXiv 2312.00858): reuse the deep U-Net features between keyframes.

On a keyframe the whole U-Net runs. On the other steps only the shallow branch runs: conv_in, down
blocks 0..b, up blocks n−1−b..n−1 (the last b+1, fed by their skip connections from down blocks 0..b)
and conv_out; everything deeper returns what it produced at the last keyframe.

Branch ids (block granularity, n = number of down blocks):
    branch b runs down_blocks[0..b] and up_blocks[n-1-b..n-1] on cached steps; 0 is the shallowest
    (only the first down block and the last up block run). The feature the shallow part consumes is the
    output of up_blocks[n-2-b] (of the mid block for b = n-1, where only the mid block is skipped).
    The downsampler of down_blocks[b] is skipped too: its output feeds only deeper blocks.
    DeepCache's own code also allows layer-level branches inside a block (its SD default skips even the
    first down block's layers); we cut at block boundaries, which `branch` indexes.

Hooking, not a copied `UNet2DConditionModel.forward`: every skipped module (deep down blocks, mid block,
deep up blocks, down_blocks[b]'s downsampler) gets a forward-replacing hook that runs it and saves its
output on full forwards, and returns the saved output otherwise. The U-Net's own loop then does the
skip-connection bookkeeping unchanged: skipped down blocks hand back their saved residual tuples (right
count, right shapes), which only skipped up blocks consume. Saving references costs no copy.

The step comes from the step context; keyframes from the step index and `ctx.num_steps` (uniform: every
N-th step from 0; non-uniform: `cache_schedule.nonuniform_keyframes`). Never `timesteps.index(t)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from diffusers.hooks import ModelHook

from tuner.errors import TunerError
from tuner.methods.base import Handle, MethodConfig, register_method, resolve_unet
from tuner.methods.knobs import knob
from tuner.methods.cache_schedule import is_uniform_keyframe, nonuniform_keyframes
from tuner.methods.keyframe_cache import KeyframeCache, install_hooks

HOOK_NAME = "tuner.deepcache"
SCHEDULES = ("uniform", "nonuniform")


@register_method("deepcache", order=40, family="feature_cache", default_space=True)
@dataclass
class DeepCacheConfig(MethodConfig):
    """DeepCache: on non-keyframe steps only the shallow branch runs; deeper features are reused."""

    interval: int = knob(3, low=1, search=(2, 5), help="N: one keyframe every N steps; 1 = neutral")
    branch: int = knob(0, low=0, search=(0, "max_branch"), help="skip branch, 0 = shallowest (see the module)")
    schedule: str = knob("uniform", choices=SCHEDULES, search=("uniform",), help="keyframe placement")
    center: int = knob(15, low=0, search=(0.1, 0.5), search_scale="steps", when=("schedule", ("nonuniform",)),
                       help="step around which non-uniform keyframes are densest (DeepCache's SD default)")
    power: float = knob(1.4, low=1.0, search=(1.0, 2.0), when=("schedule", ("nonuniform",)),
                        help="concentration of non-uniform keyframes around center; >= 1")


def max_branch(unet) -> int:
    """Deepest branch id the U-Net offers (raises TunerError if its layout is not SD-like)."""
    n = len(unet.down_blocks)
    if n < 1 or len(unet.up_blocks) != n:
        raise TunerError(f"deepcache needs matching down/up blocks, got {n} down and {len(unet.up_blocks)} up")
    return n - 1 if unet.mid_block is not None else n - 2


def skipped_modules(unet, branch: int) -> list:
    """The modules that return their keyframe output on cached steps, for `branch`."""
    n = len(unet.down_blocks)
    top = max_branch(unet)
    if not 0 <= branch <= top:
        raise TunerError(f"deepcache: branch={branch} is out of range for this U-Net (0..{top})")
    mods = list(unet.down_blocks[branch + 1:])
    if unet.down_blocks[branch].downsamplers is not None:
        mods += list(unet.down_blocks[branch].downsamplers)
    if unet.mid_block is not None:
        mods.append(unet.mid_block)
    mods += list(unet.up_blocks[: n - 1 - branch])
    return mods


class _ReuseOnCachedStep(ModelHook):
    """Runs the module and saves its output on full forwards; returns the saved output otherwise."""

    def __init__(self, cache: KeyframeCache, key: str):
        super().__init__()
        self.cache, self.key = cache, key

    def new_forward(self, module, *args, **kwargs):
        if not self.cache.full:
            return self.cache.load(self.key)
        out = self.fn_ref.original_forward(*args, **kwargs)
        self.cache.save(self.key, out)
        return out


def _is_keyframe(cfg: DeepCacheConfig, step: int, num_steps: int | None) -> bool:
    if cfg.interval == 1:
        return True
    if cfg.schedule == "uniform":
        return is_uniform_keyframe(step, cfg.interval)
    if num_steps is None:
        raise TunerError("deepcache: the nonuniform schedule needs the number of steps; run it through a "
                         "tuner pipeline (or call get_step_context(unet).begin(timesteps) first)")
    return step in nonuniform_keyframes(num_steps, cfg.interval, cfg.center, cfg.power)


def apply(target, cfg: DeepCacheConfig) -> Handle:
    cfg.validate()
    unet = resolve_unet(target)
    mods = skipped_modules(unet, cfg.branch)
    cache = KeyframeCache(unet, partial(_is_keyframe, cfg))
    names = {id(m): name for name, m in unet.named_modules()}
    remove_hooks = install_hooks([(m, _ReuseOnCachedStep(cache, names[id(m)])) for m in mods], HOOK_NAME,
                                 "deepcache")
    detach = cache.attach()
    return Handle("deepcache", undo=[remove_hooks, detach], info={"deepcache_skipped_blocks": len(mods)})

"""DeepCache (Ma, Fang, Wang; arXiv 2312.00858): reuse the deep U-Net features between keyframes.

On a keyframe the whole U-Net runs. On the other steps only a shallow branch runs (conv_in, the first
layers of the down path, the matching last layers of the up path, conv_out); every deeper module returns
what it produced at the last keyframe.

Two cuts, chosen by `cut`:
- "layer" (default): DeepCache's own `cache_branch_id` (read in the DeepCache 0.1.1 package's
  `DeepCacheSDHelper`, reimplemented). A branch id b names block k = b // 3 and layer l = b % 3. Down
  block i counts its layers 0..L-1 (resnet i with its attention) and its downsampler as layer L; up block
  n-1-k (the one mirroring down block k) counts its layers backwards, its last resnet+attention being
  layer 0. On cached steps the modules that return their keyframe output are: down blocks deeper than k;
  down block k's layers >= l (the whole block when l = 0); the mid block; up blocks deeper than the mirror
  of k; in the mirror of k its layers > l. So branch 0 runs only conv_in, the last up layer and conv_out.
  Every layer that runs gets its skip connection from a layer that also runs. One deliberate difference:
  when l is past down block k's last position (l = 2 with one resnet per block, as in the proxy), the
  package still runs that block's downsampler although nothing that runs uses its output; we skip it.
  The outputs are the same.
  Ids go up to 3·(n-1) + min(2, L): the deepest one skips only the mid block.
- "block": the cut at block boundaries this project shipped first (schema_version 1 configs mean it).
  Branch b runs down_blocks[0..b] and up_blocks[n-1-b..n-1]; the downsampler of down_blocks[b] is skipped
  (its output feeds only deeper blocks). Ids 0..n-1 (n-2 without a mid block). With at most 2 resnets per
  down block (SD 1.5/2.x/XL, the proxy) block branch b skips exactly what layer id 3b + L skips, so this
  cut adds no point to the search space (tests/test_deepcache.py, BENCHMARKS.md "Peers").

Hooking, not a copied `UNet2DConditionModel.forward`: every skipped module gets a forward-replacing hook
that runs it and saves its output on full forwards, and returns the saved output otherwise. The blocks' own
loops then do the skip-connection bookkeeping unchanged (a skipped down block hands back its saved residual
tuple, which only skipped up layers consume). Saving references costs no copy.

The step comes from the step context; keyframes from the step index and the call's number of steps
(uniform: every N-th step from 0; non-uniform: `cache_schedule.nonuniform_keyframes`). Never
`timesteps.index(t)`. On a diffusers pipeline the number of steps is read from its scheduler at the first
U-Net forward of each call (see `keyframe_cache.KeyframeCache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from diffusers.hooks import ModelHook

from tuner.errors import TunerError
from tuner.methods.base import Handle, MethodConfig, register_method, resolve_unet
from tuner.methods.knobs import knob
from tuner.methods.cache_schedule import is_uniform_keyframe, nonuniform_keyframes
from tuner.methods.keyframe_cache import KeyframeCache, install_hooks, steps_source

HOOK_NAME = "tuner.deepcache"
SCHEDULES = ("uniform", "nonuniform")
CUTS = ("layer", "block")
LAYERS_PER_ID = 3  # DeepCache's cache_branch_id packs (block, layer) as 3·block + layer


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
    cut: str = knob("layer", choices=CUTS, search=("layer",),
                    help="layer = DeepCache's own cache_branch_id (default); block = whole-block branches, "
                         "what schema_version 1 configs meant (the block cut equals a layer id: not searched)")

    unmeasured_facts = {"max_branch": 2}

    @classmethod
    def prepare(cls, study) -> dict:
        """The deepest branch this U-Net offers (0 when its layout is not SD-like: the search stays shallow)."""
        try:
            return {"max_branch": max_branch(study.pipe.unet)}
        except TunerError:
            return {"max_branch": 0}

    @property
    def needs_num_steps(self) -> bool:
        return self.interval > 1 and self.schedule == "nonuniform"


def _check_layout(unet) -> int:
    n = len(unet.down_blocks)
    if n < 1 or len(unet.up_blocks) != n:
        raise TunerError(f"deepcache needs matching down/up blocks, got {n} down and {len(unet.up_blocks)} up")
    return n


def max_branch(unet, cut: str = "layer") -> int:
    """Deepest branch id the U-Net offers for `cut` (raises TunerError if its layout is not SD-like)."""
    n = _check_layout(unet)
    if cut == "block":
        return n - 1 if unet.mid_block is not None else n - 2
    if unet.mid_block is None:
        raise TunerError("deepcache: the layer cut needs a U-Net with a mid block; use cut='block'")
    return LAYERS_PER_ID * (n - 1) + min(LAYERS_PER_ID - 1, len(unet.up_blocks[0].resnets) - 1)


def skipped_modules(unet, branch: int, cut: str = "layer") -> list:
    """The modules that return their keyframe output on cached steps, for `branch` under `cut`."""
    top = max_branch(unet, cut)
    if not 0 <= branch <= top:
        raise TunerError(f"deepcache: branch={branch} is out of range for this U-Net with cut='{cut}' (0..{top})")
    return _layer_cut(unet, branch) if cut == "layer" else _block_cut(unet, branch)


def _block_cut(unet, branch: int) -> list:
    n = len(unet.down_blocks)
    mods = list(unet.down_blocks[branch + 1:])
    if unet.down_blocks[branch].downsamplers is not None:
        mods += list(unet.down_blocks[branch].downsamplers)
    if unet.mid_block is not None:
        mods.append(unet.mid_block)
    mods += list(unet.up_blocks[: n - 1 - branch])
    return mods


def _layers(block) -> list[list]:
    """Per layer position, the modules at it: resnet i with attention i (if the block has attentions)."""
    attentions = list(getattr(block, "attentions", None) or [])
    return [[r] + ([attentions[i]] if i < len(attentions) else []) for i, r in enumerate(block.resnets)]


def _layer_cut(unet, branch: int) -> list:
    n = len(unet.down_blocks)
    k, l = divmod(branch, LAYERS_PER_ID)
    mods = list(unet.down_blocks[k + 1:])
    down = unet.down_blocks[k]
    if l == 0:
        mods.append(down)
    else:
        for layer in _layers(down)[l:]:
            mods += layer
        mods += list(down.downsamplers or [])  # position L >= l, or (l > L) feeding only skipped modules
    mods.append(unet.mid_block)
    mods += list(unet.up_blocks[: n - 1 - k])
    up_layers = _layers(unet.up_blocks[n - 1 - k])
    for back, layer in enumerate(reversed(up_layers)):  # back = DeepCache's layer index in an up block
        if back > l:
            mods += layer
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
                         "pipeline (or call get_step_context(unet).begin(timesteps) first)")
    return step in nonuniform_keyframes(num_steps, cfg.interval, cfg.center, cfg.power)


@DeepCacheConfig.register_apply
def apply(target, cfg: DeepCacheConfig) -> Handle:
    unet = resolve_unet(target)
    mods = skipped_modules(unet, cfg.branch, cfg.cut)
    source = steps_source(target, "deepcache", "the nonuniform schedule", cfg.needs_num_steps)
    cache = KeyframeCache(unet, partial(_is_keyframe, cfg), source)
    names = {id(m): name for name, m in unet.named_modules()}
    remove_hooks = install_hooks([(m, _ReuseOnCachedStep(cache, names[id(m)])) for m in mods], HOOK_NAME,
                                 "deepcache")
    detach = cache.attach()
    return Handle("deepcache", undo=[remove_hooks, detach], info={"deepcache_skipped_modules": len(mods)})

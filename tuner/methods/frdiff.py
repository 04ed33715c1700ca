"""FRDiff (So et al.; arXiv 2312.03517): keyframe feature reuse plus score mixing.

How we read the reference code (Jungwon-Lee/FRDiff, `Stable-Diffusion/frdiff.py`, read, not copied):
- Keyframes are uniform: steps 0, M, 2M, … (`skip_cnt = range(0, total_step, skip_interval)`).
- ResNet reuse point: `ResnetBlock2D.conv1`. On a keyframe conv1's output is computed and stored; on
  other steps conv1 is not run and the stored output is used. Everything else in the block is recomputed
  (norm1/SiLU before it, the fresh time embedding added after it, norm2, conv2, the shortcut).
- Transformer reuse point: the residual branch of the whole `Transformer2DModel` (norm, proj_in, every
  transformer block's self-attention, cross-attention and feed-forward, proj_out): on a keyframe the
  branch output is stored; on other steps the module returns `input + stored branch` without running.
  (Its DiT variant instead reuses each block's self-attention output; for SD U-Nets we follow the SD code.)
- Score mixing, wrapped around the U-Net call: on a keyframe ε_key = U-Net(x) is stored and used. On
  other steps λ = clip((30·(i/T − b) + 2)/4, 0, 1) with i the step index and T the number of steps; if
  λ = 0 the U-Net is not called at all and ε_key is returned ("reduced NFE"); otherwise the U-Net runs
  with feature reuse and ε = λ·ε_reuse + (1 − λ)·ε_key.

Our implementation, by hooking (diffusers `HookRegistry`), with all state in one `KeyframeCache`:
- the U-Net forward is wrapped for score mixing (it returns the same output type it would have);
- each ResNet's forward is wrapped so that on a reuse forward its `conv1` child is swapped for a
  stand-in returning the saved tensor for the duration of that one call (so conv1 really does not run
  and the MAC counter sees it), and a forward hook on conv1 stores its output on full forwards;
- each Transformer2DModel's forward is wrapped to store `output − input` on full forwards and return
  `input + stored` otherwise. At interval 1 every forward is full and every hook passes outputs through
  untouched, so the result is bit-identical to the unpatched model.
The step comes from the step context, T from it or (diffusers pipelines) from the pipeline's scheduler at
the first U-Net forward of each call (`keyframe_cache.steps_source`); a target that can tell neither is
refused at apply time when mixing is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks import ModelHook
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from tuner.errors import TunerError
from tuner.methods.base import Handle, MethodConfig, register_method, resolve_unet
from tuner.methods.knobs import knob
from tuner.methods.cache_schedule import frdiff_lambda, is_uniform_keyframe
from tuner.methods.keyframe_cache import KeyframeCache, install_hooks, like_output, output_sample, steps_source

HOOK_NAME = "tuner.frdiff"


@register_method("frdiff", order=41, family="feature_cache", default_space=True)
@dataclass
class FRDiffConfig(MethodConfig):
    """FRDiff: keyframe feature reuse (ResNet conv1, transformer residual) plus score mixing."""

    interval: int = knob(2, low=1, search=(2, 4), help="M: one keyframe every M steps; 1 = neutral")
    bias: float = knob(0.5, low=0.0, high=1.0, search=(0.2, 0.8),
                       help="b of the score-mixing schedule; larger = more steps reuse the keyframe score")
    mixing: bool = knob(True, search=(True,), help="score mixing on; false = feature reuse only")


class _ScoreMixing(ModelHook):
    """Around the U-Net: stores ε on full forwards; mixes with (or replaces by) it on the others."""

    def __init__(self, cache: KeyframeCache, cfg: FRDiffConfig):
        super().__init__()
        self.cache, self.cfg = cache, cfg

    def new_forward(self, module, *args, **kwargs):
        cache = self.cache
        if cache.full:
            out = self.fn_ref.original_forward(*args, **kwargs)
            cache.save("eps", output_sample(out))
            return out
        lam = self._lambda()
        if lam == 1.0:
            return self.fn_ref.original_forward(*args, **kwargs)
        eps_key = cache.load("eps")
        if lam == 0.0:
            eps = eps_key  # the U-Net is skipped
        else:
            eps = lam * output_sample(self.fn_ref.original_forward(*args, **kwargs)) + (1.0 - lam) * eps_key
        return like_output(UNet2DConditionOutput, eps, kwargs.get("return_dict", True))

    def _lambda(self) -> float:
        if not self.cfg.mixing:
            return 1.0
        if self.cache.num_steps is None:
            raise TunerError("frdiff: score mixing needs the number of steps; run it through a pipeline "
                             "(or call get_step_context(unet).begin(timesteps) first), or set mixing=false")
        return frdiff_lambda(self.cache.step, self.cache.num_steps, self.cfg.bias)


class _SavedTensor(torch.nn.Module):
    """Stands in for a ResNet's conv1 during one reuse forward."""

    def __init__(self):
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, x):
        return self.value


class _ReuseConv1(ModelHook):
    def __init__(self, cache: KeyframeCache, key: str):
        super().__init__()
        self.cache, self.key = cache, key
        self.stand_in = _SavedTensor()

    def record(self, conv, args, out):  # forward hook on conv1
        if self.cache.full:
            self.cache.save(self.key, out)

    def new_forward(self, module, *args, **kwargs):
        if self.cache.full:
            return self.fn_ref.original_forward(*args, **kwargs)
        return self._reuse(module, *args, **kwargs)

    @torch.compiler.disable
    def _reuse(self, module, *args, **kwargs):
        """Eager under torch.compile: swapping a submodule inside a traced frame would recompile it at
        every step (the ResNet runs uncompiled on reuse steps; full steps stay compiled)."""
        conv1 = module._modules["conv1"]
        self.stand_in.value = self.cache.load(self.key)
        module._modules["conv1"] = self.stand_in
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            module._modules["conv1"] = conv1
            self.stand_in.value = None


class _ReuseTransformerResidual(ModelHook):
    def __init__(self, cache: KeyframeCache, key: str):
        super().__init__()
        self.cache, self.key = cache, key

    def new_forward(self, module, *args, **kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if self.cache.full:
            out = self.fn_ref.original_forward(*args, **kwargs)
            self.cache.save(self.key, output_sample(out) - hidden)
            return out
        return like_output(Transformer2DModelOutput, hidden + self.cache.load(self.key),
                           kwargs.get("return_dict", True))


@FRDiffConfig.register_apply
def apply(target, cfg: FRDiffConfig) -> Handle:
    unet = resolve_unet(target)
    interval = cfg.interval
    source = steps_source(target, "frdiff", "score mixing", cfg.mixing and interval > 1)
    cache = KeyframeCache(unet, lambda step, num_steps: is_uniform_keyframe(step, interval), source)
    pairs: list = [(unet, _ScoreMixing(cache, cfg))]
    resnets = transformers = 0
    for name, m in unet.named_modules():
        if isinstance(m, ResnetBlock2D):
            pairs.append((m, _ReuseConv1(cache, name)))
            resnets += 1
        elif isinstance(m, Transformer2DModel):
            pairs.append((m, _ReuseTransformerResidual(cache, name)))
            transformers += 1
    if resnets + transformers == 0:
        raise TunerError("frdiff: the U-Net has no ResnetBlock2D or Transformer2DModel to reuse")
    remove_hooks = install_hooks(pairs, HOOK_NAME, "frdiff")
    records = [m.conv1.register_forward_hook(h.record) for m, h in pairs if isinstance(h, _ReuseConv1)]

    def remove_records():
        for r in records:
            r.remove()

    detach = cache.attach()
    return Handle("frdiff", undo=[remove_hooks, remove_records, detach],
                  info={"frdiff_resnets": resnets, "frdiff_transformers": transformers})

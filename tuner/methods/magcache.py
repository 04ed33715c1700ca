"""MagCache (Ma et al., arXiv 2506.09045), diffusers' `apply_mag_cache`, as the method `magcache`: the
residual of the transformer's block stack (last block's output - first block's input) changes in magnitude
by a per-model ratio from step to step; while the error accumulated from those ratios since the last full
step stays <= `threshold` (for at most `max_skip_steps` steps, and never in the first `retention_ratio` of
the steps), the blocks are skipped and the last residual is added instead. Installed and removed exactly
through tuner.methods.diffusers_cache.

The ratios (`mag_ratios`: mean over tokens of ||r_t|| / ||r_t-1||, 1.0 first) are the model's:
- in a study, `prepare` measures them once on the baseline (two of the study's prompts at its step count),
  stores them with the study, and the search writes them into every config (self-contained exports);
- given in a config, they are used as they are, whatever step count they were measured at;
- absent (`tuner.apply(pipe, {"magcache": {...}})`), the first pipeline call runs in full and measures them
  (diffusers' calibrate mode), the later calls skip: like diffusers' own calibrate-then-run, without the copy.
Either way they are interpolated (diffusers' `nearest_interp`) to each call's step count, which is no knob:
it is read at the call's first forward from the pipeline's scheduler (`len(scheduler.timesteps)`, so a
`timesteps` method or a changed `num_inference_steps` is followed), else from the step context (a tuner model
announces its timesteps), else, on a bare transformer, it is taken to be the ratios' own length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.hooks import ModelHook

from tuner.errors import TunerError
from tuner.methods.base import Handle, MethodConfig, register_method, resolve_denoiser
from tuner.methods.diffusers_cache import install_cache
from tuner.methods.knobs import knob
from tuner.step_context import get_step_context

SYNC_HOOK = "tuner.magcache_steps"
HOOKS = ("mag_cache_leader_block_hook", "mag_cache_block_hook", SYNC_HOOK)  # diffusers.hooks.mag_cache's, ours
# Calibrating, diffusers' hook must never reach "the end of the run": there it prints the ratios and drops them
UNBOUNDED = 1 << 30
CALIBRATION_PROMPTS = 2


def _ratio_list(v) -> list[float]:
    if not isinstance(v, list) or not v or any(isinstance(r, bool) or not isinstance(r, (int, float))
                                               or not math.isfinite(r) or r <= 0 for r in v):
        raise ValueError(f"mag_ratios must be a non-empty list of positive numbers or null, got {v!r}")
    return [float(r) for r in v]


@register_method("magcache", order=48, family="dit_cache", default_space=True)
@dataclass
class MagCacheConfig(MethodConfig):
    """MagCache (diffusers hook): skip the blocks while the model's magnitude ratios say they barely change."""

    # diffusers' default 0.06; the paper searches 0.01-0.3 (error accumulated over the skipped steps).
    # 0 = every step runs in full (neutral)
    threshold: float = knob(0.06, low=0.0, high=10.0, search=(0.01, 0.3), log=True,
                            help="accumulated magnitude-ratio error up to which the blocks are skipped")
    max_skip_steps: int = knob(3, low=0, high=100, search=(1, 5), help="most consecutive skipped steps (K); 0 = neutral")
    retention_ratio: float = knob(0.2, low=0.0, high=1.0, search=(0.0, 0.5),
                                  help="share of the first steps that always run in full; 1 = neutral")
    mag_ratios: list | None = knob(None, kind="custom", nullable=True, parse=_ratio_list,
                                   schema={"type": "array", "minItems": 1,
                                           "items": {"type": "number", "exclusiveMinimum": 0}},
                                   help="the model's magnitude ratios, one per step at any step count (interpolated); "
                                        "null = measured by the first pipeline call, which runs in full")

    denoisers = ("dit",)
    unmeasured_facts = {"mag_ratios": None}  # no model measured: configs calibrate on their first call

    def is_neutral(self) -> bool:
        return self.threshold == 0.0 or self.max_skip_steps == 0 or self.retention_ratio >= 1.0

    @classmethod
    def prepare(cls, study) -> dict:
        """The baseline's magnitude ratios at the study's step count, measured once per study."""
        def measure() -> list[float]:
            ps = study.image_set(CALIBRATION_PROMPTS)
            study.log("MagCache: measuring the magnitude ratios on the baseline")
            return calibrate(study.pipe, list(ps.conditions), list(ps.seeds), ps.steps)

        return {"mag_ratios": study.remember("mag_ratios", measure)}


class _StepSync(ModelHook):
    """Ours, on the transformer: at every forward it tells diffusers' hooks (which share `config`) the call's
    step count and the ratios interpolated to it; calibrating, it keeps what the last call measured."""

    # stateful: the per-call reset reaches it before the blocks' hooks (the root registry resets first), so
    # the measured ratios are read before diffusers' state is cleared
    _is_stateful = True

    def __init__(self, config, ratios: list[float] | None, steps_of, head):
        super().__init__()
        self.config = config
        self.ratios = ratios  # as given or measured (any step count); None while the first call calibrates
        self.steps_of = steps_of
        self.head = head  # diffusers' head hook: its state manager holds the per-context state

    @torch.compiler.disable
    def new_forward(self, module, *args, **kwargs):
        from diffusers.hooks.mag_cache import nearest_interp

        n = UNBOUNDED if self.ratios is None else (self.steps_of() or len(self.ratios))
        if n != self.config.num_inference_steps:
            self.config.num_inference_steps = n
            self.config.calibrate = self.ratios is None
            self.config.mag_ratios = None if self.ratios is None else nearest_interp(torch.tensor(self.ratios), n)
        return self.fn_ref.original_forward(*args, **kwargs)

    def measured(self) -> list[float] | None:
        """The ratios diffusers' hook recorded in the current call (calibrating), one per step."""
        states = self.head.state_manager._state_cache.values()
        found = max((s.calibration_ratios for s in states), key=len, default=[])
        return [round(float(r), 5) for r in found] or None

    def reset_state(self, module):
        if self.ratios is None:
            self.ratios = self.measured()  # the call that just ended measured them; None if it ran no step
        return module


def _steps_of(target, transformer):
    """The current call's step count (see the module docstring), None when nothing says."""
    scheduler = getattr(target, "scheduler", None)  # a pipeline's; a bare transformer has none
    ctx = get_step_context(transformer)

    def steps() -> int | None:
        ts = getattr(scheduler, "timesteps", None)
        if ts is not None and len(ts):
            return len(ts)
        return ctx.num_steps

    return steps


def _install(target, cfg: MagCacheConfig) -> tuple[Handle, list]:
    """The method's handle, and a list that holds its _StepSync once installed."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.mag_cache import MagCacheConfig as DiffusersConfig
    from diffusers.hooks.mag_cache import apply_mag_cache

    # diffusers skips while the accumulated error is <= threshold, and a ratio of exactly 1.0 accumulates
    # none: at 0 it would still skip, so 0 (neutral) becomes a threshold no error reaches
    config = DiffusersConfig(threshold=cfg.threshold if cfg.threshold > 0 else -1.0, max_skip_steps=cfg.max_skip_steps,
                             retention_ratio=cfg.retention_ratio, num_inference_steps=UNBOUNDED, calibrate=True)
    sync: list = []

    def run(transformer):
        apply_mag_cache(transformer, config)
        head = next((m._diffusers_hook.hooks[HOOKS[0]] for m in transformer.modules()
                     if HOOKS[0] in getattr(getattr(m, "_diffusers_hook", None), "hooks", {})), None)
        if head is None:
            raise ValueError("no transformer blocks found")
        sync.append(_StepSync(config, cfg.mag_ratios, _steps_of(target, transformer), head))
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(sync[0], SYNC_HOOK)

    info = {"magcache_ratios": "given" if cfg.mag_ratios else "measured by the first call"}
    return install_cache(target, "magcache", HOOKS, run, info), sync


@MagCacheConfig.register_apply
def apply(target, cfg: MagCacheConfig) -> Handle:
    return _install(target, cfg)[0]


def calibrate(model, prompts: list, seeds: list, steps: int) -> list[float]:
    """MagCache's magnitude ratios of a tuner model of a DiT pipeline: one full run of `prompts` at `steps`
    steps (one ratio per step, 1.0 first)."""
    handle, sync = _install(model.target, MagCacheConfig(threshold=0.0))
    try:
        model(prompts, seeds, num_inference_steps=steps)
        ratios = sync[0].ratios or sync[0].measured()  # a second batch starts by keeping the first's
    finally:
        handle.remove()
    if not ratios:
        raise TunerError(f"method 'magcache': no magnitude ratio was measured on "
                         f"{type(resolve_denoiser(model.target, 'dit', 'magcache')).__name__}")
    return ratios

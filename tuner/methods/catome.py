"""CA-ToMe, cached adaptive token merging (Saghatchian et al., arXiv 2501.00946), registered as `catome`.

Like ToMe, but every image merges its own src whose best cosine similarity to a (top-left) dst of its
sx×sy cell is >= threshold, instead of a fixed share (per-image counts: see `merge.py` for the padding).
The similarity is computed only at checkpoint steps; on the other steps every block reuses the index
tensors it cached at the last checkpoint. The cache lives in per-block state that the step context
resets at every pipeline call, so nothing leaks from one call (or image set) to the next.
threshold > 1 merges nothing and leaves every tensor untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tuner.methods.base import Handle, MethodConfig, register_method, resolve_unet
from tuner.methods.knobs import as_integer, knob
from tuner.methods.merge import MergePlan, match_threshold
from tuner.methods.token_merge_patch import (LEVELS, TransformerBlockRef, first_attention_level, patch_unet,
                                             resolved_level, unpatch_unet)
from tuner.step_context import StepContext, get_step_context

# The paper's caching configurations, as step indices of a 50-step run
# (see tuner.methods.catome_profile.scale_checkpoints).
PAPER_CHECKPOINTS = {
    "CONFIG_1": [0, 1, 2, 3, 5, 10, 15, 25, 35],
    "CONFIG_2": [0, 10, 11, 12, 15, 20, 25, 30, 35, 45],
    "CONFIG_3": [0, 8, 11, 13, 20, 25, 30, 35, 45, 46, 47, 48, 49],
}


def _step_list(v) -> list[int]:
    steps = [as_integer(s) for s in v] if isinstance(v, list) else [None]
    if any(s is None or s < 0 for s in steps):
        raise ValueError(f"checkpoints must be a list of step indices >= 0 or null, got {v!r}")
    if len(set(steps)) != len(steps):
        raise ValueError("checkpoints must not repeat a step")
    return sorted(steps)


STEP_LIST_SCHEMA = {"type": "array", "items": {"type": "integer", "minimum": 0}, "uniqueItems": True}


def checkpoints_knob():
    """The `checkpoints` knob of a CA-ToMe method (U-Net `catome`, DiT `dit_catome`): one definition, so
    both parse and document their step lists alike."""
    return knob(None, kind="custom", nullable=True, schema=STEP_LIST_SCHEMA, parse=_step_list,
                help="steps where similarity is recomputed; null = every step")


@register_method("catome", order=31, family="token_merging", default_space=True)
@dataclass
class CaToMeConfig(MethodConfig):
    """CA-ToMe: merge the src tokens whose similarity to their cell's dst reaches a threshold, with
    merge pairs recomputed only at checkpoint steps."""

    threshold: float = knob(0.7, low=0.0, high=1.5, search=(0.5, 1.0),
                            help="cosine similarity a src needs to merge; > 1 = neutral")
    checkpoints: list | None = checkpoints_knob()
    sx: int = knob(2, low=1, high=16, help="cell width")
    sy: int = knob(2, low=1, high=16, help="cell height")
    max_downsample: int | None = knob(None, choices=LEVELS, nullable=True, search=("first_attention_level",),
                                      help="deepest level patched (1 = D1/U1, as in the paper); null = the "
                                           "model's first level with attention (1 on SD-1.x/2.x, 2 on SDXL)")
    merge_crossattn: bool = knob(False, help="merge before cross-attention")
    merge_mlp: bool = knob(False, help="merge before the feed-forward")

    unmeasured_facts = {"first_attention_level": 1}

    @classmethod
    def prepare(cls, study) -> dict:
        """Where merging starts, and the Jaccard profile the search places checkpoints with: measured once
        per study on the baseline (settings from the study's [profile] table), stored with the study,
        reused on resume."""
        from tuner.methods.catome_profile import profile_from_json, profile_merges, profile_to_json

        level = first_attention_level(study.pipe.unet)

        def measure() -> dict:
            p, ps = study.spec.profile, study.image_set(study.spec.profile.n_images)
            study.log("Jaccard profile: measuring token-merge pairs on the baseline")
            return profile_to_json(profile_merges(study.pipe, ps.conditions, ps.seeds, ps.steps, p.threshold,
                                                  profile_max_downsample(p.max_downsample, study.pipe.unet),
                                                  progress=study.progress))

        return {"first_attention_level": level,
                "jaccard_profile": profile_from_json(study.remember("jaccard_profile", measure))}

    @classmethod
    def placeholder_facts(cls, steps: int) -> dict:
        from tuner.methods.catome_profile import placeholder_profile

        return {"jaccard_profile": placeholder_profile(steps)}


def profile_max_downsample(levels: int, unet) -> int:
    """The profiled levels ([profile] max_downsample), reaching at least the model's first level with
    self-attention (SDXL: 2)."""
    return max(levels, first_attention_level(unet))


@dataclass
class BlockCache:
    """Plans of one block cached at the last checkpoint, one per U-Net forward of a step (a pipeline that
    runs CFG as two forwards per step caches the uncond and cond plans separately)."""

    plans: dict[int, MergePlan | None] = field(default_factory=dict)
    step: int = -1  # step of the last forward seen
    forward_in_step: int = -1  # index of the current forward within that step


class CaToMeState:
    """Per-call state of every patched block; `similarity_computations` counts this call's matchings."""

    def __init__(self, cfg: CaToMeConfig, ctx: StepContext):
        self.cfg = cfg
        self.ctx = ctx
        self.checkpoints = None if cfg.checkpoints is None else frozenset(cfg.checkpoints)
        self.caches: dict[str, BlockCache] = {}
        self.similarity_computations = 0
        self.per_block: dict[str, int] = {}

    def reset_state(self) -> None:
        self.caches.clear()
        self.similarity_computations = 0
        self.per_block.clear()

    def plan(self, block, x: torch.Tensor, h: int, w: int) -> MergePlan | None:
        cache = self.caches.setdefault(block.name, BlockCache())
        step = self.ctx.step
        if step != cache.step:
            cache.step, cache.forward_in_step = step, 0
        else:
            cache.forward_in_step += 1
        key = cache.forward_in_step
        is_checkpoint = self.checkpoints is None or step in self.checkpoints
        cached = cache.plans.get(key, False)
        usable = cached is None or (cached is not False and cached.assign.shape == (x.shape[0], x.shape[1]))
        if is_checkpoint or not usable:  # a step before the first checkpoint also has to compute
            cached = match_threshold(x, h, w, self.cfg.sx, self.cfg.sy, self.cfg.threshold)
            cache.plans[key] = cached
            self.similarity_computations += 1
            self.per_block[block.name] = self.per_block.get(block.name, 0) + 1
        return cached


@CaToMeConfig.register_apply
def apply(target, cfg: CaToMeConfig) -> Handle:
    unet = resolve_unet(target)
    ctx = get_step_context(unet)
    state = CaToMeState(cfg, ctx)

    def make_planner(ref: TransformerBlockRef):
        return state.plan

    mergers = patch_unet(unet, "catome", resolved_level(cfg.max_downsample, unet), make_planner, True, cfg.merge_crossattn, cfg.merge_mlp)
    ctx.register(state)

    def undo():
        ctx.unregister(state)
        unpatch_unet(unet, mergers)

    handle = Handle("catome", undo=[undo], info={"catome_blocks": len(mergers)})
    handle.state = state  # live counters (similarity_computations, per_block) for tests and benchmarks
    return handle

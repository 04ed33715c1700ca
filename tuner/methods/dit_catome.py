"""CA-ToMe (cached adaptive token merging, Saghatchian et al., arXiv 2501.00946) on a diffusion transformer's
self-attention, registered as `dit_catome`: `catome`'s matching and pair cache on `dit_tome`'s hooks.

Every image merges its own src tokens whose best cosine similarity to the (top-left) dst of their sx x sy
cell of the patch grid is >= threshold, so images keep different counts: merge.py pads them to the batch's
largest, and tuner.methods.dit_merge_hook hides the padding from attention (PixArt: an additive key mask;
SD3's and Flux's joint attentions: one image at a time, unpadded). The similarity is computed only at
checkpoint steps; in between every attention reuses the plan it cached at the last checkpoint. The cache is
`catome`'s CaToMeState: per attention, per forward of a step, reset by the step context at the start of
every pipeline call (a tuner model: every batch it generates), so no pair set crosses calls or batches, and
a plan is per row of its batch, so none crosses images. threshold > 1 merges nothing (the identity).

Checkpoints are searched as in `catome`, guided by a Jaccard profile of the DiT's merge pairs measured once
per study on the baseline (`prepare`; same table and plots as tuner.methods.catome_profile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from tuner.methods.base import Handle, MethodConfig, register_method, resolve_denoiser
from tuner.methods.catome import CaToMeState, checkpoints_knob
from tuner.methods.dit_merge_hook import hook_attentions
from tuner.methods.knobs import knob
from tuner.step_context import get_step_context

PROFILE_ATTR = "dit_jaccard_profile"  # study user attribute: not the U-Net's `jaccard_profile`


@register_method("dit_catome", order=33, family="dit_token_merging", default_space=True)
@dataclass
class DiTCaToMeConfig(MethodConfig):
    """CA-ToMe on a DiT's self-attention image tokens: threshold merging, pairs recomputed at checkpoints."""

    threshold: float = knob(0.7, low=0.0, high=1.5, search=(0.6, 1.0),
                            help="cosine similarity a src needs to merge; > 1 = neutral")
    checkpoints: list | None = checkpoints_knob()
    sx: int = knob(2, low=1, high=8, help="stride cell width on the patch grid (one dst per cell)")
    sy: int = knob(2, low=1, high=8, help="stride cell height on the patch grid")

    denoisers = ("dit",)

    def is_neutral(self) -> bool:
        return self.threshold > 1.0

    @classmethod
    def prepare(cls, study) -> dict:
        """The Jaccard profile the search places checkpoints with: measured once per study on the baseline
        (n_images and threshold of the study's [profile] table), stored with the study, reused on resume."""
        from tuner.methods.catome_profile import profile_from_json, profile_to_json

        def measure() -> dict:
            p, ps = study.spec.profile, study.image_set(study.spec.profile.n_images)
            study.log("Jaccard profile: measuring the DiT's token-merge pairs on the baseline")
            return profile_to_json(profile_dit_merges(study.pipe, ps.conditions, ps.seeds, ps.steps, p.threshold,
                                                      progress=study.progress))

        return {"jaccard_profile": profile_from_json(study.remember(PROFILE_ATTR, measure))}

    @classmethod
    def placeholder_facts(cls, steps: int) -> dict:
        from tuner.methods.catome_profile import placeholder_profile

        return {"jaccard_profile": placeholder_profile(steps)}


@DiTCaToMeConfig.register_apply
def apply(target, cfg: DiTCaToMeConfig) -> Handle:
    transformer = resolve_denoiser(target, "dit", "dit_catome")
    ctx = get_step_context(transformer)
    state = CaToMeState(cfg, ctx)
    ctx.register(state)
    try:
        undo, hooks = hook_attentions(transformer, "dit_catome", state.plan)
    except BaseException:
        ctx.unregister(state)  # detaches a context attached just now
        raise
    handle = Handle("dit_catome", undo=[lambda: ctx.unregister(state)] + undo,
                    info={"dit_catome_layers": len(hooks)})
    handle.state = state  # live counters (similarity_computations, per_block) for tests and benchmarks
    return handle


def profile_dit_merges(model, prompts: Sequence[str], seeds: Sequence[int], steps: int, threshold: float = 0.7,
                       sx: int = 2, sy: int = 2, progress: bool = False) -> pd.DataFrame:
    """The Jaccard profile (tuner.methods.catome_profile's table; blocks labelled B<i>, S<i>) of a tuner model
    of a DiT pipeline: its baseline run over (prompts, seeds), recording the pairs every self-attention's
    threshold matching selects without merging any."""
    from tuner.methods.catome_profile import PairRecorder, check_profile_args, profile_table, record_pairs

    check_profile_args(prompts, seeds, steps, threshold)
    transformer = resolve_denoiser(model.target, "dit", "dit_catome")
    ctx = get_step_context(transformer)
    recorder = PairRecorder(ctx, threshold, sx, sy)
    ctx.register(recorder)
    undo = [lambda: ctx.unregister(recorder)]
    try:
        undo += hook_attentions(transformer, "dit_catome", recorder.plan)[0]
        record_pairs(model, recorder, prompts, seeds, steps, progress)
    finally:
        for fn in reversed(undo):
            fn()
    return profile_table(recorder, threshold)

"""`dit_catome` (CA-ToMe on a DiT's self-attentions) on tiny PixArt-α, SD3 and Flux pipelines: threshold > 1 is
the identity, merging changes the images, `remove()` restores them bit for bit and leaves every module as it
was, the pair cache is per pipeline call (reset at every call, never across images of a batch), pairs are
recomputed only at checkpoints, per-image counts are padded and masked exactly, and the Jaccard profile a
study measures feeds the checkpoint genes."""

from __future__ import annotations

import pytest
import torch

from test_dit_methods import module_state
from tuner.apply_config import apply as apply_config
from tuner.config import AccelConfig
from tuner.errors import TunerError
from tuner.methods import dit_catome
from tuner.methods.dit_catome import DiTCaToMeConfig

PROMPTS, SEEDS, STEPS = ["a red car", "a dog"], [0, 1], 4
LAYOUTS = ["pixart", "sd3", "flux"]
# thresholds at which the images of a batch merge different counts (tiny SD3's image tokens are so alike that
# at 0.6 every src of every image merges), pairs recomputed at steps 0 and 2 of 4
ACTIVE = {layout: {"threshold": t, "checkpoints": [0, 2]}
          for layout, t in {"pixart": 0.6, "sd3": 0.8, "flux": 0.6}.items()}


@pytest.fixture(scope="module")
def models(dit_models):
    from tuner.models import load_model

    return {name: load_model(str(dit_models[name]), device="cpu", resolution=32) for name in LAYOUTS}


def run(model, prompts=PROMPTS, seeds=SEEDS) -> torch.Tensor:
    return model(prompts, seeds, num_inference_steps=STEPS)


def catome(model, **cfg):
    return dit_catome.apply(model.target, DiTCaToMeConfig(**cfg))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_threshold_above_one_is_the_identity(models, layout):
    model = models[layout]
    base = run(model)
    for cfg in ({"threshold": 1.01}, {"threshold": 1.5, "checkpoints": [0, 2]}):
        with catome(model, **cfg):
            assert torch.equal(run(model), base)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_merging_changes_images_and_removes_exactly(models, layout):
    model = models[layout]
    base, before = run(model), module_state(model.unet)
    with catome(model, **ACTIVE[layout]):
        first, again = run(model), run(model)
    assert not torch.equal(first, base)
    assert torch.equal(first, again)  # the pair cache is reset at every call
    assert module_state(model.unet) == before and torch.equal(run(model), base)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pairs_are_recomputed_only_at_checkpoints(models, layout, monkeypatch):
    """Checkpoints [0, 2] of 4 steps: each self-attention matches twice per call (counted at the matching
    function itself), reuses its pairs at steps 1 and 3; every step as a checkpoint is no caching."""
    import tuner.methods.catome as catome_module

    calls = []
    real = catome_module.match_threshold
    monkeypatch.setattr(catome_module, "match_threshold", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = models[layout]
    with catome(model, **ACTIVE[layout]) as h:
        n = h.info["dit_catome_layers"]
        cached = run(model)
        assert len(calls) == 2 * n and h.state.similarity_computations == 2 * n
        assert set(h.state.per_block.values()) == {2} and len(h.state.per_block) == n
        run(model)
        assert len(calls) == 4 * n  # the second call starts afresh: 2 more per layer, not 0
    calls.clear()
    with catome(model, threshold=ACTIVE[layout]["threshold"], checkpoints=None) as h:
        every = run(model)
        assert len(calls) == STEPS * n
    with catome(model, threshold=ACTIVE[layout]["threshold"], checkpoints=list(range(STEPS))):
        assert torch.equal(run(model), every)
    assert not torch.equal(cached, every)  # the cached pairs were used


@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_pair_set_crosses_calls_or_images(models, layout):
    """An image's result is the one it gets alone (to float tolerance: padded, masked batch vs unpadded),
    in a batch of two or in batches of one (two pipeline calls); a call after another call with other images
    gives bit for bit what a fresh handle gives."""
    model = models[layout]
    with catome(model, **ACTIVE[layout]):
        both = run(model)
        alone = torch.cat([run(model, PROMPTS[i:i + 1], SEEDS[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-4)
    size = model.batch_size
    model.batch_size = 1
    try:
        with catome(model, **ACTIVE[layout]):
            one_by_one = run(model)
    finally:
        model.batch_size = size
    torch.testing.assert_close(one_by_one, both, rtol=1e-4, atol=1e-4)
    with catome(model, **ACTIVE[layout]):
        run(model, ["a cat", "a blue house"], [7, 8])  # fills every cache with other images' pairs
        after = run(model)
    assert torch.equal(after, both)


def _processor_spy(model):
    """Wraps every self-attention's processor: records (batch size, attention_mask) of every call."""
    from tuner.methods.dit_merge_hook import self_attentions

    seen, originals = [], [(a, a.processor) for a in self_attentions(model.unet)]

    def spy_of(processor):
        def spy(module, hidden_states, *args, **kwargs):
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
            seen.append((hidden_states.shape[0], mask))
            return processor(module, hidden_states, *args, **kwargs)
        return spy

    for attn, processor in originals:
        attn.processor = spy_of(processor)
    return seen, lambda: [setattr(a, "processor", p) for a, p in originals]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_per_image_counts_are_masked_or_attended_alone(models, layout):
    """Images of a batch keep different counts. PixArt's self-attention takes the batch padded to the
    largest count with an additive mask on the padding keys; SD3's and Flux's joint attentions take no such
    mask: each image attends alone, unpadded (no mask, batch 1)."""
    model = models[layout]
    seen, restore = _processor_spy(model)
    try:
        with catome(model, **ACTIVE[layout]) as h:
            run(model)
            plans = [p for c in h.state.caches.values() for p in c.plans.values() if p is not None]
    finally:
        restore()
    padded = [p for p in plans if p.key_mask is not None]
    assert padded and all(len(set(p.n_merged.tolist())) > 1 for p in padded)  # counts differ: padded
    batch = padded[0].batch_size
    if layout == "pixart":
        masks = [m for _, m in seen if m is not None]
        assert masks and all(m.shape[:2] == (batch, 1) and (m < -1e30).any() for m in masks)
        assert {b for b, _ in seen} == {batch}
    else:
        assert 1 in {b for b, _ in seen} and all(m is None for _, m in seen)


def test_dit_tome_and_dit_catome_together_is_an_error(models):
    model = models["pixart"]
    base, before = run(model), module_state(model.unet)
    cfg = AccelConfig.from_dict({"schema_version": 2, "methods": {"dit_tome": {"ratio": 0.5},
                                                                  "dit_catome": {"threshold": 0.7}}})
    with pytest.raises(TunerError, match="cannot be combined"):
        apply_config(model.target, cfg)
    assert module_state(model.unet) == before and torch.equal(run(model), base)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_jaccard_profile_of_the_baseline(models, layout, tmp_path):
    """One row per (self-attention, step), a distance from step 1 on; profiling merges nothing and leaves the
    model as it was; the table plots like the U-Net's."""
    from tuner.methods.catome_profile import checkpoints_from_profile, save_profile

    model = models[layout]
    base, before = run(model), module_state(model.unet)
    df = dit_catome.profile_dit_merges(model, PROMPTS + ["a cat"], SEEDS + [2], STEPS, threshold=0.6)
    from tuner.methods.dit_merge_hook import self_attentions

    n = len(self_attentions(model.unet))
    assert len(df["block"].unique()) == n
    assert len(df) == n * STEPS and set(df["step"]) == set(range(STEPS))
    assert df[df.step == 0]["jaccard_distance"].isna().all() and df[df.step > 0]["jaccard_distance"].between(0, 1).all()
    assert df["n_pairs"].max() > 0
    assert module_state(model.unet) == before and torch.equal(run(model), base)
    paths = save_profile(df, tmp_path, checkpoints_from_profile(df, 0.1))
    assert paths["png"].stat().st_size > 0


def test_profile_feeds_the_checkpoint_genes():
    """With the study's profile, dit_catome searches δ and a checkpoint budget (as catome does); decoded,
    they give checkpoints at the trial's step count; without one, every step is a checkpoint."""
    from tuner.methods.catome_profile import placeholder_profile
    from tuner.search_spaces.space import SpaceContext, build_space

    facts = {"dit_catome": {"jaccard_profile": placeholder_profile(20)}}
    space = build_space({"dit_catome": {}}, SpaceContext(20, facts=facts))
    names = {p.name for p in space.params}
    assert {"dit_catome.threshold", "dit_catome.checkpoint_delta", "dit_catome.checkpoint_max"} <= names
    values = {"dit_token_merging": "dit_catome", "dit_catome.threshold": 0.8, "dit_catome.checkpoint_delta": 0.25,
              "dit_catome.checkpoint_max": 4}
    cfg = space.to_config(values).methods["dit_catome"]
    assert cfg.threshold == 0.8 and cfg.checkpoints[0] == 0 and 1 < len(cfg.checkpoints) <= 4
    bare = build_space({"dit_catome": {}}, SpaceContext(20, facts={}))
    assert not any(p.name.endswith("checkpoint_delta") for p in bare.params)
    cfg = bare.to_config({"dit_token_merging": "dit_catome", "dit_catome.threshold": 0.8}).methods["dit_catome"]
    assert cfg.checkpoints is None


def test_a_study_measures_the_profile_once(dit_models, models, tmp_path):
    """`prepare` profiles the baseline with the study's [profile] settings at its step count, stores the table
    as the study attribute `dit_jaccard_profile`, and a resumed study reads it back instead of measuring."""
    from tiny_user_models import study_toml
    from tuner.study.context import PrepareContext
    from tuner.study.spec import load_spec

    path = tmp_path / "study.toml"
    path.write_text(study_toml("p", dit_models["pixart"], prompts=dit_models["prompts"],
                               evaluator=f'inception_weights = "{dit_models["inception"]}"',
                               space="[profile]\nn_images = 2\nthreshold = 0.6\n[space.dit_catome]\n"))

    class Study:  # optuna.Study's user attributes
        def __init__(self):
            self.user_attrs = {}

        def set_user_attr(self, key, value):
            self.user_attrs[key] = value

    logs, study = [], Study()
    prep = PrepareContext(load_spec(path), models["pixart"], study, logs.append, False)
    first, resumed = DiTCaToMeConfig.prepare(prep)["jaccard_profile"], DiTCaToMeConfig.prepare(prep)["jaccard_profile"]
    assert list(study.user_attrs) == ["dit_jaccard_profile"] and len(logs) == 1
    assert set(first["step"]) == {0, 1, 2} and set(first["threshold"]) == {0.6}
    assert first.equals(resumed)

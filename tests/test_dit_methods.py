"""The DiT methods on tiny PixArt-α, SD3 and Flux pipelines: diffusers' cache hooks (fbcache, pab,
taylorseer, magcache), the flow-matching solver and quantization of a DiT's linear layers. Each changes the images
when it skips work, its neutral setting is the identity, and `remove()` gives the baseline's images bit for
bit and leaves every module of the transformer as it was (attributes, hooks, registries)."""

from __future__ import annotations

import pytest
import torch

from tuner.apply_config import apply
from tuner.errors import TunerError

PROMPTS, SEEDS, STEPS = ["a red car", "a dog"], [0, 1], 4
ACTIVE = {"dit_tome": {"ratio": 0.5}, "fbcache": {"threshold": 5.0}, "pab": {"self_skip": 2, "cross_skip": 2, "t_low": 0, "t_high": 1000},
          "taylorseer": {"interval": 2, "warmup": 1},
          "magcache": {"threshold": 0.3, "retention_ratio": 0.0, "mag_ratios": [1.0, 1.1, 1.05, 1.0]}}
# ratios of exactly 1.0 accumulate no error: diffusers' own test (err <= threshold) would skip at threshold 0
NEUTRAL = {"dit_tome": {"ratio": 0.0}, "fbcache": {"threshold": 0.0}, "pab": {"self_skip": 1}, "taylorseer": {"interval": 1},
           "magcache": {"threshold": 0.0, "retention_ratio": 0.0, "mag_ratios": [1.0] * STEPS}}
HOOKED = {"pixart": ["dit_tome", "fbcache", "pab", "taylorseer", "magcache"],
          "sd3": ["dit_tome", "pab", "taylorseer", "magcache"],
          "flux": ["dit_tome", "fbcache", "pab", "taylorseer", "magcache"]}


@pytest.fixture(scope="module")
def models(dit_models):
    from tuner.models import load_model

    return {name: load_model(str(dit_models[name]), device="cpu", resolution=32) for name in HOOKED}


def module_state(transformer: torch.nn.Module) -> dict:
    hooks = lambda d: sorted(f.__qualname__ for f in d.values())  # noqa: E731 (ids change between attachments)
    return {name: (sorted(vars(m)), hooks(m._forward_pre_hooks), hooks(m._forward_hooks),
                   sorted(getattr(m, "_diffusers_hook").hooks) if hasattr(m, "_diffusers_hook") else None)
            for name, m in transformer.named_modules()}


def run(model) -> torch.Tensor:
    return model(PROMPTS, SEEDS, num_inference_steps=STEPS)


@pytest.mark.parametrize("layout,method", [(l, m) for l, ms in HOOKED.items() for m in ms])
def test_hook_changes_images_and_removes_exactly(models, layout, method):
    model = models[layout]
    base = run(model)
    before = module_state(model.unet)
    with apply(model.target, {method: ACTIVE[method]}):
        first, again = run(model), run(model)
    assert not torch.equal(first, base)  # it skipped work
    assert torch.equal(first, again)  # state is reset per pipeline call
    assert module_state(model.unet) == before
    assert torch.equal(run(model), base)


@pytest.mark.parametrize("layout,method", [(l, m) for l, ms in HOOKED.items() for m in ms])
def test_neutral_setting_is_the_identity(models, layout, method):
    model = models[layout]
    base = run(model)
    with apply(model.target, {method: NEUTRAL[method]}):
        assert torch.equal(run(model), base)


def test_fbcache_refuses_sd3(models):
    with pytest.raises(TunerError, match="fbcache"):
        apply(models["sd3"].target, {"fbcache": {"threshold": 0.1}})


@pytest.mark.parametrize("layout", list(HOOKED))
def test_magcache_calibration_gives_one_ratio_per_step(models, layout):
    """The study's measurement: a full run records one ratio per step, 1.0 first, and leaves nothing behind."""
    from tuner.methods.magcache import calibrate

    model = models[layout]
    base, before = run(model), module_state(model.unet)
    ratios = calibrate(model, PROMPTS, SEEDS, STEPS)
    assert len(ratios) == STEPS and ratios[0] == 1.0 and all(r > 0 for r in ratios[1:])
    assert module_state(model.unet) == before and torch.equal(run(model), base)


@pytest.mark.parametrize("layout", list(HOOKED))
def test_magcache_without_ratios_measures_them_on_the_first_call(models, layout):
    model = models[layout]
    base = run(model)
    with apply(model.target, {"magcache": {"threshold": 10.0, "retention_ratio": 0.0}}):
        first, second = run(model), run(model)
    assert torch.equal(first, base) and not torch.equal(second, base)
    assert torch.equal(run(model), base)


def _full_steps(model, steps: int) -> int:
    """How many steps of one run compute the first block (MagCache skips it with the rest)."""
    from diffusers.models.attention_processor import Attention

    head = next(m for m in model.unet.transformer_blocks[0].modules() if isinstance(m, Attention))
    seen = []
    hook = head.register_forward_pre_hook(lambda m, inp: seen.append(1))
    try:
        model(PROMPTS, SEEDS, num_inference_steps=steps)
    finally:
        hook.remove()
    return len(seen)


def test_magcache_follows_each_calls_step_count(models):
    """Ratios measured at any count are interpolated to the call's, and the retained share is of the call's
    steps: half of 4 steps (2) or of 6 (3) run in full, then every other step (K = 1) is skipped."""
    model = models["pixart"]
    cfg = {"threshold": 1.0, "max_skip_steps": 1, "retention_ratio": 0.5, "mag_ratios": [1.0] * 10}
    with apply(model.target, {"magcache": cfg}):
        assert [_full_steps(model, 4), _full_steps(model, 6), _full_steps(model, 4)] == [3, 4, 3]


def test_magcache_ratios_reach_the_searched_configs():
    """A study's measured ratios are written into every magcache config the search decodes."""
    from tuner.search_spaces.space import SpaceContext, build_space

    ratios = [1.0, 1.2, 1.1]
    for facts, expected in (({"magcache": {"mag_ratios": ratios}}, ratios), ({}, None)):
        space = build_space({"magcache": {}}, SpaceContext(20, facts=facts))
        values = {"dit_cache": "magcache", "magcache.threshold": 0.1, "magcache.max_skip_steps": 2,
                  "magcache.retention_ratio": 0.2}
        cfg = space.to_config(values).methods["magcache"]
        assert cfg.mag_ratios == expected and cfg.threshold == 0.1


def _query_lengths(model, cfg: dict) -> list[int]:
    """Query length of every block's self-attention call during one run (Flux: text tokens included)."""
    from tuner.methods.dit_tome import self_attentions

    seen = []
    hooks = [a.to_q.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[1]))
             for a in self_attentions(model.unet)]
    try:
        with apply(model.target, cfg):
            run(model)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("layout", ["pixart", "sd3", "flux"])
def test_dit_tome_merges_on_the_patch_grid(models, layout):
    """Every block's self-attention sees ratio x N fewer image tokens (N = the 2-D patch grid: 32 px, VAE /2,
    patch 2 -> 8 x 8 = 64; Flux packs 2 x 2 latents into a token: the same 64). Text tokens stay (Flux's
    single-stream blocks project both)."""
    model = models[layout]
    merged, full = _query_lengths(model, {"dit_tome": {"ratio": 0.5}}), _query_lengths(model, {"dit_tome": {"ratio": 0.0}})
    if layout == "flux":
        merged = merged[::len(PROMPTS)]  # Flux attends one image at a time once merged
    assert full and len(merged) == len(full) and {f - m for f, m in zip(full, merged)} == {32}


def test_dit_tome_on_flux_gives_each_kept_token_its_own_rotary_row(models):
    """Flux's attention gets the rotary rows of the text tokens, then those of the kept image tokens in
    their order (a merged src takes its dst's place), one image at a time; an image's result does not
    depend on the batch it is in."""
    from tuner.methods.dit_tome import self_attentions

    model = models["flux"]
    tables, passed = [], []
    table_spy = model.unet.pos_embed.register_forward_hook(lambda m, a, out: tables.append(out[0]))
    attn = self_attentions(model.unet)[0]
    processor = attn.processor

    def spy(module, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        passed.append((hidden_states.shape[0], image_rotary_emb[0]))
        return processor(module, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    attn.processor = spy  # what the processor is given, after tuner's hook
    try:
        with apply(model.target, {"dit_tome": {"ratio": 0.5}}):
            both = model(PROMPTS, SEEDS, num_inference_steps=2)
            alone = model(PROMPTS[1:], SEEDS[1:], num_inference_steps=2)
    finally:
        table_spy.remove()
        attn.processor = processor
    full = tables[0]
    n_text = len(full) - 64
    assert passed
    for batch, cos in passed:
        assert batch == 1 and len(cos) == n_text + 32
        assert torch.equal(cos[:n_text], full[:n_text])
        rows = [int((full[n_text:] == row).all(dim=1).nonzero()[0]) for row in cos[n_text:]]
        assert rows == sorted(set(rows))  # distinct kept tokens, in token order
    torch.testing.assert_close(both[1:], alone, rtol=1e-4, atol=1e-4)


def test_hooks_refuse_a_unet():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), cross_attention_dim=32,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8)
    with pytest.raises(TunerError, match="diffusion transformer"):
        apply(unet, {"pab": {}})


def test_flow_solver_at_the_pipelines_own_shift_is_the_baseline(models):
    """SD3's own scheduler is FlowMatchEuler at shift 3: flow_solver euler/3 reproduces it bit for bit."""
    model = models["sd3"]
    base = run(model)
    with apply(model.target, {"flow_solver": {"name": "euler", "shift": 3.0}}):
        assert torch.equal(run(model), base)
    with apply(model.target, {"flow_solver": {"name": "euler", "shift": 1.0}}):
        assert not torch.equal(run(model), base)


@pytest.mark.parametrize("layout", ["sd3", "flux"])
@pytest.mark.parametrize("name", ["dpmsolver++", "unipc"])
def test_flow_multistep_solvers_run_and_are_put_back(models, layout, name):
    model = models[layout]
    base = run(model)
    scheduler = model.pipe.scheduler
    with apply(model.target, {"flow_solver": {"name": name, "shift": 2.0}, "timesteps": {"count": 3}}) as h:
        images = run(model)
        assert h.info["num_steps"] == 3 and torch.isfinite(images).all() and not torch.equal(images, base)
    assert model.pipe.scheduler is scheduler and torch.equal(run(model), base)


def test_solver_refuses_flow_matching_and_flow_solver_refuses_pixart(models):
    with pytest.raises(TunerError, match="flow_solver"):
        apply(models["flux"].target, {"solver": {"name": "unipc"}})
    with pytest.raises(TunerError, match="flow-matching"):
        apply(models["pixart"].target, {"flow_solver": {"name": "euler"}})


@pytest.mark.parametrize("layout", list(HOOKED))
def test_quant_covers_the_transformers_linear_layers(models, layout):
    from tuner.methods.quant import calibrate

    model = models[layout]
    base = run(model)
    calibrate(model)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.unet.modules())
    with apply(model.target, {"quant": {"weight_bits": 4, "act_bits": 8}}) as h:
        assert len(h.info["layer_bits"]) >= n_linear
        assert not torch.equal(run(model), base)
    assert torch.equal(run(model), base)

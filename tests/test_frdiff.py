import pytest
import torch

from tuner.errors import TunerError
from tuner.methods.cache_schedule import frdiff_lambda
from tuner.methods.frdiff import FRDiffConfig, apply
from tuner.step_context import get_step_context

CLASSES, SEEDS, STEPS = [1, 2, 3], [0, 1, 2], 9


def run(pipe, steps=STEPS):
    return pipe(CLASSES, SEEDS, num_inference_steps=steps)


def counting(modules: dict):
    box = {k: 0 for k in modules}
    handles = [m.register_forward_hook(lambda *a, k=k: box.__setitem__(k, box[k] + 1)) for k, m in modules.items()]
    return box, handles


@pytest.mark.parametrize("bad", [dict(interval=0), dict(bias=1.5), dict(bias=-0.1), dict(mixing="yes"),
                                 dict(slope=30)])
def test_bad_config_is_a_one_line_error(bad):
    with pytest.raises(TunerError):
        FRDiffConfig.from_dict(bad)


def test_lambda_schedule():
    assert frdiff_lambda(0, 50, 0.5) == 0.0
    assert frdiff_lambda(25, 50, 0.5) == 0.5  # (30·0 + 2)/4
    assert frdiff_lambda(49, 50, 0.5) == 1.0
    assert frdiff_lambda(21, 50, 0.5) == 0.0 and 0 < frdiff_lambda(22, 50, 0.5) < 1  # λ=0 up to i/T = b − 1/15
    assert frdiff_lambda(3, 50, 0.0) < 1.0 == frdiff_lambda(4, 50, 0.0)  # b=0: λ=1 from i/T = 1/15
    assert frdiff_lambda(46, 50, 1.0) == 0.0 < frdiff_lambda(47, 50, 1.0)  # b=1: U-Net skipped up to i/T = 14/15


def test_neutral_identical_reversible_and_reset_per_call(tiny_pipe):
    base = run(tiny_pipe)
    with apply(tiny_pipe, FRDiffConfig(interval=1)):
        assert torch.equal(run(tiny_pipe), base)
    handle = apply(tiny_pipe, FRDiffConfig(interval=3, bias=0.5))
    first, second = run(tiny_pipe), run(tiny_pipe)
    handle.remove()
    assert not torch.equal(first, base)
    assert torch.equal(first, second)
    assert torch.equal(run(tiny_pipe), base)


def test_reuse_steps_skip_conv1_and_transformers(tiny_pipe):
    unet = tiny_pipe.unet
    block = unet.down_blocks[0]
    tb = block.attentions[0].transformer_blocks[0]
    watched = {"conv1": block.resnets[0].conv1, "conv2": block.resnets[0].conv2, "attn1": tb.attn1,
               "attn2": tb.attn2, "ff": tb.ff, "proj_in": block.attentions[0].proj_in,
               "mid_conv1": unet.mid_block.resnets[0].conv1, "conv_in": unet.conv_in}
    with apply(tiny_pipe, FRDiffConfig(interval=3, mixing=False)):
        box, handles = counting(watched)
        run(tiny_pipe)
        for h in handles:
            h.remove()
    keyframes = 3  # steps 0, 3, 6 of 9
    assert {k: box[k] for k in ("conv1", "attn1", "attn2", "ff", "proj_in", "mid_conv1")} == dict.fromkeys(
        ("conv1", "attn1", "attn2", "ff", "proj_in", "mid_conv1"), keyframes)
    assert box["conv2"] == STEPS and box["conv_in"] == STEPS  # recomputed every step


def test_mixing_skips_the_unet_where_lambda_is_zero(tiny_pipe):
    runs_expected = [i for i in range(STEPS) if i % 3 == 0 or frdiff_lambda(i, STEPS, 0.5) > 0]
    with apply(tiny_pipe, FRDiffConfig(interval=3, bias=0.5)):
        box, handles = counting({"conv_in": tiny_pipe.unet.conv_in})
        run(tiny_pipe)
        handles[0].remove()
    assert box["conv_in"] == len(runs_expected) == 7  # keyframes 0,3,6 plus 4,5,7,8 (λ>0)


def _two_step(unet, cfg, x0, x1, conds):
    """Keyframe at t=900, reuse step at t=700, split CFG (one forward per conditioning)."""
    with apply(unet, cfg):
        get_step_context(unet).begin([900, 700])
        first = [unet(x0, 900, encoder_hidden_states=c).sample for c in conds]
        second = [unet(x1, 700, encoder_hidden_states=c).sample for c in conds]
    return first, second


def test_score_mixing_formula_and_per_branch_caches(tiny_pipe):
    unet = tiny_pipe.unet
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(2, 1, 16, 16, generator=g), torch.randn(2, 1, 16, 16, generator=g)
    conds = [torch.randn(2, 4, 32, generator=g), torch.randn(2, 4, 32, generator=g)]
    with torch.no_grad():
        key, reuse = _two_step(unet, FRDiffConfig(interval=2, mixing=False), x0, x1, conds)
        _, mixed = _two_step(unet, FRDiffConfig(interval=2, bias=0.5), x0, x1, conds)  # λ(1, 2, 0.5) = 0.5
        _, jumped = _two_step(unet, FRDiffConfig(interval=2, bias=1.0), x0, x1, conds)  # λ = 0
    lam = frdiff_lambda(1, 2, 0.5)
    assert lam == 0.5
    for k in range(2):
        assert torch.equal(mixed[k], lam * reuse[k] + (1 - lam) * key[k])
        assert torch.equal(jumped[k], key[k])  # each CFG branch gets its own keyframe score
    assert not torch.equal(key[0], key[1])


def test_mixing_without_known_steps_is_a_clear_error(tiny_pipe):
    unet = tiny_pipe.unet
    x, c = torch.randn(2, 1, 16, 16), torch.randn(2, 4, 32)
    with torch.no_grad(), apply(unet, FRDiffConfig(interval=2)):
        get_step_context(unet).begin(None)
        unet(x, 900, encoder_hidden_states=c)
        with pytest.raises(TunerError, match="number of steps"):
            unet(x, 700, encoder_hidden_states=c)


def test_sd15_unet_two_steps(sd15_unet):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 77, 768, generator=g)
    box, handles = counting({"conv1": sd15_unet.down_blocks[0].resnets[0].conv1,
                             "attn1": sd15_unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1})
    try:
        with torch.no_grad(), apply(sd15_unet, FRDiffConfig(interval=2, mixing=False)) as h:
            get_step_context(sd15_unet).begin([999, 500])
            full = sd15_unet(x, 999, encoder_hidden_states=text).sample
            reused = sd15_unet(x, 500, encoder_hidden_states=text).sample
    finally:
        for r in handles:
            r.remove()
    assert box == {"conv1": 1, "attn1": 1}
    assert h.info["frdiff_resnets"] == 22 and h.info["frdiff_transformers"] == 16
    assert reused.shape == full.shape and torch.isfinite(reused).all()


def test_composes_with_deepcache(tiny_pipe):
    from tuner.apply_config import apply as apply_config

    base = run(tiny_pipe)
    neutral = {"schema_version": 2, "methods": {"deepcache": {"interval": 1}, "frdiff": {"interval": 1}}}
    with apply_config(tiny_pipe, neutral):
        assert torch.equal(run(tiny_pipe), base)
    both = {"schema_version": 2, "methods": {"deepcache": {"interval": 3, "branch": 1}, "frdiff": {"interval": 2}}}
    with apply_config(tiny_pipe, both):
        first, second = run(tiny_pipe), run(tiny_pipe)
    assert torch.equal(first, second) and torch.isfinite(first).all() and not torch.equal(first, base)
    assert torch.equal(run(tiny_pipe), base)


def test_mixing_on_a_diffusers_pipeline_twice_in_a_row(tmp_path):
    """The step count comes from the pipeline's scheduler at each call: the U-Net is skipped exactly
    where λ(i, T) = 0 for that call's T, and a second call (no manual begin) repeats the first."""
    pytest.importorskip("transformers")
    from tiny_sd import generate, tiny_sd_pipeline

    pipe = tiny_sd_pipeline(tmp_path)
    base = generate(pipe)
    with apply(pipe, FRDiffConfig(interval=3, bias=0.5)):
        for steps in (9, 12):
            expected = [i for i in range(steps) if i % 3 == 0 or frdiff_lambda(i, steps, 0.5) > 0]
            box, handles = counting({"conv_in": pipe.unet.conv_in})
            first, second = generate(pipe, steps=steps), generate(pipe, steps=steps)
            handles[0].remove()
            assert box["conv_in"] == 2 * len(expected) < 2 * steps
            assert torch.equal(first, second)
    assert torch.equal(generate(pipe), base)


def test_mixing_refused_at_apply_when_no_step_count_can_be_known(tiny_pipe):
    from types import SimpleNamespace

    with pytest.raises(TunerError, match="number of steps"):
        apply(SimpleNamespace(unet=tiny_pipe.unet), FRDiffConfig(interval=2))
    apply(SimpleNamespace(unet=tiny_pipe.unet), FRDiffConfig(interval=2, mixing=False)).remove()

"""ToMe (fixed ratio) and the shared merge math / hooking."""

from __future__ import annotations

import pytest
import torch

from tuner.apply_config import apply as apply_config
from tuner.config import AccelConfig
from tuner.errors import TunerError
from tuner.methods import tome
from tuner.methods.merge import dst_tokens, match_ratio, match_threshold, merge, unmerge
from tuner.methods.token_merge_patch import transformer_blocks

CLASSES, SEEDS, STEPS = [1, 7], [11, 12], 4


def dst_token_mask(h, w, sx, sy, generator=None):
    """[h*w] bool, True for the dst tokens `dst_tokens` picks (tokens outside complete cells are src)."""
    return torch.zeros(h * w, dtype=torch.bool).scatter_(0, dst_tokens(h, w, sx, sy, generator), True)


def run(pipe, classes=CLASSES, seeds=SEEDS):
    return pipe(classes, seeds, num_inference_steps=STEPS)


# --- tensor math -------------------------------------------------------------------------------------
def test_dst_mask_top_left_and_random():
    m = dst_token_mask(4, 6, sx=2, sy=2).view(4, 6)
    assert m.sum() == 6 and m[0::2, 0::2].all()
    r1 = dst_token_mask(5, 5, 2, 2, torch.Generator().manual_seed(3)).view(5, 5)
    r2 = dst_token_mask(5, 5, 2, 2, torch.Generator().manual_seed(3)).view(5, 5)
    assert torch.equal(r1, r2) and r1.sum() == 4  # one dst per complete 2x2 cell
    assert not r1[4].any() and not r1[:, 4].any()  # leftover row/column: src only
    for i in range(2):
        for j in range(2):
            assert r1[2 * i:2 * i + 2, 2 * j:2 * j + 2].sum() == 1


def test_ratio_matching_merges_r_per_image_and_means():
    torch.manual_seed(0)
    x = torch.randn(3, 16, 5)
    plan = match_ratio(x, 4, 4, 2, 2, ratio=0.5)
    assert plan.n_merged.tolist() == [8, 8, 8] and plan.num_slots == 8 and plan.key_mask is None
    merged = merge(x, plan)
    back = unmerge(merged, plan)
    for b in range(3):
        pairs = plan.pairs(b)
        for dst in pairs[:, 1].unique():
            group = torch.cat([dst.view(1), pairs[pairs[:, 1] == dst, 0]])
            expected = x[b, group].mean(0)
            assert torch.allclose(back[b, group], expected.expand(len(group), -1), atol=1e-6)
        kept = [n for n in range(16) if n not in pairs[:, 0].tolist() and n not in pairs[:, 1].tolist()]
        assert torch.equal(back[b, kept], x[b, kept])  # untouched tokens pass through exactly
        # merged pairs are the most similar ones: every merged src beats every unmerged src
        xn = x[b] / x[b].norm(dim=-1, keepdim=True)
        dst_tok = dst_token_mask(4, 4, 2, 2).nonzero().flatten()
        best = (xn @ xn[dst_tok].T).max(-1).values
        src = (~dst_token_mask(4, 4, 2, 2)).nonzero().flatten()
        merged_src = set(pairs[:, 0].tolist())
        assert min(best[s] for s in merged_src) >= max(best[s] for s in src.tolist() if s not in merged_src)


def test_zero_ratio_gives_no_plan():
    assert match_ratio(torch.randn(2, 16, 3), 4, 4, ratio=0.0) is None
    assert match_threshold(torch.randn(2, 16, 3), 4, 4, threshold=1.01) is None


# --- on the proxy architecture ---------------------------------------------------------------------
def test_neutral_is_bit_identical_and_remove_restores(tiny_pipe):
    base = run(tiny_pipe)
    with tome.apply(tiny_pipe, tome.ToMeConfig(ratio=0.0)):
        assert torch.equal(run(tiny_pipe), base)
    h = tome.apply(tiny_pipe, tome.ToMeConfig(ratio=0.5, merge_crossattn=True, merge_mlp=True))
    first = run(tiny_pipe)
    second = run(tiny_pipe)
    h.remove()
    assert not torch.equal(first, base)  # merging does something
    assert torch.equal(first, second)  # random dst reseeded per call: no state leaks across calls
    assert torch.equal(run(tiny_pipe), base)
    h.remove()  # idempotent


def test_images_do_not_interact_in_a_batch(tiny_ddim_pipe):
    """Batched CFG with per-image matching: an image's output does not depend on its batch mates. On DDIM:
    the random-weight tiny U-Net saturates its images, and DPM-Solver++'s multistep update amplifies the batch
    size's float rounding (~1e-7) past 1e-5 at a saturated pixel; the property checked here is ToMe's."""
    tiny_pipe = tiny_ddim_pipe
    with tome.apply(tiny_pipe, tome.ToMeConfig(ratio=0.6, use_rand=False)):
        both = run(tiny_pipe, [1, 7, 3], [11, 12, 13])
        alone = run(tiny_pipe, [7], [12])
    assert torch.allclose(both[1:2], alone, atol=1e-5)


def test_levels_select_blocks(tiny_pipe):
    unet = tiny_pipe.unet
    top = transformer_blocks(unet, 1)
    assert {r.label for r in top} == {"D1", "U1"} and len(top) == 3  # D1 has 1 transformer, U1 has 2
    assert len(transformer_blocks(unet, 2)) > len(top)
    h = tome.apply(tiny_pipe, tome.ToMeConfig(ratio=0.3, max_downsample=2))
    assert h.info["tome_blocks"] == len(transformer_blocks(unet, 2))
    h.remove()


def test_level_without_transformer_blocks_is_an_error():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4)
    with pytest.raises(TunerError, match="reaches no transformer block.*smallest max_downsample that patches one is 2"):
        tome.apply(unet, tome.ToMeConfig(ratio=0.5, max_downsample=1))
    assert not any(m._forward_pre_hooks for m in unet.modules() if m is not unet)


def test_tome_and_catome_together_is_an_error(tiny_pipe):
    base = run(tiny_pipe)
    cfg = AccelConfig.from_dict({"schema_version": 2, "methods": {"tome": {"ratio": 0.5}, "catome": {"threshold": 0.5}}})
    with pytest.raises(TunerError, match="cannot be combined"):
        apply_config(tiny_pipe, cfg)
    assert torch.equal(run(tiny_pipe), base)  # the half-applied tome was rolled back


@pytest.mark.parametrize("params", [{"ratio": 1.0}, {"ratio": -0.1}, {"max_downsample": 3}, {"sx": 0},
                                    {"use_rand": "yes"}, {"ratios": 0.5}])
def test_bad_config_is_one_line_error(params):
    with pytest.raises(TunerError) as e:
        AccelConfig.from_dict({"schema_version": 2, "methods": {"tome": params}})
    assert "\n" not in str(e.value)


def test_sd15_unet_one_forward(sd15_unet):
    torch.manual_seed(0)
    x, ehs = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 768)
    with torch.no_grad():
        base = sd15_unet(x, 500, encoder_hidden_states=ehs).sample
        with tome.apply(sd15_unet, tome.ToMeConfig(ratio=0.5)) as h:
            out = sd15_unet(x, 500, encoder_hidden_states=ehs).sample
        again = sd15_unet(x, 500, encoder_hidden_states=ehs).sample
    assert h.info["tome_blocks"] == 5  # D1: 2 transformers, U1: 3
    assert out.shape == base.shape and torch.isfinite(out).all() and not torch.equal(out, base)
    assert torch.equal(again, base)


def test_same_images_as_tomesd(tiny_pipe):
    """tomesd patches the blocks' forward; we hook. Same dst draws (its generator seeded like ours, at every
    call), same merges: the images agree up to float summation order."""
    tomesd = pytest.importorskip("tomesd")
    unet = tiny_pipe.unet
    base = run(tiny_pipe)
    tomesd.apply_patch(unet, ratio=0.5)

    def reseed(module, args):
        if tiny_pipe.step_context.step == 0:
            unet._tome_info["args"]["generator"] = torch.Generator().manual_seed(0)

    h = unet.register_forward_pre_hook(reseed)
    try:
        peer = run(tiny_pipe)
    finally:
        h.remove()
        tomesd.remove_patch(unet)
    with apply_config(tiny_pipe, AccelConfig.from_dict({"schema_version": 2, "methods": {"tome": {"ratio": 0.5}}})):
        ours = run(tiny_pipe)
    assert (peer - base).abs().max() > 1e-3  # merging does something here
    assert (ours - peer).abs().max() <= 1e-4

"""CA-ToMe: threshold matching with per-image counts, checkpoint caching, per-call state."""

from __future__ import annotations

import pytest
import torch

from tuner.config import AccelConfig
from tuner.errors import TunerError
from tuner.methods import catome
from tuner.methods.merge import best_dst, dst_tokens, match_threshold, merge, unmerge

CLASSES, SEEDS = [1, 7], [11, 12]

def dst_token_mask(h, w, sx, sy, generator=None):
    """[h*w] bool, True for the dst tokens `dst_tokens` picks (tokens outside complete cells are src)."""
    return torch.zeros(h * w, dtype=torch.bool).scatter_(0, dst_tokens(h, w, sx, sy, generator), True)


def run(pipe, steps=4, classes=CLASSES, seeds=SEEDS):
    return pipe(classes, seeds, num_inference_steps=steps)


def test_threshold_merges_each_image_by_its_own_similarities():
    torch.manual_seed(0)
    smooth = torch.randn(1, 1, 8).expand(1, 64, 8) + 0.05 * torch.randn(1, 64, 8)  # nearly identical tokens
    x = torch.cat([smooth, torch.randn(1, 64, 8)])
    t = 0.8
    plan = match_threshold(x, 8, 8, 2, 2, threshold=t)
    counts = plan.n_merged.tolist()
    assert counts[0] == 48 and 0 < counts[1] < 48  # each image merges its own number of pairs
    src = (~dst_token_mask(8, 8, 2, 2)).nonzero().flatten()
    sim, _ = best_dst(x, src, dst_token_mask(8, 8, 2, 2).nonzero().flatten())
    for b in range(2):
        merged = plan.partner[b, src] >= 0
        assert torch.equal(merged, sim[b] >= t)  # exactly the src at or above t, never the batch maximum
    # the image that merges less is padded; its padding is masked as attention keys and never read back
    assert plan.num_slots == 64 - counts[1] and plan.key_mask is not None
    assert (plan.key_mask[1] == 0).all() and (plan.key_mask[0, 0, 64 - 48:] < -1e30).all()
    back = unmerge(merge(x, plan), plan)
    untouched = plan.partner[1] < 0
    untouched[plan.partner[1][plan.partner[1] >= 0]] = False  # dst that received a src change too
    assert untouched.sum() > 0 and torch.equal(back[1, untouched], x[1, untouched])


def test_batch_equals_images_alone_with_different_counts(tiny_pipe):
    """Per-image merging through the U-Net: a batch of a smooth and a noisy image (very different merge
    counts) gives each image the output it gets alone, so padding and masking are exact."""
    unet = tiny_pipe.unet
    torch.manual_seed(0)
    x = torch.cat([torch.full((1, 1, 16, 16), 0.3), torch.randn(1, 1, 16, 16)])
    tokens = tiny_pipe.class_encoder(torch.tensor([1, 2])).detach()
    h = catome.apply(unet, catome.CaToMeConfig(threshold=0.9))
    with torch.no_grad():
        both = unet(x, 500, encoder_hidden_states=tokens).sample
        counts = h.state.caches["down_blocks.0.attentions.0.transformer_blocks.0"].plans[0].n_merged.tolist()
        alone = [unet(x[i:i + 1], 500, encoder_hidden_states=tokens[i:i + 1]).sample for i in range(2)]
    h.remove()
    assert counts[0] > 2 * counts[1] > 0
    assert torch.allclose(both, torch.cat(alone), atol=1e-4)


def test_neutral_threshold_is_bit_identical_and_remove_restores(tiny_pipe):
    base = run(tiny_pipe)
    with catome.apply(tiny_pipe, catome.CaToMeConfig(threshold=1.01)):
        assert torch.equal(run(tiny_pipe), base)
    with catome.apply(tiny_pipe, catome.CaToMeConfig(threshold=1.5, checkpoints=[0, 2])):
        assert torch.equal(run(tiny_pipe), base)
    with catome.apply(tiny_pipe, catome.CaToMeConfig(threshold=0.6, checkpoints=[0, 2])):
        assert not torch.equal(run(tiny_pipe), base)
    assert torch.equal(run(tiny_pipe), base)


def test_similarity_computed_only_at_checkpoints(tiny_pipe):
    h = catome.apply(tiny_pipe, catome.CaToMeConfig(threshold=0.6, checkpoints=[0, 5]))
    n_blocks = h.info["catome_blocks"]
    first = run(tiny_pipe, steps=10)
    assert h.state.per_block and all(v == 2 for v in h.state.per_block.values())
    assert h.state.similarity_computations == 2 * n_blocks
    second = run(tiny_pipe, steps=10)  # state reset per call: same count, same images
    assert h.state.similarity_computations == 2 * n_blocks
    assert torch.equal(first, second)
    h.remove()
    with catome.apply(tiny_pipe, catome.CaToMeConfig(threshold=0.6, checkpoints=None)) as h2:
        run(tiny_pipe, steps=10)
        assert h2.state.similarity_computations == 10 * n_blocks
    with catome.apply(tiny_pipe, catome.CaToMeConfig(threshold=0.6, checkpoints=[3])) as h3:
        run(tiny_pipe, steps=6)  # no plan before step 3 yet: step 0 has to compute one
        assert set(h3.state.per_block.values()) == {2}


def test_cache_does_not_leak_across_calls_or_images(tiny_pipe):
    cfg = catome.CaToMeConfig(threshold=0.6, checkpoints=[0, 2])
    with catome.apply(tiny_pipe, cfg):
        run(tiny_pipe, classes=[3, 4], seeds=[21, 22])  # fills the cache with other images' pairs
        after_other = run(tiny_pipe)
    with catome.apply(tiny_pipe, cfg):
        fresh = run(tiny_pipe)
    assert torch.equal(after_other, fresh)


def test_cached_steps_reuse_the_checkpoint_pairs(tiny_pipe):
    """Caching changes the result (pairs of step 0 reused at steps 1..3) but stays close to recomputing."""
    with catome.apply(tiny_pipe, catome.CaToMeConfig(threshold=0.7, checkpoints=None)):
        every = run(tiny_pipe)
    with catome.apply(tiny_pipe, catome.CaToMeConfig(threshold=0.7, checkpoints=[0])):
        cached = run(tiny_pipe)
    assert not torch.equal(every, cached)


@pytest.mark.parametrize("params", [{"threshold": 1.6}, {"threshold": -0.1}, {"checkpoints": [0, -1]},
                                    {"checkpoints": [0, 0]}, {"checkpoints": "0,5"}, {"max_downsample": 0},
                                    {"ratio": 0.5}])
def test_bad_config_is_one_line_error(params):
    with pytest.raises(TunerError) as e:
        AccelConfig.from_dict({"schema_version": 2, "methods": {"catome": params}})
    assert "\n" not in str(e.value)


def test_sd15_unet_one_forward(sd15_unet):
    torch.manual_seed(0)
    x, ehs = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 768)
    with torch.no_grad():
        base = sd15_unet(x, 500, encoder_hidden_states=ehs).sample
        with catome.apply(sd15_unet, catome.CaToMeConfig(threshold=0.3)) as h:
            out = sd15_unet(x, 500, encoder_hidden_states=ehs).sample
            assert h.state.similarity_computations == 5  # D1: 2 transformer blocks, U1: 3
        again = sd15_unet(x, 500, encoder_hidden_states=ehs).sample
    assert torch.isfinite(out).all() and not torch.equal(out, base)
    assert torch.equal(again, base)

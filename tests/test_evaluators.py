import pytest
import torch
from torch import nn

from tuner.evaluators.cost import bitops, count_macs
from tuner.evaluators.fidelity import ReferenceFeatures, fid_kid
from tuner.evaluators.latency import interleaved_medians, time_once
from tuner.evaluators.pairwise import PSNR_IDENTICAL, pairwise
from tuner.proxy.data import load_digits_split


@pytest.fixture(scope="module")
def extractor():
    from tuner.proxy.classifier import ClassifierFeatures, load_classifier

    return ClassifierFeatures(load_classifier())


def _reference(extractor, tmp_path):
    return ReferenceFeatures(extractor, "digits-test", 16, lambda: load_digits_split("heldout")[0], tmp_path)


def test_fid_real_vs_real_small_noise_large(extractor, tmp_path):
    ref = _reference(extractor, tmp_path).features()
    real = load_digits_split("heldout")[0]
    same = fid_kid(real, extractor, ref)
    noise = fid_kid(torch.rand(len(real), 1, 16, 16, generator=torch.Generator().manual_seed(0)), extractor, ref)
    assert abs(same["fid"]) < 1e-3
    assert noise["fid"] > 100 * max(same["fid"], 1e-3)
    assert noise["kid"] > same["kid"]


def test_reference_features_cached_on_disk_and_reused(extractor, tmp_path):
    first = _reference(extractor, tmp_path)
    feats = first.features()
    assert first.computed == 1 and first.path.is_file()
    second = _reference(extractor, tmp_path)
    assert torch.equal(second.features(), feats)
    assert second.computed == 0  # loaded, not recomputed


def test_corrupt_reference_cache_is_recomputed_and_replaced(extractor, tmp_path):
    feats = _reference(extractor, tmp_path).features()
    ref = _reference(extractor, tmp_path)
    ref.path.write_bytes(b"not a tensor file")
    assert torch.equal(ref.features(), feats) and ref.computed == 1
    again = _reference(extractor, tmp_path)
    assert torch.equal(again.features(), feats) and again.computed == 0  # the rewritten file is good


def test_reference_key_changes_with_extractor_weights(extractor, tmp_path):
    from tuner.proxy.classifier import ClassifierFeatures, DigitClassifier

    other = ClassifierFeatures(DigitClassifier())
    assert _reference(other, tmp_path).path != _reference(extractor, tmp_path).path


def test_nan_images_rejected(extractor, tmp_path):
    ref = _reference(extractor, tmp_path).features()
    bad = torch.full((4, 1, 16, 16), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        fid_kid(bad, extractor, ref)


def test_latency_medians_positive_and_interleaved():
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    med = interleaved_medians(fns, repeats=3, warmup=1)
    assert set(med) == {"a", "b"} and all(v > 0 for v in med.values())
    assert order == ["a", "b"] * 4  # warm-up then round-robin
    assert time_once(lambda: sum(range(1000))) > 0


def test_latency_contexts_entered_outside_each_call():
    events = []

    class Ctx:
        def __enter__(self):
            events.append("enter")

        def __exit__(self, *exc):
            events.append("exit")

    interleaved_medians({"x": lambda: events.append("run")}, repeats=2, warmup=0, contexts={"x": Ctx})
    assert events == ["enter", "run", "exit"] * 2


def test_pairwise_identical_and_different():
    a = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    same = pairwise(a, a)
    assert same["psnr"] == PSNR_IDENTICAL and same["ssim"] == pytest.approx(1.0)
    diff = pairwise((a + 0.1).clamp(0, 1), a)
    assert diff["psnr"] < 40 and diff["ssim"] < 1


def test_macs_and_bitops():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    macs = count_macs(model, lambda: model(torch.zeros(2, 1, 8, 8)))
    assert macs["0"] == 2 * 4 * 8 * 8 * 9
    assert macs["2"] == 2 * 10 * 256
    full = bitops(macs)
    assert full == sum(macs.values()) * 32 * 32
    w8a8 = bitops(macs, {name: (8, 8) for name in macs})
    assert w8a8 * 16 == full
    mixed = bitops(macs, {"0": (4, 8)})
    assert mixed == macs["0"] * 32 + macs["2"] * 1024


def test_macs_count_only_what_runs(tiny_pipe):
    """Fewer steps, fewer MACs: the counter sums real U-Net calls."""
    m2 = sum(count_macs(tiny_pipe.unet, lambda: tiny_pipe([1], [0], num_inference_steps=2)).values())
    m4 = sum(count_macs(tiny_pipe.unet, lambda: tiny_pipe([1], [0], num_inference_steps=4)).values())
    assert m4 == 2 * m2 > 0
    assert any(k.endswith(".sdpa") for k in count_macs(tiny_pipe.unet, lambda: tiny_pipe([1], [0], num_inference_steps=1)))

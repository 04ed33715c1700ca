"""Issue 20's CUDA fixes and input sanity checks, on CPU (mocks stand in for a GPU): peak memory over the
timed generations, baseline features extracted once, feature extraction on the model's device, a
degenerate extractor refused, the user-model table without the class-accuracy column, export printing the
numbers it chose on."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from tuner.errors import TunerError


def test_peak_memory_is_taken_over_the_timed_generations(tiny_pipe, monkeypatch):
    """Every timed call (baseline and candidate) runs inside a reset-then-read PeakMemory on the chosen
    device; the candidate's peak becomes the trial's memory_gb."""
    import tuner.scoring as ev
    from tuner.config import AccelConfig
    from tuner.evaluators.memory import PeakMemory

    from test_user_model_errors import FakeCuda

    cuda = FakeCuda(peak_bytes=2 * 1024 ** 3)
    made = []

    def fake_peak(device):
        made.append(str(device))
        return PeakMemory("cuda:1", cuda)

    monkeypatch.setattr(ev, "PeakMemory", fake_peak)
    ctx = ev.ScoringContext(tiny_pipe, ev.ImageSet(n_images=2, steps=2), latency_images=1, latency_repeats=2)
    ctx.latency(AccelConfig.from_dict({"tome": {"ratio": 0.5}}))
    assert ctx.last_latency_memory == {"baseline": pytest.approx(2.0), "candidate": pytest.approx(2.0)}
    assert cuda.calls.count("reset") == cuda.calls.count("peak") == 2 * (2 + 1)  # 2 timed + 1 warm-up, each
    assert made == ["cpu", "cpu"]  # one meter per function, on the model's device


def test_baseline_features_are_extracted_once(tiny_pipe):
    from tuner.scoring import ScoringContext, ImageSet

    ctx = ScoringContext(tiny_pipe, ImageSet(n_images=5, steps=2))
    images = ctx.baseline_images
    first = ctx.fid_interval(images)
    again = ctx.fid_interval(images[:4])
    assert ctx.baseline_feature_extractions == 1 and first["fid_delta"] == pytest.approx(0.0, abs=1e-9)
    assert math.isfinite(again["fid_delta"])
    assert torch.equal(ctx.baseline_features(3), ctx.baseline_features()[:3])


def test_inception_features_run_on_the_model_device(monkeypatch):
    """A user model on CUDA gets its extractor moved to that device (a stub records the move)."""
    import tuner.scoring as ev

    moved = []

    class StubExtractor(torch.nn.Module):
        def __init__(self, *a, **k):
            super().__init__()

        def to(self, device):
            moved.append(str(device))
            return self

    monkeypatch.setattr(ev, "InceptionFeatures", StubExtractor)
    pipe = SimpleNamespace(kind="diffusers", device=torch.device("cuda:1"), target=None, model_id="m")
    ev.ScoringContext(pipe, ev.ImageSet(n_images=2, steps=1, prompts=("a cat",)))
    assert moved == ["cuda:1"]
    cpu = SimpleNamespace(kind="diffusers", device=torch.device("cpu"), target=None, model_id="m")
    ev.ScoringContext(cpu, ev.ImageSet(n_images=2, steps=1, prompts=("a cat",)))
    assert moved == ["cuda:1"]  # nothing to move on the CPU


def test_inception_forward_feeds_the_network_device():
    from tuner.evaluators.fidelity import InceptionFeatures

    seen = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen.append((x.device, x.dtype))
            return (torch.ones(len(x), 3),)

    ext = InceptionFeatures.__new__(InceptionFeatures)
    torch.nn.Module.__init__(ext)
    ext.net = Net()
    out = InceptionFeatures.forward(ext, torch.rand(2, 3, 8, 8))
    assert seen == [(torch.device("cpu"), torch.uint8)] and out.device.type == "cpu" and out.shape == (2, 3)


@pytest.mark.parametrize("fid", [0.0, 2e-17, float("nan"), float("inf")])
def test_degenerate_seed_floor_is_refused(fid):
    from tuner.scoring import check_seed_floor

    with pytest.raises(TunerError, match="cannot tell images apart") as e:
        check_seed_floor(fid, "inception.pth")
    assert "\n" not in str(e.value) and "inception.pth" in str(e.value)
    assert check_seed_floor(3.5, None) == 3.5


def test_degenerate_extractor_stops_a_user_model_baseline(user_models, monkeypatch):
    """End to end: an extractor that maps every image to one point gives FID 0 between seeds: refused."""
    import tuner.scoring as ev
    from tuner.models import load_model

    class Constant(torch.nn.Module):
        num_features = 4

        def __init__(self, *a, **k):
            super().__init__()

        def forward(self, images):
            return torch.ones(len(images), 4, dtype=torch.float64)

    monkeypatch.setattr(ev, "InceptionFeatures", Constant)
    model = load_model(str(user_models["sd15"]), "cpu", resolution=32)
    ctx = ev.ScoringContext(model, ev.ImageSet(n_images=2, steps=1, prompts=("a cat",)), latency_images=1,
                         latency_repeats=1)
    with pytest.raises(TunerError, match="cannot tell images apart"):
        ctx.evaluate_baseline()


def test_export_prints_the_numbers_it_chose_on():
    from tuner.commands.export import chosen_line

    study_only = {"seconds_per_image": 0.05, "speedup": 2.0, "fid": 3.0}
    assert chosen_line(4, study_only) == "trial #4: 50.00 ms/image, 2.00x, FID 3.000"
    validated = {**study_only, "validated_seconds_per_image": 0.06, "validated_speedup": 1.7,
                 "validated_fid_increase_pct": 4.2, "validated_fid_increase_pct_hi": 8.9, "validated_n_images": 128}
    line = chosen_line(4, validated)
    assert line.startswith("trial #4: 60.00 ms/image, 1.70x, FID change +4.2 % (upper +8.9 %) at 128 held-out")
    assert "validated" in line


def test_user_model_table_has_no_accuracy_column(monkeypatch, capsys, tmp_path):
    from tuner.commands import study as cmd
    from tuner.study import pareto
    import tuner.study.runner as runner

    def front(with_acc):
        objectives = {"seconds_per_image": 0.1, "speedup": 1.5, "fid": 2.0, "kid": 0.01, "n_images": 8,
                      "fid_increase_pct": 1.0, "fid_increase_pct_hi": 2.0}
        if with_acc:
            objectives["class_accuracy"] = 0.9
        return {"members": [{"trial": 1, "objectives": objectives, "config": {}}], "n_feasible": 1,
                "n_finished": 1, "hypervolume": 0.5, "baseline": {"seconds_per_image": 0.15, "fid": 2.0}}

    monkeypatch.setattr(cmd, "_spec", lambda path: SimpleNamespace(name="s"))
    monkeypatch.setattr(runner, "open_study", lambda spec, create=False: (None, None))
    args = SimpleNamespace(study="s.toml", plot=None, json=False)
    for with_acc in (False, True):
        monkeypatch.setattr(pareto, "front", lambda study, spec, w=with_acc: front(w))
        cmd.study_pareto(args)
        out = capsys.readouterr().out
        assert ("acc %" in out) is with_acc and "nan" not in out


def test_baseline_features_follow_a_grown_baseline_set(tiny_pipe):
    """The race grows the baseline set past the study's (8 -> 32 -> 128 images on a 64-image study): the
    cached features extend by the new images only, and FID's reference stays the study's own set."""
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.study.race import grow_baseline

    ctx = ScoringContext(tiny_pipe, ImageSet(n_images=4, steps=2))
    reference = ctx.reference_features().clone()
    first = ctx.baseline_features().clone()  # the study's 4 images
    grown = grow_baseline(ctx, 7)
    out = ctx.fid_interval(grown)  # 7 candidate rows paired with 7 baseline rows
    assert out["fid_delta"] == pytest.approx(0.0, abs=1e-4)  # features of 4 + 3 vs 7 images: batching moves ~1e-6
    assert ctx.baseline_feature_extractions == 2 and len(ctx.baseline_features()) == 7
    assert torch.equal(ctx.baseline_features(4), first)
    assert torch.equal(ctx.reference_features(), reference)

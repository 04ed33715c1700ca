"""Bad input for studies on a user's model: one line, exit 2, no database. And the GPU-only paths
(CUDA-event timing, peak memory, dtype support) driven on the CPU through fake `torch.cuda` objects."""

from __future__ import annotations

import shutil

import pytest
import torch

from tuner.cli import main
from tuner.errors import TunerError

STUDY = """
name = "bad"
n_trials = 2
[model]
id = "{folder}"
device = "cpu"
{model_extra}
[image_set]
n_images = 2
steps = 2
{proxy_extra}
[evaluator]
inception_weights = "{inception}"
{evaluator_extra}
"""


def run_bad(user_models, tmp_path, capsys, folder=None, model_extra="", proxy_extra="", evaluator_extra=""):
    toml = tmp_path / "bad.toml"
    toml.write_text(STUDY.format(folder=folder or user_models["sd15"], inception=user_models["inception"],
                                 model_extra=model_extra, proxy_extra=proxy_extra, evaluator_extra=evaluator_extra))
    code = main(["study", "run", str(toml), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("tuner: error:") and "\n" not in err
    assert not list(tmp_path.glob("*.db")), "a database was created"
    return err


def test_folder_that_is_not_a_pipeline(user_models, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "not a diffusers pipeline folder" in run_bad(user_models, tmp_path, capsys, folder=tmp_path / "empty")


def test_pipeline_without_a_conditional_unet(user_models, tmp_path, capsys):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    err = run_bad(user_models, tmp_path, capsys, folder=tmp_path / "ddpm")
    assert "DDPMPipeline" in err and "UNet2DModel" in err


@pytest.mark.parametrize("content", [None, "\n# only a comment\n\n"])
def test_prompts_file_missing_or_empty(user_models, tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "prompts.txt").write_text(content)
    err = run_bad(user_models, tmp_path, capsys, proxy_extra='prompts = "prompts.txt"')
    assert "image_set.prompts" in err and ("not found" in err or "no prompt" in err)


def test_reference_folder_with_one_image(user_models, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "ref").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "ref" / "a.png")
    err = run_bad(user_models, tmp_path, capsys, evaluator_extra='reference_images = "ref"')
    assert "1 image" in err and "at least 2" in err


def test_dtype_the_device_cannot_run(user_models, tmp_path, capsys):
    assert "float16" in run_bad(user_models, tmp_path, capsys, model_extra='dtype = "float16"')


def test_corrupt_unet_weights_in_the_folder(user_models, tmp_path, capsys):
    folder = tmp_path / "sd15"
    shutil.copytree(user_models["sd15"], folder)
    weights = next((folder / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    err = run_bad(user_models, tmp_path, capsys, folder=folder)
    assert "corrupt" in err or "truncated" in err


def test_corrupt_proxy_unet_weights(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    toml = tmp_path / "p.toml"
    toml.write_text('name = "p"\n[model]\nunet_weights = "bad.safetensors"\n')
    assert main(["study", "run", str(toml)]) == 2
    assert "corrupt" in capsys.readouterr().err and not list(tmp_path.glob("*.db"))


def test_memory_objective_needs_cuda(user_models, tmp_path, capsys):
    toml = tmp_path / "m.toml"
    toml.write_text('name = "m"\nobjectives = ["latency", "fid", "memory"]\n[model]\ndevice = "cpu"\n')
    assert main(["study", "run", str(toml)]) == 2
    assert "CUDA" in capsys.readouterr().err and not list(tmp_path.glob("*.db"))


@pytest.mark.parametrize("method", ["tome", "catome"])
def test_token_merging_that_patches_nothing_on_sdxl(user_models, tmp_path, capsys, method):
    """SDXL's top level has no attention: an explicit max_downsample=1 would patch no block (tomesd
    silently does nothing); `apply` refuses and names the level that works, writing nothing. Left out,
    max_downsample follows the model (issue 20), so the method's defaults run."""
    import json

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({method: {"max_downsample": 1}}))
    out = tmp_path / "grid.png"
    assert main(["apply", str(cfg), "--model", str(user_models["sdxl"]), "--out", str(out), "--n-images", "1",
                 "--steps", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tuner: error: method '{method}': max_downsample=1 reaches no transformer block")
    assert "the smallest max_downsample that patches one is 2" in err and "\n" not in err
    assert not out.exists()
    cfg.write_text(json.dumps({method: {}}))  # the method's defaults: the model's first attention level
    assert main(["apply", str(cfg), "--model", str(user_models["sdxl"]), "--out", str(out), "--n-images", "1",
                 "--steps", "2", "--device", "cpu"]) == 0
    assert out.stat().st_size > 0


def test_hub_id_offline_is_one_line(monkeypatch):
    from tuner.models import resolve_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TunerError, match="someorg/no-such-model.*network"):
        resolve_source("someorg/no-such-model")


def test_inception_without_weights_offline(user_models, tmp_path, capsys, monkeypatch):
    from tuner.evaluators import fidelity

    monkeypatch.setattr("tuner.models.source.is_online", lambda *a, **k: False)
    monkeypatch.setattr(fidelity, "cached_inception_weights", lambda: None)
    with pytest.raises(TunerError, match="offline.*inception_weights"):
        fidelity.InceptionFeatures(None, allow_download=True)
    toml = tmp_path / "s.toml"
    toml.write_text(f'name = "s"\n[model]\nid = "{user_models["sd15"]}"\ndevice = "cpu"\n')
    assert main(["study", "run", str(toml)]) == 2
    err = capsys.readouterr().err
    assert "offline" in err and "inception_weights" in err and not list(tmp_path.glob("*.db"))


# --- GPU paths, driven through fakes ---------------------------------------------------------------
class FakeCuda:
    """Records the order of CUDA calls; events report 250 ms between start and end."""

    def __init__(self, bf16=True, peak_bytes=3 * 1024 ** 3, bf16_devices=None):
        self.calls, self.bf16, self.peak_bytes = [], bf16, peak_bytes
        self.bf16_devices = bf16_devices  # {index: supported}: per-device answers (None: `bf16` for all)
        self.current = 0  # the current device index, as torch.cuda.device(...) sets it
        cuda = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                self.t = None

            def record(self, stream=None):
                cuda.calls.append("record" if stream is None else f"record@{stream}")
                self.t = 0.25 * sum(c.startswith("record") for c in cuda.calls)

            def elapsed_time(self, other):
                return (other.t - self.t) * 1000.0

        self.Event = Event

    def synchronize(self, device=None):
        self.calls.append("sync")

    def device(self, device):
        from contextlib import contextmanager

        @contextmanager
        def ctx():
            saved, self.current = self.current, torch.device(device).index or 0
            try:
                yield
            finally:
                self.current = saved
        return ctx()

    def current_device(self):
        return self.current

    def current_stream(self, device=None):
        index = self.current if device is None else (torch.device(device).index or 0)
        return f"stream{index}"

    def reset_peak_memory_stats(self, device=None):
        self.calls.append("reset")

    def max_memory_reserved(self, device=None):
        self.calls.append("peak")
        return self.peak_bytes

    def max_memory_allocated(self, device=None):
        raise AssertionError("peak memory is the reserved peak, not the allocated one")

    def is_bf16_supported(self):
        if self.bf16_devices is not None:
            return self.bf16_devices[self.current]
        return self.bf16

    def get_device_name(self, device=None):
        return "Fake GPU"


def test_cuda_timing_is_synchronized_events():
    from tuner.evaluators.latency import interleaved_medians, time_once

    cuda = FakeCuda()
    seconds = time_once(lambda: cuda.calls.append("run"), "cuda", cuda)
    assert cuda.calls == ["sync", "record@stream0", "run", "record@stream0", "sync"]
    assert seconds == pytest.approx(0.25)
    cuda.calls.clear()
    med = interleaved_medians({"a": lambda: None, "b": lambda: None}, repeats=3, warmup=1, device="cuda", cuda=cuda)
    assert set(med) == {"a", "b"} and cuda.calls.count("record@stream0") == 2 * 2 * 3  # warm-up calls are not timed


def test_cuda_timing_runs_on_the_chosen_device():
    """cuda:1 is timed on GPU 1's current stream, inside torch.cuda.device(1), whatever the current device."""
    from tuner.evaluators.latency import time_once

    cuda = FakeCuda()
    seen = []
    time_once(lambda: seen.append(cuda.current), "cuda:1", cuda)
    assert seen == [1] and cuda.current == 0  # the current device is restored after
    assert [c for c in cuda.calls if c.startswith("record")] == ["record@stream1"] * 2


def test_blocked_timing_enters_each_context_once():
    """Compiled models are timed in blocks: one apply per block, warm-up (the compilation) untimed."""
    from tuner.evaluators.latency import blocked_medians

    events = []

    class Ctx:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            events.append(f"enter {self.name}")

        def __exit__(self, *exc):
            events.append(f"exit {self.name}")

    fns = {n: (lambda n=n: events.append(n)) for n in ("a", "b")}
    samples = {}
    blocked_medians(fns, repeats=2, warmup=1, contexts={n: (lambda n=n: Ctx(n)) for n in fns}, samples=samples)
    assert events == ["enter a", "a", "a", "a", "exit a", "enter b", "b", "b", "b", "exit b"]
    assert [len(v) for v in samples.values()] == [2, 2]


def test_peak_memory_resets_then_reads():
    from tuner.evaluators.memory import PeakMemory

    cuda = FakeCuda(peak_bytes=3 * 1024 ** 3)
    with PeakMemory("cuda", cuda) as peak:
        cuda.calls.append("run")
    assert cuda.calls == ["sync", "reset", "run", "sync", "peak"] and peak.gb == pytest.approx(3.0)
    with PeakMemory("cpu") as cpu_peak:
        pass
    assert cpu_peak.gb is None


def test_memory_constraint_and_objective(tiny_pipe, tmp_path, monkeypatch):
    """max_memory_gb sets a constraint from the trial's memory_gb; memory is an objective value."""
    import optuna

    from tuner.study.objective import MEMORY_CONSTRAINT, TrialObjective
    from tuner.study.spec import load_spec

    toml = tmp_path / "s.toml"
    toml.write_text('name = "s"\nobjectives = ["latency", "fid", "memory"]\n[constraints]\nmax_memory_gb = 2.0\n'
                    '[space.tome]\n')
    spec = load_spec(toml)

    class Ctx:
        baseline = {"seconds_per_image": 1.0, "fid": 2.0}

        class space:
            @staticmethod
            def suggest(trial):
                return {}

            @staticmethod
            def to_config(values):
                from tuner.config import AccelConfig

                return AccelConfig()

        eval = None

    from tuner.study import race

    monkeypatch.setattr(race, "grow_candidate", lambda *a: ([0] * 4, {"bitops": 1.0, "memory_gb": 2.5}, {}))
    monkeypatch.setattr(race, "score", lambda ectx, images, scale: {  # FID 3.0 against the baseline's 2.0
        "fid": 3.0, "n_images": 4, **{f"fid_delta{s}": 1.0 for s in ("", "_lo", "_hi")},
        **{f"fid_increase_pct{s}": scale.change_pct(1.0) for s in ("", "_lo", "_hi")}})
    study = optuna.create_study(directions=["minimize"] * 3)
    trial = study.ask()
    objective = TrialObjective(Ctx(), spec)
    monkeypatch.setattr(objective, "_latency", lambda config: {
        "speedup": 2.0, "seconds_per_image": 0.5, "speedup_lo": 2.0, "speedup_hi": 2.0})
    values = objective(trial)
    assert values == [0.5, 3.0, 2.5]
    study.tell(trial, values)
    assert study.trials[0].constraints[MEMORY_CONSTRAINT] == pytest.approx(0.5)


def test_dtype_checks():
    from tuner.models.dtype import check_dtype

    assert check_dtype(None, torch.device("cpu")) == torch.float32
    assert check_dtype(None, torch.device("cuda"), FakeCuda()) == torch.float16
    assert check_dtype("bfloat16", torch.device("cuda"), FakeCuda(bf16=True)) == torch.bfloat16
    with pytest.raises(TunerError, match="bfloat16.*Fake GPU"):
        check_dtype("bfloat16", torch.device("cuda"), FakeCuda(bf16=False))
    # asked of the chosen GPU, not of the current one (GPU 0 has bf16, GPU 1 has not)
    mixed = FakeCuda(bf16_devices={0: True, 1: False})
    with pytest.raises(TunerError, match="bfloat16"):
        check_dtype("bfloat16", torch.device("cuda:1"), mixed)
    assert check_dtype("bfloat16", torch.device("cuda:0"), FakeCuda(bf16_devices={0: True, 1: False})) == torch.bfloat16
    with pytest.raises(TunerError, match="CPU"):
        check_dtype("float16", torch.device("cpu"))

"""`tuner study run --workers K`: GPU per worker, K cooperating processes, Ctrl-C stops them all."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from storage_fixtures import Probe, assert_exact, fleet, storage_url, wait_for, write_study  # noqa: F401
from tuner.cli import main
from tuner.errors import TunerError
from tuner.storage.workers import gpu_assignment


def test_worker_i_gets_gpu_i_mod_the_gpu_count():
    assert gpu_assignment(4, None, 2) == ["0", "1", "0", "1"]
    assert gpu_assignment(3, None, 4) == ["0", "1", "2"]
    assert gpu_assignment(5, "2,3", 8) == ["2", "3", "2", "3", "2"]  # among the GPUs this process may use
    assert gpu_assignment(2, " 5 ", 1) == ["5", "5"]
    assert gpu_assignment(3, None, 0) == [None, None, None]  # no CUDA: environment left alone
    assert gpu_assignment(2, "", 2) == [None, None]  # CUDA hidden on purpose: stays hidden


def test_bad_worker_count_is_one_line(tmp_path, capsys):
    toml = write_study(tmp_path, f"sqlite:///{tmp_path / 'study.db'}")
    assert main(["study", "run", str(toml), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tuner: error: --workers=0 is out of range (1..256)"]
    assert not (tmp_path / "study.db").exists()


def test_workers_share_one_study(tmp_path, fleet):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    toml = write_study(tmp_path, url, n_trials=5)
    parent = fleet.start("study", "run", str(toml), "--workers", "2", "--json")
    summary = fleet.summary(parent)
    assert summary["workers"] == 2 and summary["seeds"] == [0, 7919] and summary["finished_in_study"] == 5
    assert summary["trials_run"] == 5
    err = fleet.stderr(parent)
    assert re.search(r"^worker 0: \[\d/5\] trial \d+ complete", err, re.M)  # progress relayed, study-wide count
    assert re.search(r"^worker 1: \[\d/5\] trial \d+ complete", err, re.M)
    assert_exact(url, 5)


def test_ctrl_c_stops_every_worker_and_the_study_resumes(storage_url, tmp_path, fleet):
    toml = write_study(tmp_path, storage_url, n_trials=6)
    parent = fleet.start("study", "run", str(toml), "--workers", "3", FAULT_TRIAL_S="1.5")
    probe = Probe(storage_url)
    pids = wait_for(lambda: [int(p) for p in re.findall(r"^worker \d: pid (\d+)", fleet.stderr(parent), re.M)]
                    if fleet.stderr(parent).count(": pid ") == 3 else None, "three workers")
    wait_for(lambda: probe.running_trials_of(pids[0]) and probe.running_trials_of(pids[1]), "trials running")
    parent.send_signal(signal.SIGINT)
    rc, _, err = fleet.finish(parent, timeout=60)
    assert rc == 130 and err.strip().splitlines()[-1] == "tuner: interrupted", err
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    import optuna
    from optuna.trial import TrialState

    from tuner.storage.database import driver_url

    trials = optuna.load_study(study_name="faults", storage=driver_url(storage_url)).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get("fail_reason") == "abandoned: interrupted (Ctrl-C)"]
    assert len(interrupted) >= 2
    probe.close()

    resumed = fleet.start("study", "run", str(toml), "--workers", "2", "--json")
    summary = fleet.summary(resumed)
    assert summary["finished_in_study"] == 6
    assert_exact(storage_url, 6)
    assert json.loads(json.dumps(summary))["workers"] == 2


def test_explicit_gpu_is_kept_and_sharing_warns():
    """cuda:N: every worker on GPU N as the study says (no CUDA_VISIBLE_DEVICES), and a warning."""
    from tuner.storage.workers import worker_gpus

    envs, warn = worker_gpus(["cuda:1"], 3, None, 4)
    assert envs == [{}, {}, {}] and "3 workers share one GPU (cuda:1)" in warn
    assert worker_gpus(["cuda:1"], 1, None, 4) == ([{}], None)


def test_device_list_gives_each_worker_its_gpu():
    from tuner.storage.workers import worker_gpus

    envs, warn = worker_gpus(["cuda:0", "cuda:2"], 2, None, 4)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "2"] and warn is None
    assert all(e["TUNER_DEVICE"] == "cuda:0" for e in envs)
    envs, warn = worker_gpus(["cuda:0", "cuda:1"], 3, "4,6", 2)  # indices among the GPUs this process sees
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4", "6", "4"] and "3 workers share 2 listed GPUs" in warn


def test_open_choice_spreads_and_warns_when_short():
    from tuner.storage.workers import worker_gpus

    envs, warn = worker_gpus([], 3, None, 2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0"] and "3 workers share 2 GPU(s)" in warn
    assert worker_gpus(["cpu"], 2, None, 0) == ([{}, {}], None)


def test_gpu_count_with_mocked_cuda(tmp_path):
    """_gpu_count asks CUDA unless the study runs on the CPU (a mock stands in for torch.cuda)."""
    from types import SimpleNamespace

    from tuner.storage.workers import _gpu_count

    cuda = SimpleNamespace(is_available=lambda: True, device_count=lambda: 4)
    spec = lambda device: SimpleNamespace(model=SimpleNamespace(devices=[device] if device else []))  # noqa: E731
    assert _gpu_count(spec("cuda"), cuda) == 4 and _gpu_count(spec(None), cuda) == 4
    assert _gpu_count(spec("cpu"), cuda) == 0


def test_worker_device_env_and_device_list_in_the_study(tmp_path, monkeypatch):
    from tuner.study.spec import load_spec

    toml = tmp_path / "s.toml"
    toml.write_text('name = "s"\n[model]\ndevice = ["cuda:0", "cuda:3"]\n')
    spec = load_spec(toml)
    assert spec.model.devices == ["cuda:0", "cuda:3"] and spec.model.run_device == "cuda:0"
    monkeypatch.setenv("TUNER_DEVICE", "cuda:0")
    assert spec.model.run_device == "cuda:0"
    toml.write_text('name = "s"\n[model]\ndevice = "cuda:0,cpu"\n')
    with pytest.raises(TunerError, match="device list"):
        load_spec(toml)

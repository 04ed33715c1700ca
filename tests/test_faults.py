"""The fault and bad-input sweep of issue 16, kept so that no case comes back. One section per case:
1. weights are data, never code; 2. deleted or foreign studies; 3. a `--workers` parent with a dead
worker; 4. resume equals an uninterrupted run; 5. SIGTERM/SIGINT/SIGHUP; 6. parsing limits.
Storage-dependent cases run on SQLite and on the PostgreSQL server `.ci/run` starts (storage_fixtures)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from storage_fixtures import (Probe, assert_exact, fleet, postgres_server, storage_url, wait_for,  # noqa: F401
                              write_study)
from tuner.cli import main

ROOT = Path(__file__).resolve().parent.parent


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("tuner: error: "), err[-2000:]
    return err


# --- 1. weights are data, never code ---------------------------------------------------------------------
class _Payload:
    """Unpickling this creates `marker`: what a hostile weights file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture
def evil(tmp_path):
    """A torch file whose unpickling creates `pwned` (the file must never appear), and its marker."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "x": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_the_payload_really_runs_code_when_unpickled(evil):
    path, marker = evil  # the witness: without weights_only the file does what the tests forbid
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("argv", [
    ["baseline", "--feature-extractor", "inception", "--inception-weights", "{evil}"],
    ["baseline", "--unet-weights", "{evil}"],
    ["evaluate", "{config}", "--inception-weights", "{evil}"],
    ["evaluate", "{config}"],  # environment.inception_weights = "evil.pth", relative to the config file
    ["apply", "{config}", "--out", "{out}"],  # environment.model.unet_weights = "evil.pth"
    ["study", "run", "{toml}"],
    ["study", "run", "{toml_unet}"],
])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(evil, tmp_path, capsys, monkeypatch, argv):
    path, marker = evil
    config = tmp_path / "cfg" / "best.json"
    config.parent.mkdir()
    (config.parent / "evil.pth").write_bytes(path.read_bytes())
    config.write_text(json.dumps({"schema_version": 2, "model_id": "tuner/proxy-digits-16px", "methods": {},
                                  "environment": {"feature_extractor": "inception", "inception_weights": "evil.pth",
                                                  "model": {"id": "proxy", "unet_weights": "evil.pth"},
                                                  "proxy_set": {"n_images": 2, "steps": 2, "seed": 0}}}))
    toml = tmp_path / "s.toml"
    toml.write_text('name = "s"\nn_trials = 1\n[evaluator]\nfeature_extractor = "inception"\n'
                    'inception_weights = "evil.pth"\n')
    toml_unet = tmp_path / "u.toml"
    toml_unet.write_text('name = "u"\nn_trials = 1\n[model]\nunet_weights = "evil.pth"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "evil.pth").write_bytes(b"")  # the CWD's file of that name is never the one read
    monkeypatch.chdir(elsewhere)
    names = {"evil": str(path), "config": str(config), "out": str(tmp_path / "o.png"), "toml": str(toml),
             "toml_unet": str(toml_unet)}
    err = one_line_error(capsys, main([a.format(**names) for a in argv]))
    assert "not a file of plain tensors" in err and "evil.pth" in err
    assert not marker.exists()
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / "o.png").exists()


def test_plain_tensor_files_still_load(tmp_path):
    from tuner.weights import load_tensors

    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pt")
    assert torch.equal(load_tensors(tmp_path / "ok.pt", "x")["w"], torch.ones(3))


def test_a_pickle_in_a_model_folder_is_refused(evil, tmp_path):
    from tuner.errors import TunerError
    from tuner.models.source import check_weight_files

    path, marker = evil
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "pytorch_model.bin").write_bytes(path.read_bytes())
    with pytest.raises(TunerError, match="not a file of plain tensors"):
        check_weight_files(tmp_path / "clip", "evaluator.clip_model")
    assert not marker.exists()

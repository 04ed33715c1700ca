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


def _load_trials(url: str, study: str = "faults"):
    import optuna

    from tuner.storage.database import driver_url

    return optuna.load_study(study_name=study, storage=driver_url(url)).get_trials()


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
                                                  "image_set": {"n_images": 2, "steps": 2, "seed": 0}}}))
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


# --- 2. deleted or foreign studies end in one line; `tuner study delete` ----------------------------------
def _delete_in_optuna(url: str, study: str = "faults") -> None:
    """What optuna-dashboard's delete button and `optuna delete-study` do: Optuna's rows only."""
    import optuna

    from tuner.storage.database import driver_url

    optuna.delete_study(study_name=study, storage=driver_url(url))


def _alive_runs(url: str) -> list:
    probe = Probe(url)
    try:
        return probe.rows("SELECT id FROM study_runs WHERE state = 'alive'")
    finally:
        probe.close()


def _study_in_optuna(url: str, study: str = "faults") -> bool:
    from tuner.storage.database import study_exists

    return study_exists(url, study)


def test_a_study_deleted_in_optuna_is_refused_not_waited_for(storage_url, tmp_path, fleet):
    toml = write_study(tmp_path, storage_url, n_trials=3)
    fleet.summary(fleet.run(toml, FAULT_TRIAL_S="0.05"))
    _delete_in_optuna(storage_url)
    rc, _, err = fleet.finish(fleet.run(toml), timeout=60)
    last = err.strip().splitlines()
    assert rc == 2 and len(last) == 1 and "was deleted from Optuna's tables" in last[0] and "study delete" in last[0]
    assert not _study_in_optuna(storage_url) and not _alive_runs(storage_url)  # nothing re-created


def test_a_study_deleted_while_it_runs_ends_in_one_line(storage_url, tmp_path, fleet):
    toml = write_study(tmp_path, storage_url, n_trials=50)
    worker = fleet.run(toml, FAULT_TRIAL_S="1.0")
    probe = Probe(storage_url)
    wait_for(lambda: probe.done_slots() >= 1, "a finished trial")
    probe.close()
    _delete_in_optuna(storage_url)
    rc, _, err = fleet.finish(worker, timeout=60)
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    assert "was deleted from" in err.strip().splitlines()[-1] and "while this command ran" in err
    assert not _alive_runs(storage_url)


def test_slots_of_another_study_of_the_same_name_are_refused(storage_url, tmp_path, fleet):
    import optuna

    from tuner.storage.database import driver_url

    toml = write_study(tmp_path, storage_url, n_trials=3)
    fleet.summary(fleet.run(toml, FAULT_TRIAL_S="0.05"))
    _delete_in_optuna(storage_url)
    other = optuna.create_study(study_name="faults", storage=driver_url(storage_url), directions=["minimize"] * 2)
    other.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=4)  # trials #0-#3, someone else's
    rc, _, err = fleet.finish(fleet.run(toml), timeout=60)
    last = err.strip().splitlines()
    assert rc == 2 and len(last) == 1 and "outside tuner" in last[0] and "study delete" in last[0], err[-3000:]
    assert not _alive_runs(storage_url)


def test_study_delete_removes_optuna_and_tuner_rows_together(storage_url, tmp_path, fleet, capsys):
    toml = write_study(tmp_path, storage_url, n_trials=3)
    fleet.summary(fleet.run(toml, FAULT_TRIAL_S="0.05"))
    one_line_error(capsys, main(["study", "delete", str(toml)]))  # without --yes: nothing changes
    assert _study_in_optuna(storage_url)
    assert main(["study", "delete", str(toml), "--yes", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trials"] == 3 and out["trial_slots_rows"] == 3 and out["study_runs_rows"] == 1
    probe = Probe(storage_url)
    try:
        for table in ("study_runs", "trial_slots", "pareto_snapshots"):
            assert probe.rows(f"SELECT COUNT(*) FROM {table}")[0][0] == 0, table
        assert probe.rows("SELECT COUNT(*) FROM pareto_members")[0][0] == 0
    finally:
        probe.close()
    assert not _study_in_optuna(storage_url)
    one_line_error(capsys, main(["study", "delete", str(toml), "--yes"]))  # nothing left to delete
    assert fleet.summary(fleet.run(toml, FAULT_TRIAL_S="0.05"))["trials_run"] == 3  # a fresh study of that name


def test_study_delete_cleans_up_after_a_deletion_in_optuna(storage_url, tmp_path, fleet, capsys):
    toml = write_study(tmp_path, storage_url, n_trials=2)
    fleet.summary(fleet.run(toml, FAULT_TRIAL_S="0.05"))
    _delete_in_optuna(storage_url)
    assert main(["study", "delete", str(toml), "--yes"]) == 0
    capsys.readouterr()
    assert fleet.summary(fleet.run(toml, FAULT_TRIAL_S="0.05"))["finished_in_study"] == 2
    assert_exact(storage_url, 2)


def test_study_delete_refuses_a_study_with_a_live_worker(storage_url, tmp_path, fleet, capsys):
    toml = write_study(tmp_path, storage_url, n_trials=20, grace=600.0)
    worker = fleet.run(toml, FAULT_TRIAL_S="1.0")
    probe = Probe(storage_url)
    wait_for(lambda: probe.running_trials_of(worker.pid), "a running trial")
    probe.close()
    err = one_line_error(capsys, main(["study", "delete", str(toml), "--yes"]))
    assert "live worker" in err and _study_in_optuna(storage_url)


# --- 3. a --workers parent reports the study, not a dead worker ------------------------------------------
def test_workers_parent_with_a_sigkilled_worker_exits_0_with_its_summary(storage_url, tmp_path, fleet):
    toml = write_study(tmp_path, storage_url, n_trials=6, interval=0.5, grace=3.0)
    parent = fleet.start("study", "run", str(toml), "--workers", "3", "--json", FAULT_TRIAL_S="1.0")
    probe = Probe(storage_url)
    pids = wait_for(lambda: [int(p) for p in re.findall(r"^worker \d: pid (\d+)", fleet.stderr(parent), re.M)]
                    if fleet.stderr(parent).count(": pid ") == 3 else None, "three workers")
    lost = wait_for(lambda: probe.running_trials_of(pids[1]), "worker 1 running a trial")[0]
    probe.close()
    os.kill(pids[1], signal.SIGKILL)
    rc, out, err = fleet.finish(parent)
    assert rc == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["finished_in_study"] == 6 and summary["workers"] == 3
    line = f"worker 1 (pid {pids[1]}) was killed by SIGKILL; its trial(s) {lost} were reclaimed and redone by the others"
    assert summary["dead_workers"] == [line] and line in err.splitlines()
    trials = assert_exact(storage_url, 6)
    assert trials[lost].user_attrs["fail_reason"].endswith(f"(pid {pids[1]}) died")


def test_workers_parent_fails_when_the_study_did_not_finish(tmp_path, fleet):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    toml = write_study(tmp_path, url, n_trials=3)
    parent = fleet.start("study", "run", str(toml), "--workers", "2", FAULT_SETUP_S="60")
    pids = wait_for(lambda: [int(p) for p in re.findall(r"^worker \d: pid (\d+)", fleet.stderr(parent), re.M)]
                    if fleet.stderr(parent).count(": pid ") == 2 else None, "two workers")
    for pid in pids:  # both die during the baseline: no trial ran
        wait_for(lambda: fleet.stderr(parent).count("baseline") >= 2, "both baselines")
        os.kill(pid, signal.SIGKILL)
    rc, _, err = fleet.finish(parent)
    assert rc == 2 and err.strip().splitlines()[-1].startswith("tuner: error: worker 0 exited with -9")


# --- 4. resume equals an uninterrupted run ---------------------------------------------------------------
def _counted_configs(url: str, study: str) -> list[str]:
    from tuner.storage.budget import counts

    return sorted(json.dumps(t.params, sort_keys=True) for t in _load_trials(url, study) if counts(t))


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_warm_start_trial_is_queued_again(storage_url, tmp_path, fleet, how):
    """Warm start queues 2 known configs first; the first is interrupted. The resumed study runs the same
    configs as an uninterrupted one, and no trial is left WAITING."""
    whole = write_study(tmp_path, storage_url, name="whole", n_trials=4, grace=1.0, interval=0.3)
    fleet.summary(fleet.run(whole, FAULT_TRIAL_S="0.05"))
    cut = write_study(tmp_path, storage_url, name="cut", n_trials=4, grace=1.0, interval=0.3)
    worker = fleet.run(cut, FAULT_TRIAL_S="30")
    probe = Probe(storage_url, "cut")
    first = wait_for(lambda: probe.running_trials_of(worker.pid), "the first (queued) trial")[0]
    probe.close()
    worker.send_signal(how)
    worker.wait(timeout=60)
    fleet.summary(fleet.run(cut, FAULT_TRIAL_S="0.05"))
    trials = assert_exact(storage_url, 4, "cut")  # nothing RUNNING or WAITING, exactly 4 counted
    assert trials[first].system_attrs.get("fixed_params")  # it was a queued (warm-start) trial
    assert _counted_configs(storage_url, "cut") == _counted_configs(storage_url, "whole")


def test_a_finished_study_keeps_no_waiting_trial(tmp_path, fleet):
    import optuna

    from tuner.storage.budget import UNNEEDED

    url = f"sqlite:///{tmp_path / 'study.db'}"
    toml = write_study(tmp_path, url, n_trials=2)
    fleet.summary(fleet.run(toml, FAULT_TRIAL_S="0.05"))
    optuna.load_study(study_name="faults", storage=url).enqueue_trial({"tome.ratio": 0.3})  # e.g. a neighbour
    fleet.summary(fleet.run(toml))  # "already holds 2 of 2 trials"
    trials = assert_exact(url, 2)
    assert [t.user_attrs["fail_reason"] for t in trials.values() if t.state == TrialState.FAIL] == [UNNEEDED]


# --- 5. SIGTERM, SIGINT, SIGHUP: a plain worker and a --workers parent ------------------------------------
STOPS = {signal.SIGTERM: ("tuner: terminated (SIGTERM)", "SIGTERM"), signal.SIGINT: ("tuner: interrupted", "Ctrl-C"),
         signal.SIGHUP: ("tuner: hung up (SIGHUP)", "SIGHUP")}


@pytest.mark.parametrize("signum", list(STOPS), ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_gives_the_trial_back_and_closes_the_run(storage_url, tmp_path, fleet, signum):
    line, name = STOPS[signum]
    toml = write_study(tmp_path, storage_url, n_trials=3, grace=600.0)  # a resume must not need the grace period
    worker = fleet.run(toml, FAULT_TRIAL_S="30")
    probe = Probe(storage_url)
    number = wait_for(lambda: probe.running_trials_of(worker.pid), "a running trial")[0]
    worker.send_signal(signum)
    rc, _, err = fleet.finish(worker, timeout=60)
    assert rc == 128 + signum and err.strip().splitlines()[-1] == line, err[-2000:]
    assert "Traceback" not in err
    states = probe.rows("SELECT state FROM study_runs")
    probe.close()
    assert [s for (s,) in states] == ["stopped"]
    trials = {t.number: t for t in _load_trials(storage_url)}
    assert trials[number].state == TrialState.FAIL
    assert trials[number].user_attrs["fail_reason"] == f"abandoned: interrupted ({name})"
    fleet.summary(fleet.run(toml))  # resumes at once: nothing left RUNNING for a grace period to expire
    assert_exact(storage_url, 3)


@pytest.mark.parametrize("signum", list(STOPS), ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_to_the_workers_parent_stops_every_worker(storage_url, tmp_path, fleet, signum):
    line, name = STOPS[signum]
    toml = write_study(tmp_path, storage_url, n_trials=4, grace=600.0)
    parent = fleet.start("study", "run", str(toml), "--workers", "2", FAULT_TRIAL_S="30")
    probe = Probe(storage_url)
    pids = wait_for(lambda: [int(p) for p in re.findall(r"^worker \d: pid (\d+)", fleet.stderr(parent), re.M)]
                    if fleet.stderr(parent).count(": pid ") == 2 else None, "two workers")
    wait_for(lambda: all(probe.running_trials_of(p) for p in pids), "both workers running a trial")
    parent.send_signal(signum)
    rc, _, err = fleet.finish(parent, timeout=60)
    assert rc == 128 + signum and err.strip().splitlines()[-1] == line, err[-2000:]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    states = probe.rows("SELECT state FROM study_runs")
    probe.close()
    assert sorted(s for (s,) in states) == ["stopped", "stopped"], (states, err[-3000:])
    reasons = [t.user_attrs.get("fail_reason") for t in _load_trials(storage_url)]
    assert reasons.count(f"abandoned: interrupted ({name})") == 2, reasons


# --- 6. parsing limits: depth, sizes, line length, odd paths, odd names ----------------------------------
QUICK = 'n_trials = 1\n[model]\ndevice = "cpu"\n'


@pytest.mark.parametrize("kind", ["toml", "json"])
def test_a_document_nested_10000_deep_is_one_line(tmp_path, capsys, kind):
    if kind == "toml":
        path = tmp_path / "deep.toml"
        path.write_text('name = "d"\nx = ' + "[" * 10_000 + "]" * 10_000 + "\n")
        argv = ["study", "run", str(path)]
    else:
        path = tmp_path / "deep.json"
        path.write_text('{"schema_version": 2, "methods": {}, "environment": ' + '{"a": ' * 10_000 + "1"
                        + "}" * 10_001)
        argv = ["evaluate", str(path)]
    err = one_line_error(capsys, main(argv))
    assert "nested more than 64 levels deep" in err
    assert not list(tmp_path.glob("*.db"))


def test_a_moderately_deep_config_is_refused_before_it_is_used(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text('{"schema_version": 2, "methods": {}, "environment": ' + '{"a": ' * 200 + "1" + "}" * 201)
    assert "nested more than 64 levels deep" in one_line_error(capsys, main(["apply", str(path), "--out",
                                                                              str(tmp_path / "o.png")]))


def test_a_huge_study_name_gives_a_short_line(tmp_path, capsys):
    path = tmp_path / "long.toml"  # 5 MB is refused as a file (next test); 900 kB fits, the line does not
    path.write_text(f'name = "{"x" * 900_000}"\n' + QUICK)
    err = one_line_error(capsys, main(["study", "run", str(path)]))
    assert len(err) <= 1100 and "name=" in err and "characters cut" in err
    assert not list(tmp_path.glob("*.db"))
    path.write_text(f'name = "{"x" * 5_000_000}"\n' + QUICK)
    assert "larger than 1 MB" in one_line_error(capsys, main(["study", "run", str(path)]))


@pytest.mark.parametrize("name", [".", ".."])
def test_study_names_dot_and_dotdot_are_refused(tmp_path, capsys, name):
    path = tmp_path / "dots.toml"
    path.write_text(f'name = "{name}"\n' + QUICK)
    assert "not . or .." in one_line_error(capsys, main(["study", "run", str(path)]))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".db")]


@pytest.mark.parametrize("argv, what", [
    (["study", "run", "/dev/zero"], "study file /dev/zero is not a regular file"),
    (["study", "run", "{tmp}"], "study file {tmp} is a folder"),
    (["study", "status", "{tmp}/none.toml"], "study file not found"),
    (["evaluate", "/dev/zero"], "config file /dev/zero is not a regular file"),
    (["evaluate", "{tmp}"], "config file {tmp} is a folder"),
    (["apply", "/dev/zero", "--out", "{tmp}/o.png"], "config file /dev/zero is not a regular file"),
    (["baseline", "--inception-weights", "/dev/zero", "--feature-extractor", "inception"], "is not a regular file"),
    (["baseline", "--unet-weights", "{tmp}"], "is a folder"),
])
def test_devices_and_folders_are_named_as_such(tmp_path, capsys, argv, what):
    err = one_line_error(capsys, main([a.format(tmp=tmp_path) for a in argv]))
    assert what.format(tmp=tmp_path) in err


def test_a_huge_study_file_is_refused_without_reading_it_all(tmp_path, capsys):
    path = tmp_path / "big.toml"
    path.write_text('name = "b"\n' + "# padding\n" * 200_000)
    assert "larger than 1 MB" in one_line_error(capsys, main(["study", "run", str(path)]))


def test_a_missing_postgres_database_is_not_called_damaged(tmp_path, capsys):
    from sqlalchemy.engine import make_url

    url = make_url(postgres_server()).set(database="tuner_no_such_db").render_as_string(hide_password=False)
    toml = write_study(tmp_path, url)
    err = one_line_error(capsys, main(["study", "run", str(toml)]))
    assert "no database 'tuner_no_such_db'" in err and "createdb" in err and "damaged" not in err


def test_pytest_q_prints_the_summary_line(tmp_path):
    """CI reads pytest's closing "N passed" line; `addopts = "-q"` plus `-q` hid it."""
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                          str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path / "test_one.py")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert re.match(r"^1 passed in [\d.]+s$", run.stdout.strip().splitlines()[-1]), run.stdout

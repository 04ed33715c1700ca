"""Faults against both storage backends (SQLite, and the PostgreSQL server .ci/run starts): workers
killed mid-trial on other hosts, killed during the baseline, Ctrl-C, a dropped budget table, a server
restart. Workers are real `tuner study run` processes with a stand-in model (tests/fault_worker.py).
After each fault the study must hold exactly n_trials counted trials, nothing RUNNING, the abandoned
trials labelled, and no trial bound twice (storage_fixtures.assert_exact)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from optuna.trial import TrialState

from storage_fixtures import (PG_CTL_ENV, Probe, assert_exact, fleet, storage_url, wait_for,  # noqa: F401
                              write_study)


def test_kill9_of_one_of_three_workers_on_other_hosts(storage_url, tmp_path, fleet):
    """Three workers report different host names (three machines sharing the storage); the one on
    host-b is killed with SIGKILL in the middle of a trial. The two survivors alone finish the study: they
    declare host-b's worker dead once its grace period has passed and redo its trial."""
    toml = write_study(tmp_path, storage_url, n_trials=6)
    workers = [fleet.run(toml, host=f"host-{c}", FAULT_TRIAL_S="1.0") for c in "abc"]
    victim = workers[1]
    probe = Probe(storage_url)
    lost = wait_for(lambda: probe.running_trials_of(victim.pid), "the victim to run a trial")[0]
    victim_run = probe.run_of(victim.pid)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    summaries = [fleet.summary(w) for w in (workers[0], workers[2])]
    probe.close()
    trials = assert_exact(storage_url, 6)
    assert trials[lost].state == TrialState.FAIL
    assert trials[lost].user_attrs["fail_reason"] == f"abandoned: its worker on host-b (pid {victim.pid}) died"
    # every trial the victim did not create was run (and counted or abandoned) by the survivors
    assert sum(s["trials_run"] for s in summaries) == sum(
        1 for t in trials.values() if t.system_attrs["tuner:worker"] != victim_run)
    err = fleet.stderr(workers[0]) + fleet.stderr(workers[2])
    assert "on host-b" in err and "declared dead" in err and f"reclaimed trial {lost}" in err


def test_kill9_during_the_baseline_then_resume_uses_the_study_seed(storage_url, tmp_path, fleet):
    toml = write_study(tmp_path, storage_url, n_trials=3)
    first = fleet.run(toml, FAULT_SETUP_S="120")
    wait_for(lambda: "baseline" in fleet.stderr(first), "the baseline to start")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    summary = fleet.summary(fleet.run(toml))
    assert summary["seed_index"] == 0 and summary["seed"] == 0  # no finished trial yet: the study's own seed
    assert summary["trials_run"] == 3
    assert_exact(storage_url, 3)


def test_ctrl_c_gives_the_trial_back_and_the_other_worker_finishes(storage_url, tmp_path, fleet):
    toml = write_study(tmp_path, storage_url, n_trials=5)
    a, b = fleet.run(toml, FAULT_TRIAL_S="1.0"), fleet.run(toml, FAULT_TRIAL_S="0.5")
    probe = Probe(storage_url)
    interrupted = wait_for(lambda: probe.running_trials_of(a.pid), "worker a to run a trial")[0]
    a.send_signal(signal.SIGINT)
    rc, _, err = fleet.finish(a)
    assert rc == 130 and err.strip().splitlines()[-1] == "tuner: interrupted"
    fleet.summary(b)
    probe.close()
    trials = assert_exact(storage_url, 5)
    assert trials[interrupted].user_attrs["fail_reason"] == "abandoned: interrupted (Ctrl-C)"


def test_dropped_slot_table_is_refused_never_reset(storage_url, tmp_path, fleet):
    toml = write_study(tmp_path, storage_url, n_trials=8)
    workers = [fleet.run(toml, FAULT_TRIAL_S="0.7") for _ in range(2)]
    probe = Probe(storage_url)
    wait_for(lambda: probe.done_slots() >= 2, "two finished trials")
    with probe.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("DROP TABLE trial_slots"))
    for w in workers:
        rc, _, err = fleet.finish(w)
        assert rc == 2 and "Traceback" not in err, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("tuner: error: storage") and "trial_slots" in last
    rc, _, err = fleet.finish(fleet.run(toml))  # a new run refuses too, and does not re-create the table
    assert rc == 2 and "lost its tuner table(s) trial_slots" in err.strip().splitlines()[-1]
    assert "trial_slots" not in probe.tables()
    import optuna

    from tuner.storage.database import driver_url

    states = [t.state for t in optuna.load_study(study_name="faults", storage=driver_url(storage_url)).trials]
    assert TrialState.RUNNING not in states and states.count(TrialState.COMPLETE) >= 2
    probe.close()


def test_postgres_restart_mid_study_workers_retry_and_go_on(storage_url, tmp_path, fleet):
    if not storage_url.startswith("postgresql"):
        pytest.skip("a server restart is a PostgreSQL fault")
    ctl = os.environ.get(PG_CTL_ENV)
    if not ctl:
        pytest.skip(f"{PG_CTL_ENV} unset")
    toml = write_study(tmp_path, storage_url, n_trials=6, interval=0.5, grace=20.0)
    workers = [fleet.run(toml, FAULT_TRIAL_S="1.0") for _ in range(2)]
    probe = Probe(storage_url)
    wait_for(lambda: probe.done_slots() >= 1, "a finished trial")
    probe.close()
    subprocess.run([ctl, "-w", "-t", "60", "-m", "fast", "restart"], check=True, capture_output=True, timeout=90)
    for w in workers:
        fleet.summary(w)
    assert_exact(storage_url, 6)

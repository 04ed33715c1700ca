"""Storage backends and worker processes for the storage and fault tests.

`storage_url` runs a test once on SQLite and once on PostgreSQL: a fresh database on the server that
`.ci/with-postgres` (called by `.ci/run`) starts and names in TUNER_TEST_POSTGRES_URL. Without that
variable the PostgreSQL half is skipped, so `python -m pytest` alone stays green.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

PG_URL_ENV = "TUNER_TEST_POSTGRES_URL"
PG_CTL_ENV = "TUNER_TEST_POSTGRES_CTL"
WORKER = Path(__file__).with_name("fault_worker.py")
WAIT_S = 180.0  # upper bound of every wait: a hung worker fails the test instead of hanging the suite


def postgres_server() -> str:
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"no PostgreSQL server ({PG_URL_ENV} unset; .ci/run starts one)")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server())
    name = f"tuner_{uuid.uuid4().hex[:12]}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield server.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_study(folder: Path, url: str, name: str = "faults", n_trials: int = 6, interval: float = 0.5,
                grace: float = 3.0, extra: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
n_trials = {n_trials}
seed = 0
snapshot_every = 3
{extra}
[storage]
url = "{url}"
heartbeat_interval = {interval}
grace_period = {grace}
[model]
device = "cpu"
[sampler]
name = "random"
[space.tome]
ratio = [0.2, 0.6]
""")
    return path


def wait_for(predicate, what: str, timeout: float = WAIT_S, every: float = 0.1):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Fleet:
    """Worker processes (tests/fault_worker.py), their output in files; all killed at the end."""

    def __init__(self, folder: Path):
        self.folder, self.procs, self.n = folder, [], 0

    def start(self, *argv: str, host: str | None = None, **env) -> subprocess.Popen:
        full_env = dict(os.environ, **{k: str(v) for k, v in env.items()})
        if host is not None:
            full_env["TUNER_WORKER_HOST"] = host
        self.n += 1
        out = open(self.folder / f"w{self.n}.out", "w+")
        err = open(self.folder / f"w{self.n}.err", "w+")
        p = subprocess.Popen([sys.executable, str(WORKER), *argv], stdout=out, stderr=err, env=full_env,
                             start_new_session=True)
        p.out, p.err = out, err
        self.procs.append(p)
        return p

    def run(self, toml: Path, *args: str, host: str | None = None, **env) -> subprocess.Popen:
        return self.start("study", "run", str(toml), "--json", *args, host=host, **env)

    @staticmethod
    def stderr(p) -> str:
        return Path(p.err.name).read_text()

    @staticmethod
    def stdout(p) -> str:
        return Path(p.out.name).read_text()

    def finish(self, p, timeout: float = WAIT_S) -> tuple[int, str, str]:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {p.pid} still running after {timeout:.0f} s:\n{self.stderr(p)[-2000:]}")
        return p.returncode, self.stdout(p), self.stderr(p)

    def summary(self, p) -> dict:
        rc, out, err = self.finish(p)
        assert rc == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            p.out.close()
            p.err.close()


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path)
    yield f
    f.close()


class Probe:
    """Reads the study's state straight from the database, as the tests' own witness."""

    def __init__(self, url: str, study: str = "faults"):
        from sqlalchemy import create_engine

        from tuner.storage.database import driver_url

        self.url, self.study = driver_url(url), study
        self.engine = create_engine(self.url)

    def rows(self, sql: str, **params) -> list:
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                return conn.execute(text(sql), params).all()
        except Exception:  # not created yet (or just dropped): nothing to see
            return []

    def run_of(self, pid: int) -> int | None:
        rows = self.rows("SELECT id FROM study_runs WHERE pid = :pid ORDER BY id DESC", pid=pid)
        return rows[0][0] if rows else None

    def running_trials_of(self, pid: int) -> list[int]:
        run = self.run_of(pid)
        if run is None:
            return []
        return [r[0] for r in self.rows(
            "SELECT t.number FROM trials t JOIN trial_system_attributes a ON a.trial_id = t.trial_id "
            "WHERE t.state = 'RUNNING' AND a.key = 'tuner:worker' AND a.value_json = :run", run=json.dumps(run))]

    def done_slots(self) -> int:
        rows = self.rows("SELECT COUNT(*) FROM trial_slots WHERE done = 1")
        return rows[0][0] if rows else 0

    def tables(self) -> set[str]:
        from sqlalchemy import inspect

        return set(inspect(self.engine).get_table_names())

    def close(self) -> None:
        self.engine.dispose()


def assert_exact(url: str, n_trials: int, study: str = "faults"):
    """The invariants every fault must leave: exactly n_trials counted trials, nothing RUNNING, every
    abandoned trial labelled, one done slot per counted trial and no trial (or slot) bound twice."""
    import optuna
    from optuna.trial import TrialState

    from tuner.storage.budget import SLOT_ATTR, counts
    from tuner.storage.database import driver_url

    trials = optuna.load_study(study_name=study, storage=driver_url(url)).get_trials()
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    counted = [t for t in trials if counts(t)]
    assert len(counted) == n_trials, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    for t in trials:
        if t.state == TrialState.FAIL and not counts(t):
            assert t.user_attrs["fail_reason"].startswith("abandoned: "), t.user_attrs
    probe = Probe(url, study)
    try:
        slots = probe.rows("SELECT slot, trial_number, done FROM trial_slots WHERE study_name = :s", s=study)
    finally:
        probe.close()
    assert sorted(s for s, _, _ in slots) == list(range(n_trials)) and all(d == 1 for _, _, d in slots)
    bound = [n for _, n, _ in slots]
    assert len(set(bound)) == n_trials and set(bound) == {t.number for t in counted}
    slots_held = [t.system_attrs[SLOT_ATTR] for t in counted if SLOT_ATTR in t.system_attrs]  # (older trials: none)
    assert len(set(slots_held)) == len(slots_held)
    return {t.number: t for t in trials}

"""Opening a study's storage: the [storage] TOML table, PostgreSQL URLs and drivers, damaged databases
(one line, exit 2, never a traceback, nothing re-created), and read-only commands that write nothing."""

from __future__ import annotations

import hashlib
import sys

import pytest

from storage_fixtures import Probe, storage_url, write_study  # noqa: F401
from tuner.cli import main
from tuner.errors import TunerError


def make_study(toml, monkeypatch, n_trials=None):
    """A real study in the storage, run in-process with the stand-in model of the fault tests."""
    import fault_worker
    from tuner.study import runner
    from tuner.study import spec as spec_mod

    monkeypatch.setattr(spec_mod, "validate_space_and_sampler", lambda s: None)
    monkeypatch.setattr(runner, "TrialObjective", fault_worker.FakeObjective)
    monkeypatch.setattr(fault_worker, "TRIAL_S", 0.0)
    spec = spec_mod.load_spec(toml).with_n_trials(n_trials)
    return runner.run_study(spec, context=fault_worker.FakeContext(spec), progress=False, log=lambda m: None)


def one_line_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tuner: error: ") and needle in lines[0], err
    return lines[0]


# --- the [storage] table ---------------------------------------------------------------------------
def test_storage_key_is_a_url_or_a_table(tmp_path):
    from tuner.study.spec import load_spec, parse_spec

    base = {"name": "s", "space": {"tome": {}}}
    spec = parse_spec({**base, "storage": "sqlite:///x.db"}, tmp_path / "s.toml")
    assert spec.storage == f"sqlite:///{tmp_path / 'x.db'}"
    assert (spec.liveness.heartbeat_interval, spec.liveness.grace_period) == (10.0, 60.0)
    spec = parse_spec({**base, "storage": {"url": "sqlite:///y.db", "heartbeat_interval": 2, "grace_period": 5}},
                      tmp_path / "s.toml")
    assert spec.storage.endswith("/y.db") and (spec.liveness.heartbeat_interval, spec.liveness.grace_period) == (2, 5)
    spec = parse_spec({**base, "storage": {"heartbeat_interval": 1}}, tmp_path / "s.toml")  # default file
    assert spec.storage == f"sqlite:///{tmp_path / 's.db'}" and spec.liveness.grace_period == 60.0
    for bad, needle in [({"heartbeat_interval": 10, "grace_period": 15}, "at least twice"),
                        ({"heartbeat_interval": 0}, "out of range"), ({"grace": 5}, "unknown key(s) grace in [storage]"),
                        ({"url": 5}, "non-empty string"), ({"heartbeat_interval": "10"}, "must be a number")]:
        with pytest.raises(TunerError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            parse_spec({**base, "storage": bad}, tmp_path / "s.toml")
    assert load_spec(write_study(tmp_path, "sqlite:///z.db")).liveness.grace_period == 3.0


def test_plain_postgresql_url_uses_the_installed_driver(tmp_path, monkeypatch):
    from tuner.storage import database as storage
    from tuner.study.spec import parse_spec

    monkeypatch.setattr(storage, "find_spec", lambda name: None if name == "psycopg2" else object())
    spec = parse_spec({"name": "s", "space": {"tome": {}}, "storage": "postgresql://u:pw@db.example/tuner"},
                      tmp_path / "s.toml")
    assert storage.driver_url(spec.storage) == "postgresql+psycopg://u:pw@db.example/tuner"  # as opened
    assert storage.driver_url("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"  # explicit: kept
    monkeypatch.setattr(storage, "find_spec", lambda name: object())  # psycopg2 installed: SQLAlchemy's default
    assert storage.driver_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_missing_driver_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # not installed (import fails)
    toml = write_study(tmp_path, "postgresql+psycopg2://postgres@127.0.0.1:1/tuner")
    assert main(["study", "status", str(toml)]) == 2
    one_line_error(capsys, 'pip install "tuner[postgres]"')


def test_unreachable_server_is_one_line(tmp_path, capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    toml = write_study(tmp_path, f"postgresql://postgres:secret@127.0.0.1:{port}/tuner")
    assert main(["study", "run", str(toml)]) == 2
    line = one_line_error(capsys, "is the server running and reachable?")
    assert "secret" not in line and f"127.0.0.1:{port}" in line
    assert main(["study", "status", str(toml)]) == 2
    one_line_error(capsys, "is the server running and reachable?")


# --- damaged storage ---------------------------------------------------------------------------------
COMMANDS = [["study", "status"], ["study", "pareto"], ["export", "--best", "-o", "out.json"], ["study", "run"]]


def _all_refuse(toml, capsys, needle):
    for cmd in COMMANDS:
        argv = [*cmd[:2], str(toml), *cmd[2:]] if cmd[0] == "study" else [cmd[0], str(toml), *cmd[1:]]
        if "out.json" in argv:
            argv[-1] = str(toml.parent / "out.json")
        assert main(argv) == 2, argv
        one_line_error(capsys, needle)
    assert not (toml.parent / "out.json").exists()


def test_malformed_sqlite_file(tmp_path, capsys):
    (tmp_path / "study.db").write_bytes(b"this is not a database\n" * 200)
    toml = write_study(tmp_path, f"sqlite:///{tmp_path / 'study.db'}")
    _all_refuse(toml, capsys, "is damaged: file is not a database")


def test_corrupt_sqlite_page(tmp_path, monkeypatch, capsys):
    db = tmp_path / "study.db"
    toml = write_study(tmp_path, f"sqlite:///{db}", n_trials=2)
    make_study(toml, monkeypatch)
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) >= 8 * page
    for p in range(2, len(data) // page, 3):  # every third page after the schema page
        data[p * page + 100:p * page + 400] = b"\xa5" * 300
    db.write_bytes(bytes(data))
    _all_refuse(toml, capsys, "is damaged")


def test_missing_optuna_table(storage_url, tmp_path, monkeypatch, capsys):
    toml = write_study(tmp_path, storage_url, n_trials=2)
    make_study(toml, monkeypatch)
    probe = Probe(storage_url)
    with probe.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("DROP TABLE trial_values"))
    _all_refuse(toml, capsys, "is damaged: Optuna table(s) trial_values missing")
    assert "trial_values" not in probe.tables()  # not silently re-created
    probe.close()


def test_deleted_slot_rows_are_refused(tmp_path, monkeypatch, capsys):
    toml = write_study(tmp_path, f"sqlite:///{tmp_path / 'study.db'}", n_trials=2)
    make_study(toml, monkeypatch)
    probe = Probe(f"sqlite:///{tmp_path / 'study.db'}")
    with probe.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("DELETE FROM trial_slots"))
    probe.close()
    with pytest.raises(TunerError, match="trial_slots has no slot for 2 counted trial"):
        make_study(toml, monkeypatch)


# --- read-only commands --------------------------------------------------------------------------------
def _digest(storage_url, tmp_path) -> tuple:
    """What a write would change: the SQLite file's bytes; on PostgreSQL, tables and row counts."""
    if storage_url.startswith("sqlite"):
        return hashlib.sha256((tmp_path / "study.db").read_bytes()).hexdigest(), None
    probe = Probe(storage_url)
    try:
        tables = sorted(probe.tables())
        return tables, [probe.rows(f'SELECT COUNT(*) FROM "{t}"')[0][0] for t in tables]
    finally:
        probe.close()


def test_read_only_commands_write_nothing(storage_url, tmp_path, monkeypatch, capsys):
    toml = write_study(tmp_path, storage_url, n_trials=2)
    make_study(toml, monkeypatch)
    before = _digest(storage_url, tmp_path)
    assert main(["study", "status", str(toml), "--json"]) == 0
    assert main(["study", "pareto", str(toml), "--json"]) == 0
    assert main(["export", str(toml), "--trial", "0", "-o", str(tmp_path / "t.json")]) == 0
    assert _digest(storage_url, tmp_path) == before


def test_read_only_commands_do_not_add_tuner_tables(tmp_path, capsys):
    """A study created by plain Optuna (no tuner tables): refused, and the database is left as it was."""
    import optuna

    db = tmp_path / "study.db"
    optuna.create_study(study_name="faults", storage=f"sqlite:///{db}", directions=["minimize", "minimize"])
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    toml = write_study(tmp_path, f"sqlite:///{db}")
    for cmd in (["study", "status", str(toml)], ["study", "pareto", str(toml)]):
        assert main(cmd) == 2
        one_line_error(capsys, "has lost its tuner table(s) study_runs, trial_slots")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    missing = tmp_path / "missing.toml"
    missing.write_text(toml.read_text().replace("study.db", "nothing.db"))
    assert main(["study", "status", str(missing)]) == 2
    one_line_error(capsys, "does not exist")
    assert not (tmp_path / "nothing.db").exists()


def test_study_of_the_previous_version_is_upgraded_and_resumed(tmp_path, monkeypatch):
    """Tables written before heartbeats (no heartbeat/state/seed_index/done columns): columns are added in
    place, the old slots of finished trials stay spent, and the study resumes to exactly n_trials."""
    import optuna
    from sqlalchemy import create_engine, text

    from storage_fixtures import assert_exact

    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name="faults", storage=url, directions=["minimize", "minimize"])
    for x in (0.3, 0.4):
        study.enqueue_trial({"x": x})
        t = study.ask()
        t.suggest_float("x", 0.2, 0.6)
        study.tell(t, [x, 10.0])
    study.set_user_attr("baseline", {"fid": 10.0, "seconds_per_image": 1.0, "bitops": 1.0})
    engine = create_engine(url)
    with engine.begin() as conn:  # the previous version's DDL and rows
        conn.execute(text("CREATE TABLE study_runs (id INTEGER PRIMARY KEY, study_name VARCHAR(512) NOT NULL, "
                          "host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, started_at DATETIME NOT NULL)"))
        conn.execute(text("CREATE TABLE trial_slots (id INTEGER PRIMARY KEY, study_name VARCHAR(512) NOT NULL, "
                          "slot INTEGER NOT NULL, run_id INTEGER NOT NULL REFERENCES study_runs (id), "
                          "trial_number INTEGER, CONSTRAINT uq_trial_slot UNIQUE (study_name, slot))"))
        conn.execute(text("INSERT INTO study_runs VALUES (1, 'faults', 'old-host', 1, '2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO trial_slots VALUES (1, 'faults', 0, 1, 0), (2, 'faults', 1, 1, 1)"))
    engine.dispose()
    toml = write_study(tmp_path, url, n_trials=3)
    summary = make_study(toml, monkeypatch)
    assert summary["trials_run"] == 1 and summary["finished_in_study"] == 3
    assert_exact(url, 3)


def test_processes_creating_a_fresh_database_at_once_all_open_it(storage_url):
    """Six processes open one fresh database together: each loses or wins the schema race (SQLite and
    PostgreSQL report it with different exception classes) and every one ends with the full schema."""
    import subprocess

    from tuner.storage.database import metadata, optuna_tables

    code = ("import sys; from tuner.storage.database import open_storage; "
            "open_storage(sys.argv[1]).engine.dispose(); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, storage_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 and o.strip() == "ok" for p, (o, _) in zip(procs, outs)), [e[-800:] for _, e in outs]
    probe = Probe(storage_url)
    assert set(metadata.tables) | optuna_tables() <= set(probe.tables())
    probe.close()

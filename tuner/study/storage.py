"""One database per study: Optuna's RDB tables plus the project's own, through SQLAlchemy.

Our tables (created next to Optuna's, same engine):
- `pareto_snapshots` / `pareto_members`: the feasible front every k trials, with its hypervolume and the
  fixed reference point it was measured against.
- `study_runs` / `trial_slots`: how several processes share one trial budget exactly. A process takes a
  slot (unique per study and slot index < n_trials) *before* it asks Optuna for a trial, so no surplus
  trial is ever created; a slot whose trial was interrupted is given back. `MaxTrialsCallback` alone
  cannot do this: it only stops a process after its trial, when the other one may have started another.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time

import optuna
from sqlalchemy import (Column, DateTime, Float, ForeignKey, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, delete, func, insert, select, update)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from tuner.errors import TunerError

SQLITE_LOCK_TIMEOUT_S = 60
CREATE_ATTEMPTS = 5  # schema creation retried when concurrent processes race on a fresh database

metadata = MetaData()

pareto_snapshots = Table(
    "pareto_snapshots", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(512), nullable=False, index=True),
    Column("created_at", DateTime, nullable=False),
    Column("n_trials", Integer, nullable=False),  # finished trials in the study when taken
    Column("hypervolume", Float, nullable=False),  # of the baseline-normalized front
    Column("reference_point", Text, nullable=False),  # JSON {objective: value}, raw units
)

pareto_members = Table(
    "pareto_members", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("snapshot_id", Integer, ForeignKey("pareto_snapshots.id"), nullable=False, index=True),
    Column("trial_number", Integer, nullable=False),
    Column("objectives", Text, nullable=False),  # JSON {objective: value}
    Column("config", Text, nullable=False),  # JSON, AccelConfig methods
)

study_runs = Table(
    "study_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(512), nullable=False, index=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime, nullable=False),
)

trial_slots = Table(
    "trial_slots", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(512), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("run_id", Integer, ForeignKey("study_runs.id"), nullable=False),
    Column("trial_number", Integer, nullable=True),  # set once Optuna gave the trial
    UniqueConstraint("study_name", "slot", name="uq_trial_slot"),
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna RDB storage (creates the database and all tables, ours included)."""
    kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}} if url.startswith("sqlite") else {}
    for attempt in range(CREATE_ATTEMPTS):
        storage = None
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            metadata.create_all(storage.engine)
            return storage
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError, ValueError) as e:
            # Two processes creating a fresh database race on its schema (both insert Optuna's
            # alembic_version row, or both create a table): the loser finds the tables on the next
            # attempt. Anything else (a locked or unreachable database) is reported at once.
            if storage is not None:
                storage.engine.dispose()
            if not _schema_race(e) or attempt == CREATE_ATTEMPTS - 1:
                raise TunerError(f"cannot open storage {url}: {str(e).splitlines()[0]}") from None
            time.sleep(0.2 * (attempt + 1))


def _schema_race(e: BaseException) -> bool:
    while e is not None:  # optuna wraps SQL errors of its own schema setup in StorageInternalError
        if isinstance(e, IntegrityError) or (isinstance(e, OperationalError) and "already exists" in str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def study_exists(url: str, name: str) -> bool:
    """Without creating anything: is there a database with this study in it?"""
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        db = make_url(url).database
        if not db or not os.path.isfile(db):
            return False
    return name in optuna.get_all_study_names(open_storage(url))


class Budget:
    """Exactly-n-trials bookkeeping for one process of one study (see module docstring)."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str):
        self.engine = storage.engine
        self.storage = storage
        self.study_name = study_name
        with self.engine.begin() as conn:
            self.run_id = conn.execute(insert(study_runs).values(
                study_name=study_name, host=socket.gethostname(), pid=os.getpid(), started_at=_now())
            ).inserted_primary_key[0]
            # Runs are numbered per study: the first process of a fresh study is run 0 (seed as given).
            self.run_index = conn.execute(select(func.count()).select_from(study_runs).where(
                study_runs.c.study_name == study_name, study_runs.c.id < self.run_id)).scalar_one()

    def reclaim_abandoned(self, study: optuna.Study) -> int:
        """Slots of processes on this host that died mid-trial (kill -9): their trials are failed with a
        reason and the slots freed. Returns how many."""
        host = socket.gethostname()
        with self.engine.begin() as conn:
            rows = conn.execute(select(trial_slots.c.id, trial_slots.c.trial_number, study_runs.c.pid)
                                .join(study_runs, trial_slots.c.run_id == study_runs.c.id)
                                .where(trial_slots.c.study_name == self.study_name, study_runs.c.host == host,
                                       study_runs.c.id != self.run_id)).all()
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        freed = 0
        for slot_id, number, pid in rows:
            if _pid_alive(pid):
                continue
            t = trials.get(number) if number is not None else None
            if t is not None and t.state != optuna.trial.TrialState.RUNNING:
                continue  # finished normally: the slot is spent
            if t is not None:
                self.storage.set_trial_user_attr(t._trial_id, "fail_reason", "abandoned: its process died")
                self.storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            with self.engine.begin() as conn:
                conn.execute(delete(trial_slots).where(trial_slots.c.id == slot_id))
            freed += 1
        return freed

    def take(self, n_trials: int) -> int | None:
        """Reserve a free slot below n_trials; None when the budget is spent (or held by others)."""
        for _ in range(100):  # retry when another process took the same slot first
            with self.engine.begin() as conn:
                taken = set(conn.execute(select(trial_slots.c.slot).where(
                    trial_slots.c.study_name == self.study_name)).scalars())
            free = next((s for s in range(n_trials) if s not in taken), None)
            if free is None:
                return None
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(trial_slots).values(study_name=self.study_name, slot=free,
                                                            run_id=self.run_id))
                return free
            except IntegrityError:
                continue
            except OperationalError as e:  # SQLite busy beyond the lock timeout
                raise TunerError(f"storage busy: {str(e).splitlines()[0]}") from None
        raise TunerError("could not reserve a trial slot (too much contention)")

    def bind(self, slot: int, trial_number: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(trial_slots).where(trial_slots.c.study_name == self.study_name,
                                                   trial_slots.c.slot == slot).values(trial_number=trial_number))

    def release(self, slot: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(trial_slots).where(trial_slots.c.study_name == self.study_name,
                                                   trial_slots.c.slot == slot))

    def spent(self) -> int:
        return count_slots(self.engine, self.study_name)


def count_slots(engine, study_name: str) -> int:
    with engine.begin() as conn:
        return conn.execute(select(func.count()).select_from(trial_slots).where(
            trial_slots.c.study_name == study_name)).scalar_one()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- Pareto snapshots ------------------------------------------------------------------------------
def write_snapshot(engine, study_name: str, n_trials: int, hypervolume: float, reference_point: dict,
                   members: list[dict]) -> int:
    with engine.begin() as conn:
        sid = conn.execute(insert(pareto_snapshots).values(
            study_name=study_name, created_at=_now(), n_trials=n_trials, hypervolume=hypervolume,
            reference_point=json.dumps(reference_point))).inserted_primary_key[0]
        if members:
            conn.execute(insert(pareto_members), [
                {"snapshot_id": sid, "trial_number": m["trial"], "objectives": json.dumps(m["objectives"]),
                 "config": json.dumps(m["config"])} for m in members])
    return sid


def last_snapshot_trials(engine, study_name: str) -> int | None:
    """Finished-trial count of the study's latest snapshot (None: no snapshot yet)."""
    with engine.begin() as conn:
        return conn.execute(select(pareto_snapshots.c.n_trials).where(pareto_snapshots.c.study_name == study_name)
                            .order_by(pareto_snapshots.c.id.desc()).limit(1)).scalar_one_or_none()


def read_snapshots(engine, study_name: str) -> list[dict]:
    with engine.begin() as conn:
        snaps = conn.execute(select(pareto_snapshots).where(pareto_snapshots.c.study_name == study_name)
                             .order_by(pareto_snapshots.c.id)).mappings().all()
        out = []
        for s in snaps:
            members = conn.execute(select(pareto_members).where(pareto_members.c.snapshot_id == s["id"])
                                   .order_by(pareto_members.c.trial_number)).mappings().all()
            out.append({"id": s["id"], "created_at": s["created_at"].isoformat(), "n_trials": s["n_trials"],
                        "hypervolume": s["hypervolume"], "reference_point": json.loads(s["reference_point"]),
                        "members": [{"trial": m["trial_number"], "objectives": json.loads(m["objectives"]),
                                     "config": json.loads(m["config"])} for m in members]})
    return out

"""Worker liveness by heartbeat: one `study_runs` row per worker process, refreshed every
`heartbeat_interval` seconds by a background thread.

A worker is dead once its last heartbeat is older than its own `grace_period`, measured on the database
server's clock (so hosts whose clocks disagree still agree on who is dead). Host name and pid are kept
only to say *which* worker died: liveness never depends on them, so a worker on another host, or in a
container that came back under a new host name, is recognised as dead like a local one.

Declaring a worker dead is one conditional UPDATE (alive and stale -> dead), so exactly one survivor
wins it; a worker that was only stalled (SIGSTOP, a suspended laptop) finds out at its next heartbeat,
because its row no longer says alive, and registers again under a new row before it takes more work.
"""

from __future__ import annotations

import os
import socket
import threading

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from tuner.storage.database import db_now, first_line, is_transient, study_runs, trial_slots, utc_now

HOST_ENV = "TUNER_WORKER_HOST"  # the host name recorded for this worker (default: the machine's)
ALIVE, STOPPED, DEAD = "alive", "stopped", "dead"


def host_name() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


class Worker:
    """This process's row in `study_runs`, and the heartbeat thread that keeps it alive."""

    def __init__(self, engine, study_name: str, interval: float, grace_period: float, log=lambda m: None):
        self.engine, self.study_name = engine, study_name
        self.interval, self.grace_period = float(interval), float(grace_period)
        self.log = log
        self.id: int | None = None
        self.seed_index: int | None = None
        self.lost = threading.Event()  # set when other workers declared this one dead
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.register()

    # --- registration ---------------------------------------------------------------------------------
    def register(self) -> None:
        """A new row (first start, or after others declared this worker dead)."""
        with self.engine.begin() as conn:
            self.id = conn.execute(insert(study_runs).values(
                study_name=self.study_name, host=host_name(), pid=os.getpid(), started_at=utc_now(),
                heartbeat=db_now(self.engine), grace_period=self.grace_period, state=ALIVE)
            ).inserted_primary_key[0]
        self.seed_index = None
        self.lost.clear()

    def claim_seed_index(self) -> int:
        """The smallest seed index no other worker holds. Taken at the first trial, not at start, and
        given back by workers that stop or die without a counted trial: a run that resumes a study with
        no finished trial uses the study's own seed."""
        if self.seed_index is not None:
            return self.seed_index
        for _ in range(1000):
            with self.engine.begin() as conn:
                held = set(conn.execute(select(study_runs.c.seed_index).where(
                    study_runs.c.study_name == self.study_name, study_runs.c.seed_index.is_not(None))).scalars())
            index = next(i for i in range(len(held) + 1) if i not in held)
            try:
                with self.engine.begin() as conn:
                    conn.execute(update(study_runs).where(study_runs.c.id == self.id).values(seed_index=index))
                self.seed_index = index
                return index
            except IntegrityError:  # another worker claimed the same index first
                continue
        raise RuntimeError("could not claim a seed index")

    # --- heartbeat ------------------------------------------------------------------------------------
    def beat(self) -> bool:
        """Refresh this worker's heartbeat; False when others have declared it dead."""
        with self.engine.begin() as conn:
            n = conn.execute(update(study_runs).where(study_runs.c.id == self.id, study_runs.c.state == ALIVE)
                             .values(heartbeat=db_now(self.engine))).rowcount
        if n == 0:
            self.lost.set()
        return n == 1

    def start(self) -> "Worker":
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tuner-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                self.beat()
                if failing:
                    self.log("heartbeat: storage reachable again")
                failing = False
            except Exception as e:  # the storage is down (a restart): keep trying, the grace period covers it
                if not failing:
                    self.log(f"heartbeat: {first_line(e)}" + ("; retrying" if is_transient(e) else ""))
                failing = True

    def stop(self, counted: bool) -> None:
        """Stop the heartbeat and mark the row stopped; a worker without a counted trial gives its seed
        index back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        values = {"state": STOPPED}
        if not counted:
            values["seed_index"] = None
        with self.engine.begin() as conn:
            conn.execute(update(study_runs).where(study_runs.c.id == self.id, study_runs.c.state == ALIVE)
                         .values(**values))


def declare_dead(engine, study_name: str, exclude: int | None = None) -> list[dict]:
    """Mark every stale worker of the study dead (rows of older versions, without a heartbeat, too).
    Returns the ones this call declared, with host and pid for the log."""
    now = db_now(engine)
    stale = and_(study_runs.c.study_name == study_name,
                 or_(study_runs.c.state == ALIVE, study_runs.c.state.is_(None)),
                 or_(study_runs.c.heartbeat.is_(None),
                     study_runs.c.heartbeat + func.coalesce(study_runs.c.grace_period, 0.0) < now))
    if exclude is not None:
        stale = and_(stale, study_runs.c.id != exclude)
    with engine.begin() as conn:
        candidates = conn.execute(select(study_runs.c.id, study_runs.c.host, study_runs.c.pid).where(stale)).all()
    declared = []
    for run_id, host, pid in candidates:
        with engine.begin() as conn:  # conditional: exactly one survivor declares each death
            if conn.execute(update(study_runs).where(study_runs.c.id == run_id, stale)
                            .values(state=DEAD)).rowcount == 1:
                declared.append({"id": run_id, "host": host, "pid": pid})
                counted = conn.execute(select(func.count()).select_from(trial_slots).where(
                    trial_slots.c.run_id == run_id, trial_slots.c.done == 1)).scalar_one()
                if not counted:
                    conn.execute(update(study_runs).where(study_runs.c.id == run_id).values(seed_index=None))
    return declared


def not_alive_runs(engine, study_name: str) -> dict[int, tuple[str, int, str]]:
    """{run id: (host, pid, "died" | "stopped")} of the study's workers that are no longer alive."""
    with engine.begin() as conn:
        rows = conn.execute(select(study_runs.c.id, study_runs.c.host, study_runs.c.pid, study_runs.c.state).where(
            study_runs.c.study_name == study_name,
            or_(study_runs.c.state.is_(None), study_runs.c.state != ALIVE))).all()
    return {r.id: (r.host, r.pid, "stopped" if r.state == STOPPED else "died") for r in rows}

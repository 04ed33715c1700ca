"""One database per study: Optuna's RDB tables plus the project's own, through SQLAlchemy.

Our tables (created next to Optuna's, same engine):
- `pareto_snapshots` / `pareto_members`: the feasible front every k trials, with its hypervolume and the
  fixed reference point it was measured against.
- `study_runs`: one row per worker process (host, pid, heartbeat, seed index); see tuner/storage/heartbeat.py.
- `trial_slots`: the exact trial budget; see tuner/storage/budget.py.

Opening is strict, because a storage that silently re-creates a lost table would silently reset a
study: a study that exists without our tables, a database missing one of Optuna's tables, a file that is
not a database or has a corrupt page are refused with one line. Read-only commands open the storage
read-only (SQLite `mode=ro`, PostgreSQL read-only transactions) and never create anything.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from importlib.util import find_spec

import optuna
from sqlalchemy import (Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, func, inspect, insert, literal_column, select, text)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from tuner.errors import TunerError

SQLITE_LOCK_TIMEOUT_S = 60
PG_CONNECT_TIMEOUT_S = 10
CREATE_ATTEMPTS = 5  # schema creation retried when concurrent processes race on a fresh database
RETRY_SECONDS = 60.0  # how long a worker retries an unreachable server (a restart) before giving up
POSTGRES_FIX = 'pip install "tuner[postgres]"'

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
    # Added in schema 2 (heartbeats); NULL in rows written by older versions, which count as dead.
    Column("heartbeat", Float, nullable=True),  # database clock, seconds since the epoch
    Column("grace_period", Float, nullable=True),  # this worker is dead once heartbeat + grace < now
    Column("state", String(16), nullable=True),  # alive | stopped | dead
    Column("seed_index", Integer, nullable=True),  # sampler seed = study seed + stride * seed_index
    Index("uq_study_run_seed", "study_name", "seed_index", unique=True),
)

trial_slots = Table(
    "trial_slots", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(512), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("run_id", Integer, ForeignKey("study_runs.id"), nullable=False),
    Column("trial_number", Integer, nullable=True),  # set once the trial exists
    Column("done", Integer, nullable=True),  # 1: the worker is telling / has told the result (schema 2)
    UniqueConstraint("study_name", "slot", name="uq_trial_slot"),
)

BUDGET_TABLES = ("study_runs", "trial_slots")  # a study that lost these cannot know its budget: refused
# Columns added after the first release: (table, column, SQL type), added in place on older databases.
ADDED_COLUMNS = (("study_runs", "heartbeat", "FLOAT"), ("study_runs", "grace_period", "FLOAT"),
                 ("study_runs", "state", "VARCHAR(16)"), ("study_runs", "seed_index", "INTEGER"),
                 ("trial_slots", "done", "INTEGER"))


def utc_now() -> dt.datetime:
    """Now in UTC without tzinfo (what our DateTime columns hold)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def db_now(engine):
    """The database server's clock in epoch seconds, as a SQL expression: every host that shares the
    storage compares heartbeats against the same clock, so host clocks may disagree."""
    name = engine.dialect.name
    if name == "sqlite":
        return literal_column("((julianday('now') - 2440587.5) * 86400.0)")
    if name == "postgresql":
        return literal_column("CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)")
    if name in ("mysql", "mariadb"):
        return literal_column("UNIX_TIMESTAMP(NOW(6))")
    return literal_column(repr(time.time()))  # other backends: this host's clock


# --- URLs and drivers ------------------------------------------------------------------------------
def driver_url(url: str) -> str:
    """`postgresql://...` means SQLAlchemy's default driver, psycopg2; with only psycopg 3 installed (what
    `tuner[postgres]` installs) use that one instead. Anything else is returned as is."""
    try:
        parsed = make_url(url)
    except Exception:
        return url
    if parsed.drivername == "postgresql" and find_spec("psycopg2") is None and find_spec("psycopg") is not None:
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _engine_kwargs(url: str, read_only: bool) -> dict:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
    if backend == "postgresql":
        args = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        if read_only:
            args["options"] = "-c default_transaction_read_only=on"
        return {"connect_args": args, "pool_pre_ping": True}  # pre-ping: a restarted server is reconnected
    return {"pool_pre_ping": True}


def _sqlite_read_only(url: str) -> str:
    from pathlib import Path

    from sqlalchemy.engine import URL

    uri = Path(make_url(url).database).resolve().as_uri()  # file:///... with special characters quoted
    return URL.create("sqlite", database=uri, query={"mode": "ro", "uri": "true"}).render_as_string()


def _driver_error(url: str, e: ImportError) -> TunerError:
    backend = make_url(url).get_backend_name()
    fix = POSTGRES_FIX if backend == "postgresql" else f"install a SQLAlchemy driver for {backend}"
    return TunerError(f"storage {shown(url)}: no database driver for {backend} ({e}); {fix}")


# --- errors ----------------------------------------------------------------------------------------
def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


TRANSIENT_SQLSTATES = {"08000", "08001", "08003", "08004", "08006", "57P01", "57P02", "57P03"}
TRANSIENT_WORDS = ("connection refused", "server closed the connection", "terminating connection",
                   "could not connect", "connection is closed", "the database system is", "connection failed",
                   "consuming input failed", "ssl syscall", "connection reset", "database is locked",
                   "server conn crashed", "no connection to the server", "connection timeout expired",
                   "connection already closed")


def is_transient(e: BaseException) -> bool:
    """A lost or refused connection (a server restart, a network blip) or a busy SQLite file: worth
    retrying, unlike a missing table or a constraint violation."""
    for x in _chain(e):
        if isinstance(x, DBAPIError) and x.connection_invalidated:
            return True
        if getattr(x, "sqlstate", None) in TRANSIENT_SQLSTATES:
            return True
        if isinstance(x, (OperationalError, optuna.exceptions.StorageInternalError)) or \
                type(x).__name__ in ("OperationalError", "InterfaceError"):
            msg = str(x).lower()
            if any(w in msg for w in TRANSIENT_WORDS):
                return True
    return False


def missing_database(e: BaseException) -> bool:
    """The server has no database of that name (PostgreSQL's 3D000): not damage, nothing to restore."""
    return any(getattr(x, "sqlstate", None) == "3D000" or
               re.search(r'database ".*" does not exist', str(x)) for x in _chain(e))


def is_damage(e: BaseException) -> bool:
    """A missing table or column, a file that is not a database, a corrupt page."""
    if missing_database(e):
        return False
    for x in _chain(e):
        msg = str(x).lower()
        if any(w in msg for w in ("no such table", "no such column", "does not exist", "malformed",
                                  "file is not a database", "undefinedtable", "undefinedcolumn",
                                  "database disk image", "corrupt")):
            return True
    return False


def first_line(e: BaseException) -> str:
    for x in _chain(e):  # the driver's message, not SQLAlchemy's wrapper with the SQL statement
        if not isinstance(x, (SQLAlchemyError, optuna.exceptions.StorageInternalError)):
            msg = str(x).strip().splitlines()
            if msg:
                return msg[0]
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def damaged(url: str, e: BaseException | str) -> TunerError:
    why = e if isinstance(e, str) else first_line(e)
    return TunerError(f"storage {shown(url)} is damaged: {why}; restore it from a backup or use a new storage")


def retrying(fn, *args, what: str = "storage", deadline_s: float = RETRY_SECONDS, log=None, **kwargs):
    """fn(*args, **kwargs), retried while the database is unreachable (a restarting server), for at most
    `deadline_s`; other errors pass through at once."""
    t_end = time.monotonic() + deadline_s
    delay, told = 0.2, False
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not is_transient(e) or time.monotonic() + delay > t_end:
                raise
            if log is not None and not told:
                log(f"{what}: {first_line(e)}; retrying for up to {deadline_s:.0f} s")
                told = True
            time.sleep(delay)
            delay = min(2.0, delay * 2)


# --- opening ---------------------------------------------------------------------------------------
def optuna_tables() -> set[str]:
    from optuna.storages._rdb import models  # the tables Optuna's RDBStorage expects

    return set(models.BaseModel.metadata.tables)


def _tables(target: str, kwargs: dict, url: str) -> set[str]:
    """The database's table names (nothing created), or one line saying why it cannot be read.
    `target` is what is opened (maybe the read-only form of `url`), `url` what messages show."""
    from sqlalchemy import create_engine

    try:
        engine = create_engine(target, **kwargs)
    except ImportError as e:
        raise _driver_error(url, e) from None
    try:
        return set(inspect(engine).get_table_names())
    except SQLAlchemyError as e:
        if missing_database(e):
            name = make_url(url).database
            raise TunerError(f"storage {shown(url)}: the server has no database {name!r}; create it first "
                             f"(`createdb {name}`) or name an existing one") from None
        if is_damage(e):
            raise damaged(url, e) from None
        raise TunerError(f"cannot open storage {shown(url)}: {first_line(e)}"
                         + ("; is the server running and reachable?" if _is_server(url) else "")) from None
    finally:
        engine.dispose()


def _is_server(url: str) -> bool:
    return make_url(url).get_backend_name() != "sqlite"


def _study_in(engine, name: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM studies WHERE study_name = :n"), {"n": name}).scalar_one() > 0


def open_storage(url: str, study_name: str | None = None, read_only: bool = False) -> optuna.storages.RDBStorage:
    """Optuna RDB storage for `url`.

    Writable (the default): creates a fresh database's tables, ours included, and upgrades our tables of
    an older version in place. Read-only: the database must exist and hold every table; nothing is
    created or written. Either way a damaged database, or a study (`study_name`) whose tuner tables are
    missing, is refused with one line."""
    url = driver_url(url)
    sqlite = not _is_server(url)
    if sqlite and read_only:
        db = make_url(url).database
        if not db or not os.path.isfile(db):
            raise TunerError(f"storage {shown(url)} does not exist (run `tuner study run` first)")
    target = _sqlite_read_only(url) if sqlite and read_only else url
    kwargs = _engine_kwargs(url, read_only)
    for attempt in range(CREATE_ATTEMPTS):
        storage = None
        try:
            tables = _tables(target, kwargs, url)
            present, expected = tables & optuna_tables(), optuna_tables()
            if (read_only or present) and present != expected:
                missing = sorted(expected - present)
                if present and attempt < CREATE_ATTEMPTS - 1 and not read_only:
                    raise _Race()  # another process may be creating them right now
                raise damaged(url, f"Optuna table(s) {', '.join(missing)} missing")
            storage = optuna.storages.RDBStorage(target, engine_kwargs=kwargs, skip_table_creation=read_only)
            if sqlite:
                _quick_check(storage.engine, url)
            if study_name is not None and present and _study_in(storage.engine, study_name):
                # Inspected again after seeing the study: its creator made our tables before the study.
                now = set(inspect(storage.engine).get_table_names())
                gone = [t for t in BUDGET_TABLES if t not in now]
                if gone:
                    raise TunerError(f"study '{study_name}' in {shown(url)} has lost its tuner table(s) "
                                     f"{', '.join(gone)} (its trial budget and workers): refusing to reset them; "
                                     "restore the database from a backup or use a new study name")
            if not read_only:
                metadata.create_all(storage.engine)
                _add_columns(storage.engine, tables)
            return storage
        except TunerError:
            if storage is not None:
                storage.engine.dispose()
            raise
        except (_Race, SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError, ValueError,
                RuntimeError) as e:
            # Two processes creating a fresh database race on its schema (both insert Optuna's
            # alembic_version row, or both create a table): the loser finds the tables on the next
            # attempt. Anything else (a locked, damaged or unreachable database) is reported at once.
            if storage is not None:
                storage.engine.dispose()
            if isinstance(e, ImportError):
                raise _driver_error(url, e) from None
            if isinstance(e, _Race) or (_schema_race(e) and attempt < CREATE_ATTEMPTS - 1):
                time.sleep(0.2 * (attempt + 1))
                continue
            if is_damage(e):
                raise damaged(url, e) from None
            raise TunerError(f"cannot open storage {shown(url)}: {first_line(e)}") from None
    raise TunerError(f"cannot open storage {shown(url)}: its schema is being created by another process")


class _Race(Exception):
    pass


def _quick_check(engine, url: str) -> None:
    """SQLite reads every page: a corrupt page is found at open, not mid-study."""
    with engine.connect() as conn:
        rows = [r[0] for r in conn.execute(text("PRAGMA quick_check")).fetchmany(3)]
    if rows != ["ok"]:
        raise damaged(url, rows[0] if rows else "quick_check returned nothing")


def _add_columns(engine, tables_before: set[str]) -> None:
    """Bring our tables of an older version up to this one (columns added, indexes created)."""
    if not {"study_runs", "trial_slots"} <= tables_before:
        return
    insp = inspect(engine)
    have = {t: {c["name"] for c in insp.get_columns(t)} for t in ("study_runs", "trial_slots")}
    added = False
    for table, column, sqltype in ADDED_COLUMNS:
        if column not in have[table]:
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sqltype}"))
                added = True
            except SQLAlchemyError as e:  # another worker added it first
                if "duplicate" not in str(e).lower() and "already exists" not in str(e).lower():
                    raise
    if added:
        with engine.begin() as conn:  # old slots bound to a trial were spent (interrupted ones were freed)
            conn.execute(text("UPDATE trial_slots SET done = 1 WHERE done IS NULL AND trial_number IS NOT NULL"))
            conn.execute(text("UPDATE trial_slots SET done = 0 WHERE done IS NULL"))
    for index in study_runs.indexes:
        index.create(engine, checkfirst=True)


def _schema_race(e: BaseException) -> bool:
    for x in _chain(e):  # optuna wraps SQL errors of its own schema setup in StorageInternalError
        # SQLite says OperationalError, PostgreSQL ProgrammingError (DuplicateTable) for the same race.
        if isinstance(x, IntegrityError) or (isinstance(x, (OperationalError, ProgrammingError))
                                             and "already exists" in str(x)):
            return True
    return False


def study_exists(url: str, name: str) -> bool:
    """Without creating or writing anything: is there a database with this study in it?"""
    if not _is_server(url):
        db = make_url(url).database
        if not db or not os.path.isfile(db):
            return False
    url = driver_url(url)
    kwargs = _engine_kwargs(url, True)
    target = _sqlite_read_only(url) if not _is_server(url) else url
    if "studies" not in _tables(target, kwargs, url):
        return False
    from sqlalchemy import create_engine

    engine = create_engine(target, **kwargs)
    try:
        return _study_in(engine, name)
    except SQLAlchemyError as e:
        raise damaged(url, e) from None
    finally:
        engine.dispose()


# --- Pareto snapshots ------------------------------------------------------------------------------
def write_snapshot(engine, study_name: str, n_trials: int, hypervolume: float, reference_point: dict,
                   members: list[dict]) -> int:
    with engine.begin() as conn:
        sid = conn.execute(insert(pareto_snapshots).values(
            study_name=study_name, created_at=utc_now(), n_trials=n_trials, hypervolume=hypervolume,
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

"""`tuner study delete STUDY.toml`: remove a study from its storage, Optuna's rows and tuner's together.

Deleting only Optuna's study (optuna-dashboard's delete button, `optuna delete-study`) leaves tuner's
rows behind (budget slots, worker runs, Pareto snapshots, validations), which then name trials that no
longer exist; `tuner study run` refuses such a study (runner.check_not_orphaned). This removes both
sets, and also what such a partial deletion left. A study with a live worker is refused: stop it first.
"""

from __future__ import annotations

from sqlalchemy import delete, func, inspect, select

from tuner.errors import TunerError
from tuner.storage.heartbeat import ALIVE, declare_dead
from tuner.storage.database import (open_storage, pareto_members, pareto_snapshots, shown, study_exists, study_runs,
                                 trial_slots)


def tuner_rows(engine, name: str) -> dict[str, int]:
    """{table: rows of this study} for tuner's own tables that exist in the database."""
    from tuner.storage.validation_table import front_validations

    have = set(inspect(engine).get_table_names())
    out = {}
    with engine.begin() as conn:
        for table in (study_runs, trial_slots, pareto_snapshots, front_validations):
            if table.name in have:
                out[table.name] = conn.execute(select(func.count()).select_from(table).where(
                    table.c.study_name == name)).scalar_one()
    return out


def delete_study(spec) -> dict:
    """Delete the study's Optuna study and tuner's rows. Returns what was removed."""
    import optuna

    url, name = spec.storage, spec.name
    in_optuna = study_exists(url, name)  # read-only: a missing database is not created
    if not in_optuna and not _database_exists(url):
        raise TunerError(f"no study '{name}' in {shown(url)} (nothing to delete)")
    storage = open_storage(url, None)
    try:
        engine = storage.engine
        rows = tuner_rows(engine, name)
        if not in_optuna and not any(rows.values()):
            raise TunerError(f"no study '{name}' in {shown(url)} (nothing to delete)")
        if "study_runs" in rows:
            declare_dead(engine, name)  # stale rows of killed workers do not block the deletion
            with engine.begin() as conn:
                live = conn.execute(select(study_runs.c.host, study_runs.c.pid).where(
                    study_runs.c.study_name == name, study_runs.c.state == ALIVE)).all()
            if live:
                who = ", ".join(f"{h} pid {p}" for h, p in live[:3])
                raise TunerError(f"study '{name}' has {len(live)} live worker(s) ({who}): stop them first")
        trials = 0
        if in_optuna:
            trials = len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))
        _delete_tuner_rows(engine, name, set(rows))
        if in_optuna:
            optuna.delete_study(study_name=name, storage=storage)
    finally:
        storage.engine.dispose()
    return {"study": name, "storage": shown(url), "trials": trials, **{f"{k}_rows": v for k, v in rows.items()}}


def _database_exists(url: str) -> bool:
    import os

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.get_backend_name() != "sqlite" or bool(parsed.database and os.path.isfile(parsed.database))


def _delete_tuner_rows(engine, name: str, tables: set[str]) -> None:
    """tuner's rows of the study, in one transaction (children before the rows they reference)."""
    from tuner.storage.validation_table import front_validations

    with engine.begin() as conn:
        if "pareto_snapshots" in tables:
            ids = select(pareto_snapshots.c.id).where(pareto_snapshots.c.study_name == name)
            conn.execute(delete(pareto_members).where(pareto_members.c.snapshot_id.in_(ids)))
            conn.execute(delete(pareto_snapshots).where(pareto_snapshots.c.study_name == name))
        for table in (front_validations, trial_slots, study_runs):
            if table.name in tables:
                conn.execute(delete(table).where(table.c.study_name == name))

"""The `front_validations` table: front members re-measured on held-out seeds (`tuner study validate`).

It lives in the study's database beside `pareto_snapshots`, in its own SQLAlchemy metadata, created on
first use (a study that was never validated has no such table). One row per (validation run, trial); the
newest row of a trial is its validated score, which `tuner export --best` prefers to the study's.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import Boolean, Column, DateTime, Float, Integer, MetaData, String, Table, Text, inspect, insert, select

metadata = MetaData()

front_validations = Table(
    "front_validations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(512), nullable=False, index=True),
    Column("created_at", DateTime, nullable=False),
    Column("trial_number", Integer, nullable=False),
    Column("n_images", Integer, nullable=False),  # the held-out image set
    Column("seed", Integer, nullable=False),
    Column("steps", Integer, nullable=False),
    Column("baseline_fid", Float, nullable=False),  # the baseline re-measured on the same held-out set
    Column("fid_increase_pct", Float, nullable=True),  # point estimate; NULL when the member failed
    Column("fid_increase_pct_lo", Float, nullable=True),
    Column("fid_increase_pct_hi", Float, nullable=True),  # what feasibility is judged on
    Column("max_fid_increase", Float, nullable=True),  # the cap it was judged against (NULL: none)
    Column("feasible", Boolean, nullable=False),
    Column("objectives", Text, nullable=False),  # JSON {objective: validated value, speedup and its interval}
    Column("error", Text, nullable=True),  # why the member could not be re-measured
)


def write_validations(engine, study_name: str, rows: list[dict]) -> None:
    metadata.create_all(engine, checkfirst=True)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(insert(front_validations), [
            {**{k: r.get(k) for k in ("trial_number", "n_images", "seed", "steps", "baseline_fid", "fid_increase_pct",
                                       "fid_increase_pct_lo", "fid_increase_pct_hi", "max_fid_increase", "error")},
             "study_name": study_name, "created_at": now, "feasible": bool(r["feasible"]),
             "objectives": json.dumps(r["objectives"])} for r in rows])


def latest_validations(engine, study_name: str) -> dict[int, dict]:
    """trial number -> its newest validation row ({} when the study was never validated)."""
    if not inspect(engine).has_table(front_validations.name):
        return {}
    with engine.begin() as conn:
        rows = conn.execute(select(front_validations).where(front_validations.c.study_name == study_name)
                            .order_by(front_validations.c.id)).mappings().all()
    out = {}
    for r in rows:  # ascending id: later rows overwrite earlier ones
        out[r["trial_number"]] = {**dict(r), "objectives": json.loads(r["objectives"]),
                                  "created_at": r["created_at"].isoformat()}
    return out

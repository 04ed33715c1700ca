"""Every trial of a study as one pandas DataFrame, for analysts (`tuner.load_trials`, `tuner study trials`).

Columns carry the names the CLI prints (`speedup`, `FID change %`, `certified`, ...), then one column per
config knob, flattened as `method.knob` (`tome.ratio`, `timesteps.count`); a list or table knob is its JSON
text, so every column holds scalars and the frame writes to CSV and Parquet alike."""

from __future__ import annotations

import json
from pathlib import Path

from optuna.trial import TrialState

# (column, trial user attribute): the numbers every completed trial stores
MEASURED = (("speedup", "speedup"), ("speedup lo", "speedup_lo"), ("speedup hi", "speedup_hi"), ("FID", "fid"),
            ("FID change %", "fid_increase_pct"), ("FID change % lo", "fid_increase_pct_lo"),
            ("FID change % hi", "fid_increase_pct_hi"), ("images", "n_images"), ("KID", "kid"), ("PSNR", "psnr"),
            ("SSIM", "ssim"), ("acc %", "class_accuracy"), ("CLIP", "clip_score"), ("memory GB", "memory_gb"),
            ("MACs", "macs"), ("BitOPs", "bitops"), ("steps", "num_steps"), ("race decision", "race_decision"))


def flat_config(methods: dict) -> dict:
    out = {}
    for method, knobs in (methods or {}).items():
        for knob, value in (knobs or {}).items():
            out[f"{method}.{knob}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def _row(t, objectives: list[str], certified: dict, front: set, feasible: set) -> dict:
    a = dict(t.user_attrs)
    if t.values is not None:  # the objective values as Optuna stores them win over copies in the attributes
        from tuner.study.pareto import BASELINE_KEYS

        a.update({BASELINE_KEYS.get(o, o): v for o, v in zip(objectives, t.values)})
    latency = a.get("seconds_per_image")
    row = {"trial": t.number, "state": t.state.name.lower(),
           "ms/image": 1000 * latency if isinstance(latency, (int, float)) else None}
    for column, key in MEASURED:
        row[column] = a.get(key)
    if isinstance(row["acc %"], (int, float)):
        row["acc %"] = 100 * row["acc %"]
    row.update({"certified": certified.get(t.number), "feasible": t.number in feasible, "on front": t.number in front,
                "reason": a.get("race_reason") or a.get("prune_reason") or a.get("fail_reason"),
                "duplicate of": a.get("duplicate_of")})
    return {**row, **flat_config(a.get("config"))}


def trials_frame(study, spec):
    """The DataFrame of an open optuna study (see the module docstring)."""
    import pandas as pd

    from tuner.study import pareto

    certified = pareto.certified_statuses(study)
    feasible = {t.number for t in pareto.completed(study)}
    from tuner.errors import TunerError

    try:
        front = {m["trial"] for m in pareto.front(study, spec)["members"]}
    except TunerError:  # no stored baseline yet: no front, but the trials are there
        front = set()
    rows = [_row(t, spec.objectives, certified, front, feasible) for t in study.get_trials(deepcopy=False)
            if t.state != TrialState.WAITING]
    frame = pd.DataFrame(rows)
    return frame.sort_values("trial", ignore_index=True) if len(frame) else frame


def load_trials(study_toml: str | Path):
    """`tuner.load_trials("studies/default.toml")`: every trial of the study the TOML names, read-only."""
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    spec = load_spec(study_toml)
    study, storage = open_study(spec, create=False)
    try:
        return trials_frame(study, spec)
    finally:
        storage.engine.dispose()

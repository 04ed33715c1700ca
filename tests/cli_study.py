"""A small stored study for CLI tests (no model runs): a baseline, completed trials with their FID
constraint (one of them fast but infeasible), a pruned trial."""

from __future__ import annotations

from pathlib import Path

STUDY_TOML = """
name = "cli"
n_trials = 6
[image_set]
n_images = 8
steps = 6
[constraints]
max_fid_increase = 20
[space.tome]
[space.deepcache]
"""
BASELINE = {"fid": 10.0, "seconds_per_image": 0.1, "bitops": 1e9, "macs": 1e7}
MODEL_ID = "tuner/proxy-digits-16px"
TRIALS = [  # (seconds per image, FID, methods); the constraint is FID <= baseline + 20 %
    (0.08, 10.5, {"tome": {"ratio": 0.3}}),
    (0.05, 11.5, {"tome": {"ratio": 0.5}, "deepcache": {"interval": 2}}),
    (0.03, 14.0, {"deepcache": {"interval": 4}}),  # fastest of all, FID +40 %: infeasible, not on the front
    (0.09, 11.0, {"deepcache": {"interval": 2}}),  # dominated by the first two
    (0.06, 10.8, {"tome": {"ratio": 0.4}}),
]


def make_study(folder: Path) -> Path:
    """Writes cli.toml and its database into `folder`; returns the TOML's path."""
    from optuna.trial import TrialState, create_trial

    from tuner.config import AccelConfig
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    path = folder / "cli.toml"
    path.write_text(STUDY_TOML)
    spec = load_spec(path)
    study, storage = open_study(spec)
    study.set_user_attr("baseline", BASELINE)
    study.set_user_attr("model_id", MODEL_ID)
    for lat, fid, methods in TRIALS:
        stored = AccelConfig.from_dict({"schema_version": 2, "methods": methods}).to_dict()["methods"]
        excess = 100 * (fid / BASELINE["fid"] - 1) - 20
        study.add_trial(create_trial(values=[lat, fid], constraints={"fid_increase_pct": excess},
                                     user_attrs={"config": stored, "kid": 0.01, "class_accuracy": 1.0,
                                                 "speedup": BASELINE["seconds_per_image"] / lat,
                                                 "fid_ratio": fid / BASELINE["fid"]}))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"prune_reason": "cheap reject: FID"}))
    storage.engine.dispose()
    return path

"""A trial whose config a finished trial already measured is not measured again: it replays that
trial's result (objectives, constraints, attributes, or its prune) and records `duplicate_of`.

Why: multi-objective TPE proposes the same categorical combination again and again once one point
dominates (the default study, 40 trials: 16 re-proposals of one 8-step config, each costing a full
evaluation). This is the pattern Optuna's FAQ gives for duplicate parameters. Two trials are the same
when their configs are (the `config` user attribute), not their raw parameters: genes that a config
does not use (an inactive branch) make different parameters with the same config.

A replayed trial still counts towards `n_trials` (it is a finished trial of the study) but costs
almost nothing; `tuner study validate` re-measures front members on held-out seeds anyway.
"""

from __future__ import annotations

import json

import optuna
from optuna.trial import TrialState

DUPLICATE_ATTR = "duplicate_of"
CONSTRAINT_PREFIX = "constraints:"  # where Optuna 5's trial.set_constraint keeps a constraint
NOT_REPLAYED = ("config", "trial_seconds", "fail_reason", DUPLICATE_ATTR)  # this trial's own facts


def config_key(methods: dict) -> str:
    return json.dumps(methods, sort_keys=True)


def measured_twin(trial: optuna.Trial, methods: dict) -> optuna.trial.FrozenTrial | None:
    """The earliest finished trial (complete, or pruned by the cheap reject) with this config."""
    key = config_key(methods)
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.number != trial.number and "config" in t.user_attrs and config_key(t.user_attrs["config"]) == key:
            if t.state == TrialState.PRUNED and "prune_reason" not in t.user_attrs:
                continue  # pruned for another reason (abandoned): nothing to replay
            return t
    return None


def replay(trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> list[float]:
    """Copy the twin's result onto `trial`; return its objectives or raise its prune."""
    for key, value in twin.user_attrs.items():
        if key not in NOT_REPLAYED:
            trial.set_user_attr(key, value)
    trial.set_user_attr(DUPLICATE_ATTR, twin.number)
    for key, value in twin.system_attrs.items():
        if key.startswith(CONSTRAINT_PREFIX):
            trial.set_constraint(key[len(CONSTRAINT_PREFIX):], value)
    if twin.state == TrialState.PRUNED:
        raise optuna.TrialPruned(f"{twin.user_attrs['prune_reason']} (same config as trial {twin.number})")
    return list(twin.values)

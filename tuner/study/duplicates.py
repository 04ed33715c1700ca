"""A trial whose config a finished trial already measured is not measured again: it replays that
trial's result (objectives, constraints, attributes, or its prune) and records `duplicate_of`.

Why: multi-objective TPE proposes the same categorical combination again and again once one point
dominates (the default study, 40 trials: 16 re-proposals of one 8-step config, each costing a full
evaluation). This is the pattern Optuna's FAQ gives for duplicate parameters. Two trials are the same
when their configs are (the `config` user attribute), not their raw parameters: genes that a config
does not use (an inactive branch) make different parameters with the same config.

A replayed trial still counts towards `n_trials` (it is a finished trial of the study) but costs
almost nothing; `tuner study validate` re-measures front members on held-out seeds anyway. So that the
budget is not spent circling one point, each replay queues a *neighbour* of the config for the next
trial: one active parameter redrawn near its value (numbers) or changed (choices), the rest kept; a
parameter this makes active is left to the sampler.
"""

from __future__ import annotations

import json
import random

import optuna
from optuna.trial import TrialState

from tuner.storage.dashboard_view import NAMED_PREFIX as CONSTRAINT_PREFIX  # where trial.set_constraint keeps one
from tuner.storage.keys import DUPLICATE_ATTR

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


NEIGHBOUR_STEP = 0.15  # sd of a numeric redraw, as a share of the parameter's (log-)range


def neighbour(space, params: dict, rng: random.Random) -> dict | None:
    """`params` with one active parameter moved (None when nothing can move)."""
    movable = [p for p in space.active(params) if p.name in params
               and (len(p.choices) > 1 if p.kind == "categorical" else p.low < p.high)]
    if not movable:
        return None
    p = rng.choice(movable)
    old = params[p.name]
    if p.kind == "categorical":
        new = rng.choice([c for c in p.choices if not (c == old and type(c) is type(old))])
    else:
        new = old
        for _ in range(8):  # on a coarse int grid a small step can round back to the old value
            new = p.decode(p.encode(old) + rng.gauss(0.0, NEIGHBOUR_STEP))
            if new != old:
                break
    return space.prune({**params, p.name: new})


def queue_neighbour(trial: optuna.Trial, space, params: dict) -> None:
    """Explore next to a re-proposed config: the next trial of this study starts from a neighbour."""
    if trial.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return  # one queued trial at a time: a study never ends with a pile of them waiting
    moved = neighbour(space, params, random.Random(f"{trial.study.study_name}:{trial.number}"))
    if moved is not None:
        trial.study.enqueue_trial(moved, skip_if_exists=True)

"""What the report reads from a study, beside `pareto.front`: the hypervolume after each trial and the
parameter importances."""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState

from tuner.study import pareto
from tuner.study.spec import StudySpec


def hypervolume_history(study: optuna.Study, spec: StudySpec) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the noise-aware feasible front of the trials up to it), as the
    study's snapshots compute it, for every finished trial."""
    baseline = pareto.baseline_of(study)
    certified = pareto.certified_statuses(study)
    finished = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                               TrialState.FAIL)), key=lambda t: t.number)
    history, feasible = [], []
    for t in finished:
        if t.state == TrialState.COMPLETE and pareto.is_feasible(t, certified):
            feasible.append(t)
        members = pareto.front_trials(feasible, spec.maximized, spec, baseline)
        history.append((t.number, pareto.hypervolume(spec, baseline, members)))
    return history


OBJECTIVE_LABELS = {"latency": "latency", "fid": "FID", "bitops": "BitOPs", "memory": "memory",
                    "clip_score": "CLIP score"}


def importances(study: optuna.Study, spec: StudySpec) -> tuple[dict[str, dict[str, float]], str | None]:
    """({objective: {param: importance}}, None), or ({}, why not) when Optuna's evaluator cannot say
    (too few completed trials, no parameter shared by all of them)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2 or not any(t.params for t in done):
        return {}, f"{len(done)} completed trial(s) with searched parameters: too few for importances"
    out = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's experimental-API warnings are not the user's concern
            for i, name in enumerate(spec.objectives):
                imp = optuna.importance.get_param_importances(study, target=lambda t, i=i: t.values[i])
                out[OBJECTIVE_LABELS.get(name, name)] = {k: float(v) for k, v in imp.items()}
    except (RuntimeError, ValueError) as e:  # e.g. a dynamic space with no parameter common to all trials
        return {}, f"Optuna's importance evaluator could not run: {e}"
    if not any(out.values()):
        return {}, "no parameter is shared by all completed trials"
    return out, None

"""optuna-dashboard on a study's storage, run by this interpreter, with the study's constraints visible.

Why a view instead of writing a second copy of each constraint (read in optuna 5.0.0 and
optuna-dashboard 0.21.0):
- Optuna 5's `trial.set_constraint(name, v)` stores the trial system attribute `constraints:<name>`.
  optuna-dashboard 0.21 serializes only the older attribute `constraints` (a list, what samplers with
  `constraints_func` write; `_serializer.py`), so its browser code (`hv`/`pv` in bundle.js) counts every
  trial as feasible and puts infeasible trials on its Pareto front.
- Storing the list as well is no fix: `FrozenTrial.constraints` merges the list (as "0", "1", ...) with
  the named attributes (`study/_constrained_optimization.py`), so Optuna's samplers would see every
  constraint twice: NSGA-II's and TPE's penalties double, the GP sampler fits one feasibility model per
  copy and raises "The number of constraints must be the same for all trials" on a study resumed
  across the change.
So `tuner dashboard` serves the storage through `ConstraintsView`, which adds the list to each trial as
it is read. Nothing is written, existing studies show correctly, and Optuna sees each constraint once.
(The dashboard's server-side plots, e.g. the Pareto front with plotly installed, call Optuna's own
`plot_pareto_front`, which reads the named attributes directly.)
"""

from __future__ import annotations

import copy

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

DASHBOARD_CONSTRAINTS_KEY = "constraints"  # what optuna-dashboard 0.21 reads
NAMED_PREFIX = "constraints:"  # what Optuna 5's set_constraint writes


def with_dashboard_constraints(trial: FrozenTrial) -> FrozenTrial:
    """A copy of `trial` whose system attributes also hold its named constraints as the list the
    dashboard reads (name order, so several constraints line up across trials)."""
    attrs = trial.system_attrs
    named = sorted(k for k in attrs if k.startswith(NAMED_PREFIX))
    if not named or DASHBOARD_CONSTRAINTS_KEY in attrs:
        return trial
    view = copy.copy(trial)  # shallow: the storage's own objects stay untouched
    view.system_attrs = {**attrs, DASHBOARD_CONSTRAINTS_KEY: [float(attrs[k]) for k in named]}
    return view


class ConstraintsView(BaseStorage):
    """The wrapped storage, unchanged except that trials read through it carry the dashboard's
    constraints list. Everything else (notes, study attributes the dashboard writes) goes through."""

    def __init__(self, inner: BaseStorage):
        self._inner = inner

    def get_all_trials(self, study_id, deepcopy=True, states=None):
        return [with_dashboard_constraints(t) for t in self._inner.get_all_trials(study_id, deepcopy, states)]

    def get_trial(self, trial_id):
        return with_dashboard_constraints(self._inner.get_trial(trial_id))

    def __getattr__(self, name):  # non-abstract extras of the inner storage (engine, url, ...)
        return getattr(self._inner, name)


def _delegate(name):
    def method(self, *args, **kwargs):
        return getattr(self._inner, name)(*args, **kwargs)
    method.__name__ = name
    return method


for _name in BaseStorage.__abstractmethods__ - {"get_all_trials", "get_trial"}:
    setattr(ConstraintsView, _name, _delegate(_name))
ConstraintsView.__abstractmethods__ = frozenset()


def serve(storage: BaseStorage, host: str, port: int) -> None:
    """Run optuna-dashboard in this process (so it needs no `optuna-dashboard` script on PATH) until
    Ctrl-C."""
    from optuna_dashboard import run_server

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_server(ConstraintsView(storage), host=host, port=port)

"""Optuna and DEAP on one study: alternating generations, each engine seeing every trial.

Trials are numbered into generations of `population_size` exactly as the DEAP samplers do
(`BaseGASampler` bookkeeping in storage, so several workers agree). Even generations are sampled by
Optuna's TPE (multi-objective TPE, constant liar for parallel workers), which models *all* completed
trials of the study — DEAP's children included. Odd generations are DEAP NSGA-II children whose parents
are selected (`selNSGA2`, feasible first) from *all* completed trials — TPE's included ("archive" pool).
Generation 0 is TPE's start-up phase, i.e. random.

Why this split: TPE is strong early and on categorical structure (which methods to turn on); the GA
recombines good configurations and refines numeric knobs around the front. TPE was chosen over Optuna's
NSGA-II as the Optuna half because NSGA-II only ever sees its own generations, so it would not profit
from DEAP's trials. Each trial records its engine in system attr `tuner:engine` ("tpe" or "deap-nsga2").
"""

from __future__ import annotations

from typing import Any, Sequence

from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from tuner.samplers.deap_ga import DeapNSGA2Sampler
from tuner.storage.keys import ENGINE_KEY


class JointSampler(DeapNSGA2Sampler):
    engine = "deap-nsga2"

    def __init__(self, space, *, population_size: int = 10, seed: int | None = None,
                 tpe_options: dict | None = None, **deap_options):
        super().__init__(space, population_size=population_size, seed=seed, parent_pool="archive", **deap_options)
        tpe = {"seed": seed, "n_startup_trials": population_size, "constant_liar": True}
        tpe.update(tpe_options or {})
        self._tpe = TPESampler(**tpe)
        self._uses_deap: dict[int, bool] = {}  # trial id -> decided once, in before_trial

    def _deap_turn(self, study: Study, trial: FrozenTrial) -> bool:
        tid = trial._trial_id
        if tid not in self._uses_deap:
            generation = self.get_trial_generation(study, trial)
            self._uses_deap[tid] = generation % 2 == 1
            if not self._uses_deap[tid]:
                study._storage.set_trial_system_attr(tid, ENGINE_KEY, "tpe")
        return self._uses_deap[tid]

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._deap_turn(study, trial)
        self._tpe.before_trial(study, trial)
        super().before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self._deap_turn(study, trial):
            return super().infer_relative_search_space(study, trial)
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if self._deap_turn(study, trial):
            return super().sample_relative(study, trial, search_space)
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if self._deap_turn(study, trial):
            return super().sample_independent(study, trial, param_name, param_distribution)
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._uses_deap.pop(trial._trial_id, None)
        self._tpe.after_trial(study, trial, state, values)
        super().after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()
        super().reseed_rng()

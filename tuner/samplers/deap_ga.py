"""DEAP's evolutionary operators inside an Optuna sampler, so DEAP's trials live in the study's storage.

Generations are tracked the way Optuna's NSGA-II does it (`optuna.samplers.BaseGASampler`): each trial
gets a generation number in its system attrs when it is created (a generation is full once
`population_size` trials of it completed), and the parents of generation g are selected once and cached
in the study's system attrs. Several workers on one storage therefore agree on generations and parents.

Per trial:
1. generation 0, or fewer than two parents: a random genome;
2. otherwise two parents drawn uniformly from the elite set, mixed-gene crossover with probability
   `crossover_prob` (DEAP `cxSimulatedBinaryBounded` on the numeric genes — all on the normalized [0, 1]
   scale — and `cxUniform` on the categorical genes), then each gene mutates with probability
   `mutation_prob` (default 1 / number of active params) by its `Param.mutate` (polynomial bounded,
   uniform resampling, or profile-weighted).
The full genome, inactive genes included, is stored in the trial's system attrs (`tuner:genome`) so a
method switched off for one generation keeps its genes for the next.

Parent selection (the elite set of size `population_size`) is a DEAP selector passed in by the subclass
(`selNSGA2`, `selNSGA3` with `uniform_reference_points`, `selSPEA2`) on the completed trials of the
previous generation plus its parents ("generational", as Optuna's NSGA-II), or on every completed trial
of the study ("archive", used by the joint sampler so DEAP sees the other engine's trials). Failed and
pruned trials never become parents. Constraints (`trial.set_constraint`, read back through the public
`FrozenTrial.constraints`) are a penalty: feasible trials are selected first by the DEAP selector;
infeasible ones only fill the remaining places, least violation first.

DEAP draws from Python's `random` (and selNSGA3 from `numpy.random`): every DEAP call runs inside
`seeded_globals` on this sampler's own generators, so a seeded run with one worker is reproducible and
the caller's global random state is left untouched.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
from itertools import combinations_with_replacement
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from deap import base, tools
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseGASampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner.storage.keys import ENGINE_KEY, GENOME_KEY, PARENTS_KEY
from tuner.errors import TunerError

POOLS = ("generational", "archive")
_GLOBALS_LOCK = threading.RLock()  # Optuna's n_jobs > 1 runs samplers in threads


@contextlib.contextmanager
def seeded_globals(py_rng: random.Random, np_rng: np.random.RandomState) -> Iterator[None]:
    """Run DEAP operators on our own generators: swap them into `random`/`numpy.random` and back."""
    with _GLOBALS_LOCK:
        saved_py, saved_np = random.getstate(), np.random.get_state()
        random.setstate(py_rng.getstate())
        np.random.set_state(np_rng.get_state())
        try:
            yield
        finally:
            py_rng.setstate(random.getstate())
            np_rng.set_state(np.random.get_state())
            random.setstate(saved_py)
            np.random.set_state(saved_np)


class _Individual:
    """What DEAP's selectors need: a `fitness`; `trial` rides along."""

    __slots__ = ("trial", "fitness")

    def __init__(self, trial: FrozenTrial, fitness: base.Fitness):
        self.trial, self.fitness = trial, fitness


def violation(trial: FrozenTrial) -> float:
    return float(sum(v for v in trial.constraints.values() if v > 0))


class DeapGASampler(BaseGASampler):
    """Base: subclasses set `engine` and implement `select(individuals, k, n_objectives)`."""

    engine = "deap"

    def __init__(self, space, *, population_size: int = 10, crossover_prob: float = 0.9,
                 swapping_prob: float = 0.5, mutation_prob: float | None = None, eta_crossover: float = 15.0,
                 eta_mutation: float = 20.0, seed: int | None = None, parent_pool: str = "generational"):
        if not isinstance(population_size, int) or population_size < 2:
            raise TunerError(f"population_size={population_size!r} must be an integer >= 2")
        for name, p in (("crossover_prob", crossover_prob), ("swapping_prob", swapping_prob)):
            if not 0.0 <= p <= 1.0:
                raise TunerError(f"{name}={p} must be in [0, 1]")
        if mutation_prob is not None and not 0.0 <= mutation_prob <= 1.0:
            raise TunerError(f"mutation_prob={mutation_prob} must be in [0, 1]")
        if parent_pool not in POOLS:
            raise TunerError(f"parent_pool must be one of {', '.join(POOLS)}")
        super().__init__(population_size=population_size)
        self.space = space
        self.crossover_prob, self.swapping_prob, self.mutation_prob = crossover_prob, swapping_prob, mutation_prob
        self.eta_crossover, self.eta_mutation = eta_crossover, eta_mutation
        self.parent_pool = parent_pool
        self._seed = seed
        self._py = random.Random(seed)
        self._np = np.random.RandomState(seed)
        self._random_sampler = RandomSampler(seed=seed)

    # --- selection -------------------------------------------------------------------------------
    def select(self, individuals: list, k: int, n_objectives: int) -> list:  # overridden
        raise NotImplementedError

    def select_parent(self, study: Study, generation: int) -> list[FrozenTrial]:
        if self.parent_pool == "archive":
            pool = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        else:
            pool = self.get_population(study, generation - 1) + self.get_parent_population(study, generation - 1)
        return self.elite(study, pool)

    def elite(self, study: Study, pool: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """`population_size` trials of `pool` (feasible first, by the DEAP selector)."""
        unique = {t._trial_id: t for t in pool if t.state == TrialState.COMPLETE and t.values is not None
                  and all(math.isfinite(v) for v in t.values)}
        trials = sorted(unique.values(), key=lambda t: t.number)
        k = int(self.population_size)
        feasible = [t for t in trials if violation(t) <= 0]
        infeasible = sorted((t for t in trials if violation(t) > 0), key=lambda t: (violation(t), t.number))
        if len(feasible) <= k:
            return feasible + infeasible[: k - len(feasible)]
        directions = study.directions
        fitness_cls = type("TrialFitness", (base.Fitness,),
                           {"weights": tuple(-1.0 if d == StudyDirection.MINIMIZE else 1.0 for d in directions)})
        individuals = [_Individual(t, fitness_cls(tuple(t.values))) for t in feasible]
        with seeded_globals(self._py, self._np):
            chosen = self.select(individuals, k, len(directions))
        return [ind.trial for ind in chosen]

    # --- genomes ---------------------------------------------------------------------------------
    def genome_of(self, trial: FrozenTrial) -> list[float]:
        """The trial's stored genome with its actual params written over it (another engine's trial
        has no stored genome: its inactive genes are drawn from a generator seeded by its number)."""
        stored = trial.system_attrs.get(GENOME_KEY)
        if not isinstance(stored, list) or len(stored) != len(self.space.params):
            stored = None
        fill_rng = random.Random(f"{self._seed}:{trial.number}")
        return self.space.genome_from_values(trial.params, fill=stored, rng=fill_rng)

    def make_child(self, parents: list[FrozenTrial]) -> tuple[list[float], list[int]]:
        params = self.space.params
        parents = sorted(parents, key=lambda t: t.number)  # cached and fresh selections come in different orders
        with seeded_globals(self._py, self._np):
            p1, p2 = random.sample(parents, 2)
            c1, c2 = self.genome_of(p1), self.genome_of(p2)
            if random.random() < self.crossover_prob:
                num = [i for i, p in enumerate(params) if p.numeric]
                cat = [i for i, p in enumerate(params) if not p.numeric]
                if num:
                    a, b = [c1[i] for i in num], [c2[i] for i in num]
                    tools.cxSimulatedBinaryBounded(a, b, eta=self.eta_crossover, low=0.0, up=1.0)
                    for j, i in enumerate(num):
                        c1[i], c2[i] = a[j], b[j]
                if cat:
                    a, b = [c1[i] for i in cat], [c2[i] for i in cat]
                    tools.cxUniform(a, b, indpb=self.swapping_prob)
                    for j, i in enumerate(cat):
                        c1[i], c2[i] = a[j], b[j]
            child = c1 if random.random() < 0.5 else c2
            n_active = max(1, len(self.space.active(self.space.values_from_genome(child))))
            pm = self.mutation_prob if self.mutation_prob is not None else 1.0 / n_active
            for i, p in enumerate(params):
                if random.random() < pm:
                    child[i] = p.mutate(child[i], eta=self.eta_mutation)
        return child, [p1.number, p2.number]

    # --- Optuna sampler API ----------------------------------------------------------------------
    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.space.distributions()

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        generation = self.get_trial_generation(study, trial)
        parents = self.get_parent_population(study, generation)
        if len(parents) >= 2:
            genome, parent_numbers = self.make_child(parents)
        else:
            genome, parent_numbers = self.space.random_genome(self._py), []
        storage = study._storage
        storage.set_trial_system_attr(trial._trial_id, GENOME_KEY, [float(g) for g in genome])
        storage.set_trial_system_attr(trial._trial_id, ENGINE_KEY, self.engine)
        if parent_numbers:
            storage.set_trial_system_attr(trial._trial_id, PARENTS_KEY, parent_numbers)
        values = {p.name: p.decode(g) for p, g in zip(self.space.params, genome)}
        return {k: v for k, v in values.items() if k in search_space}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        # Only parameters outside the declared space (none when the space suggests).
        return self._random_sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._random_sampler.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._random_sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        # Called by Optuna for n_jobs > 1 so threads do not share a stream; runs are not reproducible then.
        self._py.seed()
        self._np.seed()
        self._random_sampler.reseed_rng()


# --- the selection strategies ----------------------------------------------------------------------
class DeapNSGA2Sampler(DeapGASampler):
    engine = "deap-nsga2"

    def select(self, individuals, k, n_objectives):
        return tools.selNSGA2(individuals, k)


def reference_points(n_objectives: int, population_size: int) -> np.ndarray:
    """DEAP's uniform reference points with the most divisions p that still gives ≤ population_size
    points (at least p = 1)."""
    p = 1
    while _n_points(n_objectives, p + 1) <= population_size:
        p += 1
    return tools.uniform_reference_points(nobj=n_objectives, p=p)


def _n_points(n_objectives: int, p: int) -> int:
    return sum(1 for _ in combinations_with_replacement(range(n_objectives), p))


class DeapNSGA3Sampler(DeapGASampler):
    engine = "deap-nsga3"

    def select(self, individuals, k, n_objectives):
        if n_objectives < 2:
            return tools.selNSGA2(individuals, k)  # reference directions need two objectives or more
        ref = reference_points(n_objectives, int(self.population_size))
        try:
            return tools.selNSGA3(individuals, k, ref)
        except np.linalg.LinAlgError:  # degenerate front (e.g. all points on a line): NSGA-II ranking
            return tools.selNSGA2(individuals, k)


class DeapSPEA2Sampler(DeapGASampler):
    engine = "deap-spea2"

    def select(self, individuals, k, n_objectives):
        return tools.selSPEA2(individuals, k)


SELECTORS: dict[str, Callable[..., DeapGASampler]] = {
    "deap-nsga2": DeapNSGA2Sampler,
    "deap-nsga3": DeapNSGA3Sampler,
    "deap-spea2": DeapSPEA2Sampler,
}

"""Samplers on the real search space with a cheap synthetic 2-objective function (no model runs)."""

from __future__ import annotations

import random

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from tuner.search_spaces.defaults import default_families
from tuner.search_spaces.space import SpaceContext, build_space
from tuner.errors import TunerError
from tuner.samplers import SAMPLER_NAMES, build_sampler
from tuner.storage.keys import ENGINE_KEY, GENOME_KEY, PARENTS_KEY

optuna.logging.set_verbosity(optuna.logging.WARNING)

STEPS = 20
GA = ("deap-nsga2", "deap-nsga3", "deap-spea2", "joint")
POP = {"population_size": 4}


def _profile() -> pd.DataFrame:
    return pd.DataFrame([{"block": "b", "level": "D1", "step": s, "n_pairs": 10.0,
                          "jaccard_distance": float("nan") if s == 0 else (0.3 if s in (3, 11) else 0.03),
                          "threshold": 0.7} for s in range(STEPS)])


@pytest.fixture(scope="module")
def space():
    families = default_families(["latency", "fid", "bitops"])  # every default family, quant included
    ctx = SpaceContext(steps=STEPS, facts={
        "catome": {"jaccard_profile": _profile()}, "deepcache": {"max_branch": 2},
        "quant": {"quant_layers": ["conv_in", "down_blocks.0.resnets.0.conv1", "mid_block.resnets.0.conv1",
                                   "up_blocks.1.attentions.0.proj_out", "conv_out"]}})
    return build_space(families, ctx)


def synthetic(space, *, constraint: bool = False, prune_every: int = 0, fail_every: int = 0):
    """Latency-like and error-like objectives of the decoded config; conflicting, so there is a front."""

    def objective(trial):
        values = space.suggest(trial)
        cfg = space.to_config(values)
        n = space.num_steps(values) / STEPS
        speed, error = 1.0, 0.0
        m = cfg.methods
        if "tome" in m:
            speed *= 1 + m["tome"].ratio
            error += m["tome"].ratio ** 2
        if "catome" in m:
            speed *= 1 + 0.5 * (1.5 - m["catome"].threshold)
            error += 0.2 * (1.0 - m["catome"].threshold) ** 2 + 0.01 * (20 - len(m["catome"].checkpoints or [0] * 20))
        if "deepcache" in m:
            speed *= 1 + 0.3 * (m["deepcache"].interval - 1) / (1 + m["deepcache"].branch)
            error += 0.05 * m["deepcache"].interval
        if "frdiff" in m:
            speed *= 1 + 0.2 * m["frdiff"].interval
            error += 0.1 * abs(m["frdiff"].bias - 0.4)
        if m.get("solver") and m["solver"].name == "ddpm":
            error += 0.05 if m["solver"].coefficients == "liyan" else 0.2
        error += 0.5 * (1 - n) ** 2
        if prune_every and trial.number % prune_every == prune_every - 1:
            raise optuna.TrialPruned()
        if fail_every and trial.number % fail_every == fail_every - 2:
            raise ValueError("synthetic failure")
        if constraint:
            trial.set_constraint("error", error - 0.3)
        return n / speed, error

    return objective


def run(space, name, seed=0, n_trials=12, options=None, **objective_kw):
    sampler = build_sampler(name, space, seed, options)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(synthetic(space, **objective_kw), n_trials=n_trials, catch=(ValueError,))
    return study


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_sampler_runs_12_trials(space, name):
    study = run(space, name, options=POP if name in GA or name.startswith("nsga") else None)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 12
    for t in complete:
        space.to_config(t.params)  # every suggestion decodes to a valid config
        assert set(t.params) == {p.name for p in space.active(t.params)}
    assert len({tuple(sorted(t.params.items())) for t in complete}) > 6  # it explores


@pytest.mark.parametrize("name", GA)
def test_ga_samplers_make_children_after_the_first_generation(space, name):
    study = run(space, name, n_trials=16, options=POP)
    sampler = study.sampler
    gen_key = sampler._get_generation_key()
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    gens = [t.system_attrs[gen_key] for t in trials]
    assert gens == sorted(gens) and gens[0] == 0 and gens[-1] >= 2
    children = [t for t in trials if PARENTS_KEY in t.system_attrs]
    expected = [t for t, g in zip(trials, gens) if g >= 1 and (name != "joint" or g % 2 == 1)]
    assert children == expected and children
    by_number = {t.number: t for t in trials}
    for child in children:
        assert len(child.system_attrs[GENOME_KEY]) == len(space.params)
        for p in child.system_attrs[PARENTS_KEY]:
            assert p < child.number and by_number[p].state == TrialState.COMPLETE
        assert child.system_attrs[ENGINE_KEY] == ("deap-nsga2" if name == "joint" else name)
    if name == "joint":  # the other generations are TPE's
        tpe = [t for t, g in zip(trials, gens) if g % 2 == 0]
        assert all(t.system_attrs[ENGINE_KEY] == "tpe" for t in tpe)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_seeded_runs_are_reproducible(space, name):
    options = POP if name in GA or name in ("nsga2", "nsga3") else None
    a = [t.params for t in run(space, name, seed=7, options=options).trials]
    b = [t.params for t in run(space, name, seed=7, options=options).trials]
    assert a == b
    if name in GA:
        c = [t.params for t in run(space, name, seed=8, options=options).trials]
        assert c != a


def test_failed_and_pruned_trials_are_never_parents(space):
    study = run(space, "deap-nsga2", n_trials=20, options=POP, prune_every=3, fail_every=5)
    states = {t.number: t.state for t in study.trials}
    assert TrialState.PRUNED in states.values() and TrialState.FAIL in states.values()
    parents = {p for t in study.trials for p in t.system_attrs.get(PARENTS_KEY, [])}
    assert parents and all(states[p] == TrialState.COMPLETE for p in parents)


def test_infeasible_trials_are_penalised(space):
    base = synthetic(space)

    def objective(trial):  # every third trial infeasible, violation growing with its number
        values = base(trial)
        trial.set_constraint("c", float(trial.number + 1) if trial.number % 3 == 0 else -1.0)
        return values

    sampler = build_sampler("deap-nsga2", space, 0, POP)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=16)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    feasible = [t for t in trials if t.number % 3 != 0]
    infeasible = [t for t in trials if t.number % 3 == 0]
    assert all(t in feasible for t in sampler.elite(study, trials))  # enough feasible: no infeasible parent
    chosen = sampler.elite(study, feasible[:2] + infeasible[::-1])
    assert chosen == feasible[:2] + infeasible[:2]  # feasible first, then least violation


def test_deap_leaves_the_global_random_state_alone(space):
    random.seed(99)
    expected = random.Random(99).random()
    run(space, "deap-nsga3", n_trials=10, options=POP)
    assert random.random() == expected


def test_unknown_sampler_or_option_is_a_tuner_error(space):
    with pytest.raises(TunerError, match="unknown sampler 'cmaes'"):
        build_sampler("cmaes", space, 0)
    with pytest.raises(TunerError, match="unknown option"):
        build_sampler("deap-nsga2", space, 0, {"populaton_size": 4})
    with pytest.raises(TunerError, match="unknown option"):
        build_sampler("tpe", space, 0, {"bogus": 1})
    with pytest.raises(TunerError, match="population_size"):
        build_sampler("deap-spea2", space, 0, {"population_size": 1})


@pytest.mark.parametrize("name", ["deap-nsga2", "joint"])
def test_ga_bookkeeping_through_sqlite_with_two_workers(space, name, tmp_path):
    """Genomes, generations and cached parents round-trip through RDB storage; two workers share them."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(directions=["minimize", "minimize"], storage=storage,
                                sampler=build_sampler(name, space, 0, POP))
    study.optimize(synthetic(space), n_trials=16, n_jobs=2)
    loaded = optuna.load_study(study_name=study.study_name, storage=storage)
    trials = loaded.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 16
    children = [t for t in trials if PARENTS_KEY in t.system_attrs]
    assert children and all(len(t.system_attrs[GENOME_KEY]) == len(space.params) for t in children)
    cached = [k for k in loaded._storage.get_study_system_attrs(loaded._study_id) if ":parent:" in k]
    assert cached  # parent sets selected once per generation, visible to every worker

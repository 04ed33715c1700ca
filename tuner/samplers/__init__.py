"""Samplers by name: Optuna's own, DEAP inside Optuna, and the joint Optuna+DEAP mode.

    sampler = build_sampler("joint", space, seed=0, options={"population_size": 10})

| name        | what                                                                                    |
|-------------|-----------------------------------------------------------------------------------------|
| random      | optuna RandomSampler                                                                    |
| tpe         | optuna TPESampler (multi-objective TPE; constant liar for parallel workers)             |
| nsga2       | optuna NSGAIISampler                                                                    |
| nsga3       | optuna NSGAIIISampler                                                                   |
| gp          | optuna GPSampler (logEHVI for several objectives)                                       |
| deap-nsga2  | DEAP selNSGA2 parents, SBX + polynomial / uniform genes (`tuner.samplers.deap_ga`)     |
| deap-nsga3  | DEAP selNSGA3 with uniform reference points                                             |
| deap-spea2  | DEAP selSPEA2                                                                           |
| joint       | alternating generations: TPE (even) and DEAP NSGA-II (odd), both see every trial        |

`options` are passed to the sampler's constructor (e.g. population_size, n_startup_trials,
mutation_prob); an unknown option is a TunerError. All samplers read constraints set with
`trial.set_constraint`.
"""

from __future__ import annotations

import inspect
import warnings

import optuna

from tuner.errors import TunerError

OPTUNA_SAMPLERS = {
    "random": "RandomSampler",
    "tpe": "TPESampler",
    "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
    "gp": "GPSampler",
}
DEAP_SAMPLERS = ("deap-nsga2", "deap-nsga3", "deap-spea2")
SAMPLER_NAMES = tuple(OPTUNA_SAMPLERS) + DEAP_SAMPLERS + ("joint",)
# constant liar: parallel workers do not all sample the same point; GP falls back to random for the
# conditional params of our space by design, so its per-param warning is noise here.
OPTUNA_DEFAULTS = {"tpe": {"constant_liar": True}, "gp": {"warn_independent_sampling": False}}


def _construct(cls, name: str, options: dict, **fixed):
    sig = inspect.signature(cls.__init__)
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    known = set(sig.parameters) - {"self", "space", "seed"}
    unknown = sorted(set(options) - known) if not accepts_any else []
    if "seed" in options:
        raise TunerError(f"sampler '{name}': give the seed as the study's seed, not as an option")
    if unknown:
        raise TunerError(f"sampler '{name}': unknown option(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    try:
        with warnings.catch_warnings():  # NSGA-III / GP are marked experimental; that is not the user's error
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**fixed, **options)
    except TunerError:
        raise
    except (TypeError, ValueError) as e:
        raise TunerError(f"sampler '{name}': {e}") from None


def build_sampler(name: str, space, seed: int | None, options: dict | None = None) -> optuna.samplers.BaseSampler:
    """The sampler called `name` for `space` (a search_spaces SearchSpace), seeded with `seed`."""
    options = dict(options or {})
    if not isinstance(name, str) or name not in SAMPLER_NAMES:
        raise TunerError(f"unknown sampler {name!r} (known: {', '.join(SAMPLER_NAMES)})")
    if name in OPTUNA_SAMPLERS:
        cls = getattr(optuna.samplers, OPTUNA_SAMPLERS[name], None)
        if cls is None:
            raise TunerError(f"sampler '{name}' is not available in optuna {optuna.__version__}")
        return _construct(cls, name, {**OPTUNA_DEFAULTS.get(name, {}), **options}, seed=seed)
    if name in DEAP_SAMPLERS:
        from tuner.samplers.deap_ga import SELECTORS

        return _construct(SELECTORS[name], name, options, space=space, seed=seed)
    from tuner.samplers.joint import JointSampler

    return _construct(JointSampler, name, options, space=space, seed=seed)

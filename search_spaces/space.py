"""The joint search space: the families a study's `[space]` table names, combined.

    space = build_space({"tome": {"ratio": [0.1, 0.7]}, "deepcache": {}, "timesteps": {}},
                        SpaceContext(steps=50))
    values = space.suggest(trial)          # Optuna, define-by-run; conditional params only when active
    config = space.to_config(values)       # -> validated tuner.config.AccelConfig

Each `[space.<method>]` table names a registered method (`true` or `{}` for its default ranges). Methods
are searched from their own knob declarations (`derived.MethodFamily`; methods of one registry family are
alternatives); `timesteps` and `quant` have encodings of their own (timesteps, quantization modules).
The same `params` serve DEAP: `genome_from_values`/`values_from_genome` map between a trial's values
and a full genome (one gene per parameter, active or not).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from optuna.distributions import BaseDistribution

from tuner.search_spaces import catome_checkpoints, magcache_ratios, quantization, timesteps  # noqa: F401  (extensions)
from tuner.search_spaces.derived import MethodFamily, families_of
from tuner.search_spaces.params import Family, Param
from tuner.config import method_specs
from tuner.errors import TunerError

# Methods whose encoding is not a set of knob ranges. Decode order: timesteps first (it fixes the step
# count the others scale against).
OWN_FAMILIES = {"timesteps": timesteps, "quant": quantization}
RENAMED_TABLES = {"sampler": "solver"}  # round-1 study files: [space.sampler] was the diffusion solver


@dataclass
class SpaceContext:
    """What the search knows about the study's model: facts every method shares, and per method the
    facts its own `prepare` measured (`facts[method]`, e.g. {"deepcache": {"max_branch": 5}}), which only
    that method's search ranges read (`fact`)."""

    steps: int  # baseline step count
    num_train_timesteps: int = 1000
    facts: dict[str, dict] = field(default_factory=dict)

    def fact(self, method: str, name: str):
        """`method`'s model fact `name`: what its `prepare` measured, else the stand-in its config declares
        for a model nobody measured (`MethodConfig.unmeasured_facts`), else a shared fact; None if none."""
        if name in self.facts.get(method, {}):
            return self.facts[method][name]
        spec = method_specs().get(method)
        if spec is not None and name in spec.config_cls.unmeasured_facts:
            return spec.config_cls.unmeasured_facts[name]
        return getattr(self, name, None) if name in SHARED_FACTS else None


SHARED_FACTS = ("steps", "num_train_timesteps")


class SearchSpace:
    def __init__(self, families: list[Family], context: SpaceContext):
        self.families = families
        self.context = context
        self.params: list[Param] = [p for f in families for p in f.params]
        self.by_name = {p.name: p for p in self.params}
        if len(self.by_name) != len(self.params):
            raise TunerError("search space: a parameter is declared twice")
        for p in self.params:  # parents come first, so one pass in order settles activity
            if p.condition is not None and p.condition.parent not in self.by_name:
                raise TunerError(f"search space: {p.name} depends on undeclared {p.condition.parent}")
        self._timesteps = next((f for f in families if isinstance(f, timesteps.TimestepsFamily)), None)

    def __repr__(self) -> str:
        return f"SearchSpace({len(self.params)} params: {', '.join(self.by_name)})"

    # --- which parameters a set of values activates ------------------------------------------------
    @staticmethod
    def _is_active(p: Param, values: dict) -> bool:
        c = p.condition
        return c is None or (c.parent in values and c.holds(values[c.parent]))

    def active(self, values: dict) -> list[Param]:
        out, seen = [], {}
        for p in self.params:
            if self._is_active(p, seen):
                out.append(p)
                if p.name in values:
                    seen[p.name] = values[p.name]
        return out

    def prune(self, values: dict) -> dict:
        """Only the values of active parameters (what Optuna would have suggested)."""
        return {p.name: values[p.name] for p in self.active(values) if p.name in values}

    # --- Optuna ------------------------------------------------------------------------------------
    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution() for p in self.params}

    def suggest(self, trial) -> dict:
        values: dict = {}
        for p in self.params:
            if self._is_active(p, values):
                values[p.name] = p.suggest(trial)
        return values

    # --- DEAP genome -------------------------------------------------------------------------------
    def random_genome(self, rng: random.Random) -> list[float]:
        return [p.random_gene(rng) for p in self.params]

    def values_from_genome(self, genome: list[float]) -> dict:
        """Active values only; inactive genes are carried in the genome, not suggested."""
        return self.prune({p.name: p.decode(g) for p, g in zip(self.params, genome)})

    def genome_from_values(self, values: dict, fill: list[float] | None = None,
                           rng: random.Random | None = None) -> list[float]:
        """Genes of given values; a missing (inactive) gene comes from `fill`, else from `rng`."""
        genome = []
        for i, p in enumerate(self.params):
            if p.name in values and p.contains(values[p.name]):
                genome.append(p.encode(values[p.name]))
            elif fill is not None and i < len(fill):
                genome.append(fill[i])
            else:
                genome.append(p.random_gene(rng or random.Random(p.name)))
        return genome

    # --- warm start ---------------------------------------------------------------------------------
    def warm_start(self, limit: int | None = None) -> list[dict]:
        """Configurations a study measures first (enqueued in Optuna before any sampler proposes): the
        neutral config (the baseline itself, a reference on the front), every method at its own defaults
        (the papers' settings) and a steps-only ladder, each on top of the neutral config, after a solver
        ladder (what users already run: `tuner.solvers.LADDER` at every searched count). Values a
        parameter cannot take here (fixed or narrowed by the study's [space]) are left to the sampler."""
        base: dict = {}
        for f in self.families:
            base.update(f.neutral())
        points, seen = [], set()
        for extra in [{}] + self._solver_ladder() + [s for f in self.families for s in f.seeds()]:
            values = {k: v for k, v in {**base, **extra}.items() if k in self.by_name and self.by_name[k].contains(v)}
            values = self.prune(values)
            key = tuple(sorted((k, repr(v)) for k, v in values.items()))
            if key not in seen:
                seen.add(key)
                points.append(values)
        return points[:limit]

    def _solver_ladder(self) -> list[dict]:
        from tuner.solvers import LADDER

        counts = self.by_name.get("timesteps.count")
        if counts is None or "solver.name" not in self.by_name:
            return []
        return [{"solver.name": name, "solver.order": order, "timesteps.schedule": "uniform", "timesteps.count": c}
                for name, order in LADDER for c in counts.choices if c < self.context.steps]

    # --- values -> config --------------------------------------------------------------------------
    def num_steps(self, values: dict) -> int:
        return self._timesteps.num_steps(values) if self._timesteps is not None else int(self.context.steps)

    def to_config(self, values: dict):
        """Validated AccelConfig for a trial's values (extra inactive values are ignored)."""
        from tuner.config import SCHEMA_VERSION, AccelConfig

        if not isinstance(values, dict):
            raise TunerError("search space: values must be a dict")
        for p in self.active(values):
            if p.name not in values:
                raise TunerError(f"search space: no value for active parameter '{p.name}'")
            if not p.contains(values[p.name]):
                raise TunerError(f"search space: {p.name}={values[p.name]!r} is outside {p.distribution()}")
        active = self.prune(values)
        n = self.num_steps(active)
        methods: dict[str, dict] = {}
        for family in self.families:
            methods.update(family.decode(active, n))
        return AccelConfig.from_dict({"schema_version": SCHEMA_VERSION, "methods": self._runnable(methods)})

    def _runnable(self, methods: dict) -> dict:
        """A TMPQ grouping is a timestep list; with a solver that runs only its own spacing of a count
        (unipc, deis, Karras sigmas) the trial runs the grouping's step count at that spacing instead of
        failing: the combination is left out up front, and the group offsets then do not matter."""
        from tuner.solvers import runs_timestep_lists

        steps, solver = methods.get("timesteps", {}), methods.get("solver")
        if "timesteps" not in steps or solver is None or runs_timestep_lists(
                solver.get("name"), bool(solver.get("karras")), tuner_pipeline=self.context.fact("timesteps", "scheduler") is None):
            return methods
        out, n = dict(methods), len(steps["timesteps"])
        if n == int(self.context.steps):
            out.pop("timesteps")  # the baseline's own count, as a uniform count decodes it
        else:
            out["timesteps"] = {"count": n}
        return out


def migrate_tables(families: dict) -> dict:
    out = dict(families)
    for old, new in RENAMED_TABLES.items():
        if old in out:
            if new in out:
                raise TunerError(f"[space]: both '{old}' (the old name) and '{new}' are given; keep '{new}'")
            table = out.pop(old)
            if isinstance(table, dict) and "names" in table:  # [space.sampler] names = [...] -> name
                table = dict(table)
                table["name"] = table.pop("names")
            out[new] = table
    return out


def build_space(families: dict, context: SpaceContext) -> SearchSpace:
    """`families` is a study's [space] table: {method name: table}. Unknown keys and out-of-range bounds
    raise TunerError (one line)."""
    if not isinstance(families, dict):
        raise TunerError("[space] must be a table of methods")
    if not isinstance(context, SpaceContext):
        raise TunerError("build_space needs a SpaceContext")
    if isinstance(context.steps, bool) or not isinstance(context.steps, int) or context.steps < 1:
        raise TunerError(f"steps={context.steps!r} must be an integer >= 1")
    families = migrate_tables(families)
    known = method_specs()
    unknown = sorted(set(families) - set(known))
    if unknown:
        raise TunerError(f"[space]: unknown method{'' if len(unknown) == 1 else 's'} "
                         f"{', '.join(map(repr, unknown))} (known: {', '.join(known)})")
    built = []
    for name, module in OWN_FAMILIES.items():
        if name in families:
            built.append(module.build({name: families[name]}, context))
    derived = families_of({k: v for k, v in families.items() if k not in OWN_FAMILIES})
    built += [MethodFamily(family, tables, context) for family, tables in derived.items()]
    return SearchSpace(built, context)

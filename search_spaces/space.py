"""The joint search space: the families a study's `[space]` table names, combined.

    space = build_space({"tome": {"ratio": [0.1, 0.7]}, "deepcache": {}, "timesteps": {}},
                        SpaceContext(steps=50))
    values = space.suggest(trial)          # Optuna, define-by-run; conditional params only when active
    config = space.to_config(values)       # -> validated tuner.config.AccelConfig

Families (one module each): `tome`/`catome` -> token_merging, `deepcache`/`frdiff` -> feature_cache,
`timesteps`, `quant` -> quantization, `sampler`. A family table may be `true` or `{}` for its defaults.
The same `params` serve DEAP: `genome_from_values`/`values_from_genome` map between a trial's values
and a full genome (one gene per parameter, active or not).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution

from search_spaces import feature_cache, quantization, sampler, timesteps, token_merging
from search_spaces.params import Family, Param
from tuner.errors import TunerError

# Decode order: timesteps first (it fixes the step count the others scale against).
FAMILY_MODULES = (timesteps, sampler, quantization, token_merging, feature_cache)
TABLE_KEYS = {key: module for module in FAMILY_MODULES for key in module.KEYS}


@dataclass
class SpaceContext:
    """Facts measured once per study."""

    steps: int  # baseline step count
    num_train_timesteps: int = 1000
    jaccard_profile: Any = None  # pandas.DataFrame from tuner.jaccard.profile_merges, or None
    quant_layers: list[str] = field(default_factory=list)
    max_branch: int = 2  # deepest valid DeepCache branch id for this U-Net
    first_attention_level: int = 1  # downsampling of the first level with self-attention (SDXL: 2)
    scheduler: Any = None  # a user model's diffusers scheduler (its own timestep lists); None: the proxy


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
        return AccelConfig.from_dict({"schema_version": SCHEMA_VERSION, "methods": methods})


def build_space(families: dict, context: SpaceContext) -> SearchSpace:
    """`families` is a study's [space] table: {family key: table}. Unknown keys and out-of-range bounds
    raise TunerError (one line)."""
    if not isinstance(families, dict):
        raise TunerError("[space] must be a table of method families")
    if not isinstance(context, SpaceContext):
        raise TunerError("build_space needs a SpaceContext")
    if isinstance(context.steps, bool) or not isinstance(context.steps, int) or context.steps < 1:
        raise TunerError(f"steps={context.steps!r} must be an integer >= 1")
    unknown = sorted(set(families) - set(TABLE_KEYS))
    if unknown:
        raise TunerError(f"[space]: unknown method famil{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(map(repr, unknown))} (known: {', '.join(TABLE_KEYS)})")
    built = []
    for module in FAMILY_MODULES:
        tables = {k: families[k] for k in module.KEYS if k in families}
        if tables:
            built.append(module.build(tables, context))
    return SearchSpace(built, context)

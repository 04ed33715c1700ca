"""One declaration per search parameter, read by both engines.

A `Param` holds what Optuna needs (`distribution()`) and what DEAP needs (a gene: `encode`/`decode`,
`random_gene`, `mutate`). Genes of numeric parameters live on a normalized scale u ∈ [0, 1] (log-scaled
when `log=True`), so one DEAP operator with bounds [0, 1] serves every int and float parameter
(`tools.cxSimulatedBinaryBounded`, `tools.mutPolynomialBounded`); a categorical gene is the index of its
choice and mutates by uniform resampling (`tools.mutUniformInt`). A gene with `mutation_weights`
mutates by drawing a value in proportion to the given weights instead (used for checkpoint genes, whose
weights come from the study's Jaccard profile).

A parameter may be conditional: `Condition(parent, values)` makes it active only when the parent is
active and takes one of `values` (e.g. `tome.ratio` only when `token_merging == "tome"`).

DEAP's operators draw from Python's global `random` module (selNSGA3 also from numpy's); callers that
need reproducible runs wrap them in `tuner.samplers.deap_ga.seeded_globals`.

`TableReader` parses one family's `[space.<family>]` table and turns every bad key or value into a
one-line `TunerError`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any, Sequence

from deap import tools
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from tuner.errors import TunerError

KINDS = ("int", "float", "categorical")


@dataclass(frozen=True)
class Condition:
    """Active only when `parent` is active and its value is one of `values`."""

    parent: str
    values: tuple

    def holds(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # int | float | categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None  # int: spacing of the values; float: optional discretization
    log: bool = False
    choices: tuple = ()
    condition: Condition | None = None
    mutation_weights: tuple[tuple, tuple] | None = None  # (values, weights): profile-proportional mutation
    help: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}")
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError(f"{self.name}: a categorical parameter needs choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"{self.name}: needs low <= high")
        if self.log and (self.low is None or self.low <= 0):
            raise ValueError(f"{self.name}: a log-scaled parameter needs low > 0")

    # --- Optuna ------------------------------------------------------------------------------------
    def distribution(self) -> BaseDistribution:
        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        dist = self.distribution()
        if self.kind == "categorical":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return False
        if self.kind == "int" and int(value) != value:
            return False
        return dist._contains(dist.to_internal_repr(value))

    # --- DEAP gene ---------------------------------------------------------------------------------
    @property
    def numeric(self) -> bool:
        return self.kind != "categorical"

    def _scale(self) -> tuple[float, float]:
        if self.log:
            return math.log(self.low), math.log(self.high)
        return float(self.low), float(self.high)

    def encode(self, value: Any) -> float:
        """Value -> gene (u ∈ [0, 1] for numbers, choice index for categoricals)."""
        if self.kind == "categorical":
            for i, c in enumerate(self.choices):
                if value == c and type(value) is type(c):
                    return i
            raise TunerError(f"{self.name}: {value!r} is not one of {list(self.choices)}")
        lo, hi = self._scale()
        v = math.log(value) if self.log else float(value)
        return 0.0 if hi == lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))

    def decode(self, gene: float) -> Any:
        """Gene -> a value inside the distribution (rounded to the int/step grid)."""
        if self.kind == "categorical":
            return self.choices[min(len(self.choices) - 1, max(0, int(round(gene))))]
        lo, hi = self._scale()
        u = min(1.0, max(0.0, float(gene)))
        v = lo + u * (hi - lo)
        if self.log:
            v = math.exp(v)
        if self.kind == "int":
            step = int(self.step or 1)
            k = round((v - self.low) / step)
            return int(min(self.high, max(self.low, self.low + k * step)))
        if self.step is not None:
            k = round((v - self.low) / self.step)
            v = self.low + k * self.step
        return float(min(self.high, max(self.low, v)))

    def random_gene(self, rng: random.Random) -> float:
        if self.kind == "categorical":
            return rng.randrange(len(self.choices))
        return rng.random()

    def mutate(self, gene: float, eta: float = 20.0) -> float:
        """One mutated gene, drawn from the global `random` (wrap in `seeded_globals`)."""
        if self.mutation_weights is not None:
            values, weights = self.mutation_weights
            return self.encode(random.choices(values, weights=weights, k=1)[0])
        if self.kind == "categorical":
            (out,) = tools.mutUniformInt([int(gene)], 0, len(self.choices) - 1, indpb=1.0)[0]
            return out
        (out,) = tools.mutPolynomialBounded([float(gene)], eta=eta, low=0.0, up=1.0, indpb=1.0)[0]
        return out


# --- parsing a [space.<family>] table ----------------------------------------------------------------
class TableReader:
    """Reads one family table; every accessor removes its key so `finish()` can reject the rest."""

    def __init__(self, family: str, table: Any):
        if table is True:
            table = {}
        if not isinstance(table, dict):
            raise TunerError(f"space.{family} must be a table, got {table!r}")
        self.family = family
        self.rest = dict(table)

    def _where(self, key: str) -> str:
        return f"space.{self.family}.{key}"

    def flag(self, key: str, default: bool) -> bool:
        v = self.rest.pop(key, default)
        if not isinstance(v, bool):
            raise TunerError(f"{self._where(key)} must be true or false, got {v!r}")
        return v

    def number_range(self, key: str, default: Sequence[float], lo: float, hi: float, *, integer: bool,
                     lo_open: bool = False) -> tuple:
        """[low, high] inside [lo, hi] (a single number fixes the value)."""
        v = self.rest.pop(key, list(default))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v, v]
        ok_type = int if integer else (int, float)
        if (not isinstance(v, list) or len(v) != 2
                or not all(isinstance(x, ok_type) and not isinstance(x, bool) for x in v)):
            kind = "integers" if integer else "numbers"
            raise TunerError(f"{self._where(key)} must be [low, high] of {kind} or one value, got {v!r}")
        a, b = v
        if a != a or b != b or a > b:
            raise TunerError(f"{self._where(key)}: {v!r} needs low <= high")
        if a < lo or b > hi or (lo_open and a == lo):
            raise TunerError(f"{self._where(key)}: {v!r} is out of range ({lo}..{hi})")
        return (int(a), int(b)) if integer else (float(a), float(b))

    def choices(self, key: str, default: Sequence, allowed: Sequence | None = None,
                check=None, what: str = "") -> tuple:
        v = self.rest.pop(key, list(default))
        if not isinstance(v, list):
            v = [v]
        if not v:
            raise TunerError(f"{self._where(key)} must list at least one choice")
        seen = []
        for x in v:
            if allowed is not None and not any(x == a and type(x) is type(a) for a in allowed):
                raise TunerError(f"{self._where(key)}: {x!r} is not one of {list(allowed)}")
            if check is not None and not check(x):
                raise TunerError(f"{self._where(key)}: {x!r} is not {what}")
            if x not in seen:
                seen.append(x)
        return tuple(seen)

    def finish(self) -> None:
        if self.rest:
            raise TunerError(f"space.{self.family}: unknown key(s) {', '.join(sorted(self.rest))}")


def number_param(name: str, bounds: tuple, *, integer: bool, log: bool = False, step=None,
                 condition: Condition | None = None, help: str = "", **extra) -> Param:
    lo, hi = bounds
    return Param(name, "int" if integer else "float", low=lo, high=hi, log=log and lo > 0 and lo < hi,
                 step=step, condition=condition, help=help, **extra)


# --- what every family module provides ----------------------------------------------------------------
class Family:
    """The parameters of one method family plus the values a table fixed (a one-value range or a single
    choice is a constant, not a parameter). `decode(values, num_steps)` turns the family's part of a
    trial's values into method config dicts ({method name: {field: value}})."""

    def __init__(self):
        self.params: list[Param] = []
        self.fixed: dict[str, tuple[Any, Condition | None]] = {}

    def add(self, param: Param) -> None:
        """Declare `param`; a condition on a fixed parent is resolved here."""
        cond = param.condition
        while cond is not None and cond.parent in self.fixed:
            value, parent_cond = self.fixed[cond.parent]
            if not cond.holds(value):
                return  # can never be active
            cond = parent_cond
        if cond is not param.condition:
            param = dataclasses.replace(param, condition=cond)
        single = (param.choices if param.kind == "categorical" else
                  (param.low,) if param.low == param.high else None)
        if single is not None and len(single) == 1:
            self.fixed[param.name] = (single[0], param.condition)
        else:
            self.params.append(param)

    def get(self, values: dict, name: str) -> Any:
        if name in values:
            return values[name]
        if name in self.fixed:
            return self.fixed[name][0]
        raise TunerError(f"search space: no value for '{name}'")

    def decode(self, values: dict, num_steps: int) -> dict[str, dict]:  # overridden
        raise NotImplementedError

    def neutral(self) -> dict:
        """Values of this family's parameters that leave the model unchanged (warm start)."""
        return {}

    def seeds(self) -> list[dict]:
        """Partial values worth measuring first, each on top of every family's neutral (warm start)."""
        return []

"""A method's fields declared once: `knob(...)` on a config dataclass field carries its type, bounds,
choices, default and default search range. Everything else is derived from it: the loader's checks
(`check_value`), the JSON Schema (`schema_of`), and the search parameters (`search_spaces.derived`).

    interval: int = knob(3, low=1, high=1000, search=(2, 5), help="one full step every N")
    schedule: str = knob("uniform", choices=("uniform", "nonuniform"), search=("uniform",))
    center: float = knob(15, low=0, when=("schedule", ("nonuniform",)))

Kinds follow the default (or `kind=`): bool, int, float, choice (a fixed set of values), and custom
(lists and objects: they bring their own `schema` and `parse`, which returns the normalized value or
raises ValueError with the reason).

`search` is the range the default search space uses: (low, high) for numbers, a tuple of choices for
choice/bool knobs, None when the default space keeps the field at its default. A bound may name a model
fact instead of a number (e.g. "max_branch"), measured by the method's own `prepare`. `search_scale="steps"`
makes the searched value a fraction of the trial's steps (decoded as round(u * (steps - 1))), so it keeps
its meaning when the step count changes. `when=(field, values)` makes the searched knob active only when
another knob of the same method takes one of `values`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

KINDS = ("bool", "int", "float", "choice", "custom")
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Knob:
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    search: tuple | None = None
    search_scale: str | None = None  # "steps": searched as a fraction of the trial's steps
    log: bool = False  # search on a log scale
    when: tuple[str, tuple] | None = None  # (other field, values) for which the knob is searched
    nullable: bool = False
    schema: dict | None = None  # custom kind: its JSON Schema
    parse: Callable[[Any], Any] | None = None  # custom kind: value -> normalized value (ValueError if bad)
    help: str = ""


def knob(default, *, kind: str | None = None, low=None, high=None, choices=None, search=None,
         search_scale=None, log=False, when=None, nullable=False, schema=None, parse=None, help=""):
    """A dataclass field declared with everything the loader, the schema and the search need."""
    if kind is None:
        if choices is not None:
            kind = "choice"
        elif isinstance(default, bool):
            kind = "bool"
        elif isinstance(default, int):
            kind = "int"
        elif isinstance(default, float):
            kind = "float"
        else:
            raise TypeError(f"knob({default!r}): give kind= (custom knobs need schema= and parse=)")
    if kind not in KINDS:
        raise TypeError(f"knob kind must be one of {KINDS}")
    if kind == "custom" and (schema is None or parse is None):
        raise TypeError("a custom knob needs schema= and parse=")
    if kind == "bool":
        choices = (False, True)
    spec = Knob(kind, low, high, tuple(choices or ()), None if search is None else tuple(search), search_scale,
                log, when, nullable, schema, parse, help)
    meta = {"knob": spec}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def knobs_of(cls) -> dict[str, tuple[Knob, Any]]:
    """{field name: (Knob, default)} of a config dataclass, in declaration order."""
    out = {}
    for f in dataclasses.fields(cls):
        k = f.metadata.get("knob")
        if k is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f.name] = (k, default)
    return out


def as_integer(v: Any) -> int | None:
    """`v` as an int if JSON Schema would call it an integer (3 and 3.0, not true), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v:
        return None
    return int(v)


def _same(a, b) -> bool:
    """JSON Schema's enum equality: numbers by value (8.0 is 8), but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b and (type(a) is type(b) or all(isinstance(x, (int, float)) for x in (a, b)))


def check_value(k: Knob, key: str, v: Any) -> Any:
    """The value normalized, or ValueError with a one-line reason naming `key`."""
    if v is None:
        if k.nullable:
            return None
        raise ValueError(f"{key} must not be null")
    if k.kind == "bool":
        if not isinstance(v, bool):
            raise ValueError(f"{key} must be true or false, got {v!r}")
        return v
    if k.kind == "choice":
        for c in k.choices:
            if _same(v, c):
                return c  # 8.0 is stored as the choice 8
        raise ValueError(f"{key} must be one of {', '.join(map(str, k.choices))}, got {v!r}")
    if k.kind == "custom":
        return k.parse(v)
    integer = k.kind == "int"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{key} must be {'an integer' if integer else 'a finite number'}, got {v!r}")
    if integer and as_integer(v) is None:  # JSON Schema counts 3.0 as an integer, so the loader does too
        raise ValueError(f"{key} must be an integer, got {v!r}")
    if k.low is not None and v < k.low:
        raise ValueError(f"{key}={v} is out of range (>= {k.low})")
    if k.high is not None and v > k.high:
        raise ValueError(f"{key}={v} is out of range (<= {k.high})")
    return int(v) if integer else float(v)


def schema_of(k: Knob, default: Any) -> dict:
    """The JSON Schema of one knob (what `check_value` accepts, no more, no less)."""
    if k.kind == "bool":
        s: dict = {"type": "boolean"}
    elif k.kind == "choice":
        s = {"enum": list(k.choices)}
    elif k.kind == "custom":
        s = dict(k.schema)
    else:
        s = {"type": "integer" if k.kind == "int" else "number"}
        if k.low is not None:
            s["minimum"] = k.low
        if k.high is not None:
            s["maximum"] = k.high
    if k.nullable:
        s = {"anyOf": [s, {"type": "null"}]}
    if k.help:
        s["description"] = k.help
    if not isinstance(default, (list, dict)) or default:
        s["default"] = default
    return s

"""Search families derived from the method registry: no field of a method is named here.

A family groups the methods registered with the same `family` (ToMe | CA-ToMe patch the same attention
blocks; DeepCache | FRDiff replace the same non-keyframe work), so they are alternatives: one categorical
parameter named after the family picks one of them (or `none`, when a table says `optional`, the default
for methods that are off by default). Each method's searched parameters are its knobs with a `search` range
(tuner.methods.knobs), named `<method>.<field>`; a `[space.<method>]` table narrows a range
(`ratio = [0.2, 0.5]`), fixes a value (`ratio = 0.3`), lists choices (`schedule = ["uniform",
"nonuniform"]`), or searches a knob the default space leaves at its default. `enabled = false` drops the
method. Values that a knob's declaration forbids are one-line errors.

Search encodings that are more than a range (CA-ToMe's profile-guided checkpoint genes) are `Extension`s
registered by method name; methods whose whole encoding is special (timesteps, per-layer bits) keep
their own family module.
"""

from __future__ import annotations

from typing import Any, Callable

from tuner.search_spaces.params import Condition, Family, Param, TableReader, number_param
from tuner.config import method_specs
from tuner.errors import TunerError


class Extension:
    """Extra parameters of one method that no knob range describes (declared and decoded here)."""

    table_keys: tuple[str, ...] = ()

    def declare(self, family: Family, reader: TableReader, context, on: Condition) -> None:
        raise NotImplementedError

    def decode(self, family: Family, values: dict, num_steps: int) -> dict:
        raise NotImplementedError


EXTENSIONS: dict[str, Callable[[], Extension]] = {}  # method name -> factory


def _bound(value, context, method: str, what: str):
    """A search bound: a number, or the name of one of the method's model facts (e.g. "max_branch")."""
    if isinstance(value, str):
        fact = context.fact(method, value)
        if fact is None:
            raise TunerError(f"{what}: the study has no '{value}' for this model")
        return fact
    return value


def _choice_facts(search: tuple, choices: tuple, context, method: str) -> list:
    """Default choices of a searched knob; an entry that names one of the method's model facts instead of
    a choice (e.g. "first_attention_level") is replaced by the fact's value(s)."""
    out = []
    for v in search:
        fact = context.fact(method, v) if isinstance(v, str) and v not in choices else None
        if fact is not None:
            out.extend(fact if isinstance(fact, (list, tuple)) else [fact])
        else:
            out.append(v)
    return out


def knob_param(method: str, key: str, k, reader: TableReader, context, condition: Condition | None) -> Param | None:
    """The parameter a knob contributes (None when neither the table nor the default space searches it)."""
    if k.kind == "custom" or (key not in reader.rest and k.search is None):
        return None
    name = f"{method}.{key}"
    if k.kind in ("choice", "bool"):
        default = _choice_facts(k.search, k.choices, context, method) if k.search else list(k.choices)
        return Param(name, "categorical", choices=reader.choices(key, default, k.choices),
                     condition=condition, help=k.help)
    integer = k.kind == "int" and k.search_scale is None
    if k.search_scale == "steps":  # a fraction of the trial's steps, scaled in decode
        lo, hi = 0.0, 1.0
        default = k.search
    else:
        default = tuple(_bound(b, context, method, f"space.{name}") for b in (k.search or (k.low, k.high)))
        lo = -float("inf") if k.low is None else k.low
        hi = float("inf") if k.high is None else k.high
        if k.search is not None and isinstance(k.search[1], str):  # a model fact also caps the table
            hi = min(hi, default[1])
        if hi < lo:
            raise TunerError(f"space.{name}: this model offers no valid value")
    if default[0] is None or default[1] is None:
        raise TunerError(f"space.{name} needs a range, e.g. {key} = [low, high]")
    bounds = reader.number_range(key, list(default), lo, hi, integer=integer)
    return number_param(name, bounds, integer=integer, log=k.log, condition=condition, help=k.help)


class MethodFamily(Family):
    def __init__(self, family: str, tables: dict, context):
        super().__init__()
        specs = method_specs()
        self.choice = family
        self.methods: list[str] = []
        self.extensions: dict[str, Extension] = {}
        readers: dict[str, TableReader] = {}
        optional = False
        for name in tables:
            r = TableReader(name, tables[name])
            if r.flag("enabled", True):
                self.methods.append(name)
                # a method that changes the model can be left off; a choice like the solver always has a value
                cls = specs[name].config_cls
                optional |= r.flag("optional", getattr(cls, "search_optional", cls().is_neutral() is False))
                readers[name] = r
            else:
                r.rest.clear()  # a disabled table's other keys are not checked
        self.add(Param(family, "categorical", choices=tuple((["none"] if optional else []) + self.methods),
                       help=f"{family.replace('_', ' ')} method"))
        for name in self.methods:
            r, on = readers[name], Condition(family, (name,))
            knobs = specs[name].config_cls.knobs()
            for key, (k, _) in knobs.items():
                cond = on if k.when is None else Condition(f"{name}.{k.when[0]}", tuple(k.when[1]))
                param = knob_param(name, key, k, r, context, cond)
                if param is not None:
                    self.add(param)
            if name in EXTENSIONS:
                self.extensions[name] = ext = EXTENSIONS[name]()
                ext.declare(self, r, context, on)
            r.finish()

    # --- warm start: the configurations worth measuring first -------------------------------------------
    def neutral(self) -> dict:
        """Values that leave the model as it is: `none`, or the one method at its (neutral) defaults."""
        if "none" in self._choices():
            return {self.choice: "none"}
        return self._at_defaults(self.methods[0])

    def seeds(self) -> list[dict]:
        """Each method at its own defaults (the papers' settings), clamped into the searched range."""
        return [self._at_defaults(m) for m in self.methods]

    def _choices(self) -> tuple:
        p = next((p for p in self.params if p.name == self.choice), None)
        return p.choices if p is not None else (self.fixed[self.choice][0],)

    def _at_defaults(self, method: str) -> dict:
        out = {self.choice: method}
        for key, (k, default) in method_specs()[method].config_cls.knobs().items():
            p = next((p for p in self.params if p.name == f"{method}.{key}"), None)
            if p is None or k.search_scale is not None:
                continue
            if p.kind == "categorical":
                out[p.name] = default if p.contains(default) else p.choices[0]
            else:
                clamped = min(p.high, max(p.low, default))
                out[p.name] = int(clamped) if p.kind == "int" else float(clamped)
        return out

    def decode(self, values: dict, num_steps: int) -> dict[str, dict]:
        method = self.get(values, self.choice)
        if method == "none":
            return {}
        cls = method_specs()[method].config_cls
        cfg: dict[str, Any] = {}
        for key, (k, _) in cls.knobs().items():
            name = f"{method}.{key}"
            if name not in values and name in self.fixed and k.when is not None and \
                    self.get(values, f"{method}.{k.when[0]}") not in k.when[1]:
                continue  # a fixed (single-choice) knob whose condition does not hold is not set
            if name in values or name in self.fixed:
                v = self.get(values, name)
                if k.search_scale == "steps":
                    v = int(round(float(v) * max(0, num_steps - 1)))
                cfg[key] = v
        if method in self.extensions:
            cfg.update(self.extensions[method].decode(self, values, num_steps))
        if cls.from_dict(dict(cfg)).is_neutral():
            return {}
        return {method: cfg}


def families_of(tables: dict) -> dict[str, dict]:
    """{family: {method: table}} for the methods a [space] table names, in registry order."""
    specs = method_specs()
    out: dict[str, dict] = {}
    for name in sorted(tables, key=lambda n: specs[n].order):
        out.setdefault(specs[name].family, {})[name] = tables[name]
    return out

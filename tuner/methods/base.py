"""What every method shares: a registry entry, a reversible handle, and target resolution.

A method module registers itself explicitly, twice in one file and nowhere else:

    @register_method("deepcache", order=40, family="feature_cache", default_space=True)
    @dataclass
    class DeepCacheConfig(MethodConfig): ...        # knobs: loader, JSON Schema, search parameters

    @DeepCacheConfig.register_apply
    def apply(target, cfg: DeepCacheConfig) -> Handle: ...   # the config is already validated

`MethodSpec.apply` validates the config (the one place it is checked before it runs) and calls the
registered function; nothing looks a method up by module name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from tuner.errors import TunerError


class Handle:
    """Undoes one applied method. `remove()` is idempotent; usable as a context manager."""

    def __init__(self, name: str, undo: list[Callable[[], None]] | None = None, info: dict | None = None,
                 methods: dict[str, dict] | None = None):
        self.name = name
        self._undo = list(undo or [])
        self.info: dict[str, Any] = dict(info or {})  # facts a method reports (e.g. kernels used)
        self.methods: dict[str, dict] = dict(methods or {})  # what `tuner.apply` applied: {method: settings}
        self.target_name: str | None = None  # class of the patched model, when known
        self.removed = False

    def __repr__(self) -> str:
        parts = [f"{m}({', '.join(f'{k}={v!r}' for k, v in kw.items())})" for m, kw in self.methods.items()]
        what = ", ".join(parts) or self.name or "nothing"
        where = f" on {self.target_name}" if self.target_name else ""
        compiled = " (compiled: graph rebuilt)" if "compiled" in self.info else ""
        return f"<tuner.Handle {'removed' if self.removed else 'applied'}{where}: {what}{compiled}>"

    def on_remove(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def remove(self) -> None:
        if self.removed:
            return
        for fn in reversed(self._undo):
            fn()
        self._undo.clear()
        self.removed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


@dataclass(frozen=True)
class MethodSpec:
    """One registered method, derived from its config class."""

    name: str
    config_cls: type
    order: int  # lower applies first: pipeline-level, then layer replacement, then block patches
    family: str  # methods of one family are alternatives in the search (they patch the same thing)
    default_space: bool | str  # in the default search space: True, False, or the objective it needs
    apply_fn: Callable[[Any, Any], "Handle"] | None = None  # set by @XConfig.register_apply

    def apply(self, target, cfg) -> "Handle":
        """Validate `cfg` once, then run the method's registered `apply(target, cfg)` (diffusers' `apply_*`
        style)."""
        if self.apply_fn is None:
            raise TunerError(f"method '{self.name}' has no apply function "
                             f"(decorate it with @{self.config_cls.__name__}.register_apply)")
        cfg.validate()
        return self.apply_fn(target, cfg)


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, *, order: int, family: str | None = None, default_space: bool | str = False):
    """Class decorator for a MethodConfig dataclass: the registry entry every other layer derives from."""

    def deco(cls):
        if not dataclasses.is_dataclass(cls) or not issubclass(cls, MethodConfig):
            raise TypeError(f"@register_method('{name}') needs a MethodConfig dataclass")
        cls.method_name = name
        METHODS[name] = MethodSpec(name, cls, order, family or name, default_space)
        return cls

    return deco


class MethodConfig:
    """Base for method config dataclasses. Fields are declared with `knob(...)` (tuner.methods.knobs);
    construction from a dict checks every field against its knob, then `check()` for rules that span
    fields. The method's module registers an `apply(target, cfg) -> Handle` function with
    `@XConfig.register_apply`; a method that needs facts about the model computes them in `prepare`."""

    method_name = "method"
    # Stand-ins for the model facts `prepare` measures, for a search space built without a model
    # (SpaceContext made by hand: tests, notebooks). Not a dataclass field (no annotation).
    unmeasured_facts = {}
    # Which models the method can take (tuner.denoiser): its denoiser kinds, and its noise schedules
    # ("ddpm": the DDPM-family schedulers, "flow": flow matching). The default space keeps only the methods
    # that fit the study's model; the U-Net methods keep these defaults.
    denoisers = ("unet",)
    schedules = ("ddpm", "flow")

    refuses = ()  # denoiser class names the method cannot patch although their kind fits

    @classmethod
    def fits(cls, denoiser_class: str, flow: bool) -> bool:
        from tuner.denoiser import kind_of_class

        return kind_of_class(denoiser_class) in cls.denoisers and denoiser_class not in cls.refuses and \
            ("flow" if flow else "ddpm") in cls.schedules

    # --- what a method may override ----------------------------------------------------------------
    def check(self) -> None:
        """Rules between fields (each field's own type and range are checked from its knob)."""

    @classmethod
    def schema_rules(cls) -> list[dict]:
        """JSON Schema fragments (allOf) expressing `check()`, so the schema rejects what it rejects."""
        return []

    def is_neutral(self) -> bool:
        """True where the search should emit no entry for this config (it is the baseline's own choice)."""
        return False

    @classmethod
    def prepare(cls, study) -> dict:
        """What this method needs to know about the study's model, measured once per study before the
        search space is built (a level, a Jaccard profile, a calibration): {fact name: value}, read by
        this method's search ranges (a knob's `search` may name a fact) as `SpaceContext.fact(method,
        name)`. `study` is tuner.study.context.PrepareContext (the model, the study's settings, a store)."""
        return {}

    @classmethod
    def placeholder_facts(cls, steps: int) -> dict:
        """Stand-ins for `prepare`'s facts with the real ones' shape, so a study file can be checked
        before any model runs (default: `unmeasured_facts`)."""
        return dict(cls.unmeasured_facts)

    # --- registration ------------------------------------------------------------------------------
    @classmethod
    def register_apply(cls, fn: Callable[[Any, Any], Handle]) -> Callable[[Any, Any], Handle]:
        """Function decorator, `@XConfig.register_apply`: `fn(target, cfg) -> Handle` applies this method."""
        name = cls.method_name
        if name not in METHODS or METHODS[name].config_cls is not cls:
            raise TypeError(f"{cls.__name__}.register_apply: register the config with @register_method first")
        METHODS[name] = dataclasses.replace(METHODS[name], apply_fn=fn)
        return fn

    # --- derived -----------------------------------------------------------------------------------
    @classmethod
    def knobs(cls) -> dict:
        from tuner.methods.knobs import knobs_of

        return knobs_of(cls)

    @classmethod
    def from_dict(cls, data: Any):
        if not isinstance(data, dict):
            raise TunerError(f"method '{cls.method_name}': expected an object, got {type(data).__name__}")
        knobs = cls.knobs()
        unknown = sorted(set(data) - set(knobs))
        if unknown:
            raise TunerError(f"method '{cls.method_name}': unknown key(s) {', '.join(unknown)} "
                             f"(known: {', '.join(knobs)})")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check (and normalize) every field, then the rules between them."""
        from tuner.methods.knobs import check_value

        for key, (k, _) in self.knobs().items():
            try:
                setattr(self, key, check_value(k, key, getattr(self, key)))
            except ValueError as e:
                self._fail(str(e))
        self.check()

    @classmethod
    def json_schema(cls) -> dict:
        from tuner.methods.knobs import schema_of

        schema = {"type": "object", "additionalProperties": False,
                  "properties": {key: schema_of(k, d) for key, (k, d) in cls.knobs().items()}}
        if cls.__doc__:
            schema["description"] = cls.__doc__.strip().splitlines()[0]
        rules = cls.schema_rules()
        if rules:
            schema["allOf"] = rules
        return schema

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.knobs()}

    def _fail(self, msg: str):
        raise TunerError(f"method '{self.method_name}': {msg}")


def resolve_unet(target) -> torch.nn.Module:
    """The U-Net inside a tuner pipeline, a diffusers pipeline, or the U-Net itself; behind
    `torch.compile`'s wrapper, the module it wraps (tuner.methods.compiled)."""
    return resolve_denoiser(target, "unet")


def resolve_denoiser(target, kind: str, method: str | None = None) -> torch.nn.Module:
    """The denoiser of `target` (tuner.denoiser.denoiser_of), which must be of `kind` ("unet" | "dit")."""
    from tuner.denoiser import denoiser_of

    module, found = denoiser_of(target)
    if found != kind:
        what = "a UNet2DConditionModel" if kind == "unet" else "a diffusion transformer (PixArt, SD3, Flux)"
        who = f"method '{method}'" if method else "this method"
        raise TunerError(f"cannot patch {type(target).__name__}: {who} needs {what}, and its denoiser is "
                         f"{type(module).__name__}")
    return module


def resolve_pipeline(target, method: str):
    """Pipeline-level methods (timesteps, sampler) need a pipeline: a tuner one here (diffusers pipelines
    go through tuner.methods.diffusers_schedule); a bare U-Net has no sampling loop to change."""
    from tuner.pipeline import ProxyPipeline

    if isinstance(target, ProxyPipeline):
        return target
    raise TunerError(f"method '{method}' applies to a pipeline (tuner or diffusers), not to {type(target).__name__}")

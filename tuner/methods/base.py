"""What every method shares: a registry entry, a reversible handle, and target resolution."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from tuner.errors import TunerError


class Handle:
    """Undoes one applied method. `remove()` is idempotent; usable as a context manager."""

    def __init__(self, name: str, undo: list[Callable[[], None]] | None = None, info: dict | None = None):
        self.name = name
        self._undo = list(undo or [])
        self.info: dict[str, Any] = dict(info or {})  # facts a method reports (e.g. kernels used)
        self.removed = False

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
    name: str
    config_cls: type
    apply: Callable[[Any, Any], Handle]
    order: int  # lower applies first: pipeline-level, then layer replacement, then block patches


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, config_cls: type, order: int):
    def deco(apply_fn):
        METHODS[name] = MethodSpec(name, config_cls, apply_fn, order)
        return apply_fn

    return deco


class MethodConfig:
    """Base for method config dataclasses: strict construction from dicts and range checks."""

    method_name = "method"

    def validate(self) -> None:  # overridden
        pass

    @classmethod
    def from_dict(cls, data: Any):
        if not isinstance(data, dict):
            raise TunerError(f"method '{cls.method_name}': expected an object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TunerError(f"method '{cls.method_name}': unknown key(s) {', '.join(unknown)}")
        try:
            cfg = cls(**data)
        except (TypeError, ValueError) as e:
            raise TunerError(f"method '{cls.method_name}': {e}") from None
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def _fail(self, msg: str):
        raise TunerError(f"method '{self.method_name}': {msg}")

    def _check_range(self, key: str, lo=None, hi=None, *, lo_open=False, integer=False):
        v = getattr(self, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            self._fail(f"{key} must be {'an integer' if integer else 'a number'}, got {v!r}")
        if v != v:  # NaN
            self._fail(f"{key} must be a number, got NaN")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            self._fail(f"{key}={v} is out of range ({'>' if lo_open else '>='} {lo})")
        if hi is not None and v > hi:
            self._fail(f"{key}={v} is out of range (<= {hi})")


def resolve_unet(target) -> torch.nn.Module:
    """The U-Net inside a tuner pipeline, a diffusers pipeline, or the U-Net itself."""
    from diffusers import UNet2DConditionModel

    if isinstance(target, UNet2DConditionModel):
        return target
    unet = getattr(target, "unet", None)
    if isinstance(unet, UNet2DConditionModel):
        return unet
    raise TunerError(f"cannot patch {type(target).__name__}: expected a UNet2DConditionModel or a pipeline with one")


def resolve_pipeline(target, method: str):
    """Pipeline-level methods (timesteps, sampler) need a pipeline: a tuner one here (diffusers pipelines
    go through tuner.methods.diffusers_schedule); a bare U-Net has no sampling loop to change."""
    from tuner.pipeline import ProxyPipeline

    if isinstance(target, ProxyPipeline):
        return target
    raise TunerError(f"method '{method}' applies to a pipeline (tuner or diffusers), not to {type(target).__name__}")

"""AccelConfig: the one currency. What the search proposes, `tuner evaluate` measures, `export` writes
and `tuner.apply` applies. JSON shape (schema in tuner/schemas/accel_config.v1.json):

    {"schema_version": 1, "model_id": "...", "methods": {"tome": {...}, ...},
     "objectives": {...}, "environment": {...}}

A missing method is off; an unknown key or method is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import TunerError

SCHEMA_VERSION = 1
TOP_LEVEL_KEYS = {"schema_version", "model_id", "methods", "objectives", "environment"}


def method_specs():
    import tuner.methods  # noqa: F401  (registers every method)
    from tuner.methods.base import METHODS

    return METHODS


@dataclass
class AccelConfig:
    methods: dict[str, Any] = field(default_factory=dict)  # name -> method config dataclass
    model_id: str | None = None
    objectives: dict[str, Any] | None = None  # measured, filled by export
    environment: dict[str, Any] | None = None  # device, versions; filled by export

    @classmethod
    def from_dict(cls, data: Any) -> "AccelConfig":
        if not isinstance(data, dict):
            raise TunerError("config must be a JSON object")
        unknown = sorted(set(data) - TOP_LEVEL_KEYS)
        if unknown:
            raise TunerError(f"config: unknown key(s) {', '.join(unknown)}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise TunerError(f"config: schema_version must be {SCHEMA_VERSION}, got {version!r}")
        methods_in = data.get("methods", {})
        if not isinstance(methods_in, dict):
            raise TunerError("config: 'methods' must be an object")
        specs = method_specs()
        methods = {}
        for name, params in methods_in.items():
            if name not in specs:
                raise TunerError(f"config: unknown method '{name}' (known: {', '.join(sorted(specs))})")
            methods[name] = specs[name].config_cls.from_dict(params)
        for key in ("objectives", "environment"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise TunerError(f"config: '{key}' must be an object")
        model_id = data.get("model_id")
        if model_id is not None and not isinstance(model_id, str):
            raise TunerError("config: 'model_id' must be a string")
        return cls(methods=methods, model_id=model_id, objectives=data.get("objectives"),
                   environment=data.get("environment"))

    @classmethod
    def load(cls, path: str | Path) -> "AccelConfig":
        p = Path(path)
        if not p.is_file():
            raise TunerError(f"config file not found: {p}")
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TunerError(f"config {p} is not valid JSON: {e}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        specs = method_specs()
        ordered = sorted(self.methods, key=lambda n: specs[n].order)
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        if self.model_id is not None:
            out["model_id"] = self.model_id
        out["methods"] = {n: self.methods[n].to_dict() for n in ordered}
        if self.objectives is not None:
            out["objectives"] = self.objectives
        if self.environment is not None:
            out["environment"] = self.environment
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps() + "\n")

    def describe(self) -> str:
        return ", ".join(sorted(self.methods)) or "baseline"

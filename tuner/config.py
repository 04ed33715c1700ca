"""AccelConfig: the one currency. What the search proposes, `tuner evaluate` measures, `export` writes
and `tuner.apply` applies. JSON shape (schema: `json_schema()`, shipped as tuner/schemas/accel_config.v2.json):

    {"schema_version": 2, "model_id": "...", "methods": {"tome": {...}, ...},
     "objectives": {...}, "environment": {...}}

A missing method is off; an unknown key or method is an error. A bare {method: {...}} dict is accepted as
shorthand for {"schema_version": 2, "methods": {...}}. Version-1 configs load with their old meaning
(`migrate_v1`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import TunerError

SCHEMA_VERSION = 2
MAX_CONFIG_BYTES = 16_000_000  # an exported config with its prompts and per-layer bits is a few kB
TOP_LEVEL_KEYS = {"schema_version", "model_id", "methods", "objectives", "environment"}


def method_specs():
    import tuner.methods  # noqa: F401  (registers every method)
    from tuner.methods.base import METHODS

    return METHODS


def migrate_v1(data: dict) -> dict:
    """A schema-1 config in schema 2, meaning what it meant: the diffusion `sampler` method is now
    `solver` (the search strategy keeps the name sampler), and DeepCache's v1 branch ids cut at block
    boundaries."""
    out = copy.deepcopy(data)
    out["schema_version"] = SCHEMA_VERSION
    methods = out.get("methods")
    if isinstance(methods, dict):
        if "sampler" in methods:
            if "solver" in methods:
                raise TunerError("config: schema_version 1 config names both 'sampler' and 'solver'")
            methods["solver"] = methods.pop("sampler")
        if isinstance(methods.get("solver"), dict):  # DDIM was the default then; the name is required now
            methods["solver"].setdefault("name", "ddim")
        dc = methods.get("deepcache")
        if isinstance(dc, dict) and "cut" in method_specs()["deepcache"].config_cls.knobs():
            dc.setdefault("cut", "block")
        out["methods"] = {k: methods[k] for k in methods}
    return out


def json_schema() -> dict:
    """The JSON Schema of a config, derived from the registered methods' knobs."""
    specs = method_specs()
    defs = {name: specs[name].config_cls.json_schema() for name in sorted(specs, key=lambda n: specs[n].order)}
    number_map = {"type": ["object", "null"], "additionalProperties": {"type": ["number", "null"]}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://github.com/tuner-project/tuner/schemas/accel_config.v{SCHEMA_VERSION}.json",
        "title": f"tuner AccelConfig, schema version {SCHEMA_VERSION}",
        "description": ("Training-free U-Net accelerations to apply (tuner.apply / `tuner apply` / `tuner evaluate`), "
                        "with the model they were searched on, the objectives measured and the environment measured "
                        "in. A missing method is off. Generated from the method registry (tuner.config.json_schema); "
                        "apply time also checks what depends on the model (layer names, its scheduler)."),
        "type": "object",
        "required": ["schema_version", "methods"],
        "additionalProperties": False,
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "model_id": {"type": ["string", "null"], "description": "the model folder, hub id or tuner/proxy-..."},
            "methods": {"type": "object", "additionalProperties": False,
                        "properties": {name: {"$ref": f"#/$defs/{name}"} for name in defs}},
            "objectives": dict(number_map, description="measured values: seconds_per_image, fid, speedup, ..."),
            "environment": {"type": ["object", "null"],
                            "description": "where the objectives were measured: device, versions, image set"},
        },
        "$defs": defs,
    }


@dataclass
class AccelConfig:
    methods: dict[str, Any] = field(default_factory=dict)  # name -> method config dataclass
    model_id: str | None = None
    objectives: dict[str, Any] | None = None  # measured, filled by export
    environment: dict[str, Any] | None = None  # device, versions; filled by export
    folder: Path | None = field(default=None, compare=False, repr=False)  # of the file it was loaded from

    def path_of(self, value: str) -> str:
        """A path the config records, relative to the config file (never to the current directory)."""
        p = Path(value).expanduser()
        return str(p if p.is_absolute() or self.folder is None else (self.folder / p).resolve())

    @classmethod
    def from_dict(cls, data: Any) -> "AccelConfig":
        if not isinstance(data, dict):
            raise TunerError("config must be a JSON object")
        specs = method_specs()
        if data and "schema_version" not in data and set(data) <= set(specs):
            data = {"schema_version": SCHEMA_VERSION, "methods": data}  # shorthand: {"tome": {...}}
        if data.get("schema_version") == 1 and not isinstance(data.get("schema_version"), bool):
            data = migrate_v1(data)
        unknown = sorted(set(data) - TOP_LEVEL_KEYS)
        if unknown:
            raise TunerError(f"config: unknown key(s) {', '.join(unknown)}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise TunerError(f"config: schema_version must be {SCHEMA_VERSION} (or 1, migrated), got {version!r}")
        if "methods" not in data:
            raise TunerError("config: 'methods' is missing (use {} for none)")
        methods_in = data["methods"]
        if not isinstance(methods_in, dict):
            raise TunerError("config: 'methods' must be an object")
        methods = {}
        for name, params in methods_in.items():
            if name not in specs:
                raise TunerError(f"config: unknown method '{name}' (known: {', '.join(sorted(specs))})")
            methods[name] = specs[name].config_cls.from_dict(params)
        for key in ("objectives", "environment"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise TunerError(f"config: '{key}' must be an object")
        for key, v in (data.get("objectives") or {}).items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise TunerError(f"config: objectives.{key} must be a number or null, got {v!r}")
        model_id = data.get("model_id")
        if model_id is not None and not isinstance(model_id, str):
            raise TunerError("config: 'model_id' must be a string")
        return cls(methods=methods, model_id=model_id, objectives=data.get("objectives"),
                   environment=data.get("environment"))

    @classmethod
    def load(cls, path: str | Path) -> "AccelConfig":
        from tuner.textfile import check_depth, nested_too_deep, read_text

        p = Path(path)
        text = read_text(p, "config file", MAX_CONFIG_BYTES)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TunerError(f"config {p} is not valid JSON: {e}") from None
        except RecursionError:
            raise nested_too_deep(f"config {p}") from None
        config = cls.from_dict(check_depth(data, f"config {p}"))
        config.folder = p.resolve().parent
        return config

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


if __name__ == "__main__":  # python -m tuner.config > tuner/schemas/accel_config.v2.json
    print(json.dumps(json_schema(), indent=2))

"""StudySpec: a study TOML file, parsed and validated before anything is created.

    name = "default"                 # study name in the storage ([A-Za-z0-9_.-])
    storage = "sqlite:///default.db" # optional; default: sqlite file <name>.db next to the TOML file.
                                     # A relative SQLite path is resolved against the TOML's folder;
                                     # any other SQLAlchemy URL (postgresql://, mysql://) is used as is.
    n_trials = 40                    # finished trials (complete + pruned + failed) the study ends with
    seed = 0                         # sampler seed (the first process of a fresh study uses it as is)
    objectives = ["latency", "fid"]  # minimized; "bitops" may be added as a third
    snapshot_every = 10              # Pareto snapshot every k finished trials (and at the end)

    [model]       id = "proxy"; device = "cpu"; unet_weights = "path.safetensors" (optional);
                  threads = 1   # torch intra-op threads of each process (default: torch's own choice).
                                # On a shared CPU one thread per process avoids OpenMP oversubscription,
                                # which made a 2-thread run 5-20x slower in our measurements.
    [proxy_set]   n_images = 32; steps = 20; seed = 0
    [evaluator]   latency_images = 8; latency_repeats = 3; cheap_reject_images = 8;
                  cheap_reject_margin = 1.0; feature_extractor = "proxy"; inception_weights = "..."
    [constraints] max_fid_increase = 50.0   # percent over the baseline's FID
    [profile]     n_images = 8; threshold = 0.7; max_downsample = 1   # Jaccard profile (CA-ToMe)
    [sampler]     name = "joint"; options = {population_size = 8}
    [space]       ... passed to search_spaces.build_space; missing or empty: the default joint space
                  (search_spaces/defaults.py)

Every error (broken TOML, unknown key/sampler/method family, out-of-range value) is a one-line
TunerError raised by `load_spec`, before any database, file or model is touched.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import TunerError

OBJECTIVES = ("latency", "fid", "bitops")
SAMPLERS = ("random", "tpe", "nsga2", "nsga3", "gp", "deap-nsga2", "deap-nsga3", "deap-spea2", "joint")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class ModelSpec:
    id: str = "proxy"
    device: str | None = None
    unet_weights: str | None = None  # absolute path (resolved against the TOML's folder)
    threads: int | None = None  # torch.set_num_threads for the study process


@dataclass(frozen=True)
class ProxySetSpec:
    n_images: int = 32
    steps: int = 20
    seed: int = 0


@dataclass(frozen=True)
class EvaluatorSpec:
    latency_images: int = 8
    latency_repeats: int = 3
    cheap_reject_images: int = 8  # 0 = no cheap reject
    cheap_reject_margin: float = 1.0  # reject when subset FID ratio > margin x the allowed ratio
    feature_extractor: str = "proxy"
    inception_weights: str | None = None


@dataclass(frozen=True)
class ConstraintSpec:
    max_fid_increase: float | None = None  # percent over the baseline FID


@dataclass(frozen=True)
class ProfileSpec:
    n_images: int = 8
    threshold: float = 0.7
    max_downsample: int = 1


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    options: dict = field(default_factory=dict)
    warm_start: bool = True  # measure the neutral config, each method's defaults and a steps ladder first


@dataclass(frozen=True)
class StudySpec:
    name: str
    path: Path  # the TOML file
    storage: str
    n_trials: int
    seed: int
    objectives: tuple[str, ...]
    snapshot_every: int
    model: ModelSpec
    proxy_set: ProxySetSpec
    evaluator: EvaluatorSpec
    constraints: ConstraintSpec
    profile: ProfileSpec
    sampler: SamplerSpec
    space: dict

    @property
    def directions(self) -> list[str]:
        return ["minimize"] * len(self.objectives)

    @property
    def metric_names(self) -> list[str]:
        return [METRIC_NAMES[o] for o in self.objectives]

    @property
    def methods(self) -> list[str]:
        """The registered methods the search space names (enabled or not: their prepare hooks run)."""
        from tuner.search_spaces.space import migrate_tables

        return [name for name, table in migrate_tables(self.space).items() if table is not False]

    def with_n_trials(self, n: int | None) -> "StudySpec":
        if n is None:
            return self
        import dataclasses

        _check_int("--n-trials", n, 1, 100_000)
        return dataclasses.replace(self, n_trials=n)


METRIC_NAMES = {"latency": "seconds_per_image", "fid": "fid", "bitops": "bitops_per_image"}


# --- parsing helpers -------------------------------------------------------------------------------
def _check_int(key: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TunerError(f"{key} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise TunerError(f"{key}={v} is out of range ({lo}..{hi})")
    return v


def _check_float(key: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise TunerError(f"{key} must be a number, got {v!r}")
    if not lo <= v <= hi:
        raise TunerError(f"{key}={v} is out of range ({lo:g}..{hi:g})")
    return float(v)


def _check_str(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise TunerError(f"{key} must be a non-empty string, got {v!r}")
    return v


class _Table:
    """Reads one TOML table; `finish()` rejects keys nobody asked for."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise TunerError(f"{where} must be a table")
        self.data, self.where, self.used = data, where, set()

    def get(self, key: str, default=None):
        self.used.add(key)
        return self.data.get(key, default)

    def key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = f" in [{self.where}]" if self.where else ""
            raise TunerError(f"unknown key(s) {', '.join(unknown)}{where}")


def _resolve_storage(url: str | None, name: str, base: Path) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if url is None:
        return f"sqlite:///{(base / f'{name}.db').resolve()}"
    try:
        parsed = make_url(_check_str("storage", url))
    except (ArgumentError, ValueError) as e:
        raise TunerError(f"storage {url!r} is not a valid SQLAlchemy URL: {e}") from None
    if parsed.get_backend_name() != "sqlite":
        return url
    db = parsed.database
    if not db or db == ":memory:":
        raise TunerError("storage: an in-memory SQLite database cannot hold a study; give a file path")
    path = Path(db)
    if not path.is_absolute():
        path = (base / path).resolve()
    if not path.parent.is_dir():
        raise TunerError(f"storage: folder {path.parent} does not exist")
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


def _parse_model(data: Any, base: Path) -> ModelSpec:
    t = _Table(data, "model")
    model_id = _check_str("model.id", t.get("id", "proxy"))
    device = t.get("device")
    if device is not None:
        _check_str("model.device", device)
        if device.split(":")[0] not in ("cpu", "cuda"):
            raise TunerError(f"model.device={device!r}: use cpu or cuda")
    weights = t.get("unet_weights")
    threads = t.get("threads")
    if threads is not None:
        _check_int("model.threads", threads, 1, 256)
    t.finish()
    if model_id != "proxy":
        p = Path(model_id) if Path(model_id).is_absolute() else base / model_id
        if not p.exists():
            raise TunerError(f"model.id={model_id!r}: no such model folder ({p}); use \"proxy\" for the embedded model")
        raise TunerError(f"model.id={model_id!r}: studies on Stable Diffusion checkpoints are not supported yet "
                         "(their proxy FID needs a reference set); use \"proxy\"")
    if weights is not None:
        p = Path(_check_str("model.unet_weights", weights))
        p = p if p.is_absolute() else (base / p).resolve()
        if not p.is_file():
            raise TunerError(f"model.unet_weights: file not found: {p}")
        weights = str(p)
    return ModelSpec(model_id, device, weights, threads)


def _parse_proxy_set(data: Any) -> ProxySetSpec:
    t = _Table(data, "proxy_set")
    out = ProxySetSpec(_check_int("proxy_set.n_images", t.get("n_images", 32), 2, 100_000),
                       _check_int("proxy_set.steps", t.get("steps", 20), 2, 1000),
                       _check_int("proxy_set.seed", t.get("seed", 0), 0, 2**31 - 1))
    t.finish()
    return out


def _parse_evaluator(data: Any, n_images: int, base: Path) -> EvaluatorSpec:
    t = _Table(data, "evaluator")
    lat = _check_int("evaluator.latency_images", t.get("latency_images", min(8, n_images)), 1, n_images)
    rep = _check_int("evaluator.latency_repeats", t.get("latency_repeats", 3), 1, 100)
    cheap = _check_int("evaluator.cheap_reject_images", t.get("cheap_reject_images", min(8, n_images)), 0, n_images)
    if cheap == 1:
        raise TunerError("evaluator.cheap_reject_images must be 0 (off) or >= 2")
    margin = _check_float("evaluator.cheap_reject_margin", t.get("cheap_reject_margin", 1.0), 1.0, 100.0)
    extractor = t.get("feature_extractor", "proxy")
    if extractor not in ("proxy", "inception"):
        raise TunerError(f"evaluator.feature_extractor={extractor!r}: use 'proxy' or 'inception'")
    weights = t.get("inception_weights")
    if weights is not None:
        p = Path(_check_str("evaluator.inception_weights", weights))
        p = p if p.is_absolute() else (base / p).resolve()
        if not p.is_file():
            raise TunerError(f"evaluator.inception_weights: file not found: {p} (nothing is downloaded)")
        weights = str(p)
    elif extractor == "inception":
        raise TunerError("evaluator.feature_extractor='inception' needs evaluator.inception_weights = a local "
                         "torch-fidelity Inception weights file (nothing is downloaded)")
    t.finish()
    return EvaluatorSpec(lat, rep, cheap, margin, extractor, weights)


def _parse_constraints(data: Any) -> ConstraintSpec:
    t = _Table(data, "constraints")
    x = t.get("max_fid_increase")
    t.finish()
    return ConstraintSpec(None if x is None else _check_float("constraints.max_fid_increase", x, 0.0, 10_000.0))


def _parse_profile(data: Any) -> ProfileSpec:
    t = _Table(data, "profile")
    out = ProfileSpec(_check_int("profile.n_images", t.get("n_images", 8), 1, 10_000),
                      _check_float("profile.threshold", t.get("threshold", 0.7), 0.0, 1.0),
                      t.get("max_downsample", 1))
    if out.max_downsample not in (1, 2, 4, 8) or isinstance(out.max_downsample, bool):
        raise TunerError(f"profile.max_downsample={out.max_downsample!r} must be 1, 2, 4 or 8")
    t.finish()
    return out


def _parse_sampler(data: Any) -> SamplerSpec:
    if isinstance(data, str):
        data = {"name": data}
    t = _Table(data, "sampler")
    name = t.get("name", "tpe")
    if name not in SAMPLERS:
        raise TunerError(f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")
    options = t.get("options", {})
    if not isinstance(options, dict):
        raise TunerError("sampler.options must be a table")
    warm_start = t.get("warm_start", True)
    if not isinstance(warm_start, bool):
        raise TunerError(f"sampler.warm_start must be true or false, got {warm_start!r}")
    t.finish()
    return SamplerSpec(name, dict(options), warm_start)


def parse_spec(data: dict, path: Path) -> StudySpec:
    base = path.resolve().parent
    t = _Table(data, "")
    name = t.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TunerError(f"name={name!r}: use 1-100 characters of A-Z a-z 0-9 _ . -")
    n_trials = _check_int("n_trials", t.get("n_trials", 20), 1, 100_000)
    seed = _check_int("seed", t.get("seed", 0), 0, 2**31 - 1)
    objectives = t.get("objectives", ["latency", "fid"])
    if not isinstance(objectives, list) or not all(isinstance(o, str) for o in objectives):
        raise TunerError("objectives must be a list of names")
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise TunerError(f"unknown objective(s) {', '.join(map(repr, bad))} (known: {', '.join(OBJECTIVES)})")
    if objectives[:2] != ["latency", "fid"] or len(set(objectives)) != len(objectives):
        raise TunerError('objectives must be ["latency", "fid"] or ["latency", "fid", "bitops"]')
    snapshot_every = _check_int("snapshot_every", t.get("snapshot_every", 10), 1, 100_000)
    storage = _resolve_storage(t.get("storage"), name, base)
    model = _parse_model(t.get("model", {}), base)
    proxy_set = _parse_proxy_set(t.get("proxy_set", {}))
    evaluator = _parse_evaluator(t.get("evaluator", {}), proxy_set.n_images, base)
    constraints = _parse_constraints(t.get("constraints", {}))
    profile = _parse_profile(t.get("profile", {}))
    sampler = _parse_sampler(t.get("sampler", {}))
    space = t.get("space", {})
    if not isinstance(space, dict):
        raise TunerError("[space] must be a table of method families")
    if not space:  # the default joint space (search_spaces/defaults.py), quantization only with BitOPs
        from tuner.search_spaces.defaults import default_families

        space = default_families(objectives)
    t.finish()
    spec = StudySpec(name, path.resolve(), storage, n_trials, seed, tuple(objectives), snapshot_every, model,
                     proxy_set, evaluator, constraints, profile, sampler, space)
    validate_space_and_sampler(spec)
    return spec


def validate_space_and_sampler(spec: StudySpec) -> None:
    """Build the space and the sampler once with placeholder facts (no model run): catches unknown
    families, bad bounds and bad sampler options at load time."""
    from tuner.search_spaces.space import SpaceContext, build_space
    from tuner.config import method_specs
    from tuner.samplers import build_sampler

    specs = method_specs()
    facts: dict = {}
    for name in spec.methods:
        if name in specs:  # an unknown name is reported by build_space
            facts.update(specs[name].config_cls.placeholder_facts(spec.proxy_set.steps))
    context = SpaceContext(spec.proxy_set.steps, **facts)
    space = _guard("[space]", lambda: build_space(spec.space, context))
    _guard("[sampler]", lambda: build_sampler(spec.sampler.name, space, spec.seed, spec.sampler.options or None))


def _guard(where: str, fn):
    """Library errors other than TunerError (e.g. a sampler's ValueError on a bad option) as one line."""
    try:
        return fn()
    except TunerError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise TunerError(f"{where}: {e}") from None


def load_spec(path: str | Path) -> StudySpec:
    p = Path(path)
    if not p.is_file():
        raise TunerError(f"study file not found: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TunerError(f"study file {p} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise TunerError(f"study file {p} is not UTF-8 text") from None
    return parse_spec(data, p)

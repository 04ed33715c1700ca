"""StudySpec: a study TOML file, parsed and validated before anything is created.

    name = "default"                 # study name in the storage ([A-Za-z0-9_.-])
    storage = "sqlite:///default.db" # optional; default: sqlite file <name>.db next to the TOML file.
                                     # A relative SQLite path is resolved against the TOML's folder;
                                     # any other SQLAlchemy URL (postgresql://, mysql://) is used as is.
                                     # Or a table: [storage] url = "..."; heartbeat_interval = 10;
                                     # grace_period = 60 (seconds; see tuner/storage/heartbeat.py)
    n_trials = 40                    # finished trials (complete + pruned + failed) the study ends with
    seed = 0                         # sampler seed (the first process of a fresh study uses it as is)
    objectives = ["latency", "fid"]  # then any of "bitops", "memory" (minimized), "clip_score" (maximized;
                                     # a user model with [evaluator] clip_model)
    snapshot_every = 10              # Pareto snapshot every k finished trials (and at the end)

    [model]       id = "proxy"; device = "cpu"; unet_weights = "path.safetensors" (optional);
                  threads = 1   # torch intra-op threads of each process (default 1, tuner/threads.py).
                                # On a shared CPU one thread per process avoids OpenMP oversubscription,
                                # which made a 2-thread run 5-20x slower in our measurements.
                  # a user's model: id = a diffusers pipeline folder (relative to the TOML) or a hub id,
                  # dtype = "float16" (default on CUDA; float32 on CPU) | "float32" | "bfloat16",
                  # scheduler = "DDIMScheduler" (default: the folder's own), guidance_scale = 7.5
                  solver = "dpmsolver++"  # the baseline's solver by tuner's name, or a table of the `solver`
                                # method's keys ({name = "dpmsolver++", order = 3}); the proxy's default
                                # is DPM-Solver++ 2M (what users run), a pipeline's its own scheduler
                  # (default: the pipeline's), resolution = 512 (default: the model's), batch_size = 4
                  compile = true  # time the U-Net through torch.compile (or a backend name: "eager", ...)
    [image_set]   n_images = 32; steps = 20; seed = 0
                  prompts = "prompts.txt"  # user models: one prompt a line (default: tuner's shipped set)
    [evaluator]   latency_images = 8; latency_repeats = 3; cheap_reject_images = 8;
                  cheap_reject_margin = 1.0; feature_extractor = "proxy"; inception_weights = "..."
                  reference_images = "dir/"  # FID against these instead of the default reference
                  clip_model = "clip/"       # local CLIP folder: adds the clip_score metric (text models)
    [constraints] max_fid_increase = 50.0   # percent over the baseline's FID
                  max_memory_gb = 12.0      # peak GPU memory of a generation (CUDA)
    [profile]     n_images = 8; threshold = 0.7; max_downsample = 1   # Jaccard profile (catome, dit_catome)
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
from tuner.methods.catome_profile import ProfileSpec

OBJECTIVES = ("latency", "fid", "bitops", "memory", "clip_score")
MAXIMIZED = ("clip_score",)  # higher is better; every other objective is minimized
SAMPLERS = ("random", "tpe", "nsga2", "nsga3", "gp", "deap-nsga2", "deap-nsga3", "deap-spea2", "joint")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
MAX_STUDY_BYTES = 1_000_000  # a study TOML is a few hundred bytes


@dataclass(frozen=True)
class ModelSpec:
    id: str = "proxy"  # "proxy", a pipeline folder's absolute path, or a hub id
    device: str | None = None
    unet_weights: str | None = None  # absolute path (resolved against the TOML's folder)
    threads: int | None = None  # torch.set_num_threads for the study process
    dtype: str | None = None  # None: float16 on CUDA, float32 on CPU (user models)
    scheduler: str | None = None  # diffusers scheduler class name; None: the pipeline's own
    guidance_scale: float | None = None  # None: the model's own default
    resolution: int | None = None  # pixels; None: the model's default
    batch_size: int | None = None  # images per pipeline call (user models)
    solver: dict | None = None  # the baseline's solver (the `solver` method's keys); None: a pipeline's own
    compile: str | None = None  # torch.compile backend of the U-Net's calls (tuner.models.compile); None: eager
    # a diffusion transformer's class (tuner.denoiser); None: a U-Net. flow: a flow-matching schedule (SD3, Flux)
    denoiser: str | None = None
    flow: bool | None = None

    @property
    def denoiser_class(self) -> str:
        return self.denoiser or "UNet2DConditionModel"

    @property
    def is_proxy(self) -> bool:
        return self.id == "proxy"

    @property
    def devices(self) -> list[str]:
        """`device` as a list: a device list ("cuda:0,cuda:2") spreads `--workers` over those GPUs."""
        return [d.strip() for d in self.device.split(",")] if self.device else []

    @property
    def run_device(self) -> str | None:
        """The device this process runs on: the one its worker was given (tuner.storage.workers sets
        TUNER_DEVICE with CUDA_VISIBLE_DEVICES), else the first of a device list, else `device`."""
        import os

        from tuner.storage.workers import WORKER_DEVICE_ENV

        return os.environ.get(WORKER_DEVICE_ENV) or (self.devices[0] if self.devices else None)

    def load(self):
        """The model, ready on its device (tuner.models)."""
        from tuner.models import load_model

        model = load_model(self.id, self.run_device, self.dtype, self.unet_weights, self.scheduler, self.guidance_scale,
                           self.resolution, self.batch_size, self.solver)
        if self.compile is not None:
            from tuner.models.compile import compile_model

            compile_model(model, self.compile)
        return model


@dataclass(frozen=True)
class ImageSetSpec:
    n_images: int = 32
    steps: int = 20
    seed: int = 0
    prompts_file: str | None = None  # absolute path; None: the shipped set (user models)
    prompts: tuple[str, ...] | None = None  # read from the file at load time; None for the proxy


@dataclass(frozen=True)
class EvaluatorSpec:
    latency_images: int = 8
    latency_repeats: int = 3
    cheap_reject_images: int = 8  # 0 = no cheap reject
    cheap_reject_margin: float = 1.0  # unused since the race (rung 1 rejects on its lower bound); old files load
    feature_extractor: str = "proxy"
    inception_weights: str | None = None
    reference_images: str | None = None  # absolute folder path
    clip_model: str | None = None  # absolute folder path
    # the race (tuner/study/race.py): images per rung; None: cheap_reject_images, then n_images
    race_rungs: tuple[int, ...] | None = None
    # held-out certification at the end of `study run` (tuner/study/certify.py): rungs of held-out images
    # (None: 4 x n_images) and the images it may generate in all (None: 2 x the last rung; 0: off)
    certify_rungs: tuple[int, ...] | None = None
    certify_budget_images: int | None = None

    def rungs(self, n_images: int, capped: bool) -> tuple[int, ...]:
        if self.race_rungs is not None:
            return self.race_rungs if capped else (self.race_rungs[-1],)
        cheap = self.cheap_reject_images
        return (cheap, n_images) if capped and 0 < cheap < n_images else (n_images,)

    def certification(self, n_images: int) -> tuple[tuple[int, ...], int]:
        rungs = self.certify_rungs or (4 * n_images,)
        return rungs, 2 * rungs[-1] if self.certify_budget_images is None else self.certify_budget_images


@dataclass(frozen=True)
class ConstraintSpec:
    max_fid_increase: float | None = None  # percent over the baseline FID
    max_memory_gb: float | None = None  # peak GPU memory of a generation


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    options: dict = field(default_factory=dict)
    warm_start: bool = True  # measure the neutral config, each method's defaults and a steps ladder first


@dataclass(frozen=True)
class LivenessSpec:
    heartbeat_interval: float = 10.0  # seconds between a worker's heartbeats
    grace_period: float = 60.0  # a worker silent this long is dead; its running trial is given back


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
    image_set: ImageSetSpec
    evaluator: EvaluatorSpec
    constraints: ConstraintSpec
    profile: ProfileSpec
    sampler: SamplerSpec
    space: dict
    liveness: LivenessSpec = LivenessSpec()

    @property
    def directions(self) -> list[str]:
        return ["maximize" if o in MAXIMIZED else "minimize" for o in self.objectives]

    @property
    def maximized(self) -> list[bool]:
        """Per objective: is it maximized (moocore's `maximise`)."""
        return [o in MAXIMIZED for o in self.objectives]

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


METRIC_NAMES = {"latency": "seconds_per_image", "fid": "fid", "bitops": "bitops_per_image", "memory": "memory_gb",
                "clip_score": "clip_score"}


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


def _renamed(t: _Table, name: str, old: str) -> Any:
    """Table `name`, or its name before the rename (`[proxy_set]` became `[image_set]`: "proxy" is the model)."""
    if name in t.data and old in t.data:
        raise TunerError(f"[{old}] is the old name of [{name}]: keep one of them")
    return t.get(name) if name in t.data else t.get(old, {})


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
        return url  # postgresql:// gets the installed driver when opened (storage.driver_url)
    db = parsed.database
    if not db or db == ":memory:":
        raise TunerError("storage: an in-memory SQLite database cannot hold a study; give a file path")
    path = Path(db)
    if not path.is_absolute():
        path = (base / path).resolve()
    if not path.parent.is_dir():
        raise TunerError(f"storage: folder {path.parent} does not exist")
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


def _parse_storage(data: Any, name: str, base: Path) -> tuple[str, LivenessSpec]:
    """`storage = "URL"`, or a [storage] table with url and the heartbeat settings."""
    if data is None or isinstance(data, str):
        return _resolve_storage(data, name, base), LivenessSpec()
    t = _Table(data, "storage")
    url = _resolve_storage(t.get("url"), name, base)
    interval = _check_float("storage.heartbeat_interval", t.get("heartbeat_interval", 10.0), 0.1, 3600.0)
    grace = _check_float("storage.grace_period", t.get("grace_period", max(60.0, 6 * interval)), 0.2, 86400.0)
    if grace < 2 * interval:
        raise TunerError(f"storage.grace_period={grace:g} must be at least twice heartbeat_interval={interval:g} "
                         "(a live worker must not be declared dead for one late heartbeat)")
    t.finish()
    return url, LivenessSpec(interval, grace)


def _parse_device(device: Any) -> str | None:
    """`[model] device`: cpu, cuda, cuda:N, or a list of GPUs (["cuda:0", "cuda:2"], or "cuda:0,cuda:2")
    that `--workers` spreads over (tuner.storage.workers)."""
    if device is None:
        return None
    if isinstance(device, list) and device and all(isinstance(d, str) for d in device):
        device = ",".join(device)
    _check_str("model.device", device)
    parts = [d.strip() for d in device.split(",")]
    if any(d.split(":")[0] not in ("cpu", "cuda") for d in parts):
        raise TunerError(f"model.device={device!r}: use cpu or cuda")
    if len(parts) > 1 and not all(re.fullmatch(r"cuda:\d+", d) for d in parts):
        raise TunerError(f"model.device={device!r}: a device list names GPUs by index (\"cuda:0,cuda:1\")")
    return device


def _check_unet_weights(weights: Any, base: Path, kind: str) -> str:
    """The absolute path of `[model] unet_weights`, once it is known to hold plain tensors."""
    from tuner.models.source import check_weight_file
    from tuner.weights import check_tensors_file

    p = Path(_check_str("model.unet_weights", weights))
    p = p if p.is_absolute() else (base / p).resolve()
    check_tensors_file(p, "model.unet_weights")  # plain tensors, before any library opens it
    if kind == "proxy":  # small: load it, so a corrupt file never reaches a study database
        from tuner.proxy.model import load_proxy_pipeline

        load_proxy_pipeline("cpu", p)
    else:
        check_weight_file(p, "model.unet_weights")
    return str(p)


def _parse_model(data: Any, base: Path) -> ModelSpec:
    from tuner.models.source import resolve_source

    t = _Table(data, "model")
    model_id = _check_str("model.id", t.get("id", "proxy"))
    device = _parse_device(t.get("device"))
    weights = t.get("unet_weights")
    threads = t.get("threads")
    if threads is not None:
        _check_int("model.threads", threads, 1, 256)
    dtype = t.get("dtype")
    if dtype is not None and dtype not in ("float32", "float16", "bfloat16"):
        raise TunerError(f"model.dtype={dtype!r}: use float32, float16 or bfloat16")
    if dtype == "float16" and device is not None and device.startswith("cpu"):
        raise TunerError("model.dtype='float16' cannot run on the CPU; use float32 or bfloat16, or device = \"cuda\"")
    scheduler = t.get("scheduler")
    guidance = t.get("guidance_scale")
    if guidance is not None:
        guidance = _check_float("model.guidance_scale", guidance, 0.0, 100.0)
    resolution = t.get("resolution")
    if resolution is not None:
        _check_int("model.resolution", resolution, 8, 4096)
    batch = t.get("batch_size")
    if batch is not None:
        _check_int("model.batch_size", batch, 1, 1024)
    solver = parse_solver(t.get("solver"))
    from tuner.models.compile import parse_compile

    compile_backend = parse_compile(t.get("compile"))
    t.finish()
    source = resolve_source(model_id, base)  # a folder that is not a UNet2DConditionModel pipeline: error now
    if scheduler is not None and solver is not None:
        raise TunerError("model: give scheduler (a diffusers class) or solver (tuner's name), not both")
    if source.kind == "proxy" and solver is None:
        solver = parse_solver(DEFAULT_PROXY_SOLVER)  # recorded, so a study made before this default never resumes on it
    if source.kind == "proxy":
        for key, value in (("scheduler", scheduler), ("batch_size", batch)):
            if value is not None:
                raise TunerError(f"model.{key} applies to a diffusers pipeline, not to the proxy")
        if dtype not in (None, "float32"):
            raise TunerError(f"model.dtype={dtype!r}: the proxy model runs in float32 only")
    elif scheduler is not None:
        from tuner.models.diffusers_model import scheduler_class

        scheduler_class(_check_str("model.scheduler", scheduler))
    if weights is not None:
        weights = _check_unet_weights(weights, base, source.kind)
    return ModelSpec(source.id, device, weights, threads, dtype, scheduler, guidance, resolution, batch, solver,
                     compile_backend, *_denoiser_fields(source))


def _denoiser_fields(source) -> tuple:
    """ModelSpec's (denoiser, flow): None for a U-Net and a DDPM-family schedule (old studies' fingerprints)."""
    dit = source.kind == "diffusers" and source.denoiser != "UNet2DConditionModel"
    return (source.denoiser if dit else None), (True if source.flow else None)


DEFAULT_PROXY_SOLVER = "dpmsolver++"  # 2M at the study's steps: the strong baseline (BENCHMARKS.md, "Solvers users already run")


def parse_solver(value, what: str = "model.solver") -> dict | None:
    """`[model] solver` (or --solver): a solver name or a table of the `solver` method's keys, as that
    method's full dict."""
    if value is None:
        return None
    from tuner.methods.solver import SolverConfig

    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise TunerError(f"{what} must be a solver name or a table, got {value!r}")
    try:
        return SolverConfig.from_dict(dict(value)).to_dict()
    except TunerError as e:
        raise TunerError(f"{what}: {str(e).removeprefix(chr(39).join(('method ', 'solver', ': ')))}") from None


def _parse_image_set(data: Any, model: ModelSpec, base: Path) -> ImageSetSpec:
    from tuner.models.prompts import DEFAULT_PROMPTS, read_prompts

    t = _Table(data, "image_set")
    n = _check_int("image_set.n_images", t.get("n_images", 32), 2, 100_000)
    steps = _check_int("image_set.steps", t.get("steps", 20), 2, 1000)
    seed = _check_int("image_set.seed", t.get("seed", 0), 0, 2**31 - 1)
    prompts_file = t.get("prompts")
    t.finish()
    prompts = None
    if prompts_file is not None:
        if model.is_proxy:
            raise TunerError("image_set.prompts: the proxy model is conditioned on digit classes, not prompts")
        p = Path(_check_str("image_set.prompts", prompts_file))
        prompts_file = str(p if p.is_absolute() else (base / p).resolve())
        prompts = read_prompts(prompts_file)
    elif not model.is_proxy:
        prompts = read_prompts(DEFAULT_PROMPTS)
    return ImageSetSpec(n, steps, seed, prompts_file, prompts)


def _folder(t: "_Table", key: str, base: Path) -> str | None:
    value = t.get(key)
    if value is None:
        return None
    p = Path(_check_str(t.key(key), value))
    return str(p if p.is_absolute() else (base / p).resolve())


def _parse_evaluator(data: Any, n_images: int, base: Path, model: ModelSpec) -> EvaluatorSpec:
    t = _Table(data, "evaluator")
    lat = _check_int("evaluator.latency_images", t.get("latency_images", min(8, n_images)), 1, n_images)
    rep = _check_int("evaluator.latency_repeats", t.get("latency_repeats", 3), 1, 100)
    cheap = _check_int("evaluator.cheap_reject_images", t.get("cheap_reject_images", min(8, n_images)), 0, n_images)
    if cheap == 1:
        raise TunerError("evaluator.cheap_reject_images must be 0 (off) or >= 2")
    margin = _check_float("evaluator.cheap_reject_margin", t.get("cheap_reject_margin", 1.0), 1.0, 100.0)
    extractor = t.get("feature_extractor", "proxy" if model.is_proxy else "inception")
    if extractor not in ("proxy", "inception"):
        raise TunerError(f"evaluator.feature_extractor={extractor!r}: use 'proxy' or 'inception'")
    if extractor == "proxy" and not model.is_proxy:
        raise TunerError("evaluator.feature_extractor='proxy' is the digit classifier of the proxy model; a user "
                         "model is scored in Inception space (feature_extractor = \"inception\")")
    reference = _folder(t, "reference_images", base)
    if reference is not None:
        from tuner.evaluators.reference_images import image_files

        image_files(reference)  # missing folder or < 2 images: error now
    clip = _folder(t, "clip_model", base)
    if clip is not None:
        if model.is_proxy:
            raise TunerError("evaluator.clip_model: a CLIP score needs prompts; the proxy model has digit classes")
        if not (Path(clip) / "config.json").is_file():
            raise TunerError(f"evaluator.clip_model: {clip} is not a local CLIP model folder (no config.json)")
        from tuner.models.source import check_weight_files

        check_weight_files(Path(clip), "evaluator.clip_model")  # plain tensors, before transformers sees them
    weights = t.get("inception_weights")
    if weights is not None:
        p = Path(_check_str("evaluator.inception_weights", weights))
        p = p if p.is_absolute() else (base / p).resolve()
        from tuner.weights import check_tensors_file

        check_tensors_file(p, "evaluator.inception_weights")  # plain tensors, before torch-fidelity sees it
        weights = str(p)
    elif extractor == "inception" and model.is_proxy:
        raise TunerError("evaluator.feature_extractor='inception' needs evaluator.inception_weights = a local "
                         "torch-fidelity Inception weights file (nothing is downloaded)")
    race, certify, budget = _rungs(t, "race_rungs"), _rungs(t, "certify_rungs"), t.get("certify_budget_images")
    if budget is not None:
        budget = _check_int("evaluator.certify_budget_images", budget, 0, 10_000_000)
    t.finish()
    return EvaluatorSpec(lat, rep, cheap, margin, extractor, weights, reference, clip, race, certify, budget)


def _rungs(t: "_Table", key: str) -> tuple[int, ...] | None:
    """An increasing list of image counts (2..100000), or None when not given."""
    value = t.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise TunerError(f"evaluator.{key} must be a non-empty list of image counts, e.g. [8, 32, 128]")
    out = tuple(_check_int(f"evaluator.{key}", v, 2, 100_000) for v in value)
    if any(b <= a for a, b in zip(out, out[1:])):
        raise TunerError(f"evaluator.{key}={list(out)} must increase")
    return out


def _parse_constraints(data: Any) -> ConstraintSpec:
    t = _Table(data, "constraints")
    x = t.get("max_fid_increase")
    m = t.get("max_memory_gb")
    t.finish()
    return ConstraintSpec(None if x is None else _check_float("constraints.max_fid_increase", x, 0.0, 10_000.0),
                          None if m is None else _check_float("constraints.max_memory_gb", m, 0.0, 10_000.0))


def _parse_profile(data: Any) -> ProfileSpec:
    """CA-ToMe's `[profile]` table; its rules live with CA-ToMe (tuner.methods.catome_profile)."""
    t = _Table(data, "profile")
    out = ProfileSpec(**{k: t.get(k) for k in ("n_images", "threshold", "max_downsample") if k in t.data})
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
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):  # `..db` would be hidden
        raise TunerError(f"name={name!r}: use 1-100 characters of A-Z a-z 0-9 _ . - (not . or ..)")
    n_trials = _check_int("n_trials", t.get("n_trials", 20), 1, 100_000)
    seed = _check_int("seed", t.get("seed", 0), 0, 2**31 - 1)
    objectives = t.get("objectives", ["latency", "fid"])
    if not isinstance(objectives, list) or not all(isinstance(o, str) for o in objectives):
        raise TunerError("objectives must be a list of names")
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise TunerError(f"unknown objective(s) {', '.join(map(repr, bad))} (known: {', '.join(OBJECTIVES)})")
    if objectives[:2] != ["latency", "fid"] or len(set(objectives)) != len(objectives):
        raise TunerError('objectives must be ["latency", "fid"] followed by any of "bitops", "memory", "clip_score"')
    snapshot_every = _check_int("snapshot_every", t.get("snapshot_every", 10), 1, 100_000)
    storage, liveness = _parse_storage(t.get("storage"), name, base)
    model = _parse_model(t.get("model", {}), base)
    image_set = _parse_image_set(_renamed(t, "image_set", "proxy_set"), model, base)  # old name
    evaluator = _parse_evaluator(t.get("evaluator", {}), image_set.n_images, base, model)
    if "clip_score" in objectives:
        if model.is_proxy:
            raise TunerError("objective 'clip_score' needs prompts: the proxy model is conditioned on digit classes")
        if evaluator.clip_model is None:
            raise TunerError("objective 'clip_score' needs [evaluator] clip_model = a local CLIP model folder")
    constraints = _parse_constraints(t.get("constraints", {}))
    profile = _parse_profile(t.get("profile", {}))
    sampler = _parse_sampler(t.get("sampler", {}))
    space = t.get("space", {})
    if not isinstance(space, dict):
        raise TunerError("[space] must be a table of method families")
    if not space:  # the default joint space (search_spaces/defaults.py), quantization only with BitOPs
        from tuner.search_spaces.defaults import default_families

        space = default_families(objectives, model.denoiser_class, bool(model.flow))
    _check_space_fits(space, model)
    t.finish()
    spec = StudySpec(name, path.resolve(), storage, n_trials, seed, tuple(objectives), snapshot_every, model,
                     image_set, evaluator, constraints, profile, sampler, space, liveness)
    validate_space_and_sampler(spec)
    return spec


def _check_space_fits(space: dict, model: ModelSpec) -> None:
    """A [space] table naming a method the model cannot take (ToMe on a DiT, solver on flow matching) is an
    error now, not a study whose every trial fails."""
    from tuner.config import method_specs

    specs = method_specs()
    for name, table in space.items():
        spec = specs.get(name)
        if spec is None or (isinstance(table, dict) and table.get("enabled") is False):
            continue  # an unknown name is reported by build_space
        if not spec.config_cls.fits(model.denoiser_class, bool(model.flow)):
            schedule = ", a flow-matching schedule" if model.flow else ""
            raise TunerError(f"space.{name}: the method cannot patch this model ({model.denoiser_class}{schedule}); "
                             "leave [space] empty for the families it takes")


def validate_space_and_sampler(spec: StudySpec) -> None:
    """Build the space and the sampler once with placeholder facts (no model run): catches unknown
    families, bad bounds and bad sampler options at load time."""
    from tuner.search_spaces.space import SpaceContext, build_space
    from tuner.config import method_specs
    from tuner.samplers import build_sampler

    specs = method_specs()
    facts = {name: specs[name].config_cls.placeholder_facts(spec.image_set.steps)
             for name in spec.methods if name in specs}  # an unknown name is reported by build_space
    context = SpaceContext(spec.image_set.steps, facts=facts)
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
    from tuner.textfile import check_depth, nested_too_deep, read_text

    p = Path(path)
    text = read_text(p, "study file", MAX_STUDY_BYTES)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TunerError(f"study file {p} is not valid TOML: {e}") from None
    except RecursionError:
        raise nested_too_deep(f"study file {p}") from None
    return parse_spec(check_depth(data, f"study file {p}"), p)

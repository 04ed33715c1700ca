"""Options and helpers several subcommands share."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tuner.errors import TunerError
from tuner.threads import DEFAULT_THREADS, check_threads

PROXY_SET_DEFAULTS = {"n_images": 64, "steps": 50, "seed": 0}
MAX_STEPS = 1000  # DDPM's training schedule has 1000 timesteps
MAX_SEED = 2**31 - 1  # per-image seeds are seed * 1_000_003 + i: they must fit torch's generator

# Units printed after a result's value in the human-readable output (JSON keeps bare numbers).
UNITS = {"seconds_per_image": "s/image", "baseline_seconds_per_image": "s/image",
         "seconds_per_image_raw": "s/image", "generation_seconds": "s", "setup_seconds": "s",
         "eval_seconds": "s", "wall_seconds": "s", "overhead_seconds": "s", "speedup": "x",
         "macs": "MACs/image", "bitops": "BitOPs/image", "psnr": "dB", "fid_increase_pct": "%",
         "n_images": "images", "steps": "steps"}


def check_int(flag: str, value: int | None, low: int, high: int) -> None:
    """A range check for an integer flag, before any work (None: not given)."""
    if value is not None and not low <= value <= high:
        raise TunerError(f"{flag}={value} is out of range ({low}..{high})")


def add_threads_option(p, default_note: str = "") -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help=f"torch CPU threads of this process (default: {default_note}{DEFAULT_THREADS}; beside other "
                        "busy processes more threads run much slower)")


def add_eval_options(p, set_note: str = "") -> None:
    d = PROXY_SET_DEFAULTS
    p.add_argument("--n-images", type=int, default=None, metavar="N",
                   help=f"size of the proxy image set (default {d['n_images']}{set_note})")
    p.add_argument("--steps", type=int, default=None, metavar="S",
                   help=f"denoising steps of the baseline (default {d['steps']}{set_note})")
    p.add_argument("--solver", default=None, metavar="NAME",
                   help="the baseline's solver: ddim, ddpm, dpmsolver++, unipc, deis, euler, heun (default: the one a "
                        "config records, else the proxy's DPM-Solver++ 2M or a pipeline's own scheduler)")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of the image set, common random numbers (default {d['seed']}{set_note})")
    p.add_argument("--model", default=None,
                   help="'proxy' or a diffusers pipeline folder / hub id (default: the model a config records, else proxy)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="user models: weights dtype (default: the config's, else float16 on CUDA, float32 on CPU)")
    p.add_argument("--prompts", default=None, help="user models: prompts file, one a line (default: the config's, else tuner's set)")
    p.add_argument("--reference-images", default=None, help="folder of images: FID against them instead of the default")
    p.add_argument("--clip-model", default=None, help="user models: local CLIP folder, adds clip_score")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--resolution", type=int, default=None, metavar="PX", help="image size in pixels (default: the model's)")
    p.add_argument("--unet-weights", default=None, metavar="FILE", help="proxy U-Net safetensors (default: the shipped file)")
    p.add_argument("--feature-extractor", default=None, choices=["proxy", "inception"],
                   help=f"FID feature space: the shipped digit classifier (default{set_note}), or Inception from a local file")
    p.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="local Inception-v3 weights (torch-fidelity format); nothing is downloaded")
    p.add_argument("--latency-images", type=int, default=None, metavar="N",
                   help=f"images per timed call (default 8{set_note})")
    p.add_argument("--latency-repeats", type=int, default=3, metavar="K", help="timed calls per config, after one warm-up (default 3)")
    add_threads_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def check_out_file(path: str | Path, flag: str, suffixes: tuple[str, ...]) -> Path:
    """An output file the command may write: not a folder, a known suffix, a folder that exists and
    takes a new file. Checked before any work, so a bad path costs nothing and leaves nothing behind."""
    out = Path(path)
    if out.is_dir():
        raise TunerError(f"{flag} {out} is a folder; give a file name ending in {' or '.join(suffixes)}")
    if out.suffix.lower() not in suffixes:
        raise TunerError(f"{flag} {out.name}: unsupported file type; use {', '.join(suffixes)}")
    if not out.parent.is_dir():
        raise TunerError(f"{flag}: folder {out.parent} does not exist")
    # os.access cannot tell (root passes it on /proc): try to open the file, and leave no trace.
    existed = out.exists()
    try:
        with open(out, "ab"):
            pass
    except OSError as e:
        raise TunerError(f"{flag} {out}: cannot write there ({e.strerror or type(e).__name__})") from None
    if not existed:
        out.unlink()
    return out


def recorded_image_set(environment: dict) -> dict | None:
    """An exported config's image set (`proxy_set` in configs exported before the rename)."""
    return environment.get("image_set", environment.get("proxy_set"))  # old name


def image_set_args(args, recorded: dict | None = None) -> dict:
    """--n-images/--steps/--seed/--latency-images, else what a config recorded (the study's image set and
    timed batch), else the defaults. Ranges are checked by ImageSet / here, before any model is loaded."""
    recorded = recorded or {}
    if not isinstance(recorded, dict):
        raise TunerError(f"the config's environment.image_set must be an object, got {type(recorded).__name__}")
    out = {}
    for key, default in (*PROXY_SET_DEFAULTS.items(), ("latency_images", 8)):
        value = getattr(args, key)
        out[key] = value if value is not None else recorded.get(key, default)
    if isinstance(out["latency_images"], bool) or not isinstance(out["latency_images"], int) \
            or not 1 <= out["latency_images"] <= 1024:
        raise TunerError(f"latency_images={out['latency_images']!r} is out of range (1..1024)")
    if not 1 <= args.latency_repeats <= 100:
        raise TunerError(f"--latency-repeats={args.latency_repeats} is out of range (1..100)")
    check_threads(getattr(args, "threads", None))
    return out


def model_settings(args, config=None) -> dict:
    """The model to load: --model, else the one the config records (with its dtype, scheduler, guidance,
    resolution), else the proxy. A config made for another model than --model is refused: its timesteps,
    levels and objectives mean nothing there."""
    from tuner.models import resolve_source
    from tuner.proxy.model import MODEL_ID

    env = (config.environment or {}) if config is not None else {}
    recorded = env.get("model") if isinstance(env.get("model"), dict) else {}
    recorded_id = recorded.get("id") or (config.model_id if config is not None else None)
    if recorded_id == MODEL_ID:
        recorded_id = "proxy"
    if recorded_id is not None and recorded_id != "proxy" and config.folder is not None \
            and not Path(recorded_id).is_absolute() and (config.folder / recorded_id).exists():  # a model folder next to the config, not the CWD's
        recorded_id = config.path_of(recorded_id)
    wanted = args.model or recorded_id or "proxy"
    source = resolve_source(wanted)
    if recorded_id is not None and args.model is not None and resolve_source_id(recorded_id) != source.id:
        raise TunerError(f"config is for model {recorded_id!r}, not {source.id!r}; drop --model to measure it on "
                         "its own model")
    out = {k: recorded.get(k) for k in ("dtype", "scheduler", "guidance_scale", "resolution", "batch_size",
                                        "unet_weights", "solver")} if source.id == recorded_id else {}
    if isinstance(out.get("unet_weights"), str):
        out["unet_weights"] = config.path_of(out["unet_weights"])
    out["source"] = source
    if getattr(args, "dtype", None):
        out["dtype"] = args.dtype
    if getattr(args, "unet_weights", None):
        out["unet_weights"] = args.unet_weights
    if getattr(args, "solver", None):
        from tuner.study.spec import parse_solver

        out["solver"] = parse_solver(args.solver, "--solver")
    return out


def resolve_source_id(model_id: str) -> str:
    """The id a model is recorded under (a folder's absolute path), without failing on a moved folder."""
    from pathlib import Path

    p = Path(model_id).expanduser()
    return str(p.resolve()) if p.exists() else model_id


def make_context(args, progress: bool = True, recorded: dict | None = None, recorded_extractor: str | None = None,
                 config=None):
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.models import load_model
    from tuner.models.prompts import read_prompts

    ps = image_set_args(args, recorded)
    settings = model_settings(args, config)
    source = settings.pop("source")
    prompts = None
    if source.kind != "proxy":
        recorded_prompts = (recorded or {}).get("prompts")
        if args.prompts is not None:
            prompts = read_prompts(args.prompts, "--prompts")
        elif isinstance(recorded_prompts, list) and recorded_prompts:
            prompts = tuple(str(p) for p in recorded_prompts)
        else:
            prompts = read_prompts(None)
    elif args.prompts is not None:
        raise TunerError("--prompts: the proxy model is conditioned on digit classes, not prompts")
    image_set = ImageSet(ps["n_images"], ps["steps"], ps["seed"], prompts)  # validated before the model loads
    recorded_reference = (config.environment or {}).get("reference_images") if config is not None else None
    reference = args.reference_images or (config.path_of(recorded_reference)
                                          if isinstance(recorded_reference, str) else None)
    if reference is not None:
        from tuner.evaluators.reference_images import image_files

        image_files(reference, "--reference-images")
    extractor = args.feature_extractor or recorded_extractor or ("proxy" if source.kind == "proxy" else "inception")
    inception = args.inception_weights
    recorded_inception = (config.environment or {}).get("inception_weights") if config is not None else None
    if inception is None and isinstance(recorded_inception, str) and Path(config.path_of(recorded_inception)).exists():
        inception = config.path_of(recorded_inception)  # relative to the config file, never the CWD
    if inception is not None:  # plain tensors, checked before the model loads (and read again from memory)
        from tuner.weights import check_tensors_file

        check_tensors_file(inception, "--inception-weights" if args.inception_weights else "environment.inception_weights")
    from tuner.threads import set_threads

    set_threads(getattr(args, "threads", None))
    pipe = load_model(source, args.device, settings.get("dtype"), settings.get("unet_weights"),
                      settings.get("scheduler"), settings.get("guidance_scale"), settings.get("resolution"),
                      settings.get("batch_size"), settings.get("solver"))
    if args.resolution is not None:
        pipe.set_resolution(args.resolution)
    return ScoringContext(pipe, image_set, extractor, inception,
                       latency_images=ps["latency_images"], latency_repeats=args.latency_repeats, progress=progress,
                       reference_images=reference, clip_model=args.clip_model)


def clean(obj):
    """JSON-safe: floats rounded for reading, non-finite as null."""
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def print_result(result: dict, as_json: bool) -> None:
    """One JSON object, or `key  value unit` lines for people."""
    if as_json:
        print(json.dumps(clean(result)))
        return
    width = max(len(k) for k in result)
    for k, v in clean(result).items():
        unit = UNITS.get(k) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        if k.endswith("_share") and isinstance(v, float):
            v, unit = round(100 * v, 2), "%"
        print(f"{k:<{width}}  {v}" + (f" {unit}" if unit else ""))

"""Options and helpers several subcommands share."""

from __future__ import annotations

import json
import math

from tuner.errors import TunerError


PROXY_SET_DEFAULTS = {"n_images": 64, "steps": 50, "seed": 0}


def add_eval_options(p, set_note: str = "") -> None:
    d = PROXY_SET_DEFAULTS
    p.add_argument("--n-images", type=int, default=None, help=f"size of the proxy image set (default {d['n_images']}{set_note})")
    p.add_argument("--steps", type=int, default=None, help=f"denoising steps of the baseline, DDIM (default {d['steps']}{set_note})")
    p.add_argument("--seed", type=int, default=None, help=f"seed of the proxy set, common random numbers (default {d['seed']}{set_note})")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--resolution", type=int, default=None, help="image size in pixels (default: the model's)")
    p.add_argument("--unet-weights", default=None, help="proxy U-Net safetensors (default: the shipped file)")
    p.add_argument("--feature-extractor", default=None, choices=["proxy", "inception"],
                   help=f"FID feature space: the shipped digit classifier (default{set_note}), or Inception from a local file")
    p.add_argument("--inception-weights", default=None, help="local Inception-v3 weights (torch-fidelity format)")
    p.add_argument("--latency-images", type=int, default=None,
                   help=f"images per timed call (default 8{set_note})")
    p.add_argument("--latency-repeats", type=int, default=3, help="timed calls per config, after one warm-up")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def proxy_set_args(args, recorded: dict | None = None) -> dict:
    """--n-images/--steps/--seed/--latency-images, else what a config recorded (the study's proxy set and
    timed batch), else the defaults. Ranges are checked by ProxySet / here, before any model is loaded."""
    recorded = recorded or {}
    if not isinstance(recorded, dict):
        raise TunerError(f"the config's environment.proxy_set must be an object, got {type(recorded).__name__}")
    out = {}
    for key, default in (*PROXY_SET_DEFAULTS.items(), ("latency_images", 8)):
        value = getattr(args, key)
        out[key] = value if value is not None else recorded.get(key, default)
    if isinstance(out["latency_images"], bool) or not isinstance(out["latency_images"], int) \
            or not 1 <= out["latency_images"] <= 1024:
        raise TunerError(f"latency_images={out['latency_images']!r} is out of range (1..1024)")
    if not 1 <= args.latency_repeats <= 100:
        raise TunerError(f"--latency-repeats={args.latency_repeats} is out of range (1..100)")
    return out


def make_context(args, progress: bool = True, recorded: dict | None = None, recorded_extractor: str | None = None):
    from tuner.evaluate import EvalContext, ProxySet
    from tuner.proxy.model import load_proxy_pipeline

    ps = proxy_set_args(args, recorded)
    proxy_set = ProxySet(ps["n_images"], ps["steps"], ps["seed"])  # validated here, before the model loads
    pipe = load_proxy_pipeline(args.device, args.unet_weights)
    if args.resolution is not None:
        pipe.set_resolution(args.resolution)
    extractor = args.feature_extractor or recorded_extractor or "proxy"
    return EvalContext(pipe, proxy_set, extractor, args.inception_weights,
                       latency_images=ps["latency_images"], latency_repeats=args.latency_repeats, progress=progress)


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
    if as_json:
        print(json.dumps(clean(result)))
        return
    width = max(len(k) for k in result)
    for k, v in clean(result).items():
        print(f"{k:<{width}}  {v}")

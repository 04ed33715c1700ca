"""Options and helpers several subcommands share."""

from __future__ import annotations

import json
import math


def add_eval_options(p, n_images_default: int = 64) -> None:
    p.add_argument("--n-images", type=int, default=n_images_default, help="size of the proxy image set")
    p.add_argument("--steps", type=int, default=50, help="denoising steps of the baseline (DDIM)")
    p.add_argument("--seed", type=int, default=0, help="seed of the proxy set (common random numbers)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--resolution", type=int, default=None, help="image size in pixels (default: the model's)")
    p.add_argument("--unet-weights", default=None, help="proxy U-Net safetensors (default: the shipped file)")
    p.add_argument("--feature-extractor", default="proxy", choices=["proxy", "inception"],
                   help="FID feature space: the shipped digit classifier, or Inception from a local file")
    p.add_argument("--inception-weights", default=None, help="local Inception-v3 weights (torch-fidelity format)")
    p.add_argument("--latency-repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def make_context(args, progress: bool = True):
    from tuner.evaluate import EvalContext, ProxySet
    from tuner.proxy.model import load_proxy_pipeline

    proxy_set = ProxySet(args.n_images, args.steps, args.seed)
    pipe = load_proxy_pipeline(args.device, args.unet_weights)
    if args.resolution is not None:
        pipe.set_resolution(args.resolution)
    return EvalContext(pipe, proxy_set, args.feature_extractor, args.inception_weights,
                       latency_repeats=args.latency_repeats, progress=progress)


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

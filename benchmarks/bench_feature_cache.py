"""Feature caching on the proxy model: DeepCache (interval N × branch, uniform vs non-uniform keyframes)
and FRDiff (keyframe interval, score-mixing bias, mixing on/off).

    python benchmarks/bench_feature_cache.py --sweep NAME [--n-images 32] [--steps 50] [--repeats 3]

NAME: deepcache-b0 | deepcache-b1 | deepcache-b2 (N = 2, 3, 5, 10 at that branch), deepcache-nonuniform
(branch 0, center 15, power 1.4), frdiff-interval (M = 2, 3, 5 at b = 0.5; M = 2, 3 without mixing),
frdiff-bias (M = 2, b = 0, 0.3, 0.7, 1).

Each config is scored by `ScoringContext.evaluate` against the baseline of the same run: speedup is the ratio
of medians of interleaved timings (baseline and candidate alternate, 8 images per timed call); FID/KID
(proxy classifier features vs held-out digits), class accuracy, PSNR/SSIM against the baseline images with
the same seeds, and MACs per image counted by hooks (what really ran). Prints Markdown table rows as each
config finishes (the baseline first), then a JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SWEEPS = {  # small enough that one run stays within a few minutes on a shared 2-core CPU
    **{f"deepcache-b{b}": [{"deepcache": {"interval": n, "branch": b}} for n in (2, 3, 5, 10)] for b in (0, 1, 2)},
    "deepcache-nonuniform": [{"deepcache": {"interval": n, "branch": 0, "schedule": "nonuniform"}}
                             for n in (2, 3, 5, 10)],
    "frdiff-interval": ([{"frdiff": {"interval": m, "bias": 0.5}} for m in (2, 3, 5)]
                        + [{"frdiff": {"interval": m, "mixing": False}} for m in (2, 3)]),
    "frdiff-bias": [{"frdiff": {"interval": 2, "bias": b}} for b in (0.0, 0.3, 0.7, 1.0)],
}
COLUMNS = ("speedup", "macs_ratio", "fid", "kid", "psnr", "ssim", "class_accuracy")


def label(methods: dict) -> str:
    (name, params), = methods.items()
    return name + " " + ", ".join(f"{k}={v}" for k, v in params.items())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", choices=sorted(SWEEPS), required=True)
    ap.add_argument("--n-images", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from tuner.config import AccelConfig
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.proxy.model import load_proxy_pipeline

    t_start = time.perf_counter()
    ctx = ScoringContext(load_proxy_pipeline("cpu"), ImageSet(args.n_images, args.steps, 0),
                      latency_repeats=args.repeats)
    base = ctx.evaluate_baseline()
    print("| config | speedup | MACs ratio | FID | KID | PSNR (dB) | SSIM | class acc. |")
    print("|---|---|---|---|---|---|---|---|")
    emit({"config": "baseline", **{k: base[k] for k in ("fid", "kid", "psnr", "ssim", "class_accuracy")},
          "speedup": 1.0, "macs_ratio": 1.0})
    for methods in SWEEPS[args.sweep]:
        r = ctx.evaluate(AccelConfig.from_dict({"schema_version": 2, "methods": methods}))
        emit({"config": label(methods), **{k: r[k] for k in COLUMNS if k in r}, "macs_ratio": r["macs"] / base["macs"]})
    meta = {"sweep": args.sweep, "n_images": args.n_images, "steps": args.steps, "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(), "wall_seconds": round(time.perf_counter() - t_start, 1)}
    print(json.dumps(meta), flush=True)


def emit(r: dict) -> None:
    print(f"| {r['config']} | {r['speedup']:.2f}× | {r['macs_ratio']:.2f} | {r['fid']:.2f} | {r['kid']:.4f} | "
          f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['class_accuracy']:.3f} |", flush=True)


if __name__ == "__main__":
    main()

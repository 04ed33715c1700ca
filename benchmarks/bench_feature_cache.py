"""Feature caching on the proxy model: DeepCache (interval N × branch, uniform vs non-uniform keyframes)
and FRDiff (keyframe interval, score-mixing bias, mixing on/off).

    python benchmarks/bench_feature_cache.py --sweep deepcache|deepcache-nonuniform|frdiff
        [--n-images 32] [--steps 50] [--repeats 3] [--json]

Each config is scored by `EvalContext.evaluate` against the baseline of the same run: speedup is the ratio
of medians of interleaved timings (baseline and candidate alternate, 8 images per timed call); FID/KID
(proxy classifier features vs held-out digits), class accuracy, PSNR/SSIM against the baseline images with
the same seeds, and MACs per image counted by hooks (what really ran). Prints a Markdown table (or JSON).
Sweeps are split so that each run stays within a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SWEEPS = {
    "deepcache": [{"deepcache": {"interval": n, "branch": b}} for b in (0, 1, 2) for n in (2, 3, 5, 10)],
    "deepcache-nonuniform": [{"deepcache": {"interval": n, "branch": 0, "schedule": s}}
                             for n in (2, 3, 5, 10) for s in ("uniform", "nonuniform")],
    "frdiff": ([{"frdiff": {"interval": m, "bias": 0.5}} for m in (2, 3, 5)]
               + [{"frdiff": {"interval": 2, "bias": b}} for b in (0.0, 0.3, 0.7)]
               + [{"frdiff": {"interval": m, "mixing": False}} for m in (2, 3)]),
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
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from tuner.config import AccelConfig
    from tuner.evaluate import EvalContext, ProxySet
    from tuner.proxy.model import load_proxy_pipeline

    t_start = time.perf_counter()
    ctx = EvalContext(load_proxy_pipeline("cpu"), ProxySet(args.n_images, args.steps, 0),
                      latency_repeats=args.repeats)
    base = ctx.evaluate_baseline()
    rows = [{"config": "baseline", **{k: base[k] for k in ("fid", "kid", "psnr", "ssim", "class_accuracy")},
             "speedup": 1.0, "macs_ratio": 1.0}]
    for methods in SWEEPS[args.sweep]:
        r = ctx.evaluate(AccelConfig.from_dict({"schema_version": 1, "methods": methods}))
        rows.append({"config": label(methods), **{k: r[k] for k in COLUMNS if k in r},
                     "macs_ratio": r["macs"] / base["macs"]})
    meta = {"sweep": args.sweep, "n_images": args.n_images, "steps": args.steps, "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(), "wall_seconds": round(time.perf_counter() - t_start, 1)}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return
    print(f"<!-- {json.dumps(meta)} -->")
    print("| config | speedup | MACs ratio | FID | KID | PSNR (dB) | SSIM | class acc. |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['speedup']:.2f}× | {r['macs_ratio']:.2f} | {r['fid']:.2f} | {r['kid']:.4f} | "
              f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['class_accuracy']:.3f} |")


if __name__ == "__main__":
    main()

"""Compiled vs not compiled on the CPU: the embedded proxy model, its baseline and two families, timed in
blocks (apply, warm-up = the compilation, timed calls, remove), one thread. What `[model] compile = true`
changes on a CPU; GPU figures come from benchmarks/gpu_check.py.

    flock /tmp/tuner-timing.lock python benchmarks/bench_compile.py [--backend inductor] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results" / "compile_cpu.json"
CONFIGS = {"ToMe r=0.5": {"tome": {"ratio": 0.5}}, "DeepCache N=3": {"deepcache": {"interval": 3}}}


def time_all(pipe, steps: int, images: int, repeats: int) -> dict:
    from tuner.apply_config import apply
    from tuner.evaluators.latency import blocked_medians

    classes, seeds = [i % 10 for i in range(images)], list(range(images))
    run = lambda: pipe(classes, seeds, num_inference_steps=steps)  # noqa: E731
    fns = {"baseline": run, **{n: run for n in CONFIGS}}
    contexts = {n: (lambda c=c: apply(pipe, c)) for n, c in CONFIGS.items()}
    t0 = time.perf_counter()
    med = blocked_medians(fns, repeats, 1, "cpu", contexts)
    return {"seconds_per_image": {n: m / images for n, m in med.items()}, "wall_seconds": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tuner.models.compile import compile_model
    from tuner.proxy.model import load_proxy_pipeline

    pipe = load_proxy_pipeline("cpu")
    out = {"backend": args.backend, "steps": args.steps, "images": args.images, "repeats": args.repeats,
           "torch": torch.__version__, "not_compiled": time_all(pipe, args.steps, args.images, args.repeats)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compile_model(pipe, args.backend)
        out["compiled"] = time_all(pipe, args.steps, args.images, args.repeats)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

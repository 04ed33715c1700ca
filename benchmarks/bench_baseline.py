"""Foundation figures: quality bar of the proxy model and the cost of one baseline trial.

    python benchmarks/bench_baseline.py [--n-images 64] [--steps 50]

Prints JSON: baseline metrics (FID/KID vs held-out digits, class accuracy), real-vs-real FID at the same
N, classifier held-out accuracy, and the wall time of one full baseline trial (generation of the proxy
set + every metric, reference features already cached).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()

    from tuner.scoring import ScoringContext, ImageSet
    from tuner.proxy.model import PROXY_INFO, load_proxy_pipeline

    pipe = load_proxy_pipeline("cpu")
    ctx = ScoringContext(pipe, ImageSet(args.n_images, args.steps, 0))  # default latency batch and repeats
    ctx.reference.features()  # cached reference, as in a study
    t0 = time.perf_counter()
    result = ctx.evaluate_baseline()
    result["baseline_trial_seconds"] = time.perf_counter() - t0
    result["classifier_heldout_accuracy"] = json.loads(PROXY_INFO.read_text())["classifier_heldout_accuracy"]
    result["torch_threads"] = torch.get_num_threads()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""How many timing rounds make a steps-only config's speedup agree with its MACs ratio (issue 12).

A steps-only config (12 of the baseline's 20 DDIM steps) does exactly 12/20 of the baseline's U-Net work,
so its speedup should be the MACs ratio 20/12 = 1.667. For each (latency_images, latency_repeats) this
times the config K times like a trial does (interleaved with the baseline, one warm-up, median of the
rounds) and reports each speedup, its interval over rounds (tuner/uncertainty.py) and its distance from
the MACs ratio.

    nice -n 10 python benchmarks/bench_speedup_repeats.py --settings 4x3 4x7 8x7 --k 3
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", nargs="+", default=["4x3", "4x7", "8x7"], help="IMAGESxREPEATS")
    ap.add_argument("--k", type=int, default=3, help="independent timings per setting")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--candidate-steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--busy", action="store_true", help="a busy neighbour process (`while True: pass`) throughout")
    args = ap.parse_args()
    if args.busy:
        import atexit
        import subprocess
        import sys

        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        atexit.register(neighbour.kill)
    torch.set_num_threads(args.threads)

    from tuner.config import AccelConfig
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.methods.timesteps import uniform_timesteps
    from tuner.proxy.model import load_proxy_pipeline
    from tuner.uncertainty import speedup_interval

    pipe = load_proxy_pipeline("cpu")
    config = AccelConfig.from_dict({"schema_version": 1, "methods": {
        "timesteps": {"timesteps": uniform_timesteps(args.candidate_steps)}}})
    macs_ratio = args.steps / args.candidate_steps
    rows = []
    for setting in args.settings:
        images, repeats = (int(v) for v in setting.split("x"))
        ctx = ScoringContext(pipe, ImageSet(max(images, 2), args.steps, 0), latency_images=images, latency_repeats=repeats)
        for k in range(args.k):
            lat = ctx.latency(config)
            r = ctx.last_latency_rounds
            ci = speedup_interval(r["baseline"], r["candidate"])
            s = lat["baseline"] / lat["candidate"]
            s_min = min(r["baseline"]) / min(r["candidate"])  # the least-disturbed round of each side
            rows.append({"latency_images": images, "latency_repeats": repeats, "k": k, "speedup": s,
                         "speedup_lo": ci["speedup_lo"], "speedup_hi": ci["speedup_hi"],
                         "off_macs_pct": 100 * (s / macs_ratio - 1), "baseline_s_per_image": lat["baseline"],
                         "speedup_of_minima": s_min, "off_macs_pct_minima": 100 * (s_min / macs_ratio - 1),
                         "rounds": r})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nMACs ratio {macs_ratio:.3f} ({args.steps} vs {args.candidate_steps} steps)")
    print("| timed images x rounds | speedups (each run) | interval over rounds (90 %) | worst distance from MACs ratio "
          "| ratio of per-side minima (each run) | its worst distance |")
    print("|---|---|---|---|---|---|")
    for setting in args.settings:
        images, repeats = (int(v) for v in setting.split("x"))
        sel = [r for r in rows if r["latency_images"] == images and r["latency_repeats"] == repeats]
        speeds = ", ".join(f"{r['speedup']:.3f}" for r in sel)
        intervals = "; ".join(f"{r['speedup_lo']:.2f}-{r['speedup_hi']:.2f}" for r in sel)
        worst = max(abs(r["off_macs_pct"]) for r in sel)
        minima = ", ".join(f"{r['speedup_of_minima']:.3f}" for r in sel)
        worst_min = max(abs(r["off_macs_pct_minima"]) for r in sel)
        print(f"| {images} x {repeats} | {speeds} | {intervals} | {worst:.1f} % | {minima} | {worst_min:.1f} % |")

if __name__ == "__main__":
    main()

"""The joint front vs the seed papers' default configs, measured on the same model, set and baseline.

    tuner study run studies/default.toml            # the front (studies/default.db)
    flock /tmp/bench.lock python benchmarks/bench_seed_configs.py studies/default.toml [--write]

The study's stored baseline, image set and evaluator settings are reused, so every seed config is scored
exactly like a trial: latency = stored baseline seconds/image / speedup measured interleaved with the
baseline, FID on the full image set. A seed config is *dominated* when a feasible front member is at
least as good on both objectives and better on one. Seed configs (scaled to the study's step count):
ToMe r=0.5 (tomesd default levels), CA-ToMe t=0.7 with the paper's CONFIG_3 checkpoints, DeepCache N=3
(shallowest branch, uniform), FRDiff (interval 2, bias 0.5, score mixing), TMPQ-style uniform W6A6 at 10
steps. Writes a plot (front + seed configs) and, with `--write`, a section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from md_sections import write_section  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SECTION = "## Joint front vs the seeds' default configs"


def seed_configs(steps: int) -> dict[str, dict]:
    from tuner.methods.catome_profile import scale_checkpoints
    from tuner.methods.catome import PAPER_CHECKPOINTS
    from tuner.methods.timesteps import uniform_timesteps

    return {
        "ToMe r=0.5": {"tome": {"ratio": 0.5}},
        "CA-ToMe t=0.7, CONFIG_3": {"catome": {"threshold": 0.7,
                                               "checkpoints": scale_checkpoints(PAPER_CHECKPOINTS["CONFIG_3"], 50, steps)}},
        "DeepCache N=3": {"deepcache": {"interval": 3, "branch": 0}},
        "FRDiff M=2, b=0.5": {"frdiff": {"interval": 2, "bias": 0.5}},
        "W6A6 at 10 steps": {"timesteps": {"timesteps": uniform_timesteps(10)},
                             "quant": {"weight_bits": 6, "act_bits": 6}},
    }


def dominated_by(point: tuple[float, float], front: list[dict]) -> list[int]:
    lat, fid = point
    return [m["number"] for m in front
            if m["latency"] <= lat and m["fid"] <= fid and (m["latency"] < lat or m["fid"] < fid)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", help="study TOML whose database holds a finished run")
    ap.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    args = ap.parse_args()

    import optuna

    from tuner.config import AccelConfig
    from tuner.methods.quant import calibrate
    from tuner.study.context import StudyContext
    from tuner.study.pareto import completed, front_trials
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(args.study)
    study, _ = open_study(spec, create=False)
    li, fi = spec.objectives.index("latency"), spec.objectives.index("fid")
    members = [{"number": t.number, "latency": t.values[li], "fid": t.values[fi], "config": t.user_attrs.get("config")}
               for t in front_trials(completed(study))]
    ctx = StudyContext.build(spec, study, progress=False, log=lambda m: print(m, file=sys.stderr))
    calibrate(ctx.pipe)  # W6A6 needs activation ranges: the model's default calibration, as in a study
    base = ctx.baseline
    allowed = None if spec.constraints.max_fid_increase is None else \
        float(base["fid"]) * (1 + spec.constraints.max_fid_increase / 100)

    rows = []
    for name, methods in seed_configs(spec.image_set.steps).items():
        config = AccelConfig.from_dict({"schema_version": 2, "methods": methods})
        r = ctx.eval.evaluate(config)
        lat = float(base["seconds_per_image"]) / float(r["speedup"])
        row = {"config": name, "speedup": r["speedup"], "latency": lat, "fid": r["fid"], "kid": r["kid"],
               "psnr": r["psnr"], "class_accuracy": r["class_accuracy"], "macs": r["macs"], "bitops": r["bitops"],
               "feasible": allowed is None or r["fid"] <= allowed,
               "dominated_by": dominated_by((lat, r["fid"]), members)}
        rows.append(row)
        print(f"{name}: speedup {r['speedup']:.2f}x, FID {r['fid']:.2f}, dominated by {row['dominated_by']}",
              file=sys.stderr)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "seed_configs.json").write_text(json.dumps({"baseline": base, "front": members, "rows": rows},
                                                          indent=1, default=str))
    plot(members, rows, base, allowed, RESULTS / "seed_configs_vs_front.png")

    lines = ["| config | speedup | latency s/img | FID | KID | PSNR | class acc | BitOPs / FP | feasible | dominated by front trials |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['speedup']:.2f}x | {r['latency']:.4f} | {r['fid']:.2f} | {r['kid']:.4f} "
                     f"| {r['psnr']:.1f} | {r['class_accuracy']:.1%} | {r['bitops'] / float(base['bitops']):.3f} "
                     f"| {'yes' if r['feasible'] else 'no'} | {', '.join(map(str, r['dominated_by'])) or 'none'} |")
    front_lines = ["| front trial | latency s/img | speedup | FID | config |", "|---|---|---|---|---|"]
    for m in sorted(members, key=lambda m: m["latency"]):
        front_lines.append(f"| {m['number']} | {m['latency']:.4f} | {float(base['seconds_per_image']) / m['latency']:.2f}x "
                           f"| {m['fid']:.2f} | `{json.dumps(m['config'], separators=(',', ':'))}` |")
    table = "\n".join(lines)
    print(table)
    print("\n".join(front_lines))
    if args.write:
        command = "flock /tmp/bench.lock python benchmarks/bench_seed_configs.py " + " ".join(sys.argv[1:])
        text = (f"{SECTION}\n\nCommand: `{command}` after `tuner study run {args.study}`. Baseline: "
                f"{float(base['seconds_per_image']):.4f} s/image, FID {float(base['fid']):.2f}"
                + (f", feasible when FID <= {allowed:.2f}" if allowed else "") + ". Plot: "
                "`benchmarks/results/seed_configs_vs_front.png`.\n\n" + table + "\n\nThe front it is compared with:\n\n"
                + "\n".join(front_lines) + "\n")
        write_section(SECTION, text)


def plot(members, rows, base, allowed, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    pts = sorted((m["latency"], m["fid"]) for m in members)
    if pts:
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="C0", alpha=0.5)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="C0", label="joint front", zorder=3)
    for i, r in enumerate(rows):
        ax.scatter([r["latency"]], [r["fid"]], marker="x", color=f"C{i + 1}", label=r["config"], zorder=3)
    ax.scatter([float(base["seconds_per_image"])], [float(base["fid"])], marker="*", s=120, color="k", label="baseline")
    if allowed:
        ax.axhline(allowed, ls="--", color="gray", lw=0.8, label="FID constraint")
    ax.set_xlabel("latency (s / image)")
    ax.set_ylabel("proxy FID")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

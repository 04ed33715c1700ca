"""Samplers compared on the real evaluator: hypervolume after n trials, per sampler and seed.

    flock /tmp/bench.lock python benchmarks/bench_samplers.py studies/default.toml \
        --samplers random,tpe,nsga2,deap-nsga2,joint --seeds 0,1,2 --at 20,40,60 [--write]

Each (sampler, seed) is its own study in one SQLite file (`--db`, default next to this script's output
folder), run by the real study runner (`tuner.study.runner.run_study`) on the study TOML's model, proxy
set, evaluator, constraints and space. The per-study context (baseline images and timing, reference
statistics, Jaccard profile, calibration) is built ONCE and shared by every run, so all samplers score
against the same baseline. Hypervolume after n finished trials is the study's own measure
(`tuner.study.pareto.hypervolume`: feasible completed trials among the first n, normalized by the
baseline, reference point (1, 1 + max_fid_increase/100)). Re-running resumes unfinished studies.

A sampler name may end in `:cold` (no warm start: the sampler alone, as a user running plain Optuna
would) or `:warm` (the study's warm start queued first, the default). The table gives mean ± sd and
the median over seeds, and the median's ratio to every `:cold` baseline sampler named in `--versus`.

Also reported: the tuner's overhead (wall time minus evaluation time) as a share of wall time.
`--write` puts the table under `## Samplers` in BENCHMARKS.md (only that section is replaced).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

from md_sections import write_section  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Samplers"


def hypervolume_after(study, spec, baseline: dict, n: int) -> float:
    from optuna.trial import TrialState

    from tuner.study.pareto import front_trials, hypervolume, is_feasible

    finished = sorted((t for t in study.get_trials(deepcopy=False)
                       if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)),
                      key=lambda t: t.number)[:n]
    feasible = [t for t in finished if t.state == TrialState.COMPLETE and is_feasible(t)]
    return hypervolume(spec, baseline, front_trials(feasible))


def run_one(spec, context, sampler: str, seed: int, n_trials: int, db: Path, options: dict,
            warm: bool = True, label: str | None = None) -> dict:
    import optuna

    from tuner.study.runner import run_study
    from tuner.study.spec import SamplerSpec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"bench-{spec.name}-{label or sampler}-s{seed}"
    run_spec = dataclasses.replace(spec, name=name, storage=f"sqlite:///{db}", seed=seed, n_trials=n_trials,
                                   sampler=SamplerSpec(sampler, dict(options), warm_start=warm))
    run_context = dataclasses.replace(context, spec=run_spec)
    summary = run_study(run_spec, context=run_context, progress=False, log=lambda m: None)
    study = optuna.load_study(study_name=name, storage=run_spec.storage)
    return {"study": study, "spec": run_spec, "summary": summary}


def read_one(spec, seed: int, db: Path, label: str) -> dict:
    import optuna

    name = f"bench-{spec.name}-{label}-s{seed}"
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return {"study": study, "spec": dataclasses.replace(spec, name=name), "summary": {}}


def format_table(rows: dict, at: list[int], seeds: list[int], versus: list[str]) -> str:
    last = max(at)
    head = ("| sampler | " + " | ".join(f"HV@{n} (mean ± sd over {len(seeds)} seeds)" for n in at)
            + f" | median HV@{last} | " + "".join(f"median / {v} | " for v in versus) + "tuner overhead share |")
    lines = [head, "|" + "---|" * (len(at) + len(versus) + 3)]
    for sampler, r in rows.items():
        cells = []
        for n in at:
            vals = r["hv"][n]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}")
        median = statistics.median(r["hv"][last])
        cells.append(f"{median:.4f}")
        for v in versus:
            other = statistics.median(rows[v]["hv"][last]) if v in rows else float("nan")
            cells.append(f"{median / other:.2f}x" if other > 0 else "n/a")
        lines.append(f"| {sampler} | " + " | ".join(cells) + f" | {statistics.mean(r['overhead']):.1%} |")
    per_seed = [f"{s}: " + "/".join(f"{v:.3f}" for v in r["hv"][last]) for s, r in rows.items()]
    return "\n".join(lines) + f"\n\nPer seed ({', '.join(map(str, seeds))}), HV@{last}: " + "; ".join(per_seed) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", help="study TOML (model, image set, evaluator, constraints, space)")
    ap.add_argument("--samplers", default="random,tpe,nsga2,deap-nsga2,joint")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--at", default="20,40,60", help="hypervolume after these many finished trials")
    ap.add_argument("--population-size", type=int, default=10, help="for the generational samplers")
    ap.add_argument("--db", default=str(ROOT / "benchmarks" / "bench_samplers.db"))
    ap.add_argument("--versus", default="", help="samplers (as named in --samplers) to give ratios against")
    ap.add_argument("--section", default=SECTION, help="BENCHMARKS.md section to write")
    ap.add_argument("--from-db", action="store_true",
                    help="only read the finished studies in --db (runs split over processes) and print the table")
    ap.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    args = ap.parse_args()

    from tuner.study.context import StudyContext
    from tuner.study.spec import load_spec

    spec = load_spec(args.study)
    samplers = [s for s in args.samplers.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    at = sorted(int(n) for n in args.at.split(",") if n)
    t0 = time.perf_counter()
    context = None if args.from_db else StudyContext.build(spec, None, progress=sys.stderr.isatty(),
                                                           log=lambda m: print(m, file=sys.stderr))
    print(f"context built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    rows = {}
    plan = []
    for label in samplers:
        sampler, _, mode = label.partition(":")
        if mode not in ("", "warm", "cold"):
            sys.exit(f"bench_samplers: {label}: the suffix must be :warm or :cold")
        warm = spec.sampler.warm_start if mode == "" else mode == "warm"
        generational = sampler in ("nsga2", "nsga3") or sampler.startswith("deap-") or sampler == "joint"
        options = {"population_size": args.population_size} if generational else {}
        plan.append((label, sampler, warm, options))
        rows[label] = {"hv": {n: [] for n in at}, "overhead": []}
    # Seeds outside, samplers inside: a slow spell of a shared CPU falls on every sampler alike.
    for seed in seeds:
        for label, sampler, warm, options in plan:
            t = time.perf_counter()
            if args.from_db:
                out = read_one(spec, seed, Path(args.db), label.replace(":", "-"))
            else:
                out = run_one(spec, context, sampler, seed, max(at), Path(args.db), options, warm=warm,
                              label=label.replace(":", "-"))
            baseline = out["study"].user_attrs["baseline"]  # every run stored the one shared baseline
            for n in at:
                rows[label]["hv"][n].append(hypervolume_after(out["study"], out["spec"], baseline, n))
            rows[label]["overhead"].append(out["summary"].get("overhead_share", 0.0))
            print(f"{label} seed {seed}: " + ", ".join(f"HV@{n}={rows[label]['hv'][n][-1]:.4f}" for n in at)
                  + f" ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)

    command = "flock /tmp/bench.lock python benchmarks/bench_samplers.py " + " ".join(sys.argv[1:])
    versus = [v for v in args.versus.split(",") if v]
    table = format_table(rows, at, seeds, versus)
    print(table)
    if args.write:
        write_section(args.section, f"{args.section}\n\nCommand: `{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()

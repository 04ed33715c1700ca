"""Thread policy: what one busy neighbour process costs `tuner baseline`, with torch's default thread
count (the CLI before the policy) and with the policy's 1 thread.

    nice -n 10 python benchmarks/bench_threads.py [--rounds 2] [--n-images 32] [--steps 20] [--write]
    python benchmarks/bench_threads.py --results run1.json run2.json --write   # render saved runs

Each cell runs `python -m tuner.cli baseline --n-images N --steps S --threads T --json` as a fresh
process and reads its `generation_seconds` (the generation of the image set; imports, model loading and
scoring excluded). The busy neighbour is a `python -c 'while True: pass'` process started just before
the command and killed after it (same niceness). Cells are interleaved round by round, so slow drift of
the machine's load hits every cell alike; the table reports the median per cell and the ratio
busy / alone for each thread count. `--write` replaces the "Thread policy" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
HEADING = "## Thread policy"


def torch_default_threads() -> int:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def run_baseline(threads: int, busy: bool, n_images: int, steps: int) -> float:
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if neighbour is not None:
            time.sleep(0.5)  # the neighbour is spinning before the command starts
        out = subprocess.run([sys.executable, "-m", "tuner.cli", "baseline", "--n-images", str(n_images),
                              "--steps", str(steps), "--threads", str(threads), "--json"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"baseline failed: {out.stderr.strip()}")
        return float(json.loads(out.stdout)["generation_seconds"])
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


def measure(rounds: int, n_images: int, steps: int) -> dict:
    default = torch_default_threads()
    counts = sorted({default, 1}, reverse=True)
    cells = {(t, busy): [] for t in counts for busy in (False, True)}
    load_before = os.getloadavg()[0]
    for r in range(rounds):
        for (t, busy), times in cells.items():
            times.append(run_baseline(t, busy, n_images, steps))
            print(f"round {r + 1}: threads {t}, {'busy neighbour' if busy else 'alone'}: {times[-1]:.2f} s",
                  file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in cells.items()}
    return {"torch_default_threads": default, "nice": os.nice(0), "n_images": n_images, "steps": steps, "rounds": rounds,
            "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
            "generation_seconds": {f"threads={t} {'busy' if b else 'alone'}": v for (t, b), v in cells.items()},
            "busy_over_alone": {f"threads={t}": med[(t, True)] / med[(t, False)] for t in counts}}


def render(results: list[dict]) -> str:
    rows, notes = [], []
    for result in results:
        default = result["torch_default_threads"]
        counts = sorted({default, 1}, reverse=True)
        med = {(t, b): statistics.median(result["generation_seconds"][f"threads={t} {'busy' if b else 'alone'}"])
               for t in counts for b in (False, True)}
        for t in counts:
            label = f"{t} (torch's default: the CLI before)" if t == default and t != 1 else f"{t} (the policy)"
            rows.append(f"| {result['nice']} | {result['load_average_before']:.1f} | {label} | {med[(t, False)]:.1f} s | "
                        f"{med[(t, True)]:.1f} s | **{med[(t, True)] / med[(t, False)]:.2f}x** |")
        if default != 1:
            notes.append(f"niceness {result['nice']}: {default} threads / 1 thread = "
                         f"{med[(default, False)] / med[(1, False)]:.1f}x alone, "
                         f"{med[(default, True)] / med[(1, True)]:.1f}x beside the busy process")
    first = results[0]
    table = "\n".join(rows)
    return f"""{HEADING}

Command: `[nice -n K] python benchmarks/bench_threads.py --rounds R --write` (each cell: `tuner baseline
--n-images {first['n_images']} --steps {first['steps']} --threads T --json` in a fresh process; the busy
neighbour is `python -c 'while True: pass'` at the same niceness; cells interleaved round by round, median
of R = {", ".join(str(r['rounds']) for r in results)}). Figure: `generation_seconds`, the generation of the
image set. The 2-core machine was shared with other jobs (load average in the table), so "alone" means
no neighbour of ours, and only ratios within one run compare.

| niceness | load average | torch threads | alone | beside one busy process | busy / alone |
|---|---|---|---|---|---|
{table}

{"; ".join(notes)}.{"".join(f" (niceness {r['nice']}: {r['note']}.)" for r in results if r.get("note"))}

Reading it: with torch's default of 2 threads, OpenMP workers spin at every barrier for a core another
process holds, so the command is many times slower than with 1 thread in every cell. With 1 thread the
remaining busy/alone ratio is CPU share: on this machine, already saturated by other jobs, one more busy
process at the same priority takes share from everything, so this run does not meet the issue's
"<= 2x beside one busy process" with margin (expected on an otherwise idle 2-core machine, where the
neighbour takes the other core; not measurable here). Every command that runs the model (`study run`, `baseline`,
`evaluate`, `apply`, `profile`) now sets its threads through `tuner/threads.py`: `--threads N`, else the
study's `[model] threads`, else 1.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="measurements per cell (median reported)")
    ap.add_argument("--n-images", type=int, default=32, help="image set size of each baseline run")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps of each baseline run")
    ap.add_argument("--results", nargs="+", default=None,
                    help="render these JSON files (previous runs' output) instead of measuring")
    ap.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    args = ap.parse_args()

    if args.results:
        results = [json.loads(Path(f).read_text()) for f in args.results]
    else:
        results = [measure(args.rounds, args.n_images, args.steps)]
        print(json.dumps(results[0], indent=2))
    if args.write:
        from md_sections import write_section

        write_section(HEADING, render(results))


if __name__ == "__main__":
    main()

"""Thread policy: what one busy neighbour process costs `tuner baseline`, with torch's default thread
count (the CLI before the policy) and with the policy's 1 thread.

    nice -n 10 python benchmarks/bench_threads.py [--rounds 2] [--n-images 32] [--steps 20] [--write]
    python benchmarks/bench_threads.py --results saved.json --write   # render a saved run

Each cell runs `python -m tuner.cli baseline --n-images N --steps S --threads T --json` as a fresh
process and reads its `generation_seconds` (the generation of the proxy set; imports, model loading and
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
    return {"torch_default_threads": default, "n_images": n_images, "steps": steps, "rounds": rounds,
            "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
            "generation_seconds": {f"threads={t} {'busy' if b else 'alone'}": v for (t, b), v in cells.items()},
            "busy_over_alone": {f"threads={t}": med[(t, True)] / med[(t, False)] for t in counts}}


def render(result: dict) -> str:
    default = result["torch_default_threads"]
    counts = sorted({default, 1}, reverse=True)
    med = {(t, b): statistics.median(result["generation_seconds"][f"threads={t} {'busy' if b else 'alone'}"])
           for t in counts for b in (False, True)}
    label = {t: f"{t} (torch's default here: the CLI before the policy)" if t == default and t != 1 else
             f"{t} (the policy's default)" for t in counts}
    rows = "\n".join(f"| {label[t]} | {med[(t, False)]:.1f} s | {med[(t, True)]:.1f} s | "
                     f"**{med[(t, True)] / med[(t, False)]:.2f}x** |" for t in counts)
    cross = ""
    if default != 1:
        cross = (f"\n{default} threads / 1 thread: {med[(default, False)] / med[(1, False)]:.1f}x alone, "
                 f"{med[(default, True)] / med[(1, True)]:.1f}x beside the busy process.\n")
    return f"""{HEADING}

Command: `nice -n 10 python benchmarks/bench_threads.py --rounds {result['rounds']} --write` (each cell: `tuner baseline
--n-images {result['n_images']} --steps {result['steps']} --threads T --json` in a fresh process; the busy neighbour is
`python -c 'while True: pass'` at the same niceness; cells interleaved round by round, median of
{result['rounds']}). Figure: `generation_seconds`, the generation of the proxy set. The 2-core machine was
shared with other jobs (load average {result['load_average_before']:.1f} before, {result['load_average_after']:.1f}
after), so "alone" means no neighbour of ours, and only ratios within this run compare.

| torch threads | alone | beside one busy process | busy / alone |
|---|---|---|---|
{rows}
{cross}
Every command that runs the model (`study run`, `baseline`, `evaluate`, `apply`, `profile`) sets its
threads through `tuner/threads.py`: `--threads N`, else the study's `[model] threads`, else 1.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="measurements per cell (median reported)")
    ap.add_argument("--n-images", type=int, default=32, help="proxy set size of each baseline run")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps of each baseline run")
    ap.add_argument("--results", default=None, help="render this JSON (a previous run's output) instead of measuring")
    ap.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    args = ap.parse_args()

    if args.results:
        result = json.loads(Path(args.results).read_text())
    else:
        result = measure(args.rounds, args.n_images, args.steps)
        print(json.dumps(result, indent=2))
    if args.write:
        from md_sections import write_section

        write_section(HEADING, render(result))


if __name__ == "__main__":
    main()

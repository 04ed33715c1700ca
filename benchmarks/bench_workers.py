"""Workers and storage backends: trials per hour with 1, 2 and 4 workers, SQLite vs PostgreSQL, and
the storage bookkeeping each trial costs.

    .ci/with-postgres nice -n 10 python benchmarks/bench_workers.py [--n-trials 12] [--workers 1,2,4] [--write]

(.ci/with-postgres starts a throwaway PostgreSQL server and names it in TUNER_TEST_POSTGRES_URL; without
it only SQLite is measured.)

Part 1, throughput: `tuner study run studies/quick.toml --workers K --n-trials N` on a fresh storage
(the real model: 8 images x 10 steps, 1 torch thread per worker), K and backend interleaved in one run.
Two rates: end to end (N / the command's wall time: start-up, per-worker setup and trials), and steady
state (N / the span from the first trial's start to the last one's end, from the trials' timestamps).

Part 2, bookkeeping per trial: the same runner with the fault tests' stand-in model (tests/fault_worker.py,
trials of zero length, so everything measured is sampler + storage + budget + heartbeat + snapshots),
1 worker and M trials; and plain Optuna (`study.optimize`, random sampler, an objective writing the same
two parameters and four attributes) on the same backend for comparison.

`--write` puts the tables under `## Workers and storage backends` in BENCHMARKS.md; raw numbers go to
benchmarks/results/workers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from md_sections import write_section  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Workers and storage backends"
RESULTS = ROOT / "benchmarks" / "results" / "workers.json"
PG_ENV = "TUNER_TEST_POSTGRES_URL"


def fresh_storage(backend: str, folder: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{folder / f'{uuid.uuid4().hex[:8]}.db'}"
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(os.environ[PG_ENV])
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.set(database=name).render_as_string(hide_password=False)


def study_toml(folder: Path, url: str, source: Path) -> Path:
    text = source.read_text()
    path = folder / f"{uuid.uuid4().hex[:8]}.toml"
    path.write_text(text.replace('name = "quick"', f'name = "quick"\nstorage = "{url}"', 1))
    return path


def trial_span(url: str, name: str) -> tuple[float, int]:
    import optuna

    from tuner.storage.budget import counted_trials
    from tuner.storage.database import driver_url

    study = optuna.load_study(study_name=name, storage=driver_url(url))
    trials = counted_trials(study)
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    return (end - start).total_seconds(), len(trials)


def throughput(backend: str, k: int, n: int, folder: Path) -> dict:
    url = fresh_storage(backend, folder)
    toml = study_toml(folder, url, ROOT / "studies" / "quick.toml")
    cmd = [sys.executable, "-m", "tuner.cli", "study", "run", str(toml), "--workers", str(k), "--n-trials", str(n),
           "--json", "--no-progress"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{backend} x{k} failed: {out.stderr[-2000:]}")
    span, counted = trial_span(url, "quick")
    assert counted == n, (counted, n)
    return {"backend": backend, "workers": k, "n_trials": n, "wall_s": wall, "span_s": span,
            "per_hour_end_to_end": 3600 * n / wall, "per_hour_steady": 3600 * n / span}


def bookkeeping(backend: str, m: int, folder: Path) -> dict:
    """Tuner's per-trial cost with zero-length trials, and plain Optuna's on the same backend."""
    url = fresh_storage(backend, folder)
    toml = folder / f"{uuid.uuid4().hex[:8]}.toml"
    toml.write_text(f'name = "faults"\nn_trials = {m}\nseed = 0\nsnapshot_every = 10\nstorage = "{url}"\n'
                    '[model]\ndevice = "cpu"\n[sampler]\nname = "random"\n[space.tome]\nratio = [0.2, 0.6]\n')
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "fault_worker.py"), "study", "run", str(toml), "--json"],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT), FAULT_TRIAL_S="0"))
    if out.returncode != 0:
        raise SystemExit(f"bookkeeping {backend} failed: {out.stderr[-2000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    span, _ = trial_span(url, "faults")

    import optuna

    from tuner.storage.database import driver_url, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plain_url = fresh_storage(backend, folder)
    study = optuna.create_study(study_name="plain", storage=open_storage(driver_url(plain_url)),
                                directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    def same_writes(t):  # what the stand-in trial writes: two parameters, four user attributes
        t.suggest_categorical("tome", ["tome"])
        x = t.suggest_float("x", 0.2, 0.6)
        for key in ("config", "seconds_per_image", "fid", "trial_seconds"):
            t.set_user_attr(key, x)
        return x, 1.0

    t0 = time.perf_counter()
    study.optimize(same_writes, n_trials=m)
    plain = time.perf_counter() - t0
    return {"backend": backend, "n_trials": m, "tuner_ms_per_trial": 1000 * span / m,
            "tuner_run_overhead_ms_per_trial": 1000 * summary["overhead_seconds"] / m,
            "optuna_ms_per_trial": 1000 * plain / m}


def render(data: dict, command: str) -> str:
    rows = data["throughput"]
    base = {r["workers"]: r for r in rows if r["backend"] == "sqlite"}
    ref = base.get(1)
    lines = [SECTION, "", f"Command: `{command}` ({data['cpus']} CPU cores, load average at the start "
             f"{data['load']:.1f}; commit {data['commit']}).", "",
             f"Quick study (`studies/quick.toml`, {rows[0]['n_trials']} trials, 1 torch thread per worker), fresh "
             "storage per row, rows interleaved. Ratios against 1 worker on SQLite from the same run.", "",
             "| backend | workers | wall (s) | trials/hour end to end | ratio | trials/hour steady | ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        e = r["per_hour_end_to_end"] / ref["per_hour_end_to_end"] if ref else float("nan")
        s = r["per_hour_steady"] / ref["per_hour_steady"] if ref else float("nan")
        lines.append(f"| {r['backend']} | {r['workers']} | {r['wall_s']:.1f} | {r['per_hour_end_to_end']:.0f} | "
                     f"{e:.2f}x | {r['per_hour_steady']:.0f} | {s:.2f}x |")
    lines += ["", f"This machine has {data['cpus']} cores, shared with other jobs while this ran (load average "
              f"{data['load']:.1f}). With one torch thread per worker, 2 workers can at most double the rate of "
              "one on an idle machine, and a 3rd or 4th worker has no core of its own: what 4 workers gain over 2 "
              "here is a larger share of the contended cores taken from the other jobs, not scaling. End to end "
              "the rate is flat: with 12 trials, each worker's own start-up and setup (model, baseline images "
              "and timing, Jaccard profile), run concurrently on the same cores, dominate the wall time; the "
              "steady rate (first trial start to last trial end) is what more trials converge to. With K free "
              "cores, or K GPUs (`--workers K` puts worker i on GPU i mod K), the steady rate grows with K until "
              "the storage's per-trial cost below matters.",
              "", "Bookkeeping per trial with zero-length trials (1 worker, random sampler): the tuner runner "
              "(budget slot, trial created with its worker and slot, done-marking, tell, reclaim check, "
              "heartbeat, snapshots) against plain Optuna `study.optimize` on the same backend.", "",
              "| backend | trials | tuner ms/trial | tuner − Optuna | plain Optuna ms/trial |",
              "|---|---|---|---|---|"]
    for r in data["bookkeeping"]:
        lines.append(f"| {r['backend']} | {r['n_trials']} | {r['tuner_ms_per_trial']:.1f} | "
                     f"{r['tuner_ms_per_trial'] - r['optuna_ms_per_trial']:+.1f} | "
                     f"{r['optuna_ms_per_trial']:.1f} |")
    one = {r["backend"]: 3600e3 / r["per_hour_steady"] for r in rows if r["workers"] == 1}
    shares = [f"{r['backend']}: {r['tuner_ms_per_trial'] / one[r['backend']]:.1%} of a trial, "
              f"{(r['tuner_ms_per_trial'] - r['optuna_ms_per_trial']) / one[r['backend']]:.1%} beyond Optuna's own"
              for r in data["bookkeeping"] if r["backend"] in one]
    if shares:
        lines += ["", "Against the quick study's trial at 1 worker (its steady cycle time above), the bookkeeping is "
                  + "; ".join(shares) + ". Most of it is commits (SQLite syncs the file on each one; Optuna "
                  "itself commits every parameter and attribute separately)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-trials", type=int, default=12)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--bookkeeping-trials", type=int, default=40)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--from-results", action="store_true", help=f"render {RESULTS.name} instead of measuring")
    args = ap.parse_args()
    command = (".ci/with-postgres nice -n 10 python benchmarks/bench_workers.py "
               f"--n-trials {args.n_trials} --workers {args.workers}")
    if args.from_results:
        text = render(json.loads(RESULTS.read_text()), command)
        print(text)
        if args.write:
            write_section(SECTION, text)
        return
    backends = ["sqlite"] + (["postgres"] if os.environ.get(PG_ENV) else [])
    ks = [int(k) for k in args.workers.split(",")]
    data = {"cpus": os.cpu_count(), "load": os.getloadavg()[0],
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=ROOT).stdout.strip(), "throughput": [], "bookkeeping": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for backend in backends:
            data["bookkeeping"].append(bookkeeping(backend, args.bookkeeping_trials, folder))
            print(json.dumps(data["bookkeeping"][-1]), flush=True)
        for k in ks:  # interleaved: every worker count on each backend before the next count
            for backend in backends:
                data["throughput"].append(throughput(backend, k, args.n_trials, folder))
                print(json.dumps(data["throughput"][-1]), flush=True)
    RESULTS.write_text(json.dumps(data, indent=1))
    text = render(data, command)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()

"""`tuner study run STUDY.toml --workers K`: K worker processes of one study on this host.

Each worker is an ordinary `tuner study run` process, the same one that runs on other hosts against a
shared PostgreSQL storage; the budget and the heartbeats make them cooperate (budget.py, heartbeat.py).
This process only starts them, relays their progress and stops them:
- with CUDA, worker i sees GPU i mod #GPUs alone (`CUDA_VISIBLE_DEVICES`, chosen among the GPUs already
  visible), so a 4-GPU machine evaluates 4 trials at once; a device list (`cuda:0,cuda:2`) spreads them
  over those GPUs, an explicit `cuda:N` keeps them all on GPU N, with a warning when workers share one;
- progress: each worker's per-trial line on stderr, prefixed with its number; the `[done/n]` count in
  those lines is study-wide (from the shared budget), and on a terminal one bar shows it;
- Ctrl-C, SIGTERM or SIGHUP here is forwarded (the same signal) to every worker, which gives its running trial back and exits;
  a worker still running STOP_TIMEOUT_S later is killed, and its trial is reclaimed by heartbeat later.
Workers run in their own process groups, so a Ctrl-C at the terminal reaches them once, through here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from tuner import signals
from tuner.errors import TunerError

STOP_TIMEOUT_S = 30.0
WORKER_DEVICE_ENV = "TUNER_DEVICE"  # the device a worker of a device list runs on (read by StudySpec)
MAX_WORKERS = 256
PROGRESS_RE = re.compile(r"^\[(\d+)/(\d+)\] ")  # what `progress_line` writes


def progress_line(done: int, total: int, text: str) -> str:
    """A worker's per-trial log line (study-wide count first); `progress_count` reads the count back."""
    return f"[{done}/{total}] {text}"


def progress_count(line: str) -> int | None:
    """The study-wide count of a worker's `progress_line`, None for any other line."""
    m = PROGRESS_RE.match(line)
    return int(m.group(1)) if m else None


def gpu_assignment(k: int, visible: str | None, n_gpus: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each of k workers: worker i gets the (i mod #GPUs)-th GPU of those this
    process sees (`visible`, the current CUDA_VISIBLE_DEVICES, or all n_gpus). None: leave it alone."""
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        devices = [str(i) for i in range(n_gpus)]
    if not devices:
        return [None] * k
    return [devices[i % len(devices)] for i in range(k)]


def _gpu_count(spec, cuda=None) -> int:
    """GPUs the workers may spread over when `model.device` leaves the choice open ("cuda" or unset); 0 on
    the CPU. An explicit `cuda:N` or a device list is assigned by `worker_gpus` instead."""
    devices = spec.model.devices
    if devices[:1] == ["cpu"]:
        return 0
    import torch

    cuda = cuda or torch.cuda
    return cuda.device_count() if cuda.is_available() else 0


def worker_gpus(devices: list[str], k: int, visible: str | None, n_gpus: int) -> tuple[list[dict], str | None]:
    """The environment of each of k workers, and a warning when workers would share a GPU.
    - `cuda:N`: every worker runs on GPU N, as the study says (environment untouched);
    - a device list (`cuda:0,cuda:2`): worker i sees the (i mod len)-th listed GPU alone, as its `cuda:0`
      (CUDA_VISIBLE_DEVICES mapped through the current one, and TUNER_DEVICE);
    - `cuda` or unset: worker i gets GPU i mod #GPUs (gpu_assignment); nothing on the CPU."""
    explicit = [d for d in devices if d.startswith("cuda:")]
    if len(devices) == 1 and explicit:
        warn = (f"{k} workers share one GPU ({devices[0]}); list GPUs (device = [\"cuda:0\", \"cuda:1\"]) or use "
                f"device = \"cuda\" to give each its own") if k > 1 else None
        return [{} for _ in range(k)], warn
    if len(devices) > 1:
        shown = [d.strip() for d in visible.split(",") if d.strip()] if visible is not None else None
        ids = [d.split(":")[1] for d in devices]
        ids = [shown[int(i)] if shown is not None and int(i) < len(shown) else i for i in ids]
        envs = [{"CUDA_VISIBLE_DEVICES": ids[i % len(ids)], WORKER_DEVICE_ENV: "cuda:0"} for i in range(k)]
        warn = f"{k} workers share {len(ids)} listed GPUs" if k > len(ids) else None
        return envs, warn
    gpus = gpu_assignment(k, visible if n_gpus else None, n_gpus)
    envs = [{"CUDA_VISIBLE_DEVICES": g} if g is not None else {} for g in gpus]
    n_distinct = len({g for g in gpus if g is not None})
    warn = f"{k} workers share {n_distinct} GPU(s)" if n_distinct and k > n_distinct else None
    return envs, warn


def worker_command() -> list[str]:
    """How a worker process is started (the tests substitute a stand-in model)."""
    return [sys.executable, "-m", "tuner.cli"]


def run_workers(spec, k: int, n_trials: int | None = None, progress: bool = False, log=print) -> dict:
    """Start k workers on spec.path, wait for all of them, return the summed summary."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_WORKERS:
        raise TunerError(f"--workers={k!r} is out of range (1..{MAX_WORKERS})")
    envs, warn = worker_gpus(spec.model.devices, k, os.environ.get("CUDA_VISIBLE_DEVICES"), _gpu_count(spec))
    gpus = [e.get("CUDA_VISIBLE_DEVICES") for e in envs]
    cmd = worker_command() + ["study", "run", str(spec.path), "--json", "--no-progress"]
    if n_trials is not None:
        cmd += ["--n-trials", str(n_trials)]
    if spec.model.threads is not None:  # a --threads override reaches every worker
        cmd += ["--threads", str(spec.model.threads)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_trials or spec.n_trials, desc=f"study {spec.name} ({k} workers)", unit="trial",
                   dynamic_ncols=True)
    say = bar.write if bar is not None else log
    if warn is not None:
        say(f"tuner: warning: {warn}")
    t0 = time.perf_counter()
    procs, outputs, readers = [], [], []
    for i, gpu in enumerate(gpus):
        env = {**os.environ, **envs[i]}
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
        procs.append(p)
        outputs.append({"stdout": [], "stderr": []})
        for stream in ("stdout", "stderr"):
            t = threading.Thread(target=_relay, args=(p, stream, outputs[i][stream], i, say, bar), daemon=True)
            t.start()
            readers.append(t)
        say(f"worker {i}: pid {p.pid}" + (f", GPU {gpu}" if gpu is not None else ""))

    interrupted = None
    try:
        with signals.raise_on_signals():
            while any(p.poll() is None for p in procs):
                time.sleep(0.2)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM or SIGHUP: the same signal to every worker
        interrupted = e
        say(f"stopping {sum(p.poll() is None for p in procs)} worker(s)")
        _stop(procs, signals.signum_of(e))
    finally:
        for t in readers:
            t.join(timeout=5)
        if bar is not None:
            bar.close()
    if interrupted is not None:
        raise signals.Interrupted(signals.signum_of(interrupted))
    return _summarize(spec, procs, outputs, gpus, time.perf_counter() - t0)


def _relay(p, stream: str, sink: list, i: int, say, bar) -> None:
    for line in getattr(p, stream):
        line = line.rstrip("\n")
        sink.append(line)
        if stream == "stderr":
            count = progress_count(line)
            if bar is not None and count is not None:
                bar.n = max(bar.n, count)
                bar.refresh()
            say(f"worker {i}: {line}")


def _stop(procs, signum: int = signal.SIGINT) -> None:
    """The stop signal to every worker (each gives its trial back and exits), SIGKILL after STOP_TIMEOUT_S."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signum)
    t_end = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        try:
            p.wait(timeout=max(0.0, t_end - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _read_only_study(spec):
    """(study, storage) opened read-only, straight from the storage (this room never imports the runner)."""
    import optuna

    from tuner.storage.database import open_storage, study_exists

    if not study_exists(spec.storage, spec.name):
        raise TunerError(f"study '{spec.name}' does not exist")
    storage = open_storage(spec.storage, spec.name, read_only=True)
    try:
        return optuna.load_study(study_name=spec.name, storage=storage), storage
    except Exception as e:  # deleted meanwhile, or unreadable: the caller reports what it can
        storage.engine.dispose()
        raise TunerError(str(e)) from None


def study_finished(spec, n_trials: int) -> bool:
    """Does the study hold its n_trials counted trials (read-only)?"""
    from tuner.storage.budget import counted_trials

    try:
        study, storage = _read_only_study(spec)
    except TunerError:
        return False
    try:
        return len(counted_trials(study)) >= n_trials
    finally:
        storage.engine.dispose()


def dead_worker_line(spec, i: int, p) -> str:
    """`worker 1 (pid 123) was killed by SIGKILL; its trial 4 was reclaimed and redone by the others`."""
    code = p.returncode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
        else f"exited with {code}"
    try:
        study, storage = _read_only_study(spec)
        try:
            mine = f"(pid {p.pid})"
            lost = [t.number for t in study.get_trials(deepcopy=False)
                    if mine in str(t.user_attrs.get("fail_reason", "")) and "abandoned" in str(t.user_attrs.get("fail_reason"))]
        finally:
            storage.engine.dispose()
    except TunerError:
        lost = []
    what = (f"its trial(s) {', '.join(map(str, lost))} were reclaimed and redone by the others" if lost
            else "it held no trial")
    return f"worker {i} (pid {p.pid}) {how}; {what}"


def _summarize(spec, procs, outputs, gpus, wall: float) -> dict:
    summaries, failed = [], []
    for i, (p, out) in enumerate(zip(procs, outputs)):
        try:
            summaries.append(json.loads(out["stdout"][-1]) if out["stdout"] else None)
        except json.JSONDecodeError:
            summaries.append(None)
        if p.returncode != 0:
            last = next((line for line in reversed(out["stderr"]) if line.strip()), "no output")
            failed.append(f"worker {i} exited with {p.returncode}: {last}")
    done = [s for s in summaries if s]
    dead = [i for i, p in enumerate(procs) if p.returncode != 0]
    finished = study_finished(spec, done[0]["n_trials"] if done else spec.n_trials) if dead else True
    if failed and not finished:  # the study itself did not finish: that is a failure
        raise TunerError("; ".join(failed))
    states: dict = {}
    for s in done:
        for name, n in (s.get("states") or {}).items():
            states[name] = states.get(name, 0) + n
    summary = {"study": spec.name, "n_trials": done[0]["n_trials"] if done else spec.n_trials, "workers": len(procs),
               "trials_run": sum(s.get("trials_run", 0) for s in done),
               "abandoned": sum(s.get("abandoned", 0) for s in done), "states": states,
               "seeds": sorted(s["seed"] for s in done if "seed" in s),
               "finished_in_study": max((s.get("finished_in_study", 0) for s in done), default=0),
               "wall_seconds": wall}
    if dead:  # the survivors finished the study: say who died and what was taken over
        summary["dead_workers"] = [dead_worker_line(spec, i, procs[i]) for i in dead]
    if any(g is not None for g in gpus):
        summary["gpus"] = gpus
    if done:  # the front as the worker that saw the most trials reported it
        last = max(done, key=lambda s: s.get("finished_in_study", 0))
        summary.update({k: last[k] for k in ("front_size", "hypervolume") if k in last})
    return summary

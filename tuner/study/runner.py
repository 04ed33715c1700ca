"""Run or resume a study until it holds exactly n_trials finished trials (complete, pruned or failed),
with any number of processes on the same storage.

Per process: open storage -> create or load the study -> check it matches the TOML -> build the
StudyContext once -> loop { take a budget slot -> ask -> objective -> tell } -> snapshot every k trials
and at the end. The ask/tell loop (instead of `study.optimize` + `MaxTrialsCallback`) lets a process
reserve its slot *before* a trial exists, so two processes never overshoot (see storage.Budget).

Ctrl-C: the running trial is told FAIL with `fail_reason = "interrupted"` and its slot is given back,
so a resumed run redoes it; database writes run with SIGINT deferred, so no write is cut in half.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
import time
import warnings
from dataclasses import asdict

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from tuner.errors import TrialFailed, TunerError
from tuner.study import pareto
from tuner.study.context import BASELINE_ATTR
from tuner.study.objective import TrialObjective
from tuner.study.spec import StudySpec
from tuner.study.storage import Budget, open_storage

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
FINGERPRINT_ATTR = "spec_fingerprint"
RUN_SEED_STRIDE = 7919  # later processes/resumes get seed + k*stride: no duplicate random streams


def spec_fingerprint(spec: StudySpec) -> dict:
    """What must not change between runs of one study (n_trials, sampler and snapshot cadence may)."""
    parts = {"objectives": list(spec.objectives), "model": {k: v for k, v in asdict(spec.model).items() if k != "threads"}, "proxy_set": asdict(spec.proxy_set),
             "evaluator": asdict(spec.evaluator), "constraints": asdict(spec.constraints),
             "profile": asdict(spec.profile), "space": spec.space}
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:12]
            for k, v in parts.items()}


@contextlib.contextmanager
def deferred_sigint():
    """Hold Ctrl-C until the block ends (only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = signal.signal(signal.SIGINT, lambda *a: pending.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            raise KeyboardInterrupt


def open_study(spec: StudySpec, create: bool = True) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    from tuner.study.storage import study_exists

    if not create and not study_exists(spec.storage, spec.name):
        raise TunerError(f"study '{spec.name}' does not exist in {spec.storage} (run `tuner study run` first)")
    storage = open_storage(spec.storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=spec.name, directions=spec.directions,
                                load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=spec.seed))
    if len(study.directions) != len(spec.directions):
        raise TunerError(f"study '{spec.name}' in the storage has {len(study.directions)} objectives, "
                         f"the TOML asks for {len(spec.directions)}; use a new study name")
    return study, storage


def check_fingerprint(study: optuna.Study, spec: StudySpec) -> None:
    new = spec_fingerprint(spec)
    old = study.user_attrs.get(FINGERPRINT_ATTR)
    if old is None:
        study.set_user_attr(FINGERPRINT_ATTR, new)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(spec.metric_names)
        return
    changed = sorted(k for k in new if old.get(k) != new[k])
    if changed:
        raise TunerError(f"study '{spec.name}' was started with different {', '.join(changed)}; trials would not "
                         "be comparable: restore the TOML or use a new study name")


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_study(spec: StudySpec, context=None, progress: bool = True, log=print, pipe=None) -> dict:
    """Run until the study holds spec.n_trials budgeted trials. Returns a summary with timings."""
    t_start = time.perf_counter()
    if pipe is None and context is None:
        from tuner.proxy.model import resolve_device

        try:  # before the database exists: a study that cannot run here must not be created
            resolve_device(spec.model.device)
        except TunerError as e:
            raise TunerError(f"model.device: {e}") from None
    with deferred_sigint():
        study, storage = open_study(spec)
        check_fingerprint(study, spec)
        budget = Budget(storage, spec.name)
        reclaimed = budget.reclaim_abandoned(study)
    if reclaimed:
        log(f"reclaimed {reclaimed} trial(s) abandoned by dead processes")
    summary = {"study": spec.name, "storage": spec.storage, "n_trials": spec.n_trials, "run_index": budget.run_index,
               "trials_run": 0, "setup_seconds": 0.0, "eval_seconds": 0.0}
    if budget.spent() >= spec.n_trials:
        log(f"study '{spec.name}' already holds {budget.spent()} of {spec.n_trials} trials; nothing to run")
        return _finish(summary, study, spec, storage, t_start, None, snapshot_now=False)

    if spec.model.threads is not None:
        import torch

        torch.set_num_threads(spec.model.threads)
    if context is None:
        from tuner.study.context import StudyContext

        context = StudyContext.build(spec, study, progress=progress, pipe=pipe, log=log)
    summary["setup_seconds"] = context.setup_seconds
    context.record(study)  # a context built elsewhere (tests, notebooks, benchmarks) has not stored it yet
    from tuner.samplers import build_sampler

    seed = spec.seed + RUN_SEED_STRIDE * budget.run_index
    study.sampler = build_sampler(spec.sampler.name, context.space, seed, spec.sampler.options or None)
    if spec.sampler.warm_start and not study.get_trials(deepcopy=False):
        # known configurations first (at most half the budget): the baseline, each paper's defaults, fewer steps
        for params in context.space.warm_start(limit=max(1, spec.n_trials // 2)):
            study.enqueue_trial(params, skip_if_exists=True)
    objective = TrialObjective(context, spec)

    bar = tqdm(total=spec.n_trials, initial=budget.spent(), desc=f"study {spec.name}", unit="trial",
               disable=not progress, dynamic_ncols=True)
    try:
        while True:
            with deferred_sigint():
                slot = budget.take(spec.n_trials)
                if slot is None:
                    break
                trial = study.ask()
                budget.bind(slot, trial.number)
            state = _run_one(study, trial, objective, budget, slot)
            summary["trials_run"] += 1
            summary.setdefault("states", {}).setdefault(state.name, 0)
            summary["states"][state.name] += 1
            spent = budget.spent()
            bar.n = min(spent, spec.n_trials)
            bar.set_postfix_str(f"#{trial.number} {state.name.lower()}")
            bar.refresh()
            if not progress:  # no bar (not a terminal, or turned off): one line per trial instead
                log(f"[{min(spent, spec.n_trials)}/{spec.n_trials}] {_trial_line(trial, state, spec)}")
            if spent % spec.snapshot_every == 0:
                with deferred_sigint():
                    pareto.snapshot(study, spec, storage.engine)
    finally:
        bar.close()
        summary["eval_seconds"] = objective.eval_seconds
    return _finish(summary, study, spec, storage, t_start, objective)


def _run_one(study: optuna.Study, trial: optuna.Trial, objective: TrialObjective, budget: Budget,
             slot: int) -> TrialState:
    t0 = time.perf_counter()
    try:
        values = objective(trial)
    except optuna.TrialPruned:
        with deferred_sigint():
            study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except TrialFailed as e:
        with deferred_sigint():
            trial.set_user_attr("fail_reason", str(e))
            study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    except KeyboardInterrupt:
        with deferred_sigint():
            trial.set_user_attr("fail_reason", "interrupted")
            study.tell(trial, state=TrialState.FAIL)
            budget.release(slot)  # the budget does not count it: a resumed run redoes it
        raise
    except BaseException as e:  # a bug: record it, free nothing, stop the study loudly
        with deferred_sigint():
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:500])
            study.tell(trial, state=TrialState.FAIL)
        raise
    with deferred_sigint():
        trial.set_user_attr("trial_seconds", time.perf_counter() - t0)
        study.tell(trial, values)
    return TrialState.COMPLETE


def _trial_line(trial: optuna.Trial, state: TrialState, spec: StudySpec) -> str:
    attrs = trial.user_attrs
    if state == TrialState.COMPLETE:
        values = ", ".join(f"{name} {attrs[pareto.BASELINE_KEYS[name]]:.4g}" for name in spec.objectives)
        return f"trial {trial.number} complete: {values} ({attrs.get('speedup', float('nan')):.2f}x)"
    reason = attrs.get("prune_reason") or attrs.get("fail_reason") or ""
    return f"trial {trial.number} {state.name.lower()}" + (f": {reason}" if reason else "")


def _finish(summary, study, spec, storage, t_start, objective, snapshot_now: bool = True) -> dict:
    from tuner.study.storage import last_snapshot_trials

    if snapshot_now and last_snapshot_trials(storage.engine, spec.name) == count_finished(study):
        snapshot_now = False  # the periodic snapshot after the last trial already holds this front
    if snapshot_now:
        with deferred_sigint():
            data = pareto.snapshot(study, spec, storage.engine)
    else:
        data = pareto.front(study, spec) if study.user_attrs.get(BASELINE_ATTR) else None
    summary["finished_in_study"] = count_finished(study)
    if data is not None:
        summary["front_size"] = len(data["members"])
        summary["hypervolume"] = data["hypervolume"]
    wall = time.perf_counter() - t_start
    summary["wall_seconds"] = wall
    evaluation = summary["setup_seconds"] + summary["eval_seconds"]
    summary["overhead_seconds"] = max(0.0, wall - evaluation)
    summary["overhead_share"] = summary["overhead_seconds"] / wall if wall > 0 else 0.0
    return summary

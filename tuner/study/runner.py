"""Run or resume a study until it holds exactly n_trials counted trials, with any number of worker
processes on any number of hosts sharing one storage.

Per worker: open storage -> create or load the study -> check it matches the TOML and that the budget
tables are intact -> build the StudyContext once -> start the heartbeat -> loop { reclaim trials of dead
workers -> take a budget slot -> ask -> objective -> mark the slot done -> tell } -> snapshot every k
trials and at the end. The ask/tell loop (instead of `study.optimize` + `MaxTrialsCallback`) lets a
worker reserve its slot *before* a trial exists, so workers never overshoot (see tuner/storage/budget.py). A worker
that finds no free slot while others still hold some waits for them, and takes their slots over if
they die (tuner/storage/heartbeat.py): the survivors alone finish the study.

Ctrl-C, SIGTERM, SIGHUP: the running trial is failed with `fail_reason = "abandoned: interrupted (Ctrl-C)"`
(or `(SIGTERM)`, `(SIGHUP)`) and its slot is given back, so a resumed run redoes it; database writes run
with those signals deferred (tuner/signals.py), so no write is cut in half. A storage that goes away
(a server restart) is retried for up to a minute.

Seeds: the sampler of a worker is seeded with `seed + 7919 * k`, k the smallest seed index no other
worker of the study holds, claimed at the worker's first trial. A worker that stops or dies without a
counted trial gives its index back. So the first worker of a study, and a run that resumes a study with
no finished trial, use the study's seed as given; K workers started together get k = 0..K-1; a later
resume gets the next index after those of all workers that have counted trials.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from dataclasses import asdict

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from tuner.errors import TrialFailed, TunerError
from tuner import signals
from tuner.signals import deferred
from tuner.study import pareto
from tuner.storage.budget import FINISHED, Budget, counted_trials, drop_waiting, fail_trial
from tuner.storage.keys import BASELINE_ATTR, FINGERPRINT_ATTR, WARM_START_ATTR
from tuner.study.objective import TrialObjective
from tuner.study.spec import StudySpec
from tuner.storage.workers import progress_line
from tuner.storage.database import damaged, first_line, is_damage, is_transient, open_storage, retrying, shown

RUN_SEED_STRIDE = 7919  # worker k gets seed + k*stride: no duplicate random streams
OPTIONAL_KEYS = ("dtype", "scheduler", "solver", "guidance_scale", "resolution", "batch_size", "prompts_file",
                 "prompts", "reference_images", "clip_model", "max_memory_gb", "race_rungs", "compile", "denoiser",
                 "flow")  # keys added later
NOT_FINGERPRINTED = ("certify_rungs", "certify_budget_images")  # end-of-run work: may change between runs


def spec_fingerprint(spec: StudySpec) -> dict:
    """What must not change between runs of one study (n_trials, sampler and snapshot cadence may)."""
    def unset_dropped(d: dict) -> dict:  # keys added with user models count only when set (old studies resume)
        return {k: v for k, v in d.items() if not (k in OPTIONAL_KEYS and v is None) and k not in NOT_FINGERPRINTED}

    parts = {"objectives": list(spec.objectives),
             "model": unset_dropped({k: v for k, v in asdict(spec.model).items() if k != "threads"}),
             "image_set": unset_dropped(asdict(spec.image_set)),
             "evaluator": unset_dropped(asdict(spec.evaluator)), "constraints": unset_dropped(asdict(spec.constraints)),
             "profile": asdict(spec.profile), "space": spec.space}
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:12]
            for k, v in parts.items()}


def open_study(spec: StudySpec, create: bool = True, read_only: bool | None = None
               ) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """The study and its storage. create=False: the study must exist; it is then opened read-only (what
    `status`, `pareto`, `export` need: nothing is created or written) unless read_only=False."""
    from tuner.storage.database import study_exists

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not create:
        if not study_exists(spec.storage, spec.name):
            raise TunerError(f"study '{spec.name}' does not exist in {shown(spec.storage)} (run `tuner study run` first)")
        storage = open_storage(spec.storage, spec.name, read_only=read_only is not False)
        study = _storage_guard(spec, lambda: optuna.load_study(study_name=spec.name, storage=storage,
                                                               sampler=optuna.samplers.RandomSampler(seed=spec.seed)))
        _storage_guard(spec, lambda: study.get_trials(deepcopy=False))  # reads every trial row: damage shows here
    else:
        storage = open_storage(spec.storage, spec.name)
        _storage_guard(spec, lambda: check_not_orphaned(storage, spec))
        study = _storage_guard(spec, lambda: optuna.create_study(
            storage=storage, study_name=spec.name, directions=spec.directions, load_if_exists=True,
            sampler=optuna.samplers.RandomSampler(seed=spec.seed)))
    if len(study.directions) != len(spec.directions):
        raise TunerError(f"study '{spec.name}' in the storage has {len(study.directions)} objectives, "
                         f"the TOML asks for {len(spec.directions)}; use a new study name")
    return study, storage


def check_not_orphaned(storage, spec: StudySpec) -> None:
    """A study deleted from Optuna's tables alone (the dashboard's delete, `optuna delete-study`) leaves
    tuner's budget rows, which would make a new study of that name wait forever for their trials."""
    from tuner.study.delete import tuner_rows
    from tuner.storage.database import _study_in

    # Rows first, then the study: a worker starting beside us creates the study before its rows, so rows
    # seen before a missing study are orphans, while the reverse order raced with that worker.
    rows = tuner_rows(storage.engine, spec.name)
    if not (rows.get("trial_slots") or rows.get("study_runs")) or _study_in(storage.engine, spec.name):
        return
    raise TunerError(f"study '{spec.name}' was deleted from Optuna's tables of {shown(spec.storage)} but tuner's "
                     f"rows remain ({rows.get('trial_slots', 0)} trial slot(s)); remove them with `tuner study "
                     f"delete {spec.path} --yes`, or use a new study name")


def deleted(spec: StudySpec) -> TunerError:
    return TunerError(f"study '{spec.name}' was deleted from {shown(spec.storage)} while this command ran (its "
                      f"Optuna records are gone); `tuner study delete {spec.path} --yes` removes tuner's rows too")


def _storage_guard(spec: StudySpec, fn):
    """fn(), with a damaged or unreachable storage reported as one line."""
    try:
        return fn()
    except TunerError:
        raise
    except Exception as e:
        if isinstance(e, KeyError) and "Record does not exist" in str(e):  # Optuna's word for a deleted study
            raise deleted(spec) from None
        if is_damage(e):
            raise damaged(spec.storage, e) from None
        if is_transient(e):
            raise TunerError(f"storage {shown(spec.storage)} is unreachable: {first_line(e)}; the study is "
                             "resumable once it is back") from None
        if isinstance(e, (optuna.exceptions.StorageInternalError,)) or type(e).__module__.startswith("sqlalchemy"):
            raise TunerError(f"storage {shown(spec.storage)}: {first_line(e)}") from None
        raise


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
    """Finished trials of any kind (what snapshots record); the budget counts `budget.counted_trials`."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_study(spec: StudySpec, context=None, progress: bool = True, log=print, pipe=None) -> dict:
    """Run until the study holds spec.n_trials counted trials. Returns a summary with timings."""
    t_start = time.perf_counter()
    if pipe is None and context is None:
        from tuner.study.context import check_runnable

        check_runnable(spec)  # before the database exists: a study that cannot run here must not be created
    return _storage_guard(spec, lambda: _run(spec, context, progress, log, pipe, t_start))


def _run(spec: StudySpec, context, progress: bool, log, pipe, t_start: float) -> dict:
    from tuner.storage.heartbeat import Worker

    with deferred():
        study, storage = open_study(spec)
        check_fingerprint(study, spec)
        budget = Budget(storage, spec.name, worker=None)
        budget.check(study)
    summary = {"study": spec.name, "storage": shown(spec.storage), "n_trials": spec.n_trials,
               "trials_run": 0, "abandoned": 0, "setup_seconds": 0.0, "eval_seconds": 0.0}
    if budget.complete(study, spec.n_trials):
        held = len(counted_trials(study))
        log(f"study '{spec.name}' already holds {held} of {spec.n_trials} trials; nothing to run")
        _drop_waiting(study, log)
        return _finish(summary, study, spec, storage, t_start, None, False, pipe or getattr(context, "pipe", None), log)

    context = _study_context(spec, study, context, progress, pipe, log)
    summary["setup_seconds"] = context.setup_seconds
    objective = TrialObjective(context, spec)

    worker = Worker(storage.engine, spec.name, spec.liveness.heartbeat_interval, spec.liveness.grace_period,
                    log=log).start()
    budget.worker = worker
    summary["worker"] = worker.id
    bar = tqdm(total=spec.n_trials, initial=budget.progress(spec.n_trials)[0], desc=f"study {spec.name}",
               unit="trial", disable=not progress, dynamic_ncols=True)
    try:
        _trial_loop(study, spec, context, objective, budget, storage, summary, bar, log)
    except BaseException as e:
        # Whatever stops this worker (Ctrl-C between two steps, a bug, a lost storage) leaves no trial of
        # it RUNNING and no slot held: they go back to the budget now, not after a grace period.
        why = signals.reason(e) if isinstance(e, KeyboardInterrupt) else f"its worker stopped ({type(e).__name__})"
        with deferred(), contextlib.suppress(Exception):
            for what in budget.abandon_mine(study, why):
                log(f"gave back {what}: {why}")
        raise
    finally:
        bar.close()
        summary["eval_seconds"] = objective.eval_seconds
        try:
            worker.stop(counted=bool(summary.get("states")))  # a counted trial of this worker keeps its seed
        except Exception as e:  # the storage is gone: the others will find this worker dead
            log(f"could not mark worker {worker.id} stopped: {first_line(e)}")
    return _finish(summary, study, spec, storage, t_start, objective, pipe=getattr(context, "pipe", None), log=log)


def _certify(summary: dict, study, spec: StudySpec, storage, pipe, log) -> None:
    """The front candidates re-proved on held-out seeds (certify.py), before the final snapshot."""
    from tuner.study.certify import certify

    if not study.user_attrs.get(BASELINE_ATTR):
        return
    state = certify(study, spec, storage.engine, pipe=pipe, log=log)
    if state is not None:
        summary["certification"] = {k: state[k] for k in ("cap", "spent_images", "budget_images", "exhausted", "seconds")}
        summary["certification"]["certified"] = sorted(int(n) for n, v in state["trials"].items() if v["status"] == "feasible")


def _study_context(spec: StudySpec, study, context, progress: bool, pipe, log):
    """The StudyContext (built here unless given), its facts recorded with the study, threads set."""
    from tuner.threads import set_threads

    set_threads(spec.model.threads, "model.threads")  # the one thread policy (tuner/threads.py)
    if context is None:
        from tuner.study.context import StudyContext

        context = StudyContext.build(spec, study, progress=progress, pipe=pipe, log=log)
    context.record(study)  # a context built elsewhere (tests, notebooks, benchmarks) has not stored it yet
    return context


def _trial_loop(study, spec: StudySpec, context, objective, budget: Budget, storage, summary: dict, bar, log) -> None:
    """Take slots and run their trials until every slot of the budget is done and counted."""
    worker = budget.worker
    waiting_told = False
    while True:
        if worker.lost.is_set():
            log(f"worker {worker.id} missed its heartbeats and was declared dead by the others; "
                "registering again")
            with deferred():
                retrying(worker.register, log=log)
            study.sampler = optuna.samplers.RandomSampler(seed=spec.seed)  # re-seeded at the next trial
            summary.pop("seed_index", None)
        slot, trial = _next_trial(study, spec, context, budget, summary, log)
        if slot is None:
            finished, waiting_told = _no_free_slot(study, spec, budget, waiting_told, log)
            if finished:
                return
            continue
        waiting_told = False
        state = _run_one(study, trial, objective, budget, slot, log)
        summary["trials_run"] += 1
        if state is None:
            summary["abandoned"] += 1
        else:
            summary.setdefault("states", {}).setdefault(state.name, 0)
            summary["states"][state.name] += 1
        _after_trial(study, spec, storage, budget, trial, state, bar, log)


def _next_trial(study, spec: StudySpec, context, budget: Budget, summary: dict, log):
    """Reclaim the trials of dead workers, take a budget slot and ask its trial: (slot, trial), or
    (None, None) when no slot is free."""
    trial = None
    with deferred():  # a Ctrl-C meanwhile is raised at its end, and handled in `_run`
        for what in retrying(budget.reclaim, study, log=log):
            log(f"reclaimed {what}: abandoned by a dead worker, it does not count")
        slot = retrying(budget.take, spec.n_trials, log=log)
        if slot is not None:
            if "seed_index" not in summary:
                _seed_sampler(study, spec, context, budget.worker, summary, log)
            if slot == 0 and spec.sampler.warm_start:
                retrying(_warm_start, study, spec, context, log=log)
            trial = retrying(budget.ask, study, slot, log=log)
    return slot, trial


def _after_trial(study, spec: StudySpec, storage, budget: Budget, trial, state, bar, log) -> None:
    """Progress (a bar, or one line per trial without one) and the periodic Pareto snapshot."""
    done = retrying(budget.progress, spec.n_trials, log=log)[0]
    bar.n = min(done, spec.n_trials)
    bar.set_postfix_str(f"#{trial.number} {state.name.lower() if state else 'abandoned'}")
    bar.refresh()
    if bar.disable:  # no bar (not a terminal, or turned off): one line per trial instead
        log(progress_line(min(done, spec.n_trials), spec.n_trials, _trial_line(trial, state, spec)))
    if state is not None and done % spec.snapshot_every == 0:
        with deferred():
            retrying(pareto.snapshot, study, spec, storage.engine, log=log)


def _no_free_slot(study, spec, budget: Budget, told: bool, log) -> tuple[bool, bool]:
    """No slot to take: (finished, told) once the study is complete, else wait a moment for the others."""
    if retrying(budget.complete, study, spec.n_trials, log=log):
        _drop_waiting(study, log)
        return True, told
    held = retrying(budget.progress, spec.n_trials)[1]
    if not held:  # nothing free, nothing running, not complete: the study changed underneath
        retrying(budget.check, study, log=log)
    if not told:
        log(f"waiting for {held} trial(s) of other workers (taken over if they die)")
    time.sleep(min(1.0, spec.liveness.heartbeat_interval))
    return False, True


def _drop_waiting(study, log) -> None:
    with deferred():
        dropped = retrying(drop_waiting, study, log=log)
    if dropped:
        log(f"queued trial(s) {', '.join(map(str, dropped))} not run: the study met its budget")


def _seed_sampler(study, spec, context, worker, summary, log) -> None:
    from tuner.samplers import build_sampler

    index = retrying(worker.claim_seed_index, log=log)
    seed = spec.seed + RUN_SEED_STRIDE * index
    study.sampler = build_sampler(spec.sampler.name, context.space, seed, spec.sampler.options or None)
    summary["seed_index"], summary["seed"] = index, seed


def _warm_start(study: optuna.Study, spec: StudySpec, context) -> None:
    """Known configurations first (at most half the budget): the baseline, each paper's defaults, fewer
    steps. Queued once per study, by the worker that takes slot 0 (a slot only one worker can hold)."""
    if study._storage.get_study_system_attrs(study._study_id).get(WARM_START_ATTR):
        return
    for params in context.space.warm_start(limit=max(1, spec.n_trials // 2)):
        study.enqueue_trial(params, skip_if_exists=True)
    study._storage.set_study_system_attr(study._study_id, WARM_START_ATTR, True)


def _run_one(study: optuna.Study, trial: optuna.Trial, objective: TrialObjective, budget: Budget,
             slot: int, log) -> TrialState | None:
    """Evaluate and record one trial. Returns its state, or None when it was abandoned (not counted)."""
    t0 = time.perf_counter()
    values, reason, bug = None, None, None
    try:
        values = objective(trial)
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except TrialFailed as e:
        state, reason = TrialState.FAIL, str(e)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP (tuner/signals.py)
        with deferred():
            _abandon(study, trial, budget, slot, signals.reason(e), log)
        raise
    except Exception as e:
        if is_transient(e):  # the storage went away mid-trial (and stayed away): redo the trial later
            with deferred():
                _abandon(study, trial, budget, slot, f"storage connection lost ({first_line(e)})", log)
            return None
        if is_damage(e):
            raise
        state, reason, bug = TrialState.FAIL, f"{type(e).__name__}: {e}"[:500], e  # a bug: record it, then stop
    with deferred():
        try:
            if not retrying(budget.finish, slot, trial.number, log=log):
                log(f"trial {trial.number}: this worker was declared dead while the trial ran; its result is "
                    "discarded (the trial was given to another worker)")
                return None
        except Exception as e:
            if is_damage(e):  # the budget tables are gone: leave no trial RUNNING, then stop with one line
                with contextlib.suppress(Exception):
                    fail_trial(study, trial._trial_id, f"abandoned: storage damaged ({first_line(e)})")
            raise
        try:
            if state == TrialState.FAIL:  # state and reason at once (see budget.fail_trial)
                frozen = retrying(study._storage.get_trial, trial._trial_id, log=log)
                study.sampler.after_trial(study, frozen, TrialState.FAIL, None)  # what study.tell would call
                told = retrying(fail_trial, study, trial._trial_id, reason, log=log)
            else:
                if state == TrialState.COMPLETE:
                    retrying(trial.set_user_attr, "trial_seconds", time.perf_counter() - t0, log=log)
                told = retrying(study.tell, trial, values, state=state, skip_if_finished=True,
                                log=log).state == state
        except optuna.exceptions.UpdateFinishedTrialError:
            told = False
        if not told:  # failed by a survivor between the done mark and the tell
            log(f"trial {trial.number}: this worker was declared dead; its result is discarded")
            return None
    if bug is not None:
        raise bug
    return state


def _abandon(study, trial, budget: Budget, slot: int, why: str, log) -> None:
    """Give this worker's running trial up (not counted); with damaged budget tables, still fail it."""
    try:
        retrying(budget.abandon, trial, slot, why, log=log)
    except Exception as e:
        if not is_damage(e):
            raise
        with contextlib.suppress(Exception):
            fail_trial(study, trial._trial_id, f"abandoned: {why}")


def _trial_line(trial: optuna.Trial, state: TrialState | None, spec: StudySpec) -> str:
    attrs = trial.user_attrs
    if state is None:
        return f"trial {trial.number} abandoned (not counted)"
    twin = attrs.get("duplicate_of")
    same = f" (same config as trial {twin}: not re-measured)" if twin is not None else ""
    if state == TrialState.COMPLETE:
        return f"trial {trial.number} complete: {pareto.objectives_line(spec, attrs)}{same}"
    reason = attrs.get("prune_reason") or attrs.get("fail_reason") or ""
    if twin is not None:
        reason = f"same config as trial {twin}: not re-measured"
    return f"trial {trial.number} {state.name.lower()}" + (f": {reason}" if reason else "")


def _finish(summary, study, spec, storage, t_start, objective, snapshot_now: bool = True, pipe=None,
            log=print) -> dict:
    from tuner.storage.database import last_snapshot_trials

    if retrying(Budget(storage, spec.name, worker=None).complete, study, spec.n_trials, log=log):
        _certify(summary, study, spec, storage, pipe, log)  # the whole budget is spent: prove the answer
        snapshot_now = snapshot_now or "certification" in summary
    if snapshot_now and last_snapshot_trials(storage.engine, spec.name) == count_finished(study) \
            and "certification" not in summary:  # a certification just run changes what the front says
        snapshot_now = False  # the periodic snapshot after the last trial already holds this front
    if snapshot_now:
        with deferred():
            data = retrying(pareto.snapshot, study, spec, storage.engine)
    else:
        data = pareto.front(study, spec) if study.user_attrs.get(BASELINE_ATTR) else None
    summary["finished_in_study"] = len(counted_trials(study))  # counted toward n_trials
    if data is not None:
        summary["front_size"] = len(data["members"])
        summary["hypervolume"] = data["hypervolume"]
    wall = time.perf_counter() - t_start
    summary["wall_seconds"] = wall
    evaluation = summary["setup_seconds"] + summary["eval_seconds"]
    summary["overhead_seconds"] = max(0.0, wall - evaluation)
    summary["overhead_share"] = summary["overhead_seconds"] / wall if wall > 0 else 0.0
    return summary

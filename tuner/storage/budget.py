"""The exact trial budget, defined once.

`n_trials` counts the trials that finished by their own doing: COMPLETE, PRUNED, and FAIL for a reason
of their config (NaN images, out of memory, a combination the methods refuse). Trials abandoned by a
worker that died, was interrupted (Ctrl-C) or lost its storage are recorded as FAIL with a reason
`abandoned: ...` and are not counted: another trial takes their place.

Bookkeeping (`trial_slots`, one row per budget unit, unique per study and slot index < n_trials):
1. take: a worker inserts a free slot *before* the trial exists, so no surplus trial is ever created
   (`MaxTrialsCallback` cannot do this: it stops a process after its trial, when another process may
   already have started one more);
2. ask: the trial is created with the worker's id and slot in its system attributes, in the same
   transaction, so a worker killed at any point leaves a trial that says whose it was;
3. finish: the worker marks the slot done and records the trial number (one conditional UPDATE), and
   only then tells the result, so a worker that was declared dead while it ran cannot also count its trial;
4. release (Ctrl-C, lost storage) and reclaim (by any surviving worker, once the owner's heartbeat is
   older than its grace period: see heartbeat.py): the undone slot row is deleted first, which decides
   the race with its owner, then the owner's RUNNING trials are failed with their `abandoned: ...` reason.
A study's spent budget is its done slots; it is finished when every slot below n_trials is done and its
trial counted. Survivors wait for slots held by live workers, and reclaim them when those die.
"""

from __future__ import annotations

import datetime as dt
import json

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tuner.errors import TunerError
from tuner.storage.heartbeat import Worker, declare_dead, not_alive_runs
from tuner.storage.keys import FAIL_REASON_ATTR, RUN_ATTR, SLOT_ATTR
from tuner.storage.database import trial_slots

ABANDONED = "abandoned:"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def is_abandoned(trial: FrozenTrial) -> bool:
    reason = str(trial.user_attrs.get(FAIL_REASON_ATTR, ""))
    return trial.state == TrialState.FAIL and (reason.startswith(ABANDONED) or reason == "interrupted")


def counts(trial: FrozenTrial) -> bool:
    """Does this trial count toward n_trials? (the one definition; "interrupted" is an older label)"""
    return trial.state in FINISHED and not is_abandoned(trial)


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED) if counts(t)]


def fail_trial(study: optuna.Study, trial_id: int, reason: str, state: TrialState = TrialState.RUNNING) -> bool:
    """RUNNING (or `state`) -> FAIL with `fail_reason`, in one transaction; False if the trial had moved on.

    Optuna offers no call that sets an attribute and the state at once, and two separate calls let a
    worker and a survivor interleave (one's reason on the other's FAIL). So this writes Optuna's own
    tables directly: whoever moves the trial out of RUNNING also writes its reason, and once it is
    finished Optuna refuses every other write to it."""
    from optuna.storages._rdb import models

    trials, attrs = models.TrialModel.__table__, models.TrialUserAttributeModel.__table__
    engine = study._storage._backend.engine if hasattr(study._storage, "_backend") else study._storage.engine
    with engine.begin() as conn:
        if conn.execute(update(trials).where(trials.c.trial_id == trial_id, trials.c.state == state)
                        .values(state=TrialState.FAIL, datetime_complete=dt.datetime.now())).rowcount != 1:
            return False
        value = json.dumps(reason)
        if conn.execute(update(attrs).where(attrs.c.trial_id == trial_id, attrs.c.key == FAIL_REASON_ATTR)
                        .values(value_json=value)).rowcount == 0:
            conn.execute(insert(attrs).values(trial_id=trial_id, key=FAIL_REASON_ATTR, value_json=value))
    return True


QUEUED_ATTR = "fixed_params"  # Optuna's system attribute of an enqueued trial (warm start, neighbours)
UNNEEDED = f"{ABANDONED} queued but not run: the study met its budget"


def requeue(study: optuna.Study, trial_id: int) -> None:
    """An abandoned trial that came from the queue is queued again, so a resumed study runs the same
    configs as one that was never interrupted (a sampled trial is simply sampled anew)."""
    params = study._storage.get_trial(trial_id).system_attrs.get(QUEUED_ATTR)
    if params:
        study.enqueue_trial(params, skip_if_exists=False)  # the failed twin must not make it skip


def drop_waiting(study: optuna.Study) -> list[int]:
    """A finished study keeps no WAITING trial: each queued one left over fails as not needed (not counted)."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if fail_trial(study, t._trial_id, UNNEEDED, state=TrialState.WAITING)]


def count_slots(engine, study_name: str) -> int:
    """Budget slots taken: trials finished and counted, plus those running now."""
    with engine.begin() as conn:
        return conn.execute(select(func.count()).select_from(trial_slots).where(
            trial_slots.c.study_name == study_name)).scalar_one()


class Budget:
    """One worker's view of the study's budget (see the module docstring)."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str, worker: Worker):
        self.storage, self.engine = storage, storage.engine
        self.study_name, self.worker = study_name, worker

    # --- consistency -----------------------------------------------------------------------------------
    def check(self, study: optuna.Study) -> None:
        """Every counted trial must own a done slot: rows deleted by hand would silently reset the study."""
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        counted = {n for n, t in trials.items() if counts(t)}  # trials first: a trial counts only after its slot
        with self.engine.begin() as conn:
            rows = conn.execute(select(trial_slots.c.trial_number, trial_slots.c.run_id).where(
                trial_slots.c.study_name == self.study_name, trial_slots.c.trial_number.is_not(None))).all()
        bound = [n for n, _ in rows]
        foreign = [n for n, run in rows if n not in trials or trials[n].system_attrs.get(RUN_ATTR, run) != run]
        if foreign:  # the slots name trials this study does not have: deleted and re-created outside tuner
            raise TunerError(f"study '{self.study_name}': tuner's table trial_slots names {len(foreign)} trial(s) "
                             f"(#{', #'.join(map(str, sorted(foreign)[:5]))}) that this Optuna study does not hold: "
                             "it was deleted or re-created outside tuner; `tuner study delete STUDY.toml --yes` "
                             "removes both, or use a new study name")
        missing = sorted(counted - set(bound))
        if missing or len(bound) != len(set(bound)):
            what = (f"has no slot for {len(missing)} counted trial(s) (#{', #'.join(map(str, missing[:5]))})"
                    if missing else "binds a trial twice")
            raise TunerError(f"study '{self.study_name}': the tuner table trial_slots {what}: it was changed, or the "
                             "study deleted and re-created, outside tuner; refusing to guess the budget (restore a "
                             "backup, `tuner study delete STUDY.toml --yes`, or use a new study name)")

    # --- slots -------------------------------------------------------------------------------------------
    def take(self, n_trials: int) -> int | None:
        """Reserve a free slot below n_trials; None when all are taken (done or held by workers)."""
        for _ in range(100):  # retry when another worker took the same slot first
            with self.engine.begin() as conn:
                rows = conn.execute(select(trial_slots.c.slot, trial_slots.c.run_id, trial_slots.c.trial_number)
                                    .where(trial_slots.c.study_name == self.study_name)).all()
            mine = [s for s, run, number in rows if run == self.worker.id and number is None]
            if mine:  # a retried take whose first insert did commit
                return mine[0]
            taken = {s for s, _, _ in rows}
            free = next((s for s in range(n_trials) if s not in taken), None)
            if free is None:
                return None
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(trial_slots).values(study_name=self.study_name, slot=free,
                                                            run_id=self.worker.id, done=0))
                return free
            except IntegrityError:
                continue
        raise TunerError("could not reserve a trial slot (too much contention)")

    def ask(self, study: optuna.Study, slot: int) -> optuna.Trial:
        """`study.ask()`, except that the new trial carries this worker's id and slot from the transaction
        that creates it (Study.ask offers no way to attach attributes atomically)."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a retried ask that did commit
            if t.system_attrs.get(RUN_ATTR) == self.worker.id and t.system_attrs.get(SLOT_ATTR) == slot:
                return optuna.Trial(study, t._trial_id)
        waiting = self._pop_waiting(study, slot)  # an enqueued trial (warm start) first, as Study.ask does
        if waiting is not None:
            return optuna.Trial(study, waiting)
        template = FrozenTrial(number=0, state=TrialState.RUNNING, value=None, values=None,
                               datetime_start=dt.datetime.now(), datetime_complete=None, params={},
                               distributions={}, user_attrs={}, system_attrs={RUN_ATTR: self.worker.id,
                                                                              SLOT_ATTR: slot},
                               intermediate_values={}, trial_id=0)
        # study._storage: Optuna's cache in front of the RDB storage, which must see every trial this process runs
        trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
        study._thread_local.cached_all_trials = None  # what Study.ask does: samplers re-read the trials
        return optuna.Trial(study, trial_id)

    def _pop_waiting(self, study: optuna.Study, slot: int) -> int | None:
        """WAITING -> RUNNING with this worker's id and slot, in one transaction (see `ask`)."""
        from optuna.storages._rdb import models

        trials, attrs = models.TrialModel.__table__, models.TrialSystemAttributeModel.__table__
        # read through Optuna's cache, which must know every trial this process runs
        for t in study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
            with self.engine.begin() as conn:
                if conn.execute(update(trials).where(trials.c.trial_id == t._trial_id,
                                                     trials.c.state == TrialState.WAITING)
                                .values(state=TrialState.RUNNING, datetime_start=dt.datetime.now())).rowcount != 1:
                    continue  # another worker took it
                conn.execute(insert(attrs), [{"trial_id": t._trial_id, "key": k, "value_json": json.dumps(v)}
                                             for k, v in ((RUN_ATTR, self.worker.id), (SLOT_ATTR, slot))])
            return t._trial_id
        return None

    def finish(self, slot: int, trial_number: int) -> bool:
        """Mark the slot done with its trial before telling the result; False when it was taken away."""
        with self.engine.begin() as conn:
            if conn.execute(update(trial_slots).where(*self._mine(slot), trial_slots.c.done == 0)
                            .values(done=1, trial_number=trial_number)).rowcount == 1:
                return True
            # a retried finish whose first UPDATE did commit
            return conn.execute(select(trial_slots.c.done).where(*self._mine(slot))).scalar_one_or_none() == 1

    def release(self, slot: int) -> bool:
        """Give the slot back (its trial is abandoned); False when it was no longer this worker's."""
        with self.engine.begin() as conn:
            return conn.execute(delete(trial_slots).where(*self._mine(slot), trial_slots.c.done == 0)).rowcount == 1

    def _mine(self, slot: int):
        return (trial_slots.c.study_name == self.study_name, trial_slots.c.slot == slot,
                trial_slots.c.run_id == self.worker.id)

    # --- progress ----------------------------------------------------------------------------------------
    def progress(self, n_trials: int) -> tuple[int, int]:
        """(done slots below n_trials, slots held by running trials)."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(trial_slots.c.done).where(
                trial_slots.c.study_name == self.study_name, trial_slots.c.slot < n_trials)).scalars().all()
        done = sum(1 for d in rows if d == 1)
        return done, len(rows) - done

    def complete(self, study: optuna.Study, n_trials: int) -> bool:
        """Every slot below n_trials done, and its trial told and counted (none still RUNNING)."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(trial_slots.c.done, trial_slots.c.trial_number).where(
                trial_slots.c.study_name == self.study_name, trial_slots.c.slot < n_trials)).all()
        if len(rows) < n_trials or any(d != 1 for d, _ in rows):
            return False
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        return all(n in trials and counts(trials[n]) for _, n in rows)

    # --- reclaiming --------------------------------------------------------------------------------------
    def reclaim(self, study: optuna.Study) -> list[str]:
        """Declare stale workers dead and give their trials back. Returns one description per trial."""
        for run in declare_dead(self.engine, self.study_name, exclude=self.worker.id):
            self.worker.log(f"worker {run['id']} on {run['host']} (pid {run['pid']}) missed its heartbeats: "
                            "declared dead")
        gone = not_alive_runs(self.engine, self.study_name)
        if not gone:
            return []
        out = []
        with self.engine.begin() as conn:  # deleting an undone slot decides the race with its owner
            freed = conn.execute(delete(trial_slots).where(
                trial_slots.c.study_name == self.study_name, trial_slots.c.run_id.in_(list(gone)),
                trial_slots.c.done == 0)).rowcount
        if freed:
            out.append(f"{freed} slot(s)")
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            run = t.system_attrs.get(RUN_ATTR)
            if t.state != TrialState.RUNNING or run not in gone:
                continue
            host, pid, fate = gone[run]
            if self._fail(study, t._trial_id, f"{ABANDONED} its worker on {host} (pid {pid}) {fate}"):
                out.append(f"trial {t.number}")
                requeue(study, t._trial_id)
                with self.engine.begin() as conn:  # its slot, if the worker died between done and tell
                    conn.execute(delete(trial_slots).where(trial_slots.c.study_name == self.study_name,
                                                           trial_slots.c.run_id == run,
                                                           trial_slots.c.trial_number == t.number))
        # A survivor killed between failing a trial and freeing its slot: the slot of an abandoned trial.
        abandoned = [t.number for t in trials if is_abandoned(t)]
        if abandoned:
            with self.engine.begin() as conn:
                conn.execute(delete(trial_slots).where(trial_slots.c.study_name == self.study_name,
                                                       trial_slots.c.trial_number.in_(abandoned)))
        return out

    @staticmethod
    def _fail(study: optuna.Study, trial_id: int, reason: str) -> bool:
        return fail_trial(study, trial_id, reason)

    def abandon_mine(self, study: optuna.Study, why: str) -> list[str]:
        """This worker is stopping: fail its RUNNING trials and give back every slot it still holds."""
        out = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.system_attrs.get(RUN_ATTR) == self.worker.id and self._fail(study, t._trial_id, f"{ABANDONED} {why}"):
                out.append(f"trial {t.number}")
                requeue(study, t._trial_id)
                with self.engine.begin() as conn:  # its slot, even if marked done before the tell was lost
                    conn.execute(delete(trial_slots).where(trial_slots.c.study_name == self.study_name,
                                                           trial_slots.c.run_id == self.worker.id,
                                                           trial_slots.c.trial_number == t.number))
        with self.engine.begin() as conn:
            held = conn.execute(delete(trial_slots).where(
                trial_slots.c.study_name == self.study_name, trial_slots.c.run_id == self.worker.id,
                trial_slots.c.done == 0)).rowcount
        if held:
            out.append(f"{held} slot(s)")
        return out

    def abandon(self, trial: optuna.Trial, slot: int, why: str) -> bool:
        """This worker gives up its own running trial (Ctrl-C, lost storage): slot back, trial FAIL."""
        released = self.release(slot)  # False: already released (a retry) or reclaimed by a survivor
        if self._fail(trial.study, trial._trial_id, f"{ABANDONED} {why}"):
            requeue(trial.study, trial._trial_id)
        return released

"""A tiny study end to end: trials recorded, Pareto tables written, exact trial budget with two
processes, NaN trial fails alone, Ctrl-C resumable, bad input writes nothing."""

import json
import os
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tuner.cli import main
from tuner.errors import TunerError
from tuner.study.spec import load_spec

TINY = """
name = "{name}"
n_trials = 3
seed = 0
snapshot_every = 2
[model]
threads = 1
[image_set]
n_images = 6
steps = 4
[evaluator]
latency_images = 2
latency_repeats = 1
cheap_reject_images = 3
cheap_reject_margin = 100.0
[constraints]
max_fid_increase = 300
[profile]
n_images = 2
[sampler]
name = "random"
{space}
"""
FULL_SPACE = """
[space.tome]
ratio = [0.2, 0.6]
[space.catome]
threshold = [0.6, 1.0]
[space.deepcache]
interval = [2, 3]
[space.quant]
bits = [8, 16]
optional = false
"""
LIGHT_SPACE = """
[space.tome]
ratio = [0.2, 0.6]
[space.deepcache]
interval = [2, 3]
"""


def write_spec(folder, name, space=FULL_SPACE, **replace):
    text = TINY.format(name=name, space=space)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return load_spec(path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One StudyContext (baseline, reference features, Jaccard profile, calibration) for every
    in-process run of this module, built against the first study so the profile is stored there."""
    from tuner.study.context import StudyContext
    from tuner.study.runner import check_fingerprint, open_study

    folder = tmp_path_factory.mktemp("studies")
    os.environ["TUNER_CACHE_DIR"] = str(folder / "cache")
    torch.set_num_threads(1)
    spec = write_spec(folder, "main")
    study, _ = open_study(spec)
    check_fingerprint(study, spec)
    ctx = StudyContext.build(spec, study)
    return folder, spec, ctx


def finished(spec):
    study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]


def test_tiny_study_records_metrics_and_pareto_tables(shared, capsys):
    from tuner.study.runner import run_study
    from tuner.storage.database import open_storage, read_snapshots

    folder, spec, ctx = shared
    summary = run_study(spec, context=ctx, progress=False, log=lambda m: None)
    assert summary["trials_run"] == 3 and summary["finished_in_study"] == 3
    trials = finished(spec)
    assert len(trials) == 3
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, [t.user_attrs.get("fail_reason") for t in trials]
    for t in complete:
        for key in ("kid", "psnr", "ssim", "class_accuracy", "macs", "bitops", "speedup", "config",
                    "real_kernel_layers", "simulated_layers", "seconds_per_image"):
            assert key in t.user_attrs, key
        assert "quant" in t.user_attrs["config"]
        assert t.values[0] == pytest.approx(t.user_attrs["seconds_per_image"])
        assert "fid_increase_pct" in t.constraints

    study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    assert study.metric_names == ["seconds_per_image", "fid"]
    assert len(study.user_attrs["jaccard_profile"]["data"]) > 0  # measured once, stored with the study
    snaps = read_snapshots(open_storage(spec.storage).engine, spec.name)
    assert [s["n_trials"] for s in snaps] == [2, 3]  # every 2 trials and at the end
    assert snaps[-1]["hypervolume"] >= 0 and set(snaps[-1]["reference_point"]) == {"seconds_per_image", "fid"}
    for m in snaps[-1]["members"]:
        assert m["trial"] in {t.number for t in complete} and "fid" in m["objectives"]

    capsys.readouterr()
    assert main(["study", "pareto", str(spec.path), "--json", "--plot", str(folder / "front.png")]) == 0
    members = json.loads(capsys.readouterr().out)
    assert isinstance(members, list) and members == json.loads(json.dumps(members))
    for m in members:
        assert set(m) == {"trial", "objectives", "config", "certified", "held_out"} and "seconds_per_image" in m["objectives"]
    assert (folder / "front.png").stat().st_size > 1000
    assert main(["study", "status", str(spec.path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["budget_spent"] == 3 and status["snapshots"] == 2

    # Resume: nothing left to do; a larger budget adds exactly the difference.
    assert run_study(spec, context=ctx, progress=False, log=lambda m: None)["trials_run"] == 0
    lines = []
    assert run_study(spec.with_n_trials(4), context=ctx, progress=False, log=lines.append)["trials_run"] == 1
    assert len(finished(spec)) == 4
    # Without a progress bar every trial is one log line: where the budget stands, the trial, its outcome.
    trial_lines = [m for m in lines if m.startswith("[4/4] trial 3 ")]
    assert len(trial_lines) == 1, lines
    assert ("complete: latency" in trial_lines[0] and "fid" in trial_lines[0]) or "pruned: cheap reject" in trial_lines[0] \
        or "fail" in trial_lines[0]


def test_exported_trial_is_reproduced_by_evaluate(shared, tmp_path, capsys):
    """`tuner evaluate` on an exported trial re-measures it on the study's image set: the same images, so
    the same FID (latency is re-measured, so only noise-close)."""
    folder, spec, _ = shared
    complete = [t for t in finished(spec) if t.state == TrialState.COMPLETE]
    assert complete
    trial = complete[0]
    out = tmp_path / "t.json"
    assert main(["export", str(spec.path), "--trial", str(trial.number), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--device", "cpu", "--latency-repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == 6 and result["fid"] == pytest.approx(trial.values[1], rel=1e-4, abs=1e-4)
    assert result["class_accuracy"] == pytest.approx(trial.user_attrs["class_accuracy"])


def test_stored_profile_is_reused(shared, monkeypatch):
    import tuner.methods.catome_profile
    from tuner.study.context import StudyContext
    from tuner.study.runner import open_study

    _, spec, _ = shared

    def boom(*a, **k):
        raise AssertionError("profile measured again")

    monkeypatch.setattr(tuner.methods.catome_profile, "profile_merges", boom)
    study, _ = open_study(spec)
    ctx = StudyContext.build(spec, study, pipe=shared[2].pipe)
    assert ctx.space.by_name.get("catome.checkpoint_delta") is not None


def test_quant_calibrates_and_measures_sensitivity_once_per_study(shared, monkeypatch):
    import tuner.methods.quant_sensitivity
    from tuner.apply_config import apply
    from tuner.methods import quant
    from tuner.study.context import StudyContext
    from tuner.study.runner import open_study

    _, spec, ctx = shared
    study, _ = open_study(spec)
    sens = study.user_attrs["quant_sensitivity"]  # measured by the first build, stored with the study
    assert set(sens) == set(quant.quantizable_layers(ctx.pipe.unet)) and all(set(v) == {"8"} for v in sens.values())

    def boom(*a, **k):
        raise AssertionError("sensitivity measured again")

    monkeypatch.setattr(tuner.methods.quant_sensitivity, "layer_sensitivity", boom)
    runs = quant.calibration_runs
    again = StudyContext.build(spec, study, pipe=ctx.pipe)
    assert any(p.name.startswith("quant.bits.") for p in again.space.params)
    with apply(ctx.pipe, {"quant": {"weight_bits": 8, "act_bits": 8}}):  # a trial's apply reuses it
        ctx.pipe([1], [2], num_inference_steps=2)
    assert quant.calibration_runs == runs  # one calibration per process, reused by every build and trial


def test_nan_trial_fails_alone_with_reason(shared, monkeypatch):
    from tuner.study.runner import run_study

    folder, _, ctx = shared
    spec = write_spec(folder, "nan")
    current = {}
    real_suggest, real_generate = ctx.space.suggest, ctx.eval.generate

    def suggest(trial):
        current["n"] = trial.number
        return real_suggest(trial)

    def generate(image_set=None):
        images = real_generate(image_set)
        return torch.full_like(images, float("nan")) if current.get("n") == 1 else images

    monkeypatch.setattr(ctx.space, "suggest", suggest)
    monkeypatch.setattr(ctx.eval, "generate", generate)
    run_study(spec, context=ctx, progress=False, log=lambda m: None)
    trials = {t.number: t for t in finished(spec)}
    assert len(trials) == 3
    assert trials[1].state == TrialState.FAIL and "NaN" in trials[1].user_attrs["fail_reason"]
    assert all(trials[n].state != TrialState.FAIL for n in (0, 2))


def test_ctrl_c_leaves_study_resumable(shared, monkeypatch):
    from tuner.study.runner import run_study
    from tuner.storage.budget import count_slots
    from tuner.storage.database import open_storage

    folder, _, ctx = shared
    spec = write_spec(folder, "interrupt")
    real_suggest = ctx.space.suggest

    def suggest(trial):
        if trial.number == 1:
            raise KeyboardInterrupt
        return real_suggest(trial)

    monkeypatch.setattr(ctx.space, "suggest", suggest)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, context=ctx, progress=False, log=lambda m: None)
    study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    states = {t.number: (t.state, t.user_attrs.get("fail_reason")) for t in study.get_trials()}
    assert states[1] == (TrialState.FAIL, "abandoned: interrupted (Ctrl-C)")
    assert count_slots(open_storage(spec.storage).engine, spec.name) == 1  # the interrupted one is not counted

    monkeypatch.setattr(ctx.space, "suggest", real_suggest)
    summary = run_study(spec, context=ctx, progress=False, log=lambda m: None)
    assert summary["trials_run"] == 2
    counted = [t for t in finished(spec) if not t.user_attrs.get("fail_reason", "").startswith("abandoned:")]
    assert len(counted) == 3 and summary["finished_in_study"] == 3


def test_changed_toml_refuses_to_resume(shared):
    from tuner.errors import TunerError
    from tuner.study.runner import run_study

    folder, spec, ctx = shared
    changed = write_spec(folder, "main", **{"steps = 4": "steps = 5"})
    with pytest.raises(TunerError, match="image_set"):
        run_study(changed, context=ctx, progress=False, log=lambda m: None)


def test_two_processes_finish_exactly_n_trials(shared):
    folder, _, _ = shared
    spec = write_spec(folder, "duo", space=LIGHT_SPACE)
    env = dict(os.environ, TUNER_CACHE_DIR=str(folder / "cache"))
    cmd = [sys.executable, "-m", "tuner.cli", "study", "run", str(spec.path), "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    summaries = [json.loads(out) for out, _ in outs]  # stdout: the JSON summary alone
    assert sum(err.count(" trial ") for _, err in outs) >= 3  # stderr (not a terminal): a line per trial
    assert sum(s["trials_run"] for s in summaries) == 3
    assert sorted(s["seed_index"] for s in summaries) == [0, 1]  # distinct sampler seeds
    assert len(finished(spec)) == 3
    study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    assert len(study.get_trials()) == 3  # no surplus trial was ever created


def test_storage_creation_race_is_retried(tmp_path, monkeypatch):
    """Two processes creating one fresh database race on Optuna's schema; the loser retries."""
    from sqlalchemy.exc import IntegrityError

    from tuner.storage import database as storage_mod

    real, calls = optuna.storages.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(storage_mod.optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)
    storage = storage_mod.open_storage(f"sqlite:///{tmp_path / 'race.db'}")
    assert len(calls) == 2 and storage.get_all_studies() == []

    from sqlalchemy.exc import OperationalError

    def locked(*args, **kwargs):  # not a race: reported at once, not retried
        calls.append(1)
        raise OperationalError("BEGIN", {}, Exception("database is locked"))

    calls.clear()
    monkeypatch.setattr(storage_mod.optuna.storages, "RDBStorage", locked)
    with pytest.raises(TunerError, match="database is locked"):
        storage_mod.open_storage(f"sqlite:///{tmp_path / 'locked.db'}")
    assert len(calls) == 1


def test_bad_toml_exit_2_and_no_database(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[space.tome]\nratio = [0.2,\n")
    assert main(["study", "run", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_trial_of_a_dead_worker_is_reclaimed(shared):
    """A worker that stopped heartbeating mid-trial (kill -9, on any host) leaves a RUNNING trial and a
    taken slot; the next worker fails that trial as abandoned, does not count it, and runs the budget."""
    from tuner.storage.budget import Budget
    from tuner.storage.heartbeat import Worker
    from tuner.study.runner import check_fingerprint, open_study, run_study

    folder, _, ctx = shared
    spec = write_spec(folder, "killed", **{'name = "killed"': 'name = "killed"\n'
                                            'storage = {heartbeat_interval = 0.2, grace_period = 0.5}'})
    study, storage = open_study(spec)
    check_fingerprint(study, spec)
    dead = Budget(storage, spec.name, Worker(storage.engine, spec.name, 0.2, 0.5))  # never beats
    orphan = dead.ask(study, dead.take(spec.n_trials))  # killed mid-trial
    done = dead.ask(study, dead.take(spec.n_trials))
    dead.finish(1, done.number)  # killed between marking its slot done and telling the result

    lines = []
    summary = run_study(spec, context=ctx, progress=False, log=lines.append)
    assert summary["trials_run"] == 3 and summary["finished_in_study"] == 3, lines
    trials = optuna.load_study(study_name=spec.name, storage=spec.storage).trials
    for t in (trials[orphan.number], trials[done.number]):
        assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("abandoned: its worker on")
    assert any("declared dead" in m for m in lines), lines


def test_a_config_measured_once_is_replayed_not_re_measured(shared, monkeypatch):
    """A sampler proposing a config a finished trial already has gets that trial's result back (objectives,
    constraint, metrics, or its prune) without a new evaluation; the log and `duplicate_of` say so."""
    from tuner.study.runner import run_study

    folder, _, ctx = shared
    for name, expected in (("dup", TrialState.COMPLETE), ("dup_pruned", TrialState.PRUNED)):
        spec = write_spec(folder, name)
        if expected == TrialState.PRUNED:  # every first rung says infeasible: the cheap reject prunes
            monkeypatch.setattr("tuner.study.race.decide", lambda *a, **k: "infeasible")
        run_study(spec.with_n_trials(1), context=ctx, progress=False, log=lambda m: None)
        study = optuna.load_study(study_name=spec.name, storage=spec.storage)
        first = study.trials[0]
        assert first.state == expected, first.user_attrs
        for _ in range(2):
            study.enqueue_trial(first.params, skip_if_exists=False)
        calls, lines = [], []
        monkeypatch.setattr("tuner.study.race.grow_candidate", lambda *a, **k: calls.append(1) or pytest.fail("re-measured"))
        monkeypatch.setattr("tuner.study.certify.certify", lambda *a, **k: None)  # held-out work is not a trial
        run_study(spec, context=ctx, progress=False, log=lines.append)
        monkeypatch.undo()
        from tuner.storage.budget import UNNEEDED  # the queued neighbour left when the budget is met

        trials = [t for t in finished(spec) if t.user_attrs.get("fail_reason") != UNNEEDED]
        assert len(trials) == 3 and not calls
        for t in trials[1:]:
            assert t.state == expected and t.user_attrs["duplicate_of"] == 0
            assert t.user_attrs["config"] == first.user_attrs["config"] and t.constraints == first.constraints
            if expected == TrialState.COMPLETE:
                assert t.values == first.values and t.user_attrs["speedup"] == first.user_attrs["speedup"]
        assert sum("same config as trial 0: not re-measured" in m for m in lines) == 2, lines
        left = optuna.load_study(study_name=spec.name, storage=spec.storage).get_trials()
        assert not [t for t in left if t.state == TrialState.WAITING]  # a finished study keeps none (issue 16)
        # the last replay queued a neighbour for the next trial (only one at a time); unneeded, it failed
        waiting = [t.system_attrs["fixed_params"] for t in left if t.user_attrs.get("fail_reason") == UNNEEDED]
        assert len(waiting) == 1
        moved = {k for k in set(first.params) | set(waiting[0]) if first.params.get(k) != waiting[0].get(k)}
        assert moved and all(k in ctx.space.by_name for k in waiting[0])


def test_a_neighbour_moves_one_active_parameter_inside_its_range(shared):
    import random

    from tuner.study.duplicates import neighbour

    space = shared[2].space
    rng = random.Random(0)
    for _ in range(50):
        params = space.prune(space.values_from_genome(space.random_genome(rng)))
        moved = neighbour(space, params, random.Random(rng.random()))
        assert moved is not None and moved == space.prune(moved)
        assert all(space.by_name[k].contains(v) for k, v in moved.items())
        changed = [k for k in params if k in moved and moved[k] != params[k]]
        assert len(changed) == 1 or (not changed and set(moved) != set(params)), (params, moved)

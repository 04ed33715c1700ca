"""Certified answers (issue 18): the race over image rungs, the noise-aware front, held-out seeds."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import create_trial

from tuner.study import race
from tuner.study.fid_scale import FidScale

BASE = {"fid": 5.0, "seconds_per_image": 0.1}


def _objective(monkeypatch, intervals: dict, cap: float, rungs=(8, 32, 128)):
    """A TrialObjective whose rungs score `intervals[n]` = (point, lo, hi) in % (no model runs)."""
    from tuner.study.objective import TrialObjective

    space = SimpleNamespace(suggest=lambda trial: {}, to_config=lambda values: SimpleNamespace(
        to_dict=lambda: {"methods": {"tome": {"ratio": 0.5}}}))
    spec = SimpleNamespace(objectives=["latency", "fid"], maximized=[False, False],
                           constraints=SimpleNamespace(max_fid_increase=cap, max_memory_gb=None),
                           evaluator=SimpleNamespace(rungs=lambda n, capped: rungs), image_set=SimpleNamespace(n_images=64))
    ctx = SimpleNamespace(space=space, spec=spec, eval=None, baseline=dict(BASE))
    seen = []

    def grow(ectx, config, images, n, cost):
        seen.append(n)
        return list(range(n)), {"macs": 1.0, "bitops": 1.0}, {}

    def score(ectx, images, scale):
        pt, lo, hi = intervals[len(images)]
        d = {s: v * scale.scale / 100 for s, v in (("", pt), ("_lo", lo), ("_hi", hi))}
        return {"fid": 9.9, "n_images": len(images), **{f"fid_delta{s}": v for s, v in d.items()},
                **{f"fid_increase_pct{s}": v for s, v in (("", pt), ("_lo", lo), ("_hi", hi))}}

    monkeypatch.setattr(race, "grow_candidate", grow)
    monkeypatch.setattr(race, "score", score)
    objective = TrialObjective(ctx, spec)
    monkeypatch.setattr(objective, "_latency", lambda config: {
        "seconds_per_image": 0.05, "baseline_seconds_per_image": 0.1, "speedup": 2.0, "speedup_lo": 1.9,
        "speedup_hi": 2.1})
    return objective, seen


def test_a_straddling_candidate_is_promoted_a_clearly_infeasible_one_is_not(monkeypatch):
    # straddles +10 % at 8 and 32 images, decided feasible at 128
    objective, seen = _objective(monkeypatch, {8: (5, -20, 30), 32: (5, -5, 15), 128: (4, 1, 8)}, cap=10)
    study = optuna.create_study(directions=["minimize", "minimize"])
    trial = study.ask()
    study.tell(trial, objective(trial))
    t = study.trials[0]
    assert seen == [8, 32, 128] and t.user_attrs["race_decision"] == "feasible"
    assert t.user_attrs["n_images"] == 128 and t.constraints["fid_increase_pct"] == pytest.approx(8 - 10)
    assert [r[0] for r in t.user_attrs["race"]] == [8, 32, 128]

    # lower bound above the cap on the first rung: pruned there, never promoted
    objective, seen = _objective(monkeypatch, {8: (80, 40, 120)}, cap=10)
    study = optuna.create_study(directions=["minimize", "minimize"])  # one study per case: no replay of a twin
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="cheap reject: infeasible at 8 images"):
        objective(trial)
    assert seen == [8]

    # infeasible on the second rung: completes there, with its reason
    objective, seen = _objective(monkeypatch, {8: (20, -10, 50), 32: (30, 15, 45)}, cap=10)
    study = optuna.create_study(directions=["minimize", "minimize"])
    trial = study.ask()
    study.tell(trial, objective(trial))
    t = study.trials[-1]
    assert seen == [8, 32] and t.user_attrs["race_decision"] == "infeasible"
    assert "lower bound above the cap" in t.user_attrs["race_reason"] and t.constraints["fid_increase_pct"] > 0


def test_decide():
    assert race.decide(-5, 15, 10, 32, last=False) == "straddles"
    assert race.decide(-5, 15, 10, 128, last=True) == "undecided"
    assert race.decide(11, 30, 10, 8, last=False) == "infeasible"
    assert race.decide(-1, 9, 10, 32, last=False) == "feasible"
    assert race.decide(-1, 9, 10, 8, last=False) == "straddles"  # 8 images never certify feasibility
    assert race.decide(-5, 40, 10, 32, last=False, point=18) == "above cap"  # would most likely prove infeasible
    assert race.decide(-50, 70, 10, 8, last=False, point=18) == "straddles"  # 8 images: the point is too noisy


def _trial(number, lat, fid_pct, lo, hi, macs, methods, speedup_ci=(0.97, 1.03)):
    s = BASE["seconds_per_image"] / lat
    return create_trial(values=[lat, FidScale.of(BASE).objective(fid_pct * BASE["fid"] / 100)],
                        user_attrs={"config": {m: {} for m in methods}, "macs": macs, "speedup": s,
                                    "speedup_lo": s * speedup_ci[0], "speedup_hi": s * speedup_ci[1],
                                    "fid_increase_pct": fid_pct, "fid_increase_pct_lo": lo, "fid_increase_pct_hi": hi})


def _spec():
    return SimpleNamespace(objectives=["latency", "fid"], maximized=[False, False])


def test_noise_equal_duplicates_do_not_both_sit_on_the_front():
    from tuner.study.pareto import front_trials

    # the case: the same 8-step work, 0.02 ms apart, FID +23.8 % and -1.5 %
    a = _trial(0, 0.04000, 23.8, -20, 60, 1e8, ["timesteps"])
    b = _trial(1, 0.04002, -1.5, -40, 40, 1e8, ["timesteps"])
    a.number, b.number = 0, 1
    assert [t.number for t in front_trials([a, b], [False, False], _spec(), BASE)] == [1]
    assert len(front_trials([a, b], [False, False])) == 2  # plain dominance keeps both (jitter)


def test_a_difference_inside_the_noise_does_not_dominate():
    from tuner.study.pareto import front_trials

    fast = _trial(0, 0.050, 8.0, 6, 10, 1e8, ["tome"])
    slower = _trial(1, 0.051, 9.0, 7, 11, 2e8, ["deepcache"])  # 2 % slower, +1 %: both inside the noise
    far = _trial(2, 0.080, 20.0, 18, 22, 3e8, ["frdiff"])  # slower and worse beyond both intervals
    for i, t in enumerate((fast, slower, far)):
        t.number = i
    front = [t.number for t in front_trials([fast, slower, far], [False, False], _spec(), BASE)]
    assert front == [0, 1]


def test_certification_seeds_are_disjoint_from_the_search_seeds(tmp_path):
    from tuner.study.certify import seed_sets
    from tuner.study.spec import load_spec

    for extra in ("", "race_rungs = [8, 32, 4096]\ncertify_rungs = [256, 4096]\n"):
        path = tmp_path / "s.toml"
        path.write_text(f'name = "s"\n[image_set]\nn_images = 64\nseed = 3\n[evaluator]\n{extra}'
                        "[constraints]\nmax_fid_increase = 10\n")
        search, held_out = seed_sets(load_spec(path))
        assert search and held_out and not search & held_out
        assert len(held_out) == (4096 if extra else 256)


def test_one_scale_on_a_user_model_baseline():
    # a user model: FID is to the baseline's own images (it scores ~0), the floor is 100 %
    scale = FidScale.of({"fid": 4.0, "fid_to_itself": 0.0, "seconds_per_image": 1.0})
    assert scale.change_pct(0.4) == pytest.approx(10.0) and scale.change_of(0.4) == pytest.approx(10.0)
    assert scale.cap_value(10) == pytest.approx(0.4) and scale.normalized(0.4) == pytest.approx(1.1)
    proxy = FidScale.of(BASE)
    assert proxy.change_of(proxy.objective(0.5)) == pytest.approx(10.0) == proxy.change_pct(0.5)


SHORT = """
name = "short"
n_trials = 3
seed = 0
[model]
threads = 1
[image_set]
n_images = 8
steps = 4
[evaluator]
latency_images = 2
latency_repeats = 1
race_rungs = [4, 8]
certify_rungs = [32]
certify_budget_images = 96
[constraints]
max_fid_increase = 5000
[sampler]
name = "random"
[space.timesteps]
counts = [3, 2]
"""


def test_export_best_right_after_study_run_takes_a_certified_member_or_says_why(tmp_path, capsys):
    from tuner.cli import main
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec
    from tuner.storage.validation_table import latest_validations

    path = tmp_path / "short.toml"
    path.write_text(SHORT)
    assert main(["study", "run", str(path), "--no-progress", "--json"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    cert = summary["certification"]
    assert cert["spent_images"] <= cert["budget_images"] == 96 and cert["certified"]
    spec = load_spec(path)
    study, storage = open_study(spec, create=False)
    rows = latest_validations(storage.engine, spec.name)
    assert set(cert["certified"]) <= set(rows) and all(rows[n]["seed"] == 1 for n in cert["certified"])

    assert main(["study", "pareto", str(path)]) == 0
    assert "certification at +5000 % on held-out seed 1" in capsys.readouterr().out

    out = tmp_path / "best.json"
    assert main(["export", str(path), "--best", "--max-fid-increase", "5000", "-o", str(out)]) == 0
    o = json.loads(out.read_text())["objectives"]
    assert o["validated_n_images"] == 32 and o["validated_fid_increase_pct_hi"] <= 5000  # the certified score

    capsys.readouterr()
    assert main(["export", str(path), "--best", "--max-fid-increase", "0", "-o", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuner: error: ") and "lowest upper bound" in err and not (tmp_path / "none.json").exists()


def test_a_stochastic_candidate_says_whether_its_noise_is_paired_with_the_baseline():
    from tuner.study.objective import solver_pairing

    assert solver_pairing({"timesteps": {}}, {}) is None
    assert solver_pairing({"solver": {"name": "ddpm", "coefficients": "liyan"}}, {}).startswith("unpaired")
    assert solver_pairing({"solver": {"name": "ddpm"}}, {"solver": "ddpm-baseline"}).startswith("paired")


def test_when_the_fastest_front_member_fails_certification_the_front_behind_it_is_raced(monkeypatch):
    # the default study's case: a fast member (+9 % point) noise-dominates slower ones near 0 %, then fails on
    # held-out seeds; the slower ones must still get their chance, fastest first, until one certifies
    from tuner.study import certify

    fast = _trial(0, 0.030, 9.0, -20, 40, 1e8, ["tome"])
    mid = _trial(1, 0.050, 0.0, -25, 30, 2e8, ["deepcache"])
    slow = _trial(2, 0.055, -1.0, -30, 25, 3e8, ["frdiff"])
    for i, t in enumerate((fast, mid, slow)):
        t.number = i
    trials = [fast, mid, slow]
    monkeypatch.setattr(certify, "candidates_for_cap", lambda study, spec, cap: list(trials))
    monkeypatch.setattr(certify, "baseline_of", lambda study: BASE)
    monkeypatch.setattr(certify, "held_out_context", lambda spec, ps, pipe: SimpleNamespace(
        evaluate_baseline=lambda: {"fid": BASE["fid"]}))
    monkeypatch.setattr(certify, "held_out_image_set", lambda spec, n: None)
    outcome = {0: "above cap", 1: "feasible", 2: "feasible"}
    raced = []

    def race_one(study, spec, ctx, t, rungs, state, base_fid):
        raced.append(t.number)
        return None, outcome[t.number], "stub"

    monkeypatch.setattr(certify, "_race_one", race_one)
    spec = SimpleNamespace(objectives=["latency", "fid"], maximized=[False, False], name="s",
                           constraints=SimpleNamespace(max_fid_increase=10.0))
    assert [t.number for t in certify.certification_candidates(None, spec, 10.0)] == [0]  # the front hides 1, 2
    state = {"trials": {}, "spent_images": 0, "budget_images": 10_000}
    certify._race_all(None, spec, None, (256, 1024), state, None, lambda msg: None)
    assert raced == [0, 1]  # the front behind the failed member came forward; it stops at the first certified
    assert state["trials"]["1"]["status"] == "feasible" and "2" not in state["trials"]


def test_held_out_certification_decides_front_feasibility_over_the_search_interval():
    # the merged default study's case: 2.07x, upper bound +10.8 % at 128 search images (over the +10 % cap),
    # certified at 1,024 held-out images (+5.9 %); the front showed only the baseline config before
    from tuner.study.pareto import CERTIFICATION_ATTR, completed

    study = optuna.create_study(directions=["minimize", "minimize"])
    for number, excess in ((0, 0.8), (1, 3.0), (2, -1.0)):
        t = create_trial(values=[0.05 + number / 100, 5.0], constraints={"fid_increase_pct": excess})
        study.add_trial(t)
    assert [t.number for t in completed(study)] == [2]
    study.set_user_attr(CERTIFICATION_ATTR, {"trials": {"0": {"status": "feasible"}, "2": {"status": "infeasible"},
                                                        "1": {"status": "undecided"}}})
    assert [t.number for t in completed(study)] == [0]
    assert len(completed(study, feasible_only=False)) == 3

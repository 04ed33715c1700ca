"""`tuner study validate`: front members re-measured on held-out seeds, stored beside the Pareto
snapshots, preferred by `export --best`; bad input is one line, exit 2, nothing written."""

import json

import optuna
import pytest
from optuna.trial import create_trial

from tuner.cli import main

TINY = """
name = "val"
n_trials = 3
seed = 0
snapshot_every = 3
[model]
threads = 1
[image_set]
n_images = 6
steps = 3
seed = 0
[evaluator]
latency_images = 2
latency_repeats = 2
cheap_reject_images = 0
certify_budget_images = 0   # these tests validate by hand; study run's own certification: test_certified.py
[constraints]
max_fid_increase = {cap}
[sampler]
name = "random"
[space.deepcache]
interval = [2, 3]
"""


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    import os

    folder = tmp_path_factory.mktemp("val")
    os.environ["TUNER_CACHE_DIR"] = str(folder / "cache")
    path = folder / "val.toml"
    path.write_text(TINY.format(cap=10000))  # every completed trial feasible: the front is never empty
    assert main(["study", "run", str(path), "--no-progress", "--json"]) == 0
    return path


def _validations(path):
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec
    from tuner.storage.validation_table import latest_validations

    spec = load_spec(path)
    _, storage = open_study(spec, create=False)
    return latest_validations(storage.engine, spec.name)


def test_validate_remeasures_every_front_member_on_held_out_seeds(tiny_study, capsys):
    from tuner.study import pareto
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    spec = load_spec(tiny_study)
    study, _ = open_study(spec, create=False)
    front = {m["trial"] for m in pareto.front(study, spec)["members"]}
    assert front
    capsys.readouterr()
    assert main(["study", "validate", str(tiny_study), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_images"] == 24 and out["seed"] == 1  # defaults: 4x the study's images, a seed it did not use
    assert {m["trial_number"] for m in out["members"]} == front
    for m in out["members"]:
        assert set(m["objectives"]) >= {"seconds_per_image", "fid", "speedup", "speedup_lo", "speedup_hi"}
        assert m["fid_increase_pct_lo"] <= m["fid_increase_pct"] <= m["fid_increase_pct_hi"]
        assert m["feasible"] is (m["fid_increase_pct_hi"] <= 10000)
    stored = _validations(tiny_study)
    assert set(stored) == front
    for m in out["members"]:
        row = stored[m["trial_number"]]
        assert row["n_images"] == 24 and row["seed"] == 1
        assert row["fid_increase_pct_hi"] == pytest.approx(m["fid_increase_pct_hi"])

    # text output: one line per member with its trial, objectives, fid_increase_pct and feasibility
    assert main(["study", "validate", str(tiny_study), "--n-images", "8", "--seed", "5"]) == 0
    text = capsys.readouterr().out
    assert "fid_increase_pct" in text and "feasible" in text
    for n in front:
        assert any(line.split()[:1] == [str(n)] and line.split()[-1] in ("true", "false") for line in text.splitlines())
    assert {r["n_images"] for r in _validations(tiny_study).values()} == {8}  # newest row per trial wins


@pytest.mark.parametrize("argv, match", [
    (["--seed", "0"], "seed the study measured on"),
    (["--n-images", "1"], "n_images=1 is out of range"),
])
def test_validate_bad_input_exit_2_nothing_written(tiny_study, capsys, argv, match):
    before = _validations(tiny_study)
    assert main(["study", "validate", str(tiny_study), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuner: error:") and match in err and len(err.strip().splitlines()) == 1
    assert _validations(tiny_study) == before


def test_validate_unknown_study_exit_2(tmp_path, capsys):
    path = tmp_path / "val.toml"
    path.write_text(TINY.format(cap=10))
    assert main(["study", "validate", str(path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "val.db").exists()


EXPORT_STUDY = """
name = "exv"
n_trials = 4
[image_set]
n_images = 8
steps = 6
[constraints]
max_fid_increase = 10
[space.deepcache]
"""


@pytest.fixture
def scored_study(tmp_path):
    """Three completed trials with stored intervals (baseline FID 10)."""
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    path = tmp_path / "exv.toml"
    path.write_text(EXPORT_STUDY)
    spec = load_spec(path)
    study, storage = open_study(spec)
    study.set_user_attr("baseline", {"fid": 10.0, "seconds_per_image": 0.1, "bitops": 1e9, "macs": 1e7})
    study.set_user_attr("model_id", "tuner/proxy-digits-16px")
    trials = {  # number: (latency, fid, point %, upper %)
        0: (0.08, 10.2, 2.0, 6.0),    # safe
        1: (0.05, 10.5, 5.0, 14.0),   # point within 10 %, upper bound not
        2: (0.06, 10.4, 4.0, 9.0),    # fastest whose upper bound is within 10 %
    }
    for n, (lat, fid, pct, hi) in trials.items():
        study.add_trial(create_trial(values=[lat, fid], constraints={"fid_increase_pct": hi - 10},
                                     user_attrs={"config": {"deepcache": {"interval": 2 + n}}, "speedup": 0.1 / lat,
                                                 "fid_increase_pct": pct, "fid_increase_pct_hi": hi}))
    return path, spec, study, storage


def test_export_best_uses_the_upper_bound(scored_study, tmp_path, capsys):
    path = scored_study[0]
    out = tmp_path / "best.json"
    assert main(["export", str(path), "--best", "--max-fid-increase", "10", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["environment"]["trial"] == 2
    assert data["objectives"]["fid_increase_pct_hi"] == 9.0
    assert main(["export", str(path), "--best", "--max-fid-increase", "15", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["environment"]["trial"] == 1


def test_export_best_prefers_validated_values(scored_study, tmp_path):
    from tuner.storage.validation_table import write_validations

    path, spec, study, storage = scored_study
    row = {"n_images": 32, "seed": 1, "steps": 6, "baseline_fid": 8.0, "max_fid_increase": 10.0}
    write_validations(storage.engine, spec.name, [
        {**row, "trial_number": 2, "fid_increase_pct": 12.0, "fid_increase_pct_lo": 5.0, "fid_increase_pct_hi": 20.0,
         "feasible": False, "objectives": {"seconds_per_image": 0.06, "fid": 8.96}},
        {**row, "trial_number": 0, "fid_increase_pct": 1.0, "fid_increase_pct_lo": -3.0, "fid_increase_pct_hi": 4.0,
         "feasible": True, "objectives": {"seconds_per_image": 0.07, "fid": 8.08, "speedup": 1.43}},
    ])
    out = tmp_path / "best.json"
    assert main(["export", str(path), "--best", "--max-fid-increase", "10", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["environment"]["trial"] == 0  # trial 2 broke the cap on held-out seeds
    assert data["objectives"]["validated_fid_increase_pct_hi"] == 4.0
    assert data["objectives"]["validated_n_images"] == 32
    # the study's own constraint (10 %) follows the validated values too
    assert main(["export", str(path), "--best", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["environment"]["trial"] == 0


def test_export_best_says_how_far_the_cap_is_when_nothing_qualifies(scored_study, tmp_path, capsys):
    out = tmp_path / "best.json"
    assert main(["export", str(scored_study[0]), "--best", "--max-fid-increase", "5", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lowest upper bound is +6.0%" in err and "tuner study validate" in err and len(err.strip().splitlines()) == 1
    assert "--max-fid-increase 5" in err
    assert not out.exists()


def test_the_baseline_config_is_never_the_best(scored_study, tmp_path, capsys):
    """Warm start measures the neutral config; it meets every cap (+0 %) but accelerates nothing."""
    path, spec, study, _ = scored_study
    study.add_trial(create_trial(values=[0.1, 10.0], constraints={"fid_increase_pct": -10},
                                 user_attrs={"config": {}, "speedup": 1.0, "fid_increase_pct": 0.0,
                                             "fid_increase_pct_hi": 0.0}))
    out = tmp_path / "best.json"
    assert main(["export", str(path), "--best", "--max-fid-increase", "5", "-o", str(out)]) == 2
    assert "no completed accelerated trial" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(path), "--best", "--max-fid-increase", "10", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["environment"]["trial"] == 2


def test_validate_for_a_cap_takes_the_trials_that_could_meet_it(scored_study):
    """--max-fid-increase X: the front of the accelerated trials whose point estimate is within X (their
    upper bounds at the study's N may not be), judged at X."""
    from tuner.study.validate import candidates_for_cap

    path, spec, study, _ = scored_study
    study.add_trial(create_trial(values=[0.1, 10.0], user_attrs={"config": {}, "fid_increase_pct": 0.0}))
    study.add_trial(create_trial(values=[0.03, 13.0], user_attrs={"config": {"deepcache": {"interval": 9}},
                                                                 "fid_increase_pct": 30.0}))
    assert {t.number for t in candidates_for_cap(study, spec, 10)} == {0, 1, 2}
    assert {t.number for t in candidates_for_cap(study, spec, 4.5)} == {0, 2}
    assert {t.number for t in candidates_for_cap(study, spec, 50)} == {0, 1, 2, 4}


@pytest.mark.parametrize("value", ["-1", "nan", "20000"])
def test_validate_cap_out_of_range_exit_2(tiny_study, capsys, value):
    before = _validations(tiny_study)
    assert main(["study", "validate", str(tiny_study), "--max-fid-increase", value]) == 2
    err = capsys.readouterr().err
    assert "--max-fid-increase" in err and len(err.strip().splitlines()) == 1
    assert _validations(tiny_study) == before


def test_validate_for_a_cap_stops_at_the_first_certified_trial(tiny_study, capsys):
    """Fastest candidate first; once one meets the cap on held-out seeds the slower ones are not measured."""
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec
    from tuner.study.validate import candidates_for_cap, distinct_configs

    spec = load_spec(tiny_study)
    study, _ = open_study(spec, create=False)
    pool = distinct_configs(sorted(candidates_for_cap(study, spec, 10000), key=lambda t: t.values[0]))
    assert pool
    capsys.readouterr()
    assert main(["study", "validate", str(tiny_study), "--n-images", "4", "--max-fid-increase", "10000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_fid_increase"] == 10000
    assert [m["trial_number"] for m in out["members"]] == [pool[0].number]  # certified at once: nothing more

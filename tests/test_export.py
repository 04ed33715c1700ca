"""Export a trial as JSON in the schema, load it back, apply it and remove it bit-identically."""

import dataclasses
import json

import jsonschema
import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

from tuner.cli import main
from tuner.study.export import SCHEMA_PATH

STUDY = """
name = "ex"
n_trials = 4
[image_set]
n_images = 8
steps = 6
[constraints]
max_fid_increase = 20
[space.tome]
[space.deepcache]
"""
BASELINE = {"fid": 10.0, "seconds_per_image": 0.1, "bitops": 1e9, "macs": 1e7}
CONFIGS = {  # trial number -> (latency, fid, methods)
    0: (0.08, 10.5, {"tome": {"ratio": 0.3}}),
    1: (0.05, 11.5, {"tome": {"ratio": 0.5}, "deepcache": {"interval": 2}}),  # fastest within +20 %
    2: (0.03, 14.0, {"deepcache": {"interval": 4}}),  # fastest overall, FID +40 %: infeasible
}


@pytest.fixture
def study_file(tmp_path):
    from tuner.config import AccelConfig
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    path = tmp_path / "ex.toml"
    path.write_text(STUDY)
    spec = load_spec(path)
    study, _ = open_study(spec)
    study.set_user_attr("baseline", BASELINE)
    study.set_user_attr("model_id", "tuner/proxy-digits-16px")
    for n, (lat, fid, methods) in CONFIGS.items():
        methods = AccelConfig.from_dict({"schema_version": 2, "methods": methods}).to_dict()["methods"]
        study.add_trial(create_trial(values=[lat, fid], constraints={"fid_increase_pct": 100 * (fid / 10 - 1) - 20},
                                     user_attrs={"config": methods, "kid": 0.01, "psnr": 30.0, "ssim": 0.9,
                                                 "class_accuracy": 1.0, "speedup": 0.1 / lat}))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"prune_reason": "cheap reject: FID"}))
    return path


def _schema():
    return json.loads(SCHEMA_PATH.read_text())


def test_schema_is_valid_and_matches_every_method_config():
    from tuner.config import method_specs

    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    specs = method_specs()
    assert set(schema["properties"]["methods"]["properties"]) == set(specs)
    for name, spec in specs.items():
        fields = {f.name for f in dataclasses.fields(spec.config_cls)}
        assert set(schema["$defs"][name]["properties"]) == fields, name


@pytest.mark.parametrize("argv, trial", [(["--best"], 1), (["--best", "--max-fid-increase", "50"], 2),
                                          (["--trial", "0"], 0)])
def test_export_picks_and_writes_schema_valid_json(study_file, tmp_path, capsys, argv, trial):
    from tuner.config import AccelConfig

    out = tmp_path / "best.json"
    assert main(["export", str(study_file), *argv, "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    jsonschema.validate(data, _schema(), cls=jsonschema.Draft202012Validator)
    assert data["environment"]["trial"] == trial
    assert data["model_id"] == "tuner/proxy-digits-16px"
    assert data["objectives"]["seconds_per_image"] == CONFIGS[trial][0]
    assert data["objectives"]["fid"] == CONFIGS[trial][1]
    assert {"device", "torch", "diffusers"} <= set(data["environment"])
    config = AccelConfig.load(out)
    assert set(config.methods) == set(CONFIGS[trial][2])


@pytest.mark.parametrize("argv, match", [(["--trial", "3"], "pruned"), (["--trial", "99"], "no trial #99"),
                                          (["--best", "--max-fid-increase", "1"], "no completed accelerated trial"),
                                          (["--trial", "0", "--max-fid-increase", "5"], "goes with --best")])
def test_export_errors_write_nothing(study_file, tmp_path, capsys, argv, match):
    out = tmp_path / "x.json"
    assert main(["export", str(study_file), *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err
    assert not out.exists()


def test_exported_config_applies_and_removes_bit_identically(study_file, tmp_path, tiny_pipe):
    from tuner.apply_config import apply
    from tuner.config import AccelConfig

    out = tmp_path / "c.json"
    assert main(["export", str(study_file), "--trial", "1", "-o", str(out)]) == 0
    config = AccelConfig.load(out)
    classes, seeds = [1, 7], [5, 6]
    before = tiny_pipe(classes, seeds, num_inference_steps=6)
    handle = apply(tiny_pipe, config)
    during = tiny_pipe(classes, seeds, num_inference_steps=6)
    handle.remove()
    after = tiny_pipe(classes, seeds, num_inference_steps=6)
    assert not torch.equal(before, during)
    assert torch.equal(before, after)


def test_cli_apply_writes_an_image_grid(study_file, tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["export", str(study_file), "--trial", "1", "-o", str(out)]) == 0
    png = tmp_path / "grid.png"
    assert main(["apply", str(out), "--out", str(png), "--n-images", "3", "--steps", "3", "--device", "cpu"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("content, match", [("{nope", "not valid JSON"),
                                             ('{"schema_version": 2, "methods": {"teleport": {}}}', "unknown method"),
                                             ('{"schema_version": 2, "methods": {"tome": {"ratio": 2}}}', "ratio")])
def test_cli_apply_bad_json_exit_2_nothing_written(tmp_path, capsys, content, match):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    png = tmp_path / "grid.png"
    assert main(["apply", str(bad), "--out", str(png)]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err
    assert not png.exists()


def test_export_reports_the_studys_machine_and_image_set(study_file, tmp_path):
    """The environment is where the study measured (stored with it), not the machine that exports."""
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    study, _ = open_study(load_spec(study_file), create=False, read_only=False)  # a test writes; commands do not
    study.set_user_attr("environment", {"device": "cuda:0", "device_name": "A100", "torch": "2.14.1"})
    out = tmp_path / "c.json"
    assert main(["export", str(study_file), "--trial", "0", "-o", str(out)]) == 0
    env = json.loads(out.read_text())["environment"]
    assert env["device"] == "cuda:0" and env["device_name"] == "A100"
    assert env["image_set"] == {"n_images": 8, "steps": 6, "seed": 0, "latency_images": 8}


def test_evaluate_defaults_to_the_exported_image_set(study_file, tmp_path):
    import argparse

    from tuner.commands.common import image_set_args
    from tuner.config import AccelConfig

    out = tmp_path / "c.json"
    assert main(["export", str(study_file), "--trial", "0", "-o", str(out)]) == 0
    recorded = AccelConfig.load(out).environment["image_set"]
    args = argparse.Namespace(n_images=None, steps=None, seed=None, latency_images=None, latency_repeats=3)
    assert image_set_args(args, recorded) == {"n_images": 8, "steps": 6, "seed": 0, "latency_images": 8}
    args.steps = 12  # an explicit flag wins over the record
    assert image_set_args(args, recorded)["steps"] == 12
    assert image_set_args(argparse.Namespace(n_images=None, steps=None, seed=None, latency_images=None,
                                             latency_repeats=3)) == {"n_images": 64, "steps": 50, "seed": 0,
                                                                     "latency_images": 8}
    from tuner.commands.common import recorded_image_set

    # configs exported before the rename carry it as environment.proxy_set
    assert recorded_image_set({"proxy_set": recorded}) == recorded  # old name
    assert recorded == recorded_image_set({"image_set": recorded})


@pytest.mark.parametrize("argv, match", [(["--latency-repeats", "0"], "--latency-repeats=0"),
                                          (["--steps", "0"], "steps=0"), (["--n-images", "-3"], "n_images=-3"),
                                          (["--seed", "-1"], "seed=-1")])
def test_evaluate_bad_flags_exit_2_before_any_work(tmp_path, capsys, argv, match):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"schema_version": 2, "methods": {"tome": {"ratio": 0.3}}}')
    assert main(["evaluate", str(cfg), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err


def test_evaluate_rejects_a_config_the_model_cannot_take_before_the_baseline(tmp_path, capsys, monkeypatch):
    from tuner.scoring import ScoringContext

    def no_generation(self, image_set=None):
        raise AssertionError("images were generated before the config was checked")

    monkeypatch.setattr(ScoringContext, "generate", no_generation)
    cfg = tmp_path / "c.json"
    cfg.write_text('{"schema_version": 2, "methods": {"deepcache": {"interval": 3, "branch": 9}}}')
    assert main(["evaluate", str(cfg), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "branch" in err and "\n" not in err


def test_cli_apply_unknown_image_format_exit_2_before_generating(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"schema_version": 2, "methods": {"tome": {"ratio": 0.3}}}')
    assert main(["apply", str(cfg), "--out", str(tmp_path / "grid.foo")]) == 2
    err = capsys.readouterr().err.strip()
    assert "grid.foo" in err and "\n" not in err
    assert not (tmp_path / "grid.foo").exists()


def test_evaluate_rejects_a_malformed_recorded_image_set(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"schema_version": 2, "methods": {}, "environment": {"image_set": [8, 6]}}')
    assert main(["evaluate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "environment.image_set must be an object" in err and "\n" not in err


def test_evaluate_measures_in_the_recorded_feature_space(tmp_path, capsys):
    """A config measured with Inception FID is not quietly re-measured with the proxy extractor."""
    cfg = tmp_path / "c.json"
    cfg.write_text('{"schema_version": 2, "methods": {}, "environment": {"feature_extractor": "inception"}}')
    assert main(["evaluate", str(cfg), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Inception" in err and "\n" not in err

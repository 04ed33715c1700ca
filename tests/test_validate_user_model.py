"""`tuner study validate` on a user's model (the tiny SD-1.5 pipeline): the held-out set is the study's
prompts with other seeds, FID is re-measured against the baseline's own images on those seeds, and
`export --best` then prefers the validated values."""

from __future__ import annotations

import json

import pytest

from tiny_user_models import study_toml
from tuner.cli import main



@pytest.fixture(scope="module")
def sd15_study(user_models, tmp_path_factory):
    import os

    folder = tmp_path_factory.mktemp("val_sd15")
    previous = os.environ.get("TUNER_CACHE_DIR")
    os.environ["TUNER_CACHE_DIR"] = str(folder / "cache")  # the per-test cache fixture is function-scoped
    toml = folder / "val.toml"
    toml.write_text(study_toml("val-sd15", user_models["sd15"], prompts=user_models["prompts"],
                               evaluator=f'inception_weights = "{user_models["inception"]}"'))
    assert main(["study", "run", str(toml), "--no-progress", "--json"]) == 0
    yield toml
    if previous is None:
        os.environ.pop("TUNER_CACHE_DIR", None)
    else:
        os.environ["TUNER_CACHE_DIR"] = previous


def test_held_out_set_keeps_the_prompts(sd15_study):
    from tuner.study.context import image_set_of
    from tuner.study.spec import load_spec
    from tuner.study.validate import held_out_image_set

    spec = load_spec(sd15_study)
    held_out = held_out_image_set(spec, 5)
    prompts = ["a photo of a cat", "red car in the city at night", "a blue house by a lake"]
    assert held_out.conditions == prompts + prompts[:2] and held_out.seed == 1
    assert not set(held_out.seeds) & set(image_set_of(spec).seeds)  # other seeds than the study's


def test_validate_user_model_then_export_prefers_validated(sd15_study, capsys):
    from optuna.trial import TrialState

    from tuner.study import pareto
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    spec = load_spec(sd15_study)
    study, _ = open_study(spec, create=False)
    front = {m["trial"] for m in pareto.front(study, spec)["members"]}
    assert main(["study", "validate", str(sd15_study), "--n-images", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_images"] == 4 and out["seed"] == 1 and {m["trial_number"] for m in out["members"]} == front
    base = out["baseline"]  # FID-to-baseline: its scale is the held-out set's seed-noise floor
    assert base["fid"] == base["fid_seed_floor"] > 0 and base["fid"] != study.user_attrs["baseline"]["fid"]
    for m in out["members"]:
        assert m["error"] is None, m["error"]
        assert set(m["objectives"]) >= {"seconds_per_image", "fid", "speedup", "psnr", "ssim"}
        assert m["fid_increase_pct_lo"] <= m["fid_increase_pct"] <= m["fid_increase_pct_hi"]
    by_number = {t.number: t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    neutral = [m for m in out["members"] if by_number[m["trial_number"]].user_attrs["config"] == {}]
    for m in neutral:  # the baseline's own config, against the baseline on the same held-out seeds: same images
        assert abs(m["objectives"]["fid"]) < 0.05 * base["fid"] and m["objectives"]["psnr"] > 60

    out_file = sd15_study.parent / "best.json"
    assert main(["export", str(sd15_study), "--best", "-o", str(out_file)]) == 0
    exported = json.loads(out_file.read_text())
    validated = {m["trial_number"]: m["objectives"]["seconds_per_image"] for m in out["members"]}
    latency = {n: validated.get(n, t.values[0]) for n, t in by_number.items()  # validated latency wins;
               if t.user_attrs["config"]}  # the baseline config is never "best"
    assert exported["environment"]["trial"] == min(latency, key=lambda n: (latency[n], n))
    if exported["environment"]["trial"] in validated:
        assert exported["objectives"]["validated_n_images"] == 4
        assert exported["objectives"]["validated_seconds_per_image"] == pytest.approx(
            validated[exported["environment"]["trial"]], rel=1e-4)  # printed JSON is rounded


def test_validate_needs_enough_images_for_its_interval(sd15_study, capsys):
    assert main(["study", "validate", str(sd15_study), "--n-images", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tuner: error: --n-images=3: validation needs at least 4 images") and "\n" not in err

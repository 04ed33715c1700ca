"""One FID scale (tuner/study/fid_scale.py): for the same trial, every surface prints and uses the same
FID change: log line, `pareto` table and `--json`, constraint, hypervolume, plot cap line, `export`,
dashboard view, and `validate` rows (on the proxy, a tiny SD-1.5 and a tiny SDXL pipeline)."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from tiny_user_models import study_toml
from tuner.cli import main

CAP = 5000.0
PROXY = f"""
name = "scale-proxy"
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
certify_rungs = [8]
[constraints]
max_fid_increase = {CAP}
[sampler]
name = "random"
warm_start = false
[space.timesteps]
counts = [3, 2]
"""
USER_SPACE = "[space.timesteps]\ncounts = [2]\n"


def _toml(layout, user_models, tmp_path):
    if layout == "proxy":
        text = PROXY
    else:
        text = study_toml(f"scale-{layout}", user_models[layout], prompts=user_models["prompts"],
                          evaluator=f'inception_weights = "{user_models["inception"]}"', space=USER_SPACE)
        text = text.replace("[sampler]", f"[constraints]\nmax_fid_increase = {CAP}\n[sampler]")
    path = tmp_path / f"{layout}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("layout", ["proxy", "sd15", "sdxl"])
def test_every_surface_shows_the_same_fid_change(layout, user_models, tmp_path, capsys):
    from tuner.study import pareto
    from tuner.storage.dashboard_view import with_dashboard_constraints
    from tuner.study.fid_scale import FidScale
    from tuner.study.spec import load_spec

    path = _toml(layout, user_models if layout != "proxy" else None, tmp_path)
    assert main(["study", "run", str(path), "--no-progress", "--json"]) == 0
    log = capsys.readouterr().err
    spec = load_spec(path)
    study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    baseline = study.user_attrs["baseline"]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs.get("config")]
    assert done, log
    t = done[0]
    pct, hi = t.user_attrs["fid_increase_pct"], t.user_attrs["fid_increase_pct_hi"]
    fid = t.values[spec.objectives.index("fid")]
    scale = FidScale.of(baseline)

    assert scale.change_of(fid) == pytest.approx(pct, abs=1e-6)  # the objective itself is on the scale
    assert f"trial {t.number} complete: " in log and f"({pct:+.1f} %, upper {hi:+.1f} %" in log  # log line
    assert t.constraints["fid_increase_pct"] == pytest.approx(hi - CAP)  # the constraint
    view = with_dashboard_constraints(t)  # what the dashboard reads
    assert view.system_attrs["constraints"] == [pytest.approx(hi - CAP)]
    norm = pareto.normalized(spec, baseline, [t.values])[0][spec.objectives.index("fid")]
    assert norm == pytest.approx(1 + pct / 100)  # the hypervolume's coordinates
    assert scale.change_of(scale.cap_value(CAP)) == pytest.approx(CAP)  # the plot's cap line
    assert pareto.member(spec, t, baseline)["objectives"]["fid_increase_pct"] == pytest.approx(pct)  # --json

    assert main(["study", "pareto", str(path), "--json"]) == 0
    for m in json.loads(capsys.readouterr().out):
        o = m["objectives"]
        assert scale.change_of(o["fid"]) == pytest.approx(o["fid_increase_pct"], abs=0.05)  # printed rounded
    assert main(["study", "pareto", str(path)]) == 0
    table = capsys.readouterr().out
    front = {m["trial"] for m in pareto.front(study, spec)["members"]}
    if t.number in front:
        assert f"{pct:+7.1f}" in table

    out = tmp_path / "t.json"
    assert main(["export", str(path), "--trial", str(t.number), "-o", str(out)]) == 0
    objectives = json.loads(out.read_text())["objectives"]
    assert objectives["fid_increase_pct"] == pytest.approx(pct) and objectives["fid"] == pytest.approx(fid)

    assert main(["study", "validate", str(path), "--json", "--n-images", "4", "--max-fid-increase", str(CAP)]) == 0
    capsys.readouterr()
    from tuner.study.runner import open_study
    from tuner.storage.validation_table import latest_validations

    _, storage = open_study(spec, create=False)
    for row in latest_validations(storage.engine, spec.name).values():  # held-out rows: the same scale
        if row["fid_increase_pct"] is not None:
            assert scale.change_of(row["objectives"]["fid"]) == pytest.approx(row["fid_increase_pct"], abs=1e-6)

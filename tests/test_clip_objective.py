"""The CLIP score as a maximized objective of a study on a user's model (`objectives = [..., "clip_score"]`
with `[evaluator] clip_model`): stored direction, front, hypervolume, pareto and export through the CLI
on the tiny SD-1.5 pipeline, and the samplers' selection."""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import create_trial

from tiny_user_models import study_toml
from tuner.cli import main
from tuner.study.pareto import front_trials, hypervolume, reference_point



def write_study(user_models, tmp_path, folder=None, clip=True, objectives='["latency", "fid", "clip_score"]'):
    folder = folder or user_models["sd15"]
    evaluator = f'inception_weights = "{user_models["inception"]}"' if folder != "proxy" else ""
    if clip:
        evaluator += f'\nclip_model = "{user_models["clip"]}"'
    prompts = user_models["prompts"] if folder != "proxy" else None
    path = tmp_path / "clip.toml"
    path.write_text(study_toml("clip", folder, prompts=prompts, evaluator=evaluator, objectives=objectives))
    return path


def test_study_maximizes_clip_score(user_models, tmp_path, capsys):
    from tuner.study import pareto
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    toml = write_study(user_models, tmp_path)
    assert main(["study", "run", str(toml), "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["states"] == {"COMPLETE": 3}
    spec = load_spec(toml)
    study, _ = open_study(spec, create=False)
    assert study.directions == [StudyDirection.MINIMIZE, StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE]
    base_clip = study.user_attrs["baseline"]["clip_score"]  # measured once, with the baseline
    assert base_clip > 0
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    for t in trials:
        assert t.values[2] == pytest.approx(t.user_attrs["clip_score"])
        assert t.user_attrs["clip_score_change_pct"] == pytest.approx(100 * (t.values[2] / base_clip - 1))

    def dominated(t):  # by hand: another trial at least as good everywhere (CLIP higher-is-better), better once
        better_or_equal = lambda o: o.values[0] <= t.values[0] and o.values[1] <= t.values[1] and o.values[2] >= t.values[2]  # noqa: E731
        return any(better_or_equal(o) and o.values != t.values for o in trials)

    assert main(["study", "pareto", str(toml), "--json"]) == 0
    members = json.loads(capsys.readouterr().out)
    assert {m["trial"] for m in members} == {t.number for t in trials if not dominated(t)}
    assert all(m["objectives"]["clip_score"] == pytest.approx(m["config"]["objectives"]["clip_score"]) for m in members)
    data = pareto.front(study, spec)
    assert data["baseline"]["clip_score"] == base_clip
    assert data["reference_point"]["clip_score"] == pytest.approx(0.9 * base_clip)  # 10 % below the baseline

    assert main(["study", "pareto", str(toml), "--plot", str(tmp_path / "front.png")]) == 0
    assert "CLIP" in capsys.readouterr().out and (tmp_path / "front.png").stat().st_size > 0
    out = tmp_path / "best.json"
    assert main(["export", str(toml), "--best", "-o", str(out)]) == 0
    capsys.readouterr()
    exported = json.loads(out.read_text())
    best = study.trials[exported["environment"]["trial"]]
    assert exported["objectives"]["clip_score"] == pytest.approx(best.values[2])


@pytest.mark.parametrize("folder, clip, match", [
    ("proxy", False, "objective 'clip_score' needs prompts"),
    (None, False, "objective 'clip_score' needs [evaluator] clip_model"),
])
def test_clip_objective_needs_a_text_model_and_a_clip_folder(user_models, tmp_path, capsys, folder, clip, match):
    toml = write_study(user_models, tmp_path, folder=folder, clip=clip)
    assert main(["study", "run", str(toml), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tuner: error:") and match in err and "\n" not in err
    assert not list(tmp_path.glob("*.db"))


def _spec(objectives=("latency", "fid", "clip_score")):
    """What front_trials / hypervolume read of a StudySpec."""
    return SimpleNamespace(objectives=objectives, maximized=[o == "clip_score" for o in objectives],
                           constraints=SimpleNamespace(max_fid_increase=None))


def test_higher_clip_score_dominates_with_equal_other_objectives():
    lower, higher = (create_trial(values=[0.1, 5.0, clip]) for clip in (30.0, 31.0))
    spec = _spec()
    assert front_trials([lower, higher], spec.maximized) == [higher]
    assert front_trials([lower, higher]) == [lower]  # read as minimized, the other one would win
    baseline = {"seconds_per_image": 0.2, "fid": 5.0, "clip_score": 31.5}
    ref, raw = reference_point(spec, baseline)
    assert list(ref) == pytest.approx([1.0, 2.0, 1.1]) and raw["clip_score"] == pytest.approx(0.9 * 31.5)
    assert hypervolume(spec, baseline, [higher]) > hypervolume(spec, baseline, [lower]) > 0
    far_below = create_trial(values=[0.1, 5.0, 0.85 * 31.5])  # loses more than 10 %: no volume
    assert hypervolume(spec, baseline, [far_below]) == 0.0


@pytest.mark.parametrize("name", ["deap-nsga2", "joint"])
def test_deap_selection_prefers_the_higher_clip_score(name):
    from tuner.samplers import build_sampler
    from tuner.search_spaces.space import SpaceContext, build_space

    space = build_space({"deepcache": {}}, SpaceContext(steps=4, facts={"deepcache": {"max_branch": 2}}))
    sampler = build_sampler(name, space, 0, {"population_size": 2})
    study = optuna.create_study(directions=["minimize", "minimize", "maximize"], sampler=sampler)
    for clip in (30.0, 31.0, 29.0):
        study.add_trial(create_trial(values=[0.1, 5.0, clip]))
    chosen = sampler.elite(study, study.get_trials())
    assert sorted(t.values[2] for t in chosen) == [30.0, 31.0]

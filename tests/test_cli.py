"""The CLI as users meet it: --version, help for every flag, units in printed results, one thread policy
for every command that runs the model, full configs in `pareto --json`, and the dashboard."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from tuner.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _parsers(parser: argparse.ArgumentParser, prefix=("tuner",)):
    """(command path, parser) for the top level and every subcommand, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*prefix, name))


def test_version_is_the_package_version(capsys):
    assert main(["--version"]) == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"tuner {version}"


def test_every_flag_and_subcommand_has_help():
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:  # the one-line help of each subcommand
                    if not choice.help:
                        missing.append(f"{' '.join(path)} {choice.dest}")
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_top_level_help_is_for_users(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("study", "export", "evaluate", "apply", "dashboard", "baseline", "profile"):
        assert f"tuner {command}" in out or f"  {command} " in out, command
    assert "Pareto front" in out and "--version" in out
    assert "Parses, calls the library" not in out  # the old note to developers


def test_results_print_with_units(capsys):
    from tuner.commands.common import print_result

    print_result({"seconds_per_image": 0.1232, "speedup": 1.8, "fid": 5.2, "macs": 1e9, "overhead_share": 0.029,
                  "feature_extractor": "proxy"}, as_json=False)
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert lines["seconds_per_image"] == ["0.1232", "s/image"]
    assert lines["speedup"] == ["1.8", "x"]
    assert lines["macs"] == ["1000000000.0", "MACs/image"]
    assert lines["overhead_share"] == ["2.9", "%"]
    assert lines["fid"] == ["5.2"] and lines["feature_extractor"] == ["proxy"]
    print_result({"seconds_per_image": 0.1232, "speedup": 1.8}, as_json=True)  # JSON stays bare numbers
    assert json.loads(capsys.readouterr().out) == {"seconds_per_image": 0.1232, "speedup": 1.8}


def test_trial_log_line_has_units(tmp_path):
    from tuner.study.pareto import objectives_line
    from tuner.study.spec import load_spec

    path = tmp_path / "s.toml"
    path.write_text('name = "s"\nobjectives = ["latency", "fid", "bitops"]\n')
    line = objectives_line(load_spec(path), {"seconds_per_image": 0.1232, "speedup": 1.8, "fid": 5.5,
                                             "fid_increase_pct": 10.0, "fid_increase_pct_hi": 14.0, "n_images": 32,
                                             "bitops": 2e12})
    assert line == ("latency 0.1232 s/image (1.80x), fid 5.500 (+10.0 %, upper +14.0 %, 32 images), "
                    "bitops 2e+12 BitOPs/image")


# --- one thread policy --------------------------------------------------------------------------------

class _Stop(Exception):
    """Raised by the patched helper: the command got as far as setting its threads."""


@pytest.fixture
def threads_seen(monkeypatch):
    import tuner.threads

    seen = []

    def record(threads, what="--threads"):
        seen.append(tuner.threads.check_threads(threads, what))
        raise _Stop

    monkeypatch.setattr(tuner.threads, "set_threads", record)
    return seen


def _fresh_study(folder):
    """The CLI study's TOML without its stored trials (a run refuses trials added outside tuner's budget)."""
    from cli_study import STUDY_TOML

    path = folder / "fresh.toml"
    path.write_text(STUDY_TOML)
    return path


def _command(name, tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"schema_version": 2, "methods": {}}')
    return {"baseline": ["baseline", "--n-images", "2", "--steps", "1"],
            "evaluate": ["evaluate", str(config), "--n-images", "2", "--steps", "1"],
            "apply": ["apply", str(config), "--out", str(tmp_path / "g.png"), "--n-images", "1"],
            "profile": ["profile", "--n-images", "2", "--steps", "2", "--out", str(tmp_path / "prof")],
            "study run": ["study", "run", str(_fresh_study(tmp_path))]}[name]


@pytest.mark.parametrize("command", ["baseline", "evaluate", "apply", "profile", "study run"])
@pytest.mark.parametrize("flag, expected", [([], 1), (["--threads", "3"], 3)])
def test_every_model_command_sets_threads_through_the_policy(tmp_path, threads_seen, command, flag, expected):
    with pytest.raises(_Stop):
        main([*_command(command, tmp_path), *flag])
    assert threads_seen == [expected]


def test_study_threads_come_from_the_toml_unless_the_flag_says(tmp_path, threads_seen):
    path = _fresh_study(tmp_path)
    path.write_text(path.read_text().replace("[image_set]", "[model]\nthreads = 2\n[image_set]"))
    with pytest.raises(_Stop):
        main(["study", "run", str(path)])
    with pytest.raises(_Stop):
        main(["study", "run", str(path), "--threads", "1"])
    assert threads_seen == [2, 1]


def test_set_threads_sets_torch():
    from tuner.threads import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(None) == 1 and torch.get_num_threads() == 1
        assert set_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --- pareto --json --------------------------------------------------------------------------------------

def test_pareto_json_members_carry_loadable_configs(tmp_path, capsys):
    from cli_study import make_study

    from tuner.config import AccelConfig

    assert main(["study", "pareto", str(make_study(tmp_path)), "--json"]) == 0
    members = json.loads(capsys.readouterr().out)
    assert [m["trial"] for m in members] == [1, 4, 0]  # trial 2 is faster but infeasible
    for m in members:
        config = AccelConfig.from_dict(m["config"])  # the wrapper an exported file has
        assert config.to_dict()["methods"] == AccelConfig.from_dict(m["config"]).to_dict()["methods"]
        assert m["config"]["methods"] and m["config"]["model_id"] == "tuner/proxy-digits-16px"
        assert m["config"]["environment"]["trial"] == m["trial"]
        # the same file `tuner export --trial N` writes
        out = tmp_path / f"t{m['trial']}.json"
        assert main(["export", str(tmp_path / "cli.toml"), "--trial", str(m["trial"]), "-o", str(out)]) == 0
        assert json.loads(out.read_text())["methods"] == m["config"]["methods"]
    capsys.readouterr()


def test_pareto_table_has_units(tmp_path, capsys):
    from cli_study import make_study

    assert main(["study", "pareto", str(make_study(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "ms/image" in out and "2.00x" in out and "FID +%" in out  # trial 1: 0.1 / 0.05 s/image


# --- dashboard ----------------------------------------------------------------------------------------

def _dashboard_get(storage, path):
    """One GET against optuna-dashboard's WSGI app (no server, no port)."""
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    environ = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    status = {}
    body = b"".join(wsgi(storage)(environ, lambda s, headers, exc=None: status.setdefault("code", s)))
    return int(status["code"].split()[0]), body


def _dashboard_front(detail: dict) -> list[int]:
    """The Pareto front optuna-dashboard 0.21 draws, computed as its bundle.js does (`hv` splits complete
    trials by `constraints.every(c => c <= 0)`, `pv` marks the dominated among the feasible ones)."""
    directions = detail["directions"]
    trials = [t for t in detail["trials"] if t["state"] == "Complete" and len(t.get("values") or []) == len(directions)]
    feasible = [t for t in trials if all(c <= 0 for c in t["constraints"])]
    points = [[v if d == "minimize" else -v for v, d in zip(t["values"], directions)] for t in feasible]
    dominated = [False] * len(points)
    if len(directions) == 2:
        order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
        if order:
            r, n = points[order[0]]
        for i in order:
            x, y = points[i]
            if y > n or (y == n and x > r):
                dominated[i] = True
            else:
                n = y
            r = x  # bundle.js: `cond ? dominated : n = e[1], r = e[0]` updates r on every step
    else:
        for i, p in enumerate(points):
            dominated[i] = any(q != p and all(a <= b for a, b in zip(q, p)) for q in points)
    return sorted(t["number"] for t, d in zip(feasible, dominated) if not d)


def test_dashboard_front_is_the_feasible_front(tmp_path):
    from cli_study import make_study

    from tuner.study import pareto
    from tuner.storage.dashboard_view import ConstraintsView
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    spec = load_spec(make_study(tmp_path))
    study, storage = open_study(spec, create=False)
    ours = sorted(m["trial"] for m in pareto.front(study, spec)["members"])
    sid = study._study_id

    code, body = _dashboard_get(ConstraintsView(storage), f"/api/studies/{sid}")
    assert code == 200
    assert _dashboard_front(json.loads(body)) == ours == [0, 1, 4]
    # Served straight from the storage, the dashboard sees no constraints: the infeasible trial 2 joins.
    code, body = _dashboard_get(storage, f"/api/studies/{sid}")
    assert 2 in _dashboard_front(json.loads(body))
    # Nothing is written: Optuna (its samplers) still reads each constraint once
    assert [t.constraints for t in study.get_trials()][2] == {"fid_increase_pct": pytest.approx(20.0)}


def test_dashboard_pareto_plot_renders(tmp_path):
    # optuna-dashboard renders this plot with plotly on the server: HTTP 500 when plotly is missing
    from cli_study import make_study

    from tuner.storage.dashboard_view import ConstraintsView
    from tuner.study.runner import open_study
    from tuner.study.spec import load_spec

    study, storage = open_study(load_spec(make_study(tmp_path)), create=False)
    code, body = _dashboard_get(ConstraintsView(storage), f"/api/studies/{study._study_id}/plot/pareto_front")
    assert code == 200 and b"Infeasible" in body


def test_dashboard_command_serves_in_this_interpreter(tmp_path, monkeypatch, capsys):
    # no `optuna-dashboard` script on PATH is needed (it was only there in an activated venv)
    import optuna_dashboard

    from cli_study import make_study

    from tuner.storage.dashboard_view import ConstraintsView

    served = {}
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, host, port: served.update(
        storage=storage, host=host, port=port))
    assert main(["dashboard", str(make_study(tmp_path)), "--port", "8123"]) == 0
    assert isinstance(served["storage"], ConstraintsView) and (served["host"], served["port"]) == ("127.0.0.1", 8123)
    assert "http://127.0.0.1:8123/" in capsys.readouterr().err


def test_dashboard_refuses_a_missing_study(tmp_path, capsys):
    path = tmp_path / "none.toml"
    path.write_text('name = "none"\n')
    assert main(["dashboard", str(path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_cli_module_runs_with_this_interpreter():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "tuner.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("tuner ")

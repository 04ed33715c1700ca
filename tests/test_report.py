"""`tuner study report`: one offline HTML page. Checked with Python's parser (always) and in headless
Chromium (when installed): no JavaScript errors, one front point per `study pareto --json` member, every
member's images and difference maps present and decoded, an export command per member."""

from __future__ import annotations

import json

import pytest

from browser import chromium, dump_dom
from cli_study import make_study
from report_dom import ReportDom
from tuner.cli import main

N_IMAGES = 3
CERTIFICATION = {"cap": 20.0, "seed": 1, "rungs": [16], "budget_images": 64, "spent_images": 16,
                 "trials": {"1": {"status": "feasible", "n_images": 16, "fid_increase_pct": 12.0,
                                  "fid_increase_pct_lo": 4.0, "fid_increase_pct_hi": 19.0, "speedup": 1.9,
                                  "speedup_lo": 1.8}}}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The stored CLI study (proxy model; trial 1 certified feasible), its front as `pareto --json` prints
    it, and its report."""
    import optuna

    folder = tmp_path_factory.mktemp("report")
    toml = make_study(folder)
    optuna.load_study(study_name="cli", storage=f"sqlite:///{folder / 'cli.db'}").set_user_attr(
        "certification", CERTIFICATION)
    out = folder / "report.html"
    assert main(["study", "report", str(toml), "-o", str(out), "--n-images", str(N_IMAGES), "--no-progress"]) == 0
    return {"toml": toml, "out": out}


def _members(toml, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["study", "pareto", str(toml), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_holds_every_member_with_images_and_export_command(report, capsys):
    members = _members(report["toml"], capsys)
    dom = ReportDom(report["out"].read_text())
    assert len(members) >= 2
    assert dom.sections == ["baseline", *[str(m["trial"]) for m in members]]
    assert len(dom.tiles_of("baseline", "image")) == N_IMAGES
    for m in members:
        for kind in ("baseline", "image", "diff"):  # the baseline's, the member's, their difference
            tiles = dom.tiles_of(m["trial"], kind)
            assert len(tiles) == N_IMAGES and all(t["src"].startswith("data:image/png;base64,") for t in tiles)
        assert f"tuner export {report['toml']} --trial {m['trial']} -o trial-{m['trial']}.json" in dom.inputs
    assert dom.front_points() == len(members)
    certified = [t for t in dom.figure_data("front") if t.get("name") == "front, certified feasible"]
    assert [c[0] for c in certified[0]["customdata"]] == [1]  # the certification's verdict, not the search's
    assert dom.tiles_of(0, "image")[0]["alt"].startswith("class 0 · seed 0")


def test_report_is_self_contained(report):
    text = report["out"].read_text()
    dom = ReportDom(text)
    assert dom.script_srcs == []  # no CDN, no side file: plotly.js is inline
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js itself is about 4.6 MB
    assert "<link" not in text and "<iframe" not in text  # no style sheet or frame fetched from elsewhere


def test_tiles_are_upscaled_nearest_neighbour(report):
    import base64
    import io

    from PIL import Image

    tile = ReportDom(report["out"].read_text()).tiles_of(0, "image")[0]
    image = Image.open(io.BytesIO(base64.b64decode(tile["src"].split(",", 1)[1])))
    assert image.size == (128, 128)  # 16-px proxy tiles x8
    pixels = image.convert("L").load()
    assert all(pixels[8 * i, 8 * j] == pixels[8 * i + 7, 8 * j + 7] for i in range(16) for j in range(16))


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install -y chromium); "
                                               "the DOM checks above ran in Python")
def test_report_renders_in_chromium_without_errors(report, capsys):
    members = _members(report["toml"], capsys)
    text = report["out"].read_text()
    check = ReportDom(dump_dom(report["out"])).render_check
    assert check.get("done") == "1", "the page's load handler did not run"
    assert json.loads(check["errors"]) == []
    assert int(check["front-points"]) == len(members)  # SVG points plotly drew on the front traces
    assert int(check["plotted"]) == text.count("Plotly.newPlot(") >= 2  # every figure drew (front, hypervolume)
    n_tiles = N_IMAGES * (1 + 3 * len(members))
    assert int(check["images"]) == int(check["images-decoded"]) == n_tiles


@pytest.mark.parametrize("argv, message", [
    (["-o", "{dir}/report.txt"], "unsupported file type"),
    (["-o", "{dir}/report.html", "--n-images", "0"], "--n-images=0 is out of range"),
    (["-o", "{dir}/missing/report.html"], "does not exist"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    toml = make_study(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["study", "report", str(toml), *[a.format(dir=tmp_path) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuner: error: ") and message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_report_on_a_user_model(user_models, tmp_path, capsys):
    """The same page from a study on a tiny SD-1.5 layout: the pipeline's own images, prompts as captions."""
    from tiny_user_models import study_toml

    toml = tmp_path / "sd15.toml"
    toml.write_text(study_toml("tiny-report", user_models["sd15"], prompts=user_models["prompts"],
                               evaluator=f'inception_weights = "{user_models["inception"]}"'))
    assert main(["study", "run", str(toml), "--no-progress", "--json"]) == 0
    members = _members(toml, capsys)
    out = tmp_path / "report.html"
    assert main(["study", "report", str(toml), "-o", str(out), "--n-images", "2", "--no-progress"]) == 0
    dom = ReportDom(out.read_text())
    assert dom.sections == ["baseline", *[str(m["trial"]) for m in members]]
    assert [t["alt"] for t in dom.tiles_of("baseline", "image")] == ["a photo of a cat · seed 0",
                                                                      "red car in the city at night · seed 1"]
    assert all(len(dom.tiles_of(m["trial"], "diff")) == 2 for m in members)
    assert dom.front_points() == len(members)

"""Studies on diffusion-transformer pipelines (PixArt-α, SD3, Flux), end to end through the CLI on tiny
random-weight folders (tests/tiny_dit_models.py): the default space is derived from the denoiser (solver
or flow solver, timesteps, diffusers' cache hooks, quantization with BitOPs; no U-Net method), then
study run -> pareto -> export -> evaluate -> apply, with bit-identical removal of what apply installed."""

from __future__ import annotations

import json

import pytest

from tiny_user_models import study_toml
from tuner.cli import main

CACHES = {"pixart": {"fbcache", "pab", "taylorseer", "magcache", "dit_tome", "dit_catome"},
          "sd3": {"pab", "taylorseer", "magcache", "dit_tome", "dit_catome"},  # FBC fails on SD3's last block
          "flux": {"fbcache", "pab", "taylorseer", "magcache", "dit_tome", "dit_catome"}}
SOLVER = {"pixart": "solver", "sd3": "flow_solver", "flux": "flow_solver"}


def write_study(dit_models, tmp_path, layout: str, space: str = "") -> "Path":
    text = study_toml(f"tiny-{layout}", dit_models[layout], prompts=dit_models["prompts"],
                      evaluator=f'inception_weights = "{dit_models["inception"]}"', space=space,
                      objectives='["latency", "fid", "bitops"]')
    path = tmp_path / f"{layout}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("layout", ["pixart", "sd3", "flux"])
def test_default_space_follows_the_denoiser(dit_models, tmp_path, layout):
    from tuner.study.spec import load_spec

    spec = load_spec(write_study(dit_models, tmp_path, layout))
    assert set(spec.space) == {SOLVER[layout], "timesteps", "quant"} | CACHES[layout]


@pytest.mark.parametrize("method", ["tome", "deepcache", "solver"])
def test_a_method_the_model_cannot_take_is_refused_at_load(dit_models, tmp_path, capsys, method):
    toml = write_study(dit_models, tmp_path, "sd3", space=f"[space.{method}]\n")
    assert main(["study", "run", str(toml), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"space.{method}: the method cannot patch this model" in err and err.count("\n") == 1
    assert not (tmp_path / "tiny-sd3.db").exists()


@pytest.mark.parametrize("layout", ["pixart", "sd3", "flux"])
def test_study_export_evaluate_apply(dit_models, tmp_path, capsys, layout):
    toml = write_study(dit_models, tmp_path, layout)
    assert main(["study", "run", str(toml), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["finished_in_study"] == 3 and summary["states"] == {"COMPLETE": 3}

    assert main(["study", "pareto", str(toml), "--json"]) == 0
    members = json.loads(capsys.readouterr().out)
    assert members and all(SOLVER[layout] in m["config"]["methods"] for m in members)

    richest = max(members, key=lambda m: len(m["config"]["methods"]))  # the member that applies the most
    out = tmp_path / "best.json"
    assert main(["export", str(toml), "--trial", str(richest["trial"]), "-o", str(out)]) == 0
    capsys.readouterr()
    exported = json.loads(out.read_text())
    assert exported["model_id"] == str(dit_models[layout])

    assert main(["evaluate", str(out), "--json", "--latency-repeats", "1", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == 3 and result["fid"] >= 0 and set(result["config"]) == set(exported["methods"])

    grid = tmp_path / "grid.png"
    assert main(["apply", str(out), "--out", str(grid), "--n-images", "2", "--device", "cpu"]) == 0
    assert grid.stat().st_size > 0


FOLDERS = {"pixart": "PixArt-XL-2-512x512", "sd3": "stable-diffusion-3-medium-diffusers", "flux": "FLUX.1-dev"}


@pytest.mark.parametrize("layout", ["pixart", "sd3", "flux"])
def test_shipped_dit_studies_load(dit_models, tmp_path, capsys, layout):
    """studies/pixart.toml, sd3.toml and flux.toml parse next to a pipeline folder of their layout, with the
    default space of their denoiser; without CUDA `study run` stops with one line and creates nothing."""
    import shutil
    from pathlib import Path

    import torch

    from tuner.study.spec import load_spec

    src = Path(__file__).resolve().parent.parent / "studies" / f"{layout}.toml"
    toml = tmp_path / src.name
    shutil.copy(src, toml)
    shutil.copytree(dit_models[layout], tmp_path / "models" / FOLDERS[layout])
    spec = load_spec(toml)
    assert spec.model.device == "cuda" and spec.model.denoiser == type_name(layout)
    assert set(spec.space) == {SOLVER[layout], "timesteps", "quant"} | CACHES[layout]
    if not torch.cuda.is_available():
        assert main(["study", "run", str(toml)]) == 2
        assert "CUDA" in capsys.readouterr().err and not list(tmp_path.glob("*.db"))


def type_name(layout: str) -> str:
    return {"pixart": "PixArtTransformer2DModel", "sd3": "SD3Transformer2DModel",
            "flux": "FluxTransformer2DModel"}[layout]

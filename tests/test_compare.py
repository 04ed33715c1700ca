"""`tuner apply CONFIG --compare`: baseline, accelerated and difference rows from one call, with the steps
each call really ran and the speedup timed interleaved; and the plain grid's steps message."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tuner.cli import main


def _config(tmp_path, methods: dict, steps: int = 6, **extra) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"schema_version": 2, "methods": methods,
                                "environment": {"num_inference_steps": steps}, **extra}))
    return str(path)


def test_compare_rows_count_the_steps_really_run(tiny_pipe):
    from tuner.config import AccelConfig
    from tuner.report.compare import compare

    fewer = compare(tiny_pipe, AccelConfig.from_dict({"timesteps": {"count": 3}}), [0, 1], [5, 6], 6, repeats=1)
    assert (fewer.baseline.steps_run, fewer.accelerated.steps_run) == (6, 3)
    assert fewer.baseline.images.shape == fewer.accelerated.images.shape == (2, 1, 16, 16)
    assert fewer.speedup > 0 and fewer.captions == ["seed 5 · class 0", "seed 6 · class 1"]
    same = compare(tiny_pipe, AccelConfig.from_dict({"tome": {"ratio": 0.0}}), [0, 1], [5, 6], 6, repeats=1)
    assert (same.accelerated.images == same.baseline.images).all()  # neutral settings: the identity
    assert not (fewer.accelerated.images == fewer.baseline.images).all()


def test_compare_grid_on_the_proxy(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["apply", _config(tmp_path, {"timesteps": {"count": 3}}), "--compare", "--out", str(out),
                 "--n-images", "3"]) == 0
    printed = capsys.readouterr().out
    assert "baseline 6 steps run" in printed and "accelerated (timesteps) 3 steps run" in printed
    assert "x measured here" in printed
    width, height = Image.open(out).size
    assert width >= 3 * 128 and height >= 3 * 128  # three rows of 16-px tiles shown x8


def test_plain_grid_says_the_steps_it_ran(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["apply", _config(tmp_path, {"timesteps": {"count": 3}}), "--out", str(out), "--n-images", "2"]) == 0
    assert "3 steps run, 6 asked" in capsys.readouterr().out


def test_help_names_prompts_for_user_models(capsys):
    assert main(["apply", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "a user model its prompts" in text and "--compare" in text


def test_compare_on_a_user_model(user_models, tmp_path, capsys):
    folder = str(user_models["sd15"])
    config = _config(tmp_path, {"tome": {"ratio": 0.5}}, steps=2, model_id=folder)
    out = tmp_path / "grid.png"
    assert main(["apply", config, "--compare", "--out", str(out), "--n-images", "2", "--device", "cpu",
                 "--prompts", str(user_models["prompts"])]) == 0
    # PNDM (SD-1.5's own scheduler) asked for 2 steps runs 3 U-Net steps: its PLMS start repeats one
    assert "baseline 3 steps run, accelerated (tome) 3 steps run" in capsys.readouterr().out
    assert Image.open(out).size[1] >= 3 * 128  # 32-px images shown x4

"""Jaccard profiler of token-merge pairs and the checkpoint sets derived from it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tuner.cli import main as cli_main
from tuner.errors import TunerError
from tuner.methods.catome_profile import (checkpoints_from_profile, jaccard_distance, profile_merges, save_profile,
                           scale_checkpoints)
from tuner.methods.catome import PAPER_CHECKPOINTS
from tuner.methods.merge import match_threshold


def test_jaccard_distance_formula():
    assert jaccard_distance(np.array([1, 2, 3]), np.array([2, 3, 4])) == pytest.approx(0.5)
    assert jaccard_distance(np.array([1, 2]), np.array([1, 2])) == 0.0
    assert jaccard_distance(np.array([1]), np.array([2])) == 1.0
    assert jaccard_distance(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == 0.0


def test_profile_of_the_baseline(tiny_pipe):
    classes, seeds, steps = [1, 2], [5, 6], 3
    base = tiny_pipe(classes, seeds, num_inference_steps=steps)
    df = profile_merges(tiny_pipe, classes, seeds, steps=steps, threshold=0.7)
    assert {"block", "step", "n_pairs", "jaccard_distance"} <= set(df.columns)
    assert len(df) == 3 * steps and set(df["level"]) == {"D1", "U1"}
    assert df[df.step == 0]["jaccard_distance"].isna().all()
    later = df[df.step > 0]["jaccard_distance"]
    assert later.between(0, 1).all() and (later > 0).any()
    assert (df["n_pairs"] > 0).all()
    assert torch.equal(tiny_pipe(classes, seeds, num_inference_steps=steps), base)  # profiling merged nothing


def test_profile_pairs_are_the_catome_pairs():
    """The recorded distance is the paper formula on the same pair sets CA-ToMe would merge."""
    torch.manual_seed(0)
    a, b = torch.randn(1, 16, 4), torch.randn(1, 16, 4)
    pa, pb = match_threshold(a, 4, 4, threshold=0.3), match_threshold(b, 4, 4, threshold=0.3)
    sa = {tuple(p) for p in pa.pairs(0).tolist()}
    sb = {tuple(p) for p in pb.pairs(0).tolist()}
    codes = [np.array(sorted(s * 16 + d for s, d in x)) for x in (sa, sb)]
    assert jaccard_distance(*codes) == pytest.approx(1 - len(sa & sb) / len(sa | sb))


def _synthetic(dists):
    rows = [{"block": blk, "level": "D1", "step": i, "n_pairs": 1.0, "jaccard_distance": d, "threshold": 0.7}
            for blk in ("a", "b") for i, d in enumerate(dists)]
    return pd.DataFrame(rows)


def test_checkpoints_from_profile_accumulates_distance():
    df = _synthetic([math.nan, 0.2, 0.2, 0.5, 0.1, 0.1, 0.05, 0.9])
    assert checkpoints_from_profile(df, delta=0.3) == [0, 2, 3, 7]
    assert checkpoints_from_profile(df, delta=10.0) == [0]
    assert checkpoints_from_profile(df, delta=0.0) == list(range(8))
    for k in (1, 2, 3, 5):
        cps = checkpoints_from_profile(df, max_count=k)
        assert cps[0] == 0 and len(cps) <= k
    assert len(checkpoints_from_profile(df, max_count=5)) == 5
    with pytest.raises(TunerError):
        checkpoints_from_profile(df)


def test_scale_checkpoints():
    for steps in PAPER_CHECKPOINTS.values():
        assert scale_checkpoints(steps, 50, 50) == steps
    assert scale_checkpoints(PAPER_CHECKPOINTS["CONFIG_1"], 50, 10) == [0, 1, 2, 3, 5, 7]
    assert scale_checkpoints([0, 49], 50, 25) == [0, 24]


def test_save_profile_writes_csv_and_png(tmp_path):
    df = _synthetic([math.nan, 0.2, 0.4])
    paths = save_profile(df, tmp_path / "out", checkpoints=[0, 2])
    back = pd.read_csv(paths["csv"])
    assert list(back.columns)[:5] == ["block", "level", "step", "n_pairs", "jaccard_distance"] and len(back) == 6
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "prof"
    for argv in (["--threshold", "1.5"], ["--delta", "-1"], ["--steps", "1"], ["--n-images", "0"]):
        assert cli_main(["profile", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tuner: error:") and "\n" not in err
    assert not out.exists()


def test_cli_profile_runs_on_the_proxy(tmp_path, capsys):
    out = tmp_path / "prof"
    assert cli_main(["profile", "--n-images", "2", "--steps", "4", "--delta", "0.5", "--out", str(out), "--json",
                     "--device", "cpu"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["checkpoints"][0] == 0 and (out / "jaccard_profile.csv").is_file()
    assert (out / "jaccard_profile.png").is_file()

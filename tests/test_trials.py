"""`tuner.load_trials` and `tuner study trials`: every trial as a DataFrame with the CLI's column names
and the config as flat columns."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

import tuner
from cli_study import TRIALS, make_study
from tuner.cli import main


def test_load_trials_names_columns_as_the_cli(tmp_path):
    frame = tuner.load_trials(make_study(tmp_path))
    assert list(frame["trial"]) == list(range(len(TRIALS) + 1))
    assert list(frame["state"]) == ["complete"] * len(TRIALS) + ["pruned"]
    first = frame.iloc[0]
    assert first["speedup"] == pytest.approx(0.1 / 0.08) and first["ms/image"] == pytest.approx(80.0)
    assert first["tome.ratio"] == 0.3 and pd.isna(first["deepcache.interval"])
    assert frame.iloc[1]["deepcache.interval"] == 2
    assert list(frame["feasible"][:5]) == [True, True, False, True, True]  # trial 2: FID +40 % > cap +20 %
    assert frame["on front"].sum() >= 1 and not frame.iloc[2]["on front"]
    assert frame.iloc[5]["reason"] == "cheap reject: FID"
    for column in ("FID change %", "certified", "images", "KID"):
        assert column in frame.columns


def test_trials_csv_round_trips(tmp_path, capsys):
    toml = make_study(tmp_path)
    out = tmp_path / "trials.csv"
    assert main(["study", "trials", str(toml), "--csv", str(out)]) == 0
    assert "6 trials" in capsys.readouterr().out
    assert list(pd.read_csv(out)["tome.ratio"].dropna()) == [0.3, 0.5, 0.4]
    assert main(["study", "trials", str(toml)]) == 0
    assert "FID change %" in capsys.readouterr().out


def test_trials_parquet_or_one_line_without_pyarrow(tmp_path, capsys):
    toml = make_study(tmp_path)
    out = tmp_path / "trials.parquet"
    code = main(["study", "trials", str(toml), "--parquet", str(out)])
    if importlib.util.find_spec("pyarrow") is None:
        assert code == 2 and "needs pyarrow" in capsys.readouterr().err and not out.exists()
    else:
        assert code == 0 and len(pd.read_parquet(out)) == len(TRIALS) + 1


def test_trials_bad_output_is_one_line(tmp_path, capsys):
    toml = make_study(tmp_path)
    assert main(["study", "trials", str(toml), "--csv", str(tmp_path / "t.txt")]) == 2
    assert capsys.readouterr().err.startswith("tuner: error: --csv t.txt: unsupported file type")
    assert not (tmp_path / "t.txt").exists()

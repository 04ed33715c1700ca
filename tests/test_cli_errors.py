"""Bad input: one line on stderr, exit code 2, nothing written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuner.cli import EXIT_BROKEN_PIPE, main


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_unknown_device(capsys):
    code, err = _run(capsys, ["baseline", "--device", "tpu9", "--n-images", "2", "--steps", "1"])
    assert code == 2 and "device" in err and "\n" not in err


def test_missing_weights(capsys, tmp_path):
    code, err = _run(capsys, ["baseline", "--unet-weights", str(tmp_path / "none.safetensors")])
    assert code == 2 and "not found" in err and "\n" not in err


def test_corrupt_weights(capsys, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    code, err = _run(capsys, ["baseline", "--unet-weights", str(bad)])
    assert code == 2 and "corrupt" in err and "\n" not in err


def test_impossible_resolution(capsys):
    code, err = _run(capsys, ["baseline", "--resolution", "10", "--n-images", "2", "--steps", "1"])
    assert code == 2 and "impossible resolution" in err


def test_out_of_range_n_images(capsys):
    code, err = _run(capsys, ["baseline", "--n-images", "0"])
    assert code == 2 and "n_images" in err


def test_corrupt_config_json(capsys, tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text("{nope")
    code, err = _run(capsys, ["evaluate", str(bad)])
    assert code == 2 and "not valid JSON" in err


def test_unknown_method_in_config(capsys, tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"schema_version": 2, "methods": {"teleport": {}}}')
    code, err = _run(capsys, ["evaluate", str(bad)])
    assert code == 2 and "unknown method 'teleport'" in err


def test_console_script_exit_code(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text("[")
    proc = subprocess.run([sys.executable, "-m", "tuner.cli", "evaluate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("tuner: error:")


def test_inception_asked_for_without_weights(capsys):
    code, err = _run(capsys, ["baseline", "--feature-extractor", "inception", "--n-images", "2", "--steps", "1"])
    assert code == 2 and "Inception" in err and "\n" not in err


def test_inception_weights_file_missing(capsys, tmp_path):
    code, err = _run(capsys, ["baseline", "--feature-extractor", "inception",
                              "--inception-weights", str(tmp_path / "pt_inception.pth")])
    assert code == 2 and "not found" in err


# --- issue 9: each bad input exits 2 with one line and writes nothing ---------------------------------

@pytest.fixture
def config_file(tmp_path):
    def write(environment=None, name="c.json"):
        data = {"schema_version": 2, "methods": {"tome": {"ratio": 0.3}}}
        if environment is not None:
            data["environment"] = environment
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return path
    return write


@pytest.fixture
def study_toml(tmp_path):
    from cli_study import make_study

    return make_study(tmp_path)


def _one_line_exit_2(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, (code, err)
    assert err.startswith("tuner: error: ") and err.count("\n") == 1, err
    assert captured.out == ""
    return err


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def test_apply_out_in_an_unwritable_place(capsys, config_file):
    err = _one_line_exit_2(capsys, ["apply", str(config_file()), "--out", "/proc/x.png"])
    assert "/proc/x.png" in err and "cannot write" in err
    assert not Path("/proc/x.png").exists()


def test_apply_seed_too_large(capsys, config_file, tmp_path):
    err = _one_line_exit_2(capsys, ["apply", str(config_file()), "--out", str(tmp_path / "g.png"),
                                    "--seed", str(10**30)])
    assert "--seed=" in err and "out of range" in err
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("steps", ["abc", True, 0, 2.5])
def test_config_num_inference_steps_not_a_step_count(capsys, config_file, tmp_path, steps):
    # `true` used to run 1 step and "abc" raised a traceback
    cfg = config_file({"num_inference_steps": steps})
    err = _one_line_exit_2(capsys, ["apply", str(cfg), "--out", str(tmp_path / "g.png")])
    assert "num_inference_steps" in err
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("steps", ["abc", True])
def test_config_image_set_steps_not_a_step_count(capsys, config_file, steps):
    # `tuner evaluate` takes an exported config's steps from environment.image_set
    err = _one_line_exit_2(capsys, ["evaluate", str(config_file({"image_set": {"steps": steps}}))])
    assert "steps=" in err


def test_export_to_a_folder(capsys, study_toml, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    err = _one_line_exit_2(capsys, ["export", str(study_toml), "--best", "-o", str(folder)])
    assert "is a folder" in err
    assert list(folder.iterdir()) == []


def test_export_to_an_unwritable_place(capsys, study_toml):
    err = _one_line_exit_2(capsys, ["export", str(study_toml), "--best", "-o", "/proc/x.json"])
    assert "cannot write" in err
    assert not Path("/proc/x.json").exists()


def test_pareto_plot_unsupported_extension(capsys, study_toml, tmp_path):
    before = _files(tmp_path)
    err = _one_line_exit_2(capsys, ["study", "pareto", str(study_toml), "--plot", str(tmp_path / "f.txt")])
    assert "unsupported file type" in err and ".png" in err
    assert _files(tmp_path) == before


def test_pareto_plot_onto_an_existing_folder(capsys, study_toml, tmp_path):
    # matplotlib would have written adir.png next to it
    (tmp_path / "adir").mkdir()
    before = _files(tmp_path)
    err = _one_line_exit_2(capsys, ["study", "pareto", str(study_toml), "--plot", str(tmp_path / "adir")])
    assert "is a folder" in err
    assert _files(tmp_path) == before


@pytest.mark.parametrize("command", [["baseline"], ["apply", "CONFIG", "--out", "OUT"]])
def test_steps_zero_is_refused(capsys, config_file, tmp_path, command):
    # `apply --steps 0` used to run the default 50 steps (0 read as "not given")
    argv = [str(config_file()) if a == "CONFIG" else str(tmp_path / "g.png") if a == "OUT" else a for a in command]
    err = _one_line_exit_2(capsys, [*argv, "--steps", "0"])
    assert "steps=0" in err and "out of range" in err
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("command", [["baseline"], ["apply", "CONFIG", "--out", "OUT"], ["profile"],
                                     ["study", "run", "TOML"]])
def test_threads_out_of_range(capsys, config_file, study_toml, tmp_path, command):
    argv = [str(config_file()) if a == "CONFIG" else str(tmp_path / "g.png") if a == "OUT"
            else str(study_toml) if a == "TOML" else a for a in command]
    before = _files(tmp_path)
    err = _one_line_exit_2(capsys, [*argv, "--threads", "0"])
    assert "--threads=0" in err
    assert _files(tmp_path) == before


def test_broken_pipe_exits_quietly(study_toml):
    # `tuner study pareto ... | head -1`: the reader is gone before tuner writes
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "tuner.cli", "study", "pareto", str(study_toml)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == EXIT_BROKEN_PIPE

"""Bad input: one line on stderr, exit code 2, nothing written."""

import subprocess
import sys

import pytest

from tuner.cli import main


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

import json

import pytest

from tuner.config import AccelConfig
from tuner.errors import TunerError


def test_empty_config_roundtrip(tmp_path):
    cfg = AccelConfig.from_dict({"schema_version": 1, "methods": {}})
    path = tmp_path / "c.json"
    cfg.save(path)
    assert AccelConfig.load(path).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("data, match", [
    ({"schema_version": 2, "methods": {}}, "schema_version"),
    ({"methods": {}}, "schema_version"),
    ({"schema_version": 1, "methods": {"warp_drive": {}}}, "unknown method 'warp_drive'"),
    ({"schema_version": 1, "methods": [], }, "'methods' must be an object"),
    ({"schema_version": 1, "methods": {}, "colour": 1}, "unknown key"),
    ([1, 2], "JSON object"),
])
def test_bad_configs_are_one_line_errors(data, match):
    with pytest.raises(TunerError, match=match) as e:
        AccelConfig.from_dict(data)
    assert "\n" not in str(e.value)


def test_corrupt_json_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"schema_version": 1, "methods": {')
    with pytest.raises(TunerError, match="not valid JSON"):
        AccelConfig.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(TunerError, match="not found"):
        AccelConfig.load(tmp_path / "nope.json")


def test_apply_empty_config_is_identity(tiny_pipe):
    from tuner.apply import apply

    base = tiny_pipe([1, 2], [0, 1], num_inference_steps=3)
    with apply(tiny_pipe, {"schema_version": 1, "methods": {}}):
        same = tiny_pipe([1, 2], [0, 1], num_inference_steps=3)
    import torch
    assert torch.equal(base, same)

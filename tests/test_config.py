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
    ({"schema_version": 3, "methods": {}}, "schema_version"),
    ({"schema_version": True, "methods": {}}, "schema_version"),
    ({"methods": {}}, "schema_version"),
    ({"schema_version": 2}, "'methods' is missing"),
    ({"schema_version": 2, "methods": {}, "objectives": {"fid": "low"}}, "objectives.fid"),
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
    from tuner.apply_config import apply

    base = tiny_pipe([1, 2], [0, 1], num_inference_steps=3)
    with apply(tiny_pipe, {"schema_version": 1, "methods": {}}):
        same = tiny_pipe([1, 2], [0, 1], num_inference_steps=3)
    import torch
    assert torch.equal(base, same)


def test_shorthand_is_the_methods_table():
    short = AccelConfig.from_dict({"tome": {"ratio": 0.5}})
    full = AccelConfig.from_dict({"schema_version": 2, "methods": {"tome": {"ratio": 0.5}}})
    assert short.to_dict() == full.to_dict()
    with pytest.raises(TunerError, match="unknown key"):
        AccelConfig.from_dict({"tome": {"ratio": 0.5}, "colour": 1})


def test_version_1_configs_keep_their_meaning():
    old = {"schema_version": 1, "methods": {"sampler": {"name": "ddpm", "coefficients": "liyan"},
                                            "timesteps": {"timesteps": [900, 500, 100]}}}
    cfg = AccelConfig.from_dict(old)
    assert cfg.to_dict()["schema_version"] == 2
    solver = cfg.to_dict()["methods"]["solver"]
    assert (solver["name"], solver["coefficients"]) == ("ddpm", "liyan")  # every key written: the rest at defaults
    assert cfg.methods["solver"].solver().label() == "ddpm-liyan"
    assert "sampler" not in cfg.methods


def test_timesteps_are_a_set_stored_descending():
    cfg = AccelConfig.from_dict({"timesteps": {"timesteps": [0, 500, 250]}})
    assert cfg.methods["timesteps"].timesteps == [500, 250, 0]

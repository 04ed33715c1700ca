"""The JSON Schema (derived from the method registry) and the loader accept and reject the same configs."""

import json
import random
from pathlib import Path

import jsonschema
import pytest

from tuner.config import SCHEMA_VERSION, AccelConfig, json_schema, method_specs
from tuner.errors import TunerError

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "tuner" / "schemas" / f"accel_config.v{SCHEMA_VERSION}.json"
VALIDATOR = jsonschema.Draft202012Validator(json_schema())

# values tried for every field, whatever its kind: each is right for some kinds and wrong for others
POOL = [None, True, False, 0, 1, 2, 3.0, 0.5, -1, 0.95, 0.96, 1.5, 1.51, 16, 17, 999, 1000, 2**63, "uniform",
        "nonuniform", "ddim", "ddpm", "liyan", "baseline", "x", [], [0], [0, 0], [3, 1, 2], [999, 500],
        [1000], [-1], [1.0, 2.0], [True], {}, {"conv_in": {"w": 8}}, {"conv_in": {"w": 8.0}}, {"conv_in": {"w": 3}},
        {"conv_in": {"q": 8}}, {"conv_in": 8}, 4, 8, 32, 8.0, 1.0, 2.5]


def loader_accepts(data) -> bool:
    try:
        AccelConfig.from_dict(data)
        return True
    except TunerError:
        return False


def _cases():
    rng = random.Random(0)
    specs = method_specs()
    cases = []
    for name, spec in specs.items():
        knobs = spec.config_cls.knobs()
        cases.append({name: {}})
        cases.append({name: {"not_a_field": 1}})
        for key in knobs:
            for v in POOL:
                cases.append({name: {key: v}})
        for _ in range(150):  # several fields at once: rules between fields
            picked = rng.sample(list(knobs), k=min(len(knobs), rng.randint(1, 3)))
            cases.append({name: {k: rng.choice(POOL) for k in picked}})
    cases += [{"solver": {"name": "ddim", "coefficients": "liyan"}},
              {"solver": {"coefficients": "liyan"}},
              {"solver": {"name": "ddpm", "coefficients": "liyan"}},
              {"timesteps": {"timesteps": [0, 500]}},
              {"catome": {"checkpoints": [0, 8, 8]}}]
    return [{"schema_version": SCHEMA_VERSION, "methods": m} for m in cases]


CASES = _cases()


def test_cases_cover_both_verdicts():
    verdicts = [loader_accepts(c) for c in CASES]
    assert 200 < sum(verdicts) < len(verdicts) - 200


@pytest.mark.parametrize("chunk", range(4))
def test_schema_and_loader_agree(chunk):
    for data in CASES[chunk::4]:
        assert VALIDATOR.is_valid(data) == loader_accepts(data), json.dumps(data)


def test_round1_disagreements_are_gone():
    for methods, accepted in [({"timesteps": {"timesteps": [0, 500]}}, True),
                              ({"timesteps": {"timesteps": [1000]}}, False),
                              ({"solver": {"name": "ddim", "coefficients": "liyan"}}, False),
                              ({"catome": {"checkpoints": [0, 3, 3]}}, False)]:
        data = {"schema_version": SCHEMA_VERSION, "methods": methods}
        assert VALIDATOR.is_valid(data) is accepted
        assert loader_accepts(data) is accepted


def test_shipped_schema_file_is_the_generated_one():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), \
        "regenerate it: python -m tuner.config > tuner/schemas/accel_config.v2.json"


def test_exported_configs_validate_against_the_schema():
    cfg = AccelConfig.from_dict({"tome": {"ratio": 0.3}, "deepcache": {"interval": 3}})
    data = cfg.to_dict()
    data["objectives"] = {"fid": 7.5, "speedup": 1.8}
    VALIDATOR.validate(data)

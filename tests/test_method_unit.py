"""A method declared once (one dataclass + one apply function) is loadable, in the schema, searchable and
in the default space, with nothing else naming its fields."""

from dataclasses import dataclass

import jsonschema
import pytest

from tuner.config import AccelConfig, json_schema, method_specs
from tuner.errors import TunerError
from tuner.methods.base import METHODS, Handle, MethodConfig, register_method
from tuner.methods.knobs import knob
from tuner.search_spaces.defaults import default_families
from tuner.search_spaces.space import SpaceContext, build_space


@pytest.fixture
def toy_method():
    """A method the way a contributor would add one (here in the test module instead of tuner/methods)."""
    method_specs()  # the real ones first

    @register_method("toy", order=99, default_space=True)
    @dataclass
    class ToyConfig(MethodConfig):
        """A toy method."""

        strength: float = knob(0.5, low=0.0, high=1.0, search=(0.2, 0.8), help="how much")
        passes: int = knob(1, low=1, high=4, help="not searched by default")
        mode: str = knob("soft", choices=("soft", "hard"), search=("soft", "hard"))
        sharp: float = knob(2.0, low=1.0, search=(1.0, 3.0), when=("mode", ("hard",)))

    applied = []

    @ToyConfig.register_apply
    def apply(target, cfg):
        applied.append(cfg)
        return Handle("toy")

    yield ToyConfig, applied
    del METHODS["toy"]


def test_loader_schema_search_and_default_space_derive_from_the_declaration(toy_method):
    cls, applied = toy_method
    cfg = AccelConfig.from_dict({"toy": {"strength": 0.3, "mode": "hard"}})
    assert cfg.methods["toy"].to_dict() == {"strength": 0.3, "passes": 1, "mode": "hard", "sharp": 2.0}
    for bad, match in [({"strength": 1.5}, "strength=1.5 is out of range"), ({"mode": "x"}, "mode must be one of"),
                       ({"passes": 2.5}, "passes must be an integer"), ({"colour": 1}, "unknown key")]:
        with pytest.raises(TunerError, match=match):
            AccelConfig.from_dict({"toy": bad})
    schema = json_schema()
    assert schema["$defs"]["toy"]["properties"]["strength"] == {
        "type": "number", "minimum": 0.0, "maximum": 1.0, "description": "how much", "default": 0.5}
    jsonschema.validate(cfg.to_dict(), schema)

    assert "toy" in default_families()
    space = build_space({"toy": {"passes": [1, 3]}}, SpaceContext(steps=10))
    assert {"toy.strength", "toy.passes", "toy.mode", "toy.sharp"} <= set(space.by_name)
    assert space.by_name["toy.strength"].low == 0.2 and space.by_name["toy.strength"].high == 0.8
    soft = space.to_config({"toy": "toy", "toy.strength": 0.4, "toy.passes": 2, "toy.mode": "soft"})
    assert soft.methods["toy"].sharp == 2.0  # inactive: its default
    hard = space.to_config({"toy": "toy", "toy.strength": 0.4, "toy.passes": 2, "toy.mode": "hard", "toy.sharp": 2.5})
    assert hard.methods["toy"].sharp == 2.5
    with pytest.raises(TunerError, match="space.toy.strength"):
        build_space({"toy": {"strength": [0.5, 2.0]}}, SpaceContext(steps=10))

    from tuner.apply_config import apply

    apply(object(), cfg)
    assert applied == [cfg.methods["toy"]]


def test_every_method_registers_its_apply_and_is_validated_once_before_it():
    specs = method_specs()
    assert all(s.apply_fn is not None and s.apply_fn.__module__ == s.config_cls.__module__ for s in specs.values())
    cfg = specs["tome"].config_cls(ratio=2.0)  # constructed in code, never checked
    with pytest.raises(TunerError, match="ratio=2.0 is out of range"):
        specs["tome"].apply(object(), cfg)  # refused before the method touches its target


def test_a_config_without_apply_is_refused_when_applied():
    method_specs()

    @register_method("toy_noapply", order=99)
    @dataclass
    class NoApply(MethodConfig):
        strength: float = knob(0.5, low=0.0, high=1.0)

    try:
        with pytest.raises(TunerError, match="NoApply.register_apply"):
            METHODS["toy_noapply"].apply(object(), NoApply())
    finally:
        del METHODS["toy_noapply"]

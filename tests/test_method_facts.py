"""A method that needs a fact about the model is one module: its config declares the knob whose range the
fact bounds, its `prepare` measures the fact on the study's model, and a study searches it with no other
file touched (here the module is this test)."""

from dataclasses import dataclass

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tuner.config import method_specs
from tuner.methods.base import METHODS, Handle, MethodConfig, register_method, resolve_unet
from tuner.methods.knobs import knob
from tuner.search_spaces.space import SpaceContext, build_space

STUDY = """
name = "toyfact"
n_trials = 3
seed = 0
snapshot_every = 3
[model]
threads = 1
[image_set]
n_images = 4
steps = 3
[evaluator]
latency_images = 2
latency_repeats = 1
[constraints]
max_fid_increase = 1000
[sampler]
name = "random"
warm_start = false
[space.upscale]
optional = false
"""


@pytest.fixture
def upscale_method():
    """Scales the output of the first `blocks` up blocks by 1 + 1e-3: its range is the model's up-block count."""
    method_specs()  # the real methods first
    calls = []

    @register_method("upscale", order=98)
    @dataclass
    class UpscaleConfig(MethodConfig):
        blocks: int = knob(1, low=1, search=(1, "n_up_blocks"), help="up blocks scaled, from the top")

        unmeasured_facts = {"n_up_blocks": 2}  # a study file is checked before any model runs

        @classmethod
        def prepare(cls, study) -> dict:
            return {"n_up_blocks": len(resolve_unet(study.pipe).up_blocks)}

    @UpscaleConfig.register_apply
    def apply(target, cfg: UpscaleConfig) -> Handle:
        hooks = [block.register_forward_hook(lambda m, args, out: calls.append(1) or out * (1 + 1e-3))
                 for block in resolve_unet(target).up_blocks[:cfg.blocks]]
        return Handle("upscale", undo=[h.remove for h in hooks])

    yield UpscaleConfig, calls
    del METHODS["upscale"]


def test_a_method_reads_its_own_fact_and_no_other_method_sees_it(upscale_method):
    space = build_space({"upscale": {}}, SpaceContext(steps=4, facts={"upscale": {"n_up_blocks": 3}}))
    assert (space.by_name["upscale.blocks"].low, space.by_name["upscale.blocks"].high) == (1, 3)
    assert build_space({"upscale": {}}, SpaceContext(steps=4)).by_name["upscale.blocks"].high == 2  # the stand-in
    assert SpaceContext(steps=4, facts={"upscale": {"n_up_blocks": 3}}).fact("tome", "n_up_blocks") is None


def test_a_study_searches_a_method_declared_in_one_module(upscale_method, tmp_path, monkeypatch):
    from tuner.study.runner import run_study
    from tuner.study.spec import load_spec

    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    (tmp_path / "toyfact.toml").write_text(STUDY)
    spec = load_spec(tmp_path / "toyfact.toml")
    _, calls = upscale_method
    summary = run_study(spec, progress=False, log=lambda m: None)
    assert summary["finished_in_study"] == 3
    study = optuna.load_study(study_name="toyfact", storage=spec.storage)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    from tuner.models import load_model

    n_up = len(load_model("proxy", "cpu").unet.up_blocks)
    assert n_up != 2  # the measured fact, not the stand-in, bounds the search
    assert all(t.distributions["upscale.blocks"].high == n_up for t in trials)
    assert all(t.user_attrs["config"]["upscale"]["blocks"] == t.params["upscale.blocks"] for t in trials)
    assert calls  # the method ran inside the trials

"""Every solver with every caching / merging family on a tiny SD pipeline, and solvers on SD/SDXL user models.

Keyframes count model calls, not scheduler steps: Heun makes two calls per step but the last, and the step
context counts each (tuner.step_context). remove() leaves the pipeline bit-identical."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tuner.apply_config import apply
from tuner.config import AccelConfig

sys.path.insert(0, str(Path(__file__).parent))
from tiny_sd import generate, tiny_sd_pipeline  # noqa: E402

SOLVERS = [{"name": "ddim"}, {"name": "ddpm", "coefficients": "liyan"}, {"name": "dpmsolver++", "order": 2},
           {"name": "dpmsolver++", "order": 3}, {"name": "unipc", "order": 2}, {"name": "deis", "order": 2},
           {"name": "euler"}, {"name": "heun"}]
FAMILIES = {"deepcache": {"interval": 2, "branch": 0}, "frdiff": {"interval": 2, "bias": 0.5},
            "tome": {"ratio": 0.5}, "catome": {"threshold": 0.7, "checkpoints": [0, 2]}}


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("sd"))


def _config(methods: dict) -> AccelConfig:
    return AccelConfig.from_dict({"schema_version": 2, "methods": methods})


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: "-".join(map(str, s.values())))
def test_each_family_with_each_solver_runs_and_removes_bit_identically(sd, solver, family):
    before = generate(sd, steps=4)
    scheduler = sd.scheduler
    with apply(sd, _config({"solver": solver})):
        plain = generate(sd, steps=4)
    with apply(sd, _config({"solver": solver, family: FAMILIES[family]})):
        out = generate(sd, steps=4)
    assert torch.isfinite(out).all() and out.shape == before.shape
    assert not torch.equal(out, plain)  # the family did something on this solver's run
    assert sd.scheduler is scheduler and "set_timesteps" not in vars(scheduler)
    assert torch.equal(generate(sd, steps=4), before)


def _count_full_calls(pipe, steps: int) -> tuple[int, int]:
    """(U-Net forwards, forwards that ran the deep blocks) of one call."""
    box = {"unet": 0, "mid": 0}
    h1 = pipe.unet.register_forward_pre_hook(lambda *a: box.__setitem__("unet", box["unet"] + 1))
    # a leaf inside the deep block: the block's own __call__ (and a hook on it) still runs on cached calls,
    # where DeepCache's forward-replacing hook returns the saved output without executing it
    h2 = pipe.unet.mid_block.resnets[0].conv1.register_forward_hook(lambda *a: box.__setitem__("mid", box["mid"] + 1))
    try:
        generate(pipe, steps=steps)
    finally:
        h1.remove()
        h2.remove()
    return box["unet"], box["mid"]


@pytest.mark.parametrize("solver, calls", [({"name": "heun"}, 7), ({"name": "dpmsolver++", "order": 2}, 4),
                                           ({"name": "unipc", "order": 3}, 4)])
def test_deepcache_keyframes_count_model_calls(sd, solver, calls):
    """Heun at 4 steps makes 7 model calls (timesteps t0, t1, t1, t2, t2, t3, t3); interval 2 runs the deep
    blocks on calls 0, 2, 4, 6, not on 'steps' 0 and 2 of four."""
    with apply(sd, _config({"solver": solver, "deepcache": {"interval": 2, "branch": 0}})):
        unet_calls, full = _count_full_calls(sd, 4)
    assert unet_calls == calls and full == (calls + 1) // 2


def test_heun_repeated_timesteps_are_separate_steps(sd):
    from tuner.step_context import get_step_context

    ctx = get_step_context(sd.unet)
    with apply(sd, _config({"solver": {"name": "heun"}, "tome": {"ratio": 0.5}})):
        generate(sd, steps=3)
        assert ctx.step == 4  # 5 model calls, the last has index 4


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_dpmsolver_with_a_step_count_runs_on_user_models(user_models, kind):
    from tuner.models import load_model

    model = load_model(str(user_models[kind]), "cpu")
    prompts, seeds = ["a cat", "a dog"], [0, 1]
    before = model(prompts, seeds, num_inference_steps=3)
    own = type(model.scheduler)
    cfg = _config({"solver": {"name": "dpmsolver++", "order": 2}, "timesteps": {"count": 4}})
    with apply(model.target, cfg):
        assert type(model.scheduler).__name__ == "DPMSolverMultistepScheduler"
        assert len(model.timesteps(3)) == 4
        out = model(prompts, seeds, num_inference_steps=3)
    assert torch.isfinite(out).all() and not torch.equal(out, before)
    assert type(model.scheduler) is own and torch.equal(model(prompts, seeds, num_inference_steps=3), before)
    listed = _config({"solver": {"name": "dpmsolver++", "order": 2}, "timesteps": {"timesteps": [999, 500, 100]}})
    with apply(model.target, listed):
        assert model.timesteps(3) == [999, 500, 100]
        assert torch.isfinite(model(prompts, seeds, num_inference_steps=3)).all()


def test_model_solver_sets_the_baseline(user_models):
    from tuner.models import load_model

    model = load_model(str(user_models["sd15"]), "cpu", solver={"name": "unipc", "order": 3})
    assert type(model.scheduler).__name__ == "UniPCMultistepScheduler" and model.scheduler.config.solver_order == 3
    proxy = load_model("proxy", "cpu", solver={"name": "ddim"})
    assert proxy.baseline_solver.name == "ddim" and proxy.solver is proxy.baseline_solver

"""The `solver` method and the solvers it selects, on the proxy pipeline (tuner.solvers, tuner.solver_run)."""

from __future__ import annotations

import inspect

import pytest
import torch

from tuner.apply_config import apply
from tuner.config import AccelConfig
from tuner.errors import TunerError
from tuner.proxy.model import build_scheduler
from tuner.solver_run import TunerRule
from tuner.solvers import SOLVERS, Solver, make_scheduler, per_image_noise

CLASSES, SEEDS = [3, 7], [11, 12]


def _config(methods=None, **solver):
    return AccelConfig.from_dict({"schema_version": 2, "methods": methods if methods is not None else {"solver": solver}})


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_rule_equals_diffusers_ddim_step(steps):
    sched = build_scheduler()
    sched.set_timesteps(steps)
    ts = [int(t) for t in sched.timesteps]
    rule = TunerRule(sched.alphas_cumprod.double(), ts, clip_sample=bool(sched.config.clip_sample))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 16, 16, generator=gen)
    for t in ts:
        eps = torch.randn(2, 1, 16, 16, generator=gen)
        ours = rule.step(eps, t, x)
        ref = sched.step(eps, t, x, eta=0.0).prev_sample
        assert torch.allclose(ours, ref, atol=1e-6), (t, (ours - ref).abs().max())
        x = ref


def _direct(pipe, scheduler, steps):
    """The reverse loop of a diffusers pipeline, written out, with `scheduler` on the proxy's U-Net."""
    scheduler.set_timesteps(steps)
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    x = per_image_noise((len(SEEDS), *pipe.sample_shape), gens, "cpu", torch.float32) * scheduler.init_noise_sigma
    classes = torch.tensor(CLASSES)
    null = torch.full_like(classes, pipe.class_encoder.embedding.num_embeddings - 1)
    tokens = pipe.class_encoder(torch.cat([null, classes]))
    extra = {"generator": gens} if "generator" in inspect.signature(scheduler.step).parameters else {}
    with torch.no_grad():
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t)
            eps = pipe.unet(torch.cat([inp, inp]), t, encoder_hidden_states=tokens).sample
            u, c = eps.chunk(2)
            x = scheduler.step(u + pipe.guidance_scale * (c - u), t, x, **extra).prev_sample
    return ((x.clamp(-1, 1) + 1) / 2).float()


@pytest.mark.parametrize("solver", [Solver("dpmsolver++", 2), Solver("dpmsolver++", 3), Solver("unipc", 2),
                                    Solver("deis", 2), Solver("euler"), Solver("heun"),
                                    Solver("dpmsolver++", 2, karras=True), Solver("unipc", 3, spacing="trailing"),
                                    Solver("ddim")])
def test_each_solver_equals_its_diffusers_scheduler_run_directly(tiny_pipe, solver):
    """Same names, same maths: the proxy pipeline's run of a solver is that scheduler's own loop, bit for bit
    (DDIM: tuner's rule, the same operations as DDIMScheduler.step, within float rounding)."""
    methods = {"solver": {"name": solver.name, "order": solver.order, "spacing": solver.spacing,
                          "karras": solver.karras}, "timesteps": {"count": 5}}
    with apply(tiny_pipe, _config(methods)):
        ours = tiny_pipe(CLASSES, SEEDS, num_inference_steps=20)
    ref = _direct(tiny_pipe, make_scheduler(build_scheduler().config, solver), 5)
    if solver.name == "ddim":
        assert torch.allclose(ours, ref, atol=1e-5)
    else:
        assert torch.equal(ours, ref)


def test_default_is_dpmsolver_2m_and_neutral_entry_and_remove_are_bit_identical(tiny_pipe):
    assert tiny_pipe.solver == tiny_pipe.baseline_solver == Solver("dpmsolver++", 2)
    ref = tiny_pipe(CLASSES, SEEDS, num_inference_steps=4)
    original = tiny_pipe.solver
    handle = apply(tiny_pipe, _config(name="dpmsolver++", order=2))
    assert torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=4), ref)
    with apply(tiny_pipe, _config(name="ddim")):
        assert not torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=4), ref)
    handle.remove()
    assert tiny_pipe.solver is original
    assert torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=4), ref)


def test_solver_entry_is_never_dropped_as_neutral():
    """A config names its solver even when it is the proxy's baseline: another pipeline's baseline differs."""
    from tuner.methods.solver import SolverConfig

    assert not SolverConfig().is_neutral() and not SolverConfig(name="ddim").is_neutral()


def test_ddpm_designs_differ_are_reproducible_and_removable(tiny_pipe):
    ref = tiny_pipe(CLASSES, SEEDS, num_inference_steps=4)
    outs = {}
    for design in ("baseline", "liyan"):
        with apply(tiny_pipe, _config(name="ddpm", coefficients=design)) as h:
            assert tiny_pipe.solver.name == "ddpm" and tiny_pipe.solver.coefficients == design
            assert h.info["solver"] == f"ddpm-{design}"
            outs[design] = tiny_pipe(CLASSES, SEEDS, num_inference_steps=4)
            assert torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=4), outs[design])  # CRN
    assert not torch.equal(outs["baseline"], outs["liyan"])
    assert not torch.equal(outs["liyan"], ref)
    assert torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=4), ref)


def test_ddpm_noise_is_per_image(tiny_pipe):
    with apply(tiny_pipe, _config(name="ddpm", coefficients="liyan")):
        pair = tiny_pipe(CLASSES, SEEDS, num_inference_steps=3)
        alone = tiny_pipe(CLASSES[1:], SEEDS[1:], num_inference_steps=3)
    assert torch.allclose(pair[1:], alone, atol=1e-5)


@pytest.mark.parametrize("name", SOLVERS)
def test_every_solver_runs_a_count_and_keeps_images_per_seed(tiny_pipe, name):
    cfg = {"name": name, "coefficients": "liyan"} if name == "ddpm" else {"name": name}
    with apply(tiny_pipe, _config({"solver": cfg, "timesteps": {"count": 3}})):
        pair = tiny_pipe(CLASSES, SEEDS, num_inference_steps=20)
        alone = tiny_pipe(CLASSES[1:], SEEDS[1:], num_inference_steps=20)
    assert torch.isfinite(pair).all() and torch.allclose(pair[1:], alone, atol=1e-5)


def test_a_list_a_scheduler_cannot_run_fails_with_its_reason(tiny_pipe):
    """UniPC has no custom timestep lists: a TMPQ-style list is refused at the call (a trial fails), not run wrongly."""
    with apply(tiny_pipe, _config({"solver": {"name": "unipc"}, "timesteps": {"timesteps": [999, 600, 250, 40]}})):
        with pytest.raises(TunerError, match="UniPCMultistepScheduler cannot run this timestep list"):
            tiny_pipe(CLASSES, SEEDS)
    with apply(tiny_pipe, _config({"solver": {"name": "dpmsolver++"}, "timesteps": {"timesteps": [999, 600, 250, 40]}})):
        assert tiny_pipe.timesteps() == [999, 600, 250, 40]


@pytest.mark.parametrize("bad, why", [
    ({"name": "plms"}, "name must be one of"),
    ({"name": "ddpm", "coefficients": "optimal"}, "coefficients must be one of"),
    ({"name": "ddim", "coefficients": "liyan"}, "coefficients apply to name 'ddpm' only"),
    ({"name": "dpmsolver++", "order": 1}, "order 1 is not one of"),
    ({"name": "euler", "order": 3}, "order applies to"),
    ({"name": "ddim", "karras": True}, "karras applies to"),
    ({"name": "unipc", "spacing": "uniform"}, "spacing must be one of"),
    ({"eta": 1.0}, "unknown key"),
])
def test_bad_solver_config_is_an_error(bad, why):
    with pytest.raises(TunerError, match=why):
        _config(**bad)


def test_which_solvers_run_timestep_lists_matches_the_schedulers_themselves():
    # the table the search space relies on (runs_timestep_lists), asked of each diffusers scheduler
    from diffusers import DDIMScheduler

    from tuner.solvers import KARRAS, ORDERS, SOLVERS, TUNER_RULES, Solver, make_scheduler, runs_timestep_lists, set_schedule

    config = DDIMScheduler(num_train_timesteps=1000).config
    grouping = [803, 598, 576, 405, 148, 142, 17, 0]  # a TMPQ-like list no spacing of 8 steps makes
    for name in SOLVERS:
        for karras in ((False, True) if name in KARRAS else (False,)):
            solver = Solver(name=name, order=2 if name in ORDERS else 2, karras=karras,
                            coefficients="liyan" if name == "ddpm" else "baseline")
            try:
                set_schedule(make_scheduler(config, solver), None, grouping)
                runs = True
            except TunerError:
                runs = False
            assert runs_timestep_lists(name, karras, tuner_pipeline=False) == runs, (name, karras)
            if name in TUNER_RULES:
                assert runs_timestep_lists(name, karras)  # tuner's own rules take any list on a tuner pipeline

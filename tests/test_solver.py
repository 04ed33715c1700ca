"""The `solver` method and the reverse-step rules it selects."""

from __future__ import annotations

import pytest
import torch

from tuner.apply_config import apply
from tuner.config import AccelConfig
from tuner.errors import TunerError
from tuner.proxy.model import build_scheduler
from tuner.sampling import Sampler

CLASSES, SEEDS = [3, 7], [11, 12]


def _config(**sampler):
    return AccelConfig.from_dict({"schema_version": 2, "methods": {"solver": sampler}})


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_rule_equals_diffusers_ddim_step(steps):
    sched = build_scheduler()
    sched.set_timesteps(steps)
    sampler = Sampler(sched.alphas_cumprod.double(), clip_sample=bool(sched.config.clip_sample))
    ts = [int(t) for t in sched.timesteps]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 16, 16, generator=gen)
    for i, t in enumerate(ts):
        eps = torch.randn(2, 1, 16, 16, generator=gen)
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        ours = sampler.step(x, eps, t, t_prev)
        ref = sched.step(eps, t, x, eta=0.0).prev_sample
        assert torch.allclose(ours, ref, atol=1e-6), (t, (ours - ref).abs().max())
        x = ref


def test_neutral_ddim_and_remove_are_bit_identical(tiny_pipe):
    ref = tiny_pipe(CLASSES, SEEDS, num_inference_steps=4)
    original = tiny_pipe.sampler
    handle = apply(tiny_pipe, _config(name="ddim"))
    assert torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=4), ref)
    handle.remove()
    assert tiny_pipe.sampler is original
    assert torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=4), ref)


def test_ddpm_designs_differ_are_reproducible_and_removable(tiny_pipe):
    ref = tiny_pipe(CLASSES, SEEDS, num_inference_steps=4)
    outs = {}
    for design in ("baseline", "liyan"):
        with apply(tiny_pipe, _config(name="ddpm", coefficients=design)) as h:
            assert tiny_pipe.sampler.name == "ddpm" and tiny_pipe.sampler.coefficients == design
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


@pytest.mark.parametrize("bad", [{"name": "euler"}, {"name": "ddpm", "coefficients": "optimal"},
                                 {"name": "ddim", "coefficients": "liyan"}, {"eta": 1.0}])
def test_bad_sampler_config_is_an_error(bad):
    with pytest.raises(TunerError, match="solver"):
        _config(**bad)

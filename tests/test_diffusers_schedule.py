"""Timesteps and sampler on a diffusers pipeline: through its scheduler, reversible, exact where claimed."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, EulerDiscreteScheduler, UNet2DModel

from tuner.apply_config import apply
from tuner.config import AccelConfig
from tuner.errors import TunerError
from tuner.solvers import ddpm_coefficients


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=4)
    return DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))


def _config(methods):
    return AccelConfig.from_dict({"schema_version": 2, "methods": methods})


def _run(pipe, steps=5):
    seen = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: seen.append(int(args[1])))
    try:
        out = pipe(batch_size=1, generator=torch.Generator().manual_seed(3), num_inference_steps=steps,
                   output_type="np").images
    finally:
        hook.remove()
    return torch.from_numpy(out), seen


def test_custom_timesteps_run_and_remove_bit_identically(pipe):
    before, seen_before = _run(pipe)
    ts = [999, 700, 420, 150, 10]
    handle = apply(pipe, _config({"timesteps": {"timesteps": ts}}))
    _, seen = _run(pipe, steps=50)  # the list wins over num_inference_steps
    assert seen == ts
    handle.remove()
    after, seen_after = _run(pipe)
    assert seen_after == seen_before and torch.equal(before, after)
    assert "set_timesteps" not in vars(pipe.scheduler)


def test_count_only_scheduler_takes_its_own_list_and_refuses_others(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    probe = DDIMScheduler.from_config(pipe.scheduler.config)
    probe.set_timesteps(4)
    own = [int(t) for t in probe.timesteps]
    with apply(pipe, _config({"timesteps": {"timesteps": own}})):
        assert _run(pipe, steps=50)[1] == own
    with pytest.raises(TunerError, match="DDIMScheduler cannot run this timestep list"):
        apply(pipe, _config({"timesteps": {"timesteps": [999, 600, 100]}}))
    assert "set_timesteps" not in vars(pipe.scheduler)  # a refused apply leaves nothing behind


def test_sampler_swaps_the_scheduler_and_composes_with_timesteps(pipe):
    original = pipe.scheduler
    ts = [999, 500, 0]
    probe = DDIMScheduler.from_config(original.config)
    probe.set_timesteps(3)
    own = [int(t) for t in probe.timesteps]  # DDIM's own list for 3 steps
    with apply(pipe, _config({"solver": {"name": "ddim"}, "timesteps": {"timesteps": own}})):
        assert isinstance(pipe.scheduler, DDIMScheduler)
        assert _run(pipe, steps=50)[1] == own
    assert pipe.scheduler is original
    pipe.scheduler = EulerDiscreteScheduler.from_config(original.config)
    euler = pipe.scheduler
    with apply(pipe, _config({"solver": {"name": "ddpm", "coefficients": "liyan"}, "timesteps": {"timesteps": ts}})):
        assert isinstance(pipe.scheduler, DDPMScheduler) and pipe.scheduler.config.variance_type == "fixed_small"
        assert _run(pipe)[1] == ts
    assert pipe.scheduler is euler
    with pytest.raises(TunerError, match="baseline coefficients"):
        apply(pipe, _config({"solver": {"name": "ddpm", "coefficients": "baseline"}}))
    assert pipe.scheduler is euler


def test_liyan_is_ddpm_fixed_small_exactly(pipe):
    """The scheduler `sampler: ddpm/liyan` installs takes Li & Yan's step (Y + η* s + σ* Z)/√α exactly, on
    a strided list, with the same noise Z."""
    pipe.scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=True, thresholding=False)  # a clipping original
    ts = [999, 700, 420, 150, 10]
    with apply(pipe, _config({"solver": {"name": "ddpm", "coefficients": "liyan"}, "timesteps": {"timesteps": ts}})):
        sched = pipe.scheduler
        sched.set_timesteps(50)
        assert [int(t) for t in sched.timesteps] == ts
        acp = sched.alphas_cumprod.double()
        torch.manual_seed(1)
        x = torch.randn(1, 1, 4, 4) * 3  # large enough that clipping x0 to [-1, 1] would show
        for t, t_prev in zip(ts, ts[1:] + [-1]):
            eps = torch.randn(1, 1, 4, 4)
            a_bar, a_prev = float(acp[t]), (float(acp[t_prev]) if t_prev >= 0 else 1.0)
            alpha, eta, var = ddpm_coefficients(a_bar, a_prev, "liyan")
            z = torch.randn(x.shape, generator=torch.Generator().manual_seed(t), dtype=x.dtype)
            expected = (x.double() - eta * eps.double() / (1 - a_bar) ** 0.5 + var**0.5 * z.double()) / alpha**0.5
            out = sched.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
            assert torch.allclose(out.double(), expected, atol=1e-4), t
            x = out


def test_bare_unet_is_refused():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
                                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                                cross_attention_dim=8)
    with pytest.raises(TunerError, match="applies to a pipeline"):
        apply(unet, _config({"timesteps": {"timesteps": [999, 500]}}))


def test_scheduler_that_refuses_custom_lists_fails_at_apply(pipe):
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    with pytest.raises(TunerError, match="EulerDiscreteScheduler refuses this timestep list"):
        apply(pipe, _config({"timesteps": {"timesteps": [999, 500, 0]}}))
    assert "set_timesteps" not in vars(pipe.scheduler)

import pytest
import torch

from tuner.errors import TunerError


def test_same_seed_gives_identical_images(tiny_pipe):
    a = tiny_pipe([3, 7], [11, 12], num_inference_steps=4)
    b = tiny_pipe([3, 7], [11, 12], num_inference_steps=4)
    assert torch.equal(a, b)
    assert a.shape == (2, 1, 16, 16)
    assert a.min() >= 0 and a.max() <= 1


def test_different_seed_gives_different_images(tiny_pipe):
    a = tiny_pipe([3], [11], num_inference_steps=4)
    b = tiny_pipe([3], [12], num_inference_steps=4)
    assert not torch.equal(a, b)


def test_image_depends_on_its_own_seed_not_its_batch(tiny_pipe):
    """Common random numbers: image i's noise comes from seed i alone."""
    pair = tiny_pipe([3, 5], [11, 12], num_inference_steps=4)
    alone = tiny_pipe([5], [12], num_inference_steps=4)
    torch.testing.assert_close(pair[1:], alone, atol=1e-5, rtol=0)


def test_default_timesteps_are_dpmsolver_leading_and_ddim_keeps_its_own(tiny_pipe):
    ts = tiny_pipe.timesteps(50)  # DPM-Solver++'s leading spacing: step 1000 // 51 = 19
    assert ts[0] == 950 and ts[-1] == 19 and len(ts) == 50  # (arange(51) * 19)[::-1][:-1]
    assert all(a > b for a, b in zip(ts, ts[1:]))
    from tuner.solvers import Solver

    tiny_pipe.solver = Solver("ddim")
    try:
        ddim = tiny_pipe.timesteps(50)
    finally:
        tiny_pipe.solver = tiny_pipe.baseline_solver
    assert ddim[0] == 980 and ddim[-1] == 0 and len(ddim) == 50


def test_override_timesteps(tiny_pipe):
    tiny_pipe.timesteps_override = [999, 500, 10]
    try:
        assert tiny_pipe.timesteps(50) == [999, 500, 10]
    finally:
        tiny_pipe.timesteps_override = None


@pytest.mark.parametrize("res", [6, 0, 2048])
def test_impossible_resolution(tiny_pipe, res):
    with pytest.raises(TunerError, match="impossible resolution"):
        tiny_pipe.set_resolution(res)


def test_other_resolution_runs(tiny_pipe):
    tiny_pipe.set_resolution(24)
    assert tiny_pipe([1], [0], num_inference_steps=2).shape == (1, 1, 24, 24)

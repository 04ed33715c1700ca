"""Timestep lists (TMPQ-style groupings) and the `timesteps` method."""

from __future__ import annotations

import pytest
import torch

from tuner.apply_config import apply
from tuner.config import AccelConfig
from tuner.errors import TunerError
from tuner.methods.timesteps import (TimestepsConfig, counts_to_timesteps, group_sizes, grouping_to_timesteps,
                                     tmpq_group_edges, uniform_timesteps)

CLASSES, SEEDS = [3, 7], [11, 12]


def _config(ts):
    return AccelConfig.from_dict({"schema_version": 2, "methods": {"timesteps": {"timesteps": ts}}})


@pytest.mark.parametrize("n", [1, 10, 25, 50, 1000])
def test_uniform_matches_the_ddim_solver_default(tiny_ddim_pipe, n):
    assert uniform_timesteps(n) == tiny_ddim_pipe.timesteps(n)


def test_tmpq_edges_are_quadratic_like_tmpq_dm():
    # TMPQ-DM: int(linspace(0, sqrt(0.8 T), G)^2) as left edges, last group runs to T
    assert tmpq_group_edges(1000, 10) == [0, 9, 39, 88, 158, 246, 355, 483, 632, 800, 1000]
    for g in (5, 10, 25, 50, 100):
        edges = tmpq_group_edges(1000, g)
        assert len(edges) == g + 1 and edges[0] == 0 and edges[-1] == 1000
        assert all(a < b for a, b in zip(edges, edges[1:]))  # G non-empty groups, even where TMPQ collapses
    sizes = group_sizes(tmpq_group_edges(1000, 10))
    assert sizes[0] < sizes[4] < sizes[8]  # short groups near t=0, long ones near t=T


def test_grouping_one_timestep_per_group():
    edges = tmpq_group_edges(1000, 10)
    ts = grouping_to_timesteps([0] * 10, edges)
    assert ts == sorted(edges[:-1], reverse=True)
    last = grouping_to_timesteps([s - 1 for s in group_sizes(edges)], edges)
    assert last[0] == 999 and last[-1] == 8
    with pytest.raises(TunerError, match="group 1"):
        grouping_to_timesteps([0, 30] + [0] * 8, edges)  # group 1 is [9, 39): offset 30 is outside
    with pytest.raises(TunerError):
        grouping_to_timesteps([0] * 9, edges)


def test_counts_per_group():
    edges = tmpq_group_edges(1000, 4)
    ts = counts_to_timesteps([3, 0, 1, 2], edges)
    assert len(ts) == 6 and ts == sorted(set(ts), reverse=True)
    for i, c in enumerate([3, 0, 1, 2]):
        assert sum(edges[i] <= t < edges[i + 1] for t in ts) == c
    with pytest.raises(TunerError):
        counts_to_timesteps([0, 0, 0, 0], edges)


def test_timesteps_are_a_set_run_from_high_to_low():
    assert TimestepsConfig.from_dict({"timesteps": [5, 10, 500.0]}).timesteps == [500, 10, 5]


@pytest.mark.parametrize("bad", [[], [10, 10, 5], [1000, 500], [500, -1], [500.5, 100], [True], "999"])
def test_bad_timesteps_are_errors(bad):
    with pytest.raises(TunerError, match="timesteps"):
        _config(bad)


def test_neutral_full_list_and_remove_are_bit_identical(tiny_ddim_pipe):
    tiny_pipe = tiny_ddim_pipe
    ref = tiny_pipe(CLASSES, SEEDS, num_inference_steps=5)
    handle = apply(tiny_pipe, _config(uniform_timesteps(5)))
    assert torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=5), ref)
    handle.remove()
    handle.remove()  # idempotent
    assert tiny_pipe.timesteps_override is None
    assert torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=5), ref)


def test_custom_list_is_what_runs(tiny_pipe):
    ref = tiny_pipe(CLASSES, SEEDS, num_inference_steps=5)
    ts = grouping_to_timesteps([1, 2, 3, 4], tmpq_group_edges(1000, 4))
    with apply(tiny_pipe, _config(ts)):
        out = tiny_pipe(CLASSES, SEEDS, num_inference_steps=5)  # the override wins over the step count
        assert tiny_pipe.step_context.timesteps == ts
        again = tiny_pipe(CLASSES, SEEDS, num_inference_steps=5)
    assert not torch.equal(out, ref)
    assert torch.equal(out, again)
    assert torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=5), ref)


def test_needs_a_tuner_pipeline(tiny_pipe):
    with pytest.raises(TunerError, match="timesteps"):
        apply(tiny_pipe.unet, _config([500, 0]))


def test_config_default_is_the_50_step_list():
    assert TimestepsConfig().timesteps == uniform_timesteps(50)


def test_count_runs_at_the_solver_spacing_and_not_with_a_list():
    cfg = AccelConfig.from_dict({"schema_version": 2, "methods": {"timesteps": {"count": 5}}})
    assert cfg.to_dict()["methods"]["timesteps"] == {"count": 5}
    with pytest.raises(TunerError, match="either timesteps"):
        AccelConfig.from_dict({"schema_version": 2, "methods": {"timesteps": {"count": 5, "timesteps": [900, 10]}}})


def test_count_and_remove_on_the_proxy(tiny_pipe):
    ref = tiny_pipe(CLASSES, SEEDS, num_inference_steps=5)
    cfg = AccelConfig.from_dict({"schema_version": 2, "methods": {"timesteps": {"count": 5}}})
    with apply(tiny_pipe, cfg):
        assert len(tiny_pipe.timesteps(50)) == 5
        assert torch.equal(tiny_pipe(CLASSES, SEEDS, num_inference_steps=50), ref)
    assert tiny_pipe.steps_override is None and len(tiny_pipe.timesteps(50)) == 50

"""Quantization ranges that follow the trajectory: per TMPQ timestep group, split shortcut halves, and the
sensitivity that guides per-layer bits (issue 23)."""

from __future__ import annotations

import pytest
import torch

from tuner.apply_config import apply
from tuner.config import AccelConfig
from tuner.errors import TunerError
from tuner.methods import quant
from tuner.methods.quant_sensitivity import average_weight_bits, greedy_bits

CLASSES, SEEDS, STEPS = [3, 7], [11, 12], 4


def _config(**q):
    return AccelConfig.from_dict({"schema_version": 2, "methods": {"quant": q}})


@pytest.fixture
def calibrated(tiny_pipe):
    quant.calibrate(tiny_pipe, classes=[5], seeds=[100], steps=STEPS)
    return tiny_pipe


def _run(pipe):
    return pipe(CLASSES, SEEDS, num_inference_steps=STEPS)


def test_activation_ranges_differ_per_timestep_group(calibrated, monkeypatch):
    calib = quant.CALIBRATIONS[calibrated.unet]
    assert len(calib.timesteps) == STEPS  # one set of statistics per calibration step
    edges, members = calib.time_groups(4)
    assert edges[0] == 0 and edges[-1] == 1000 and len(members) == 4
    ranges = [float(calib.act_range("conv_in", 8, ts)) for ts in members if ts]
    assert len(set(ranges)) > 1  # the noisy latent's range changes along the trajectory
    assert max(ranges) == pytest.approx(float(calib.act_absmax["conv_in"]))  # absmax at 8 bits, over all steps

    used = []
    original = quant._GroupOf.__call__
    monkeypatch.setattr(quant._GroupOf, "__call__", lambda self: used.append(original(self)) or used[-1])
    ref = _run(calibrated)
    with apply(calibrated, _config(act_bits=8, time_groups=4)) as h:
        grouped = _run(calibrated)
        assert h.info["time_groups"] == 4
    assert len(set(used)) > 1  # each step quantizes with its own group's range
    with apply(calibrated, _config(act_bits=8, time_groups=1)):
        single = _run(calibrated)
    assert not torch.equal(grouped, single)
    assert torch.equal(_run(calibrated), ref)  # removal leaves the model as it was


def test_grouped_ranges_remove_every_hook_and_neutral_stays_identical(calibrated):
    unet = calibrated.unet
    hooks = lambda: sum(len(m._forward_pre_hooks) for m in unet.modules())  # noqa: E731
    before, ref = hooks(), _run(calibrated)
    with apply(calibrated, _config(weight_bits=8, act_bits=8, time_groups=8)):
        assert hooks() > before
    assert hooks() == before and torch.equal(_run(calibrated), ref)
    with apply(calibrated, _config(weight_bits=32, act_bits=32, time_groups=8)):
        assert hooks() == before and torch.equal(_run(calibrated), ref)


def test_skip_connection_halves_get_their_own_ranges(calibrated):
    calib = quant.CALIBRATIONS[calibrated.unet]
    modules = dict(calibrated.unet.named_modules())
    assert calib.splits and all(n.startswith("up_blocks.") and n.endswith(".conv_shortcut") for n in calib.splits)
    for name, (start, channels) in calib.splits.items():
        assert modules[name].in_channels == channels and 0 < start < channels
        r = calib.act_range(name, 8)
        assert r.shape == (channels,)
        halves = [torch.stack([parts[i][0] for parts in calib.act_stats[name].values()]).amax() for i in (0, 1)]
        assert torch.all(r[:start] == halves[0]) and torch.all(r[start:] == halves[1])
    assert any(float(calib.act_range(n, 8)[0]) != float(calib.act_range(n, 8)[-1]) for n in calib.splits)
    non_split = "down_blocks.0.resnets.0.conv1"
    assert non_split not in calib.splits and calib.act_range(non_split, 8).dim() == 0
    with apply(calibrated, _config(act_bits=8)):
        assert torch.isfinite(_run(calibrated)).all()  # the per-channel range broadcasts over NCHW


def test_sensitivity_ranks_layers_and_greedy_bits_meet_the_average(calibrated):
    import tuner.methods.quant_sensitivity as qs

    names = quant.quantizable_layers(calibrated.unet)
    probe = names[:3] + names[-3:]  # a few layers keep the test short; the study measures them all

    def one(layer, w, a):
        return quant.apply(calibrated, quant.QuantConfig(per_layer={layer: {"w": w, "a": a}}))

    sens = qs.layer_sensitivity(calibrated, probe, (4, 8), STEPS, 123, one)
    assert set(sens) == set(probe) and all(set(v) == {"4", "8"} for v in sens.values())
    assert sum(v["4"] for v in sens.values()) > sum(v["8"] for v in sens.values()) > 0
    assert len(quant.ACTIVE) == 0  # every probe was removed
    modules = dict(calibrated.unet.named_modules())
    params = {n: modules[n].weight.numel() for n in probe}
    groups = {n: [n] for n in probe}
    bits = greedy_bits(groups, sens, params, (4, 6, 8, 32), 6.0, fixed={"conv_out": 32})
    assert average_weight_bits(bits, groups, params) <= 6.0 and bits["conv_out"] == 32
    assert any(bits[n] < 8 for n in probe)


def test_space_orders_genes_keeps_sensitive_layers_and_seeds_mixed_bits(calibrated):
    from search_spaces.quantization import QuantizationFamily
    from tuner.search_spaces.space import SpaceContext

    facts = quant.QuantConfig.layer_facts(calibrated.unet)
    sens = {n: {"4": 1e-6, "6": 1e-7, "8": 1e-8} for n in facts["quant_layers"]}
    sens["conv_out"] = {"4": 5e-3, "6": 1e-4, "8": 1e-5}  # above the default bound at 4 bits
    sens["mid_block.resnets.0.conv1"] = {"4": 5e-4, "6": 1e-5, "8": 1e-6}
    facts["quant_sensitivity"] = sens
    ctx = SpaceContext(STEPS, facts={"quant": facts})
    fam = QuantizationFamily({"bits": [4, 6, 8, 32], "separate_act": True, "act_bits": [8, 32],
                              "keep": ["conv_in"]}, ctx)
    assert list(fam.groups)[:2] == ["conv_out", "mid_block"]  # most sensitive first
    assert fam.kept == {"conv_out", "conv_in"}
    by_name = {p.name: p for p in fam.params}
    # a kept group's only choice is float: fixed, not searched
    assert fam.fixed["quant.bits.conv_out"][0] == 32 and fam.fixed["quant.act.conv_in"][0] == 32
    assert "quant.bits.conv_out" not in by_name and by_name["quant.bits.mid_block"].choices == (4, 6, 8, 32)
    seeds = fam.seeds()
    assert seeds[0]["quant.bits.down_blocks.0"] == 8 and seeds[0]["quant.bits.conv_out"] == 32
    for seed in seeds[1:]:
        bits = {g: seed[f"quant.bits.{g}"] for g in fam.groups}
        assert average_weight_bits(bits, fam.groups, facts["quant_layer_params"]) <= 6.0
        assert all(seed[f"quant.act.{g}"] == (32 if g in fam.kept else 8) for g in fam.groups)
    with pytest.raises(TunerError, match="keep"):
        QuantizationFamily({"keep": ["no_such_layer"]}, ctx)
    with pytest.raises(TunerError, match="max_sensitivity"):
        QuantizationFamily({"max_sensitivity": -1}, ctx)


def test_a_tmpq_trial_quantizes_with_its_own_groups(calibrated):
    from search_spaces.quantization import QuantizationFamily
    from tuner.search_spaces.space import SpaceContext

    facts = {**quant.QuantConfig.layer_facts(calibrated.unet), "quant_sensitivity": {}}
    fam = QuantizationFamily({"bits": [8, 32], "optional": False}, SpaceContext(STEPS, facts={"quant": facts}))
    values = {"quant.enabled": True, **{f"quant.bits.{g}": 8 for g in fam.groups}}
    assert "time_groups" not in fam.decode(values, STEPS)["quant"]
    tmpq = {**values, "timesteps.schedule": "tmpq", "timesteps.groups": 6}
    assert fam.decode(tmpq, 6)["quant"]["time_groups"] == 6

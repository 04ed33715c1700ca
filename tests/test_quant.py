"""Per-layer quantization: neutrality, reversibility, shared calibration, BitOPs, real int8 kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuner.evaluators.cost import bitops, count_macs
from tuner.apply_config import apply
from tuner.config import AccelConfig
from tuner.errors import TunerError
from tuner.methods import quant
from tuner.methods.quant_math import Int8LinearWeights, fake_quant_activation, fake_quant_weight, int8_linear

CLASSES, SEEDS, STEPS = [3, 7], [11, 12], 2


def _config(**q):
    return AccelConfig.from_dict({"schema_version": 2, "methods": {"quant": q}})


@pytest.fixture
def calibrated(tiny_pipe):
    """tiny_pipe with a small calibration (1 image x 2 steps) attached to its U-Net."""
    quant.calibrate(tiny_pipe, classes=[5], seeds=[100], steps=STEPS)
    return tiny_pipe


def _run(pipe):
    return pipe(CLASSES, SEEDS, num_inference_steps=STEPS)


def test_quantizable_layers_are_the_conv_and_linear_layers(tiny_pipe):
    names = quant.quantizable_layers(tiny_pipe.unet)
    modules = dict(tiny_pipe.unet.named_modules())
    assert names[0] == "conv_in" and names[-1] == "conv_out"
    assert all(isinstance(modules[n], (nn.Conv2d, nn.Linear)) for n in names)
    assert any(isinstance(modules[n], nn.Linear) for n in names)


def test_neutral_32_bits_is_bit_identical_and_untouched(tiny_pipe):
    ref = _run(tiny_pipe)
    runs = quant.calibration_runs
    with apply(tiny_pipe, _config(weight_bits=32, act_bits=32)) as h:
        assert torch.equal(_run(tiny_pipe), ref)
        assert h.info["simulated_layers"] == [] and h.info["real_kernel_layers"] == []
    assert quant.calibration_runs == runs  # nothing to calibrate for 32/32


def test_w8_close_but_different_and_remove_restores(calibrated):
    pipe = calibrated
    ref = _run(pipe)
    weights = {n: p for n, p in pipe.unet.named_parameters()}
    with apply(pipe, _config(weight_bits=8, act_bits=32)) as h:
        out = _run(pipe)
        assert len(h.info["simulated_layers"]) == len(quant.quantizable_layers(pipe.unet))
    assert not torch.equal(out, ref)
    assert (out - ref).abs().mean() < 0.05 * ref.abs().mean()
    assert all(p is weights[n] for n, p in pipe.unet.named_parameters())  # the same Parameter objects
    assert torch.equal(_run(pipe), ref)


def test_w8a8_real_linear_kernels_and_simulated_convs(calibrated):
    pipe = calibrated
    ref = _run(pipe)
    modules = dict(pipe.unet.named_modules())
    with apply(pipe, _config(weight_bits=8, act_bits=8)) as h:
        out = _run(pipe)
        real, sim = set(h.info["real_kernel_layers"]), set(h.info["simulated_layers"])
        assert real and all(isinstance(modules[n], nn.Linear) for n in real)
        assert {n for n, m in modules.items() if isinstance(m, nn.Conv2d)} <= sim
        assert real | sim == set(quant.quantizable_layers(pipe.unet)) and not real & sim
        assert all(type(modules[n]) in (nn.Conv2d, nn.Linear) for n in real | sim)
    assert not torch.equal(out, ref)
    assert (out - ref).abs().mean() < 0.1 * ref.abs().mean()
    assert torch.equal(_run(pipe), ref)


def test_real_int8_linear_equals_fake_quant_w8a8():
    torch.manual_seed(0)
    lin = nn.Linear(24, 40)
    x = torch.randn(3, 50, 24)
    w_abs = lin.weight.detach().abs().amax(dim=1)
    a_abs = x.abs().amax() * 0.8  # some clipping too
    fake = nn.functional.linear(fake_quant_activation(x, a_abs, 8), fake_quant_weight(lin.weight, w_abs, 8), lin.bias)
    real = int8_linear(x, Int8LinearWeights(lin.weight, w_abs, a_abs), lin.bias)
    assert real.shape == fake.shape
    assert torch.allclose(real, fake, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(real, lin(x), atol=1e-5)


def test_calibration_runs_once_across_bit_widths(tiny_pipe, monkeypatch):
    monkeypatch.setattr(quant, "DEFAULT_CALIBRATION_IMAGES", 2)
    monkeypatch.setattr(quant, "DEFAULT_CALIBRATION_STEPS", 2)
    before = quant.calibration_runs
    outs = []
    for w, a in [(8, 8), (6, 6), (4, 8)]:
        with apply(tiny_pipe, _config(weight_bits=w, act_bits=a)):  # first apply calibrates
            outs.append(tiny_pipe([1], [5], num_inference_steps=2))
    assert quant.calibration_runs == before + 1
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])


def test_bitops_w8a8_is_one_sixteenth(calibrated):
    pipe = calibrated
    names = quant.quantizable_layers(pipe.unet)
    with apply(pipe, _config(weight_bits=8, act_bits=8, real_kernels=False)) as h:
        macs = count_macs(pipe.unet, lambda: pipe([1], [5], num_inference_steps=1))
        layer_bits = h.info["layer_bits"]
    assert set(layer_bits) == set(names) and set(layer_bits.values()) == {(8, 8)}
    macs = {n: v for n, v in macs.items() if n in layer_bits}  # attention matmuls stay 32/32
    assert set(macs) == set(names)  # the cost counter still sees every quantized layer
    assert bitops(macs, layer_bits) * 16 == bitops(macs)


def test_per_layer_overrides(calibrated):
    cfg = _config(weight_bits=6, act_bits=6, per_layer={"conv_in": {"w": 32, "a": 32}, "conv_out": {"w": 8}})
    with apply(calibrated, cfg) as h:
        bits = h.info["layer_bits"]
        assert bits["conv_in"] == (32, 32) and bits["conv_out"] == (8, 6)
        assert "conv_in" not in h.info["simulated_layers"] and "conv_out" in h.info["simulated_layers"]


@pytest.mark.parametrize("bad", [{"weight_bits": 3}, {"act_bits": 12}, {"weight_bits": 8.5}, {"weight_bits": True},
                                 {"per_layer": {"conv_in": {"w": 2}}}, {"per_layer": {"conv_in": {"x": 8}}},
                                 {"per_layer": []}])
def test_bad_bits_are_errors(bad):
    with pytest.raises(TunerError, match="quant"):
        _config(**bad)


def test_unknown_layer_is_named(tiny_pipe):
    with pytest.raises(TunerError, match="down_blocks.9.conv"):
        apply(tiny_pipe, _config(weight_bits=8, per_layer={"down_blocks.9.conv": {"w": 4}}))


def test_double_apply_is_refused(calibrated):
    with apply(calibrated, _config(weight_bits=8)):
        with pytest.raises(TunerError, match="already"):
            apply(calibrated, _config(weight_bits=4))


def test_sd15_unet_calibrate_once_and_quantize(sd15_unet):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ehs = torch.randn(2, 77, 768, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(500)
    box = {}
    with torch.no_grad():  # two forwards in all: the calibration one doubles as the reference
        with pytest.raises(TunerError, match="calibrat"):
            apply(sd15_unet, _config(weight_bits=8, act_bits=8))
        quant.calibrate_with(sd15_unet, lambda: box.setdefault("ref", sd15_unet(x, t, encoder_hidden_states=ehs).sample),
                             method="max")  # "mse" works too; its weight search over 860M weights is slow here
        with apply(sd15_unet, _config(weight_bits=8, act_bits=8)) as h:
            out = sd15_unet(x, t, encoder_hidden_states=ehs).sample
            assert len(h.info["real_kernel_layers"]) > 100
    ref = box["ref"]
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert (out - ref).norm() < 0.2 * ref.norm()
    assert all(not hasattr(m, "_forward_pre_hooks") or not m._forward_pre_hooks
               for n, m in sd15_unet.named_modules() if n)  # hooks gone after remove


def test_composes_with_pipeline_and_per_step_methods(calibrated):
    """timesteps + solver + quant + ToMe + DeepCache on one model, removed in one go."""
    ref = _run(calibrated)
    methods = {"timesteps": {"timesteps": [900, 500, 100]}, "solver": {"name": "ddpm", "coefficients": "liyan"},
               "quant": {"weight_bits": 6, "act_bits": 8}, "tome": {"ratio": 0.5}, "deepcache": {"interval": 2}}
    with apply(calibrated, AccelConfig.from_dict({"schema_version": 2, "methods": methods})) as h:
        a = _run(calibrated)
        b = _run(calibrated)
        assert h.info["simulated_layers"]
    assert torch.isfinite(a).all() and torch.equal(a, b)
    assert torch.equal(_run(calibrated), ref)


def test_mse_ranges_clip_harder_at_low_bits_and_are_cached(calibrated):
    calib = quant.CALIBRATIONS[calibrated.unet]
    name = "down_blocks.0.resnets.0.conv1"
    w = dict(calibrated.unet.named_modules())[name].weight
    r4, r8 = calib.act_range(name, 4), calib.act_range(name, 8)
    assert r4 <= r8 <= calib.act_absmax[name] and r4 < calib.act_absmax[name]
    assert calib.act_range(name, 4) is r4  # derived once, reused by every candidate
    assert (calib.weight_range(name, w, 4) <= calib.weight_absmax[name]).all()
    x = calib.act_samples[name]
    for bits, r in ((4, r4), (8, r8)):  # the chosen range beats plain absmax on the calibration sample
        err = (fake_quant_activation(x, r, bits) - x).pow(2).mean()
        assert err <= (fake_quant_activation(x, calib.act_absmax[name], bits) - x).pow(2).mean()


def test_max_clipping_shares_one_range_across_bit_widths(tiny_pipe):
    quant.calibrate(tiny_pipe, classes=[5], seeds=[100], steps=STEPS, method="max")
    calib = quant.CALIBRATIONS[tiny_pipe.unet]
    assert calib.act_range("conv_out", 4) is calib.act_range("conv_out", 8) is calib.act_absmax["conv_out"]
    with apply(tiny_pipe, _config(weight_bits=6, act_bits=6)) as h:
        assert torch.isfinite(_run(tiny_pipe)).all() and h.info["simulated_layers"]
    with pytest.raises(TunerError, match="clipping"):
        quant.calibrate(tiny_pipe, classes=[5], seeds=[100], steps=STEPS, method="percentile")


def test_first_apply_calibrates_on_the_baseline_trajectory_not_the_candidate(tiny_pipe, monkeypatch):
    monkeypatch.setattr(quant, "DEFAULT_CALIBRATION_IMAGES", 1)
    monkeypatch.setattr(quant, "DEFAULT_CALIBRATION_STEPS", 2)
    cfg = AccelConfig.from_dict({"schema_version": 2, "methods": {
        "timesteps": {"timesteps": [900, 600, 300]}, "solver": {"name": "ddpm", "coefficients": "liyan"},
        "quant": {"weight_bits": 8, "act_bits": 8}}})
    with apply(tiny_pipe, cfg):
        calib = quant.CALIBRATIONS[tiny_pipe.unet]
        assert tiny_pipe.timesteps_override == [900, 600, 300] and tiny_pipe.solver.name == "ddpm"
    # conv_in sees the whole CFG batch (2 x 1 x 16 x 16 values) once per step: 2 steps of the baseline
    # solver (DPM-Solver++ 2M), not the candidate's 3
    assert calib.act_samples["conv_in"].numel() == 2 * 512
    assert tiny_pipe.timesteps_override is None and tiny_pipe.solver == tiny_pipe.baseline_solver


def test_torchao_kernels_cover_int8_linear_layers_and_remove_restores(calibrated):
    """kernels='torchao': W8A8 and W8/A32 Linear layers run torchao's int8 tensors, everything else is
    simulated; the error is of the size of our own int8's and remove() restores the images bit for bit."""
    pytest.importorskip("torchao")
    pipe = calibrated
    base = _run(pipe)
    modules = dict(pipe.unet.named_modules())
    linear = [n for n in quant.quantizable_layers(pipe.unet) if isinstance(modules[n], nn.Linear)]
    for act in (8, 32):
        with apply(pipe, _config(weight_bits=8, act_bits=act, kernels="torchao")) as h:
            assert sorted(h.info["real_kernel_layers"]) == sorted(linear)
            assert set(h.info["simulated_layers"]) == set(quant.quantizable_layers(pipe.unet)) - set(linear)
            assert type(modules[linear[0]].weight).__module__.startswith("torchao")
            out = _run(pipe)
        with apply(pipe, _config(weight_bits=8, act_bits=act)):  # our kernels / simulation, same bits
            ours = _run(pipe)
        gap = (ours - base).abs().mean()
        assert 0 < (out - base).abs().mean() < 2 * gap  # an int8 error of the same size as ours
        assert torch.equal(_run(pipe), base)
    with pytest.raises(TunerError, match="kernels must be one of"):
        _config(kernels="cutlass")

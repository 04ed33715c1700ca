"""`tuner.apply` on a `torch.compile`d U-Net (issue 20): the module behind the wrapper is patched, the
compiled graph is rebuilt (a warning and the handle say so), the compiled output equals the uncompiled
patched output, and removal restores the compiled baseline bit for bit. Dynamo alone (backend "eager")
for the unwrapping; one inductor test when a C++ compiler exists. `[model] compile` in a study."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

import tuner
from tuner.errors import TunerError

CONFIGS = {"tome": {"ratio": 0.5}, "catome": {"threshold": 0.7}, "deepcache": {"interval": 2},
           "frdiff": {"interval": 2}}


@pytest.fixture(scope="module")
def sd_pipes(user_models):
    from diffusers import DiffusionPipeline

    out = {}
    for layout in ("sd15", "sdxl"):
        pipe = DiffusionPipeline.from_pretrained(user_models[layout])
        pipe.set_progress_bar_config(disable=True)
        out[layout] = pipe
    return out


def generate(pipe) -> torch.Tensor:
    return pipe("a photo of a cat", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                height=32, width=32, output_type="pt").images


@pytest.mark.parametrize("layout", ("sd15", "sdxl"))
def test_apply_on_a_compiled_unet(sd_pipes, layout):
    pipe = sd_pipes[layout]
    plain = pipe.unet
    base = generate(pipe)
    configs = CONFIGS if layout == "sd15" else {k: CONFIGS[k] for k in ("tome", "deepcache")}
    expected = {}
    for name, cfg in configs.items():
        with tuner.apply(pipe, {name: cfg}):
            expected[name] = generate(pipe)
    pipe.unet = torch.compile(plain, backend="eager")
    try:
        assert torch.equal(generate(pipe), base)
        for name, cfg in configs.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                handle = tuner.apply(pipe, {name: cfg})
            assert any("graph is rebuilt" in str(w.message) for w in caught)
            assert "compiled" in handle.info and "(compiled: graph rebuilt)" in repr(handle)
            out = generate(pipe)
            handle.remove()
            # dynamo may hand the merged tokens to BLAS in another memory layout: float rounding only
            torch.testing.assert_close(out, expected[name], rtol=0, atol=5e-3, msg=f"compiled {name} differs")
            assert not torch.equal(out, base)
            assert torch.equal(generate(pipe), base), f"compiled {name}: remove() did not restore"
    finally:
        pipe.unet = plain
        torch._dynamo.reset()


def test_compiled_unet_alone_and_tuner_remove(sd_pipes):
    """A bare compiled U-Net is a target too; tuner.remove finds the handles behind the wrapper."""
    plain = sd_pipes["sd15"].unet
    compiled = torch.compile(plain, backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner.apply(compiled, {"tome": {"ratio": 0.5}})
        assert len(tuner.applied_handles(compiled)) == 1 and tuner.applied_handles(plain)
        assert tuner.remove(compiled) == 1
    assert not any(k.startswith("_tuner") for k in vars(plain))
    torch._dynamo.reset()


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="inductor on the CPU needs a C++ compiler (none on PATH)")
def test_inductor_on_cpu(sd_pipes):
    """One real inductor compilation: tiny SD-1.5 U-Net forwards, ToMe applied behind the wrapper."""
    unet = sd_pipes["sd15"].unet
    x, ctx = torch.randn(2, 4, 4, 4), torch.randn(2, 16, 32)

    def run(m):
        with torch.no_grad():
            return m(x, 500, encoder_hidden_states=ctx).sample

    base_eager = run(unet)
    with tuner.apply(unet, {"tome": {"ratio": 0.5}}):
        tome_eager = run(unet)
    compiled = torch.compile(unet)  # inductor
    try:
        base_compiled = run(compiled)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tuner.apply(compiled, {"tome": {"ratio": 0.5}}):
                tome_compiled = run(compiled)
        after = run(compiled)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(base_compiled, base_eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tome_compiled, tome_eager, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(tome_compiled, base_compiled)
    torch.testing.assert_close(after, base_compiled, rtol=0, atol=0)


def test_model_compile_option(tmp_path):
    from tuner.models.compile import parse_compile
    from tuner.study.spec import load_spec

    assert parse_compile(True) == "inductor" and parse_compile(False) is None and parse_compile("eager") == "eager"
    toml = tmp_path / "s.toml"
    toml.write_text('name = "s"\n[model]\ncompile = "aot_eager"\n')
    assert load_spec(toml).model.compile == "aot_eager"
    toml.write_text('name = "s"\n[model]\ncompile = "fast"\n')
    with pytest.raises(TunerError, match="model.compile='fast'"):
        load_spec(toml)


def test_inductor_without_a_compiler_is_refused(monkeypatch):
    from tuner.models import compile as comp

    monkeypatch.setattr(comp.shutil, "which", lambda name: None)
    with pytest.raises(TunerError, match="needs a C\\+\\+ compiler"):
        comp.check_backend("inductor", torch.device("cpu"))
    comp.check_backend("eager", torch.device("cpu"))  # dynamo alone needs none


def test_compiled_study_model_counts_and_times(tiny_pipe):
    """A compiled proxy model: MACs are counted on the plain U-Net (same as uncompiled), the candidate is
    timed in one block (one apply: no compilation inside a timed call), and results match uncompiled."""
    from tuner.config import AccelConfig
    from tuner.scoring import ScoringContext, ImageSet
    from tuner.models.compile import compile_model

    ps = ImageSet(n_images=2, steps=2)
    plain = ScoringContext(tiny_pipe, ps, latency_images=2, latency_repeats=1)
    config = AccelConfig.from_dict({"deepcache": {"interval": 2}})
    _, cost_plain = plain.generate_and_count(ps)
    images_plain = plain.generate(ps)
    compile_model(tiny_pipe, "eager")
    try:
        ctx = ScoringContext(tiny_pipe, ps, latency_images=2, latency_repeats=2)
        images, cost = ctx.generate_and_count(ps)
        assert cost["macs"] == cost_plain["macs"] and torch.equal(images, images_plain)
        applies = []
        real_apply = tuner.apply_config.apply

        def counting_apply(*a):
            applies.append(1)
            return real_apply(*a)

        import tuner.scoring as ev

        ev_apply, ev.apply = ev.apply, counting_apply
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lat = ctx.latency(config)
        finally:
            ev.apply = ev_apply
        assert applies == [1] and len(ctx.last_latency_rounds["candidate"]) == 2 and lat["candidate"] > 0
    finally:
        tiny_pipe.compiled_unet = None
        tiny_pipe.compiled = None
        torch._dynamo.reset()

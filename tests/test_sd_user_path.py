"""The Stable Diffusion user's path on tiny SD-1.5, SD-2.x and SDXL pipelines (issue 20): the README's
one-liners work unchanged, `tuner.remove(pipe)` restores bit-identical output, a foreign patch is refused,
`Handle` says what is applied, and `dir(tuner)` shows the public API."""

from __future__ import annotations

import pytest
import torch

import tuner
from tuner.errors import TunerError

LAYOUTS = ("sd15", "sd2", "sdxl")
ONE_LINERS = {  # the README's, and each family at its defaults
    "tome": {"tome": {"ratio": 0.5}},
    "tome+deepcache": {"tome": {"ratio": 0.5}, "deepcache": {"interval": 3}},
    "catome": {"catome": {"threshold": 0.7}},
    "deepcache": {"deepcache": {"interval": 3}},
    "frdiff": {"frdiff": {"interval": 2}},
}


@pytest.fixture(scope="module")
def pipes(user_models):
    from diffusers import DiffusionPipeline

    out = {}
    for layout in LAYOUTS:
        pipe = DiffusionPipeline.from_pretrained(user_models[layout])
        pipe.set_progress_bar_config(disable=True)
        out[layout] = pipe
    return out


def generate(pipe, steps: int = 3) -> torch.Tensor:
    return pipe("a photo of a cat", num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                height=32, width=32, output_type="pt").images


@pytest.mark.parametrize("layout", LAYOUTS)
def test_readme_one_liners_work_unchanged(pipes, layout):
    pipe = pipes[layout]
    base = generate(pipe)
    for name, config in ONE_LINERS.items():
        handle = tuner.apply(pipe, config)
        try:
            out = generate(pipe)
        finally:
            handle.remove()
        assert torch.isfinite(out).all() and not torch.equal(out, base), f"{name} changed nothing on {layout}"
        assert torch.equal(generate(pipe), base), f"{name} left {layout} changed"


def test_token_merging_default_level_follows_the_model(pipes):
    """max_downsample left out = the first level with attention; an explicit 1 on SDXL is still refused."""
    blocks = {layout: tuner.apply(pipes[layout], {"tome": {"ratio": 0.5}}) for layout in LAYOUTS}
    try:
        assert all(h.info["tome_blocks"] > 0 for h in blocks.values())
    finally:
        for h in blocks.values():
            h.remove()
    with pytest.raises(TunerError, match="max_downsample=1 reaches no transformer block"):
        tuner.apply(pipes["sdxl"], {"tome": {"ratio": 0.5, "max_downsample": 1}})


@pytest.mark.parametrize("layout", ("sd15", "sdxl"))
def test_remove_without_the_handle_is_bit_identical(pipes, layout):
    pipe = pipes[layout]
    base = generate(pipe)
    first = tuner.apply(pipe, {"tome": {"ratio": 0.5}})
    tuner.apply(pipe, {"deepcache": {"interval": 2}})  # a second handle, dropped on purpose
    assert tuner.applied_handles(pipe)[0] is first and len(tuner.applied_handles(pipe)) == 2
    del first
    assert tuner.remove(pipe) == 2
    assert torch.equal(generate(pipe), base) and tuner.applied_handles(pipe) == []
    assert "_tuner_handles" not in vars(pipe.unet)
    assert tuner.remove(pipe) == 0  # nothing applied: nothing to do


def test_handle_repr_lists_what_is_applied(pipes):
    handle = tuner.apply(pipes["sd15"], {"tome": {"ratio": 0.5}, "deepcache": {"interval": 3}})
    text = repr(handle)
    assert text.startswith("<tuner.Handle applied on UNet2DConditionModel: ")
    assert "tome(ratio=0.5" in text and "deepcache(interval=3" in text
    handle.remove()
    assert repr(handle).startswith("<tuner.Handle removed")


def test_public_api_is_listed():
    assert {"apply", "remove", "applied_handles", "AccelConfig", "Handle", "TunerError"} <= set(dir(tuner))
    assert set(tuner.__all__) == {"__version__", "apply", "remove", "applied_handles", "AccelConfig", "Handle",
                                  "TunerError", "load_trials"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tuner.nope  # noqa: B018


def test_tomesd_patch_is_refused(pipes):
    tomesd = pytest.importorskip("tomesd")
    pipe = pipes["sd15"]
    tomesd.apply_patch(pipe, ratio=0.5)
    try:
        with pytest.raises(TunerError, match="^cannot apply tuner on a U-Net another tool patched: tomesd's") as e:
            tuner.apply(pipe, {"tome": {"ratio": 0.5}})
        assert "\n" not in str(e.value)
    finally:
        tomesd.remove_patch(pipe)
    tuner.apply(pipe, {"tome": {"ratio": 0.5}}).remove()  # undone: accepted again


def test_deepcache_helper_is_refused(pipes):
    deepcache = pytest.importorskip("DeepCache")
    pipe = pipes["sd15"]
    helper = deepcache.DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=3, cache_branch_id=0)
    helper.enable()
    try:
        with pytest.raises(TunerError, match="wrapped forward on the U-Net.*DeepCache"):
            tuner.apply(pipe, {"frdiff": {"interval": 2}})
    finally:
        helper.disable()
    tuner.apply(pipe, {"frdiff": {"interval": 2}}).remove()  # disable() leaves the bound forward: accepted


def test_diffusers_hook_is_refused(pipes):
    from diffusers.hooks import HookRegistry, ModelHook

    pipe = pipes["sd15"]
    registry = HookRegistry.check_if_exists_or_initialize(pipe.unet.mid_block)
    registry.register_hook(ModelHook(), "someone_else")
    try:
        with pytest.raises(TunerError, match="diffusers hook\\(s\\) someone_else on mid_block"):
            tuner.apply(pipe, {"tome": {"ratio": 0.5}})
    finally:
        registry.remove_hook("someone_else", recurse=False)
    with tuner.apply(pipe, {"deepcache": {"interval": 3}}):  # tuner's own hooks (tuner.*) are not foreign
        tuner.apply(pipe, {"tome": {"ratio": 0.5}}).remove()

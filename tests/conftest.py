"""Shared fixtures. Tests run on CPU with small models; nothing is downloaded."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    """Each test gets its own reference-statistics cache."""
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def tiny_pipe():
    """The proxy architecture with seeded random weights (fast; no trained weights needed)."""
    from tuner.pipeline import ProxyPipeline
    from tuner.proxy.model import ClassEncoder, build_scheduler, build_unet

    torch.manual_seed(0)
    return ProxyPipeline(build_unet().eval(), ClassEncoder().eval(), build_scheduler())


@pytest.fixture
def tiny_ddim_pipe(tiny_pipe):
    """tiny_pipe with DDIM as its baseline solver (the proxy's default before issue 17): its timestep list
    for n steps is uniform_timesteps(n), which the timesteps tests rely on."""
    from tuner.solvers import Solver

    tiny_pipe.baseline_solver = tiny_pipe.solver = Solver("ddim")
    return tiny_pipe


@pytest.fixture(scope="session")
def proxy_pipe():
    """The shipped, trained proxy model."""
    from tuner.proxy.model import load_proxy_pipeline

    return load_proxy_pipeline("cpu")


@pytest.fixture(scope="session")
def sd15_unet():
    """Stable Diffusion 1.5's own U-Net config with random weights (no download), for one forward at a
    small latent size."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
    )
    return unet.eval()


@pytest.fixture(scope="session")
def dit_models(tmp_path_factory, user_models):
    """Tiny random-weight PixArt-α, SD3 and Flux pipeline folders (tests/tiny_dit_models.py), beside the
    user models' Inception file and prompts. Built once per session."""
    from tiny_dit_models import BUILDERS

    root = tmp_path_factory.mktemp("dit_models")
    return {**{name: build(root / name) for name, build in BUILDERS.items()},
            "inception": user_models["inception"], "prompts": user_models["prompts"]}


@pytest.fixture(scope="session")
def user_models(tmp_path_factory):
    """Tiny random-weight SD-1.5, SD-2.x and SDXL pipeline folders, an Inception weights file in torch-fidelity's
    layout, a CLIP model folder and a prompts file (tests/tiny_user_models.py). Built once per session."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_user_models import build_clip, build_inception_weights, build_sd2, build_sd15, build_sdxl

    root = tmp_path_factory.mktemp("user_models")
    prompts = root / "prompts.txt"
    prompts.write_text("a photo of a cat\nred car in the city at night\n\n# a comment\na blue house by a lake\n")
    return {"root": root, "sd15": build_sd15(root / "sd15"), "sd2": build_sd2(root / "sd2"), "sdxl": build_sdxl(root / "sdxl"),
            "inception": build_inception_weights(root / "pt_inception.pth"), "clip": build_clip(root / "clip"),
            "prompts": prompts}

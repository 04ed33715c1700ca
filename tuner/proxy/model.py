"""Architecture of the proxy model and loading of its shipped weights.

The U-Net keeps Stable Diffusion 1.5's block pattern (CrossAttnDown×2 + Down, mid, Up + CrossAttnUp×2),
so the highest-resolution level (SD's D1/U1) has self-attention for token merging and there are three
levels for DeepCache branches. Conditioning is class tokens fed as `encoder_hidden_states`, with one
extra "null" class for classifier-free guidance.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tuner.errors import TunerError
from tuner.proxy.data import IMAGE_SIZE, NUM_CLASSES

ASSETS = Path(__file__).resolve().parent.parent / "assets"
UNET_WEIGHTS = ASSETS / "proxy_unet.safetensors"
CLASSIFIER_WEIGHTS = ASSETS / "digits_classifier.safetensors"
PROXY_INFO = ASSETS / "proxy_info.json"
MODEL_ID = "tuner/proxy-digits-16px"

NULL_CLASS = NUM_CLASSES  # index of the unconditional token set
CLASS_TOKENS = 4  # several tokens, so cross-attention is not a constant (softmax over one key is)
CROSS_DIM = 32

UNET_CONFIG = dict(
    sample_size=IMAGE_SIZE,
    in_channels=1,
    out_channels=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    cross_attention_dim=CROSS_DIM,
    attention_head_dim=2,  # diffusers' name for the number of heads in this model class
    norm_num_groups=8,
)


class ClassEncoder(nn.Module):
    """Plays the text encoder: class id -> CLASS_TOKENS tokens of width CROSS_DIM."""

    def __init__(self, num_classes: int = NUM_CLASSES, tokens: int = CLASS_TOKENS, dim: int = CROSS_DIM):
        super().__init__()
        self.tokens, self.dim = tokens, dim
        self.embedding = nn.Embedding(num_classes + 1, tokens * dim)

    def forward(self, classes: torch.Tensor) -> torch.Tensor:
        return self.embedding(classes).view(-1, self.tokens, self.dim)


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def build_scheduler():
    """Ho et al.'s linear schedule, shared by every solver (tuner/solvers.py).

    No x0 clipping: DDIM clips the predicted x0 but keeps the unclipped noise estimate, and on digits (most
    pixels sit at -1) that mismatch drifts a little more with every step. Measured with the shipped
    weights, N=64 (BENCHMARKS.md, "Proxy model"): FID at 20/50/100 steps 5.18/8.10/17.0 with clipping,
    6.39/5.84/5.90 without (real-vs-real floor 5.89)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )


def resolve_device(device: str | None) -> torch.device:
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise TunerError(f"unknown device '{name}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TunerError(f"device '{name}' asked for but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise TunerError(f"unsupported device '{name}' (use cpu or cuda)")
    return dev


def load_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    from tuner.weights import load_tensors

    if not Path(path).exists():
        raise TunerError(f"{what} weights not found: {path} (train them with `tuner proxy train`)")
    state = load_tensors(path, f"{what} weights")  # safetensors, or plain tensors: never a pickle's code
    return {k: v.float() for k, v in state.items()}


def load_into(module: nn.Module, state: dict, path: Path, what: str) -> nn.Module:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError:
        raise TunerError(f"{what} weights at {path} do not match the model architecture") from None
    return module


def load_proxy_pipeline(device: str | None = None, unet_path: Path | None = None):
    """The embedded model as a ready pipeline (eval mode, on device)."""
    from tuner.pipeline import ProxyPipeline

    dev = resolve_device(device)
    path = Path(unet_path or UNET_WEIGHTS)
    state = load_state(path, "proxy U-Net")
    unet_state = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    unet = load_into(build_unet(), unet_state, path, "proxy U-Net")
    encoder = load_into(ClassEncoder(), enc_state, path, "proxy class encoder")
    info = json.loads(PROXY_INFO.read_text()) if PROXY_INFO.is_file() else {}
    pipe = ProxyPipeline(unet.eval().to(dev), encoder.eval().to(dev), build_scheduler(),
                         guidance_scale=float(info.get("guidance_scale", DEFAULT_GUIDANCE)))
    pipe.model_id = MODEL_ID
    return pipe


DEFAULT_GUIDANCE = 1.25  # measured: 1.25 keeps 97% class accuracy; 2.0 drops it to 67% (oversaturation at 16 px)

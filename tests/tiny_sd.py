"""A tiny random Stable Diffusion pipeline (diffusers + transformers), built offline for tests.

The tokenizer reads a vocabulary the builder writes: single characters plus CLIP's start/end tokens, so
any lowercase prompt tokenizes without a download."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch


def write_vocab(folder: Path) -> tuple[Path, Path]:
    chars = list(string.ascii_lowercase + string.digits)
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    merges.write_text("#version: 0.2\n")
    return vocab, merges


def tiny_sd_pipeline(folder: Path, scheduler: str = "ddim"):
    from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = write_vocab(folder)
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=16)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id)).eval()
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=32,
                                attention_head_dim=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4, in_channels=3,
                        out_channels=3, down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",)).eval()
    cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}[scheduler]
    extra = {"clip_sample": False} if scheduler == "ddim" else {}
    sched = cls(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                steps_offset=1, **extra)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, steps: int = 6, seed: int = 0) -> torch.Tensor:
    """Images in [0, 1], [N, 3, H, W]."""
    g = torch.Generator().manual_seed(seed)
    out = pipe(["a cat", "a dog"], num_inference_steps=steps, guidance_scale=3.0, generator=g,
               output_type="pt", height=8, width=8)
    return out.images

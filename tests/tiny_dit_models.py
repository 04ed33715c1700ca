"""Tiny random-weight diffusion-transformer pipelines (PixArt-α, SD3, Flux) saved with `save_pretrained`,
for offline tests of studies on DiT pipelines. Nothing is downloaded: the CLIP tokenizer comes from the
vocabulary tests/tiny_user_models.py writes, the T5 tokenizer is a word-level `tokenizers` model over the
same words, written here."""

from __future__ import annotations

from pathlib import Path

import torch

from tiny_user_models import WORDS, _text_config, _tokenizer


def _t5_tokenizer():
    """A T5 (Unigram) tokenizer over a small vocabulary: pad 0, eos 1, unk 2, the word piece, then WORDS."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=32)


def _t5_encoder(vocab_size: int, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0,
                                   eos_token_id=1))


def _vae(latent_channels: int = 4, shift: float | None = None):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=latent_channels,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=32, shift_factor=shift, scaling_factor=1.0)
    with torch.no_grad():  # random decoders saturate to 0/1: keep images mid-grey and sensitive
        vae.decoder.conv_out.weight.mul_(0.05)
        vae.decoder.conv_out.bias.zero_()
    return vae


def build_pixart(folder: Path) -> Path:
    """PixArt-α layout: 2 blocks, patch 2, adaLN-single, a T5 encoder; DPM-Solver++ (PixArt's own scheduler)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    tok = _t5_tokenizer()
    transformer = PixArtTransformer2DModel(
        sample_size=16, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=32,
        in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    pipe = PixArtAlphaPipeline(tokenizer=tok, text_encoder=_t5_encoder(len(tok)), vae=_vae(),
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler())
    pipe.save_pretrained(folder)
    return folder


def build_sd3(folder: Path) -> Path:
    """SD3 layout: MM-DiT joint attention (2 blocks), two CLIP encoders with projection, no T5
    (text_encoder_3=None); flow matching (FlowMatchEulerDiscreteScheduler, shift 3)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    tok = _tokenizer(folder.parent)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=64, caption_projection_dim=16, pooled_projection_dim=64, out_channels=4)
    text = CLIPTextModelWithProjection(_text_config(len(tok), 32, projection=32))
    text_2 = CLIPTextModelWithProjection(_text_config(len(tok), 32, projection=32))
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=_vae(shift=0.0), text_encoder=text, tokenizer=tok, text_encoder_2=text_2,
                                    tokenizer_2=tok, text_encoder_3=None, tokenizer_3=None)
    pipe.save_pretrained(folder)
    return folder


def build_flux(folder: Path) -> Path:
    """Flux layout: one double-stream (joint) and one single-stream block, CLIP (pooled) + T5 (tokens);
    flow matching with resolution-dependent shift (FlowMatchEulerDiscreteScheduler, dynamic shifting)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tok = _tokenizer(folder.parent)
    tok_2 = _t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=16, max_image_seq_len=256)
    pipe = FluxPipeline(scheduler=scheduler, vae=_vae(shift=0.0), text_encoder=CLIPTextModel(_text_config(len(tok), 32)),
                        tokenizer=tok, text_encoder_2=_t5_encoder(len(tok_2)), tokenizer_2=tok_2,
                        transformer=transformer)
    pipe.save_pretrained(folder)
    return folder


BUILDERS = {"pixart": build_pixart, "sd3": build_sd3, "flux": build_flux}

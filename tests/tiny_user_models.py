"""Tiny random-weight Stable Diffusion pipelines (SD-1.5 and SDXL layouts) saved with `save_pretrained`,
for offline tests of studies on a user's own model. Nothing is downloaded: the CLIP tokenizer is made
from a vocabulary this file writes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ["a", "photo", "of", "cat", "dog", "red", "car", "house", "tree", "painting", "blue", "sky",
         "portrait", "woman", "man", "city", "night", "forest", "mountain", "lake"]


def _byte_chars() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the bytes 0..255 (GPT-2's mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A byte-level BPE vocabulary with every single byte character, the special tokens and some words."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    merges = ["#version: 0.2"]
    for w in WORDS:
        # merge letters left to right: a b -> ab, ab c -> abc, ... (last merge carries </w>)
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    v, m = folder / "vocab.json", folder / "merges.txt"
    v.write_text(json.dumps(vocab))
    m.write_text("\n".join(dict.fromkeys(merges)) + "\n")
    return v, m


def _tokenizer(tmp: Path):
    from transformers import CLIPTokenizer

    v, m = write_tokenizer_files(tmp / "tok_src")
    return CLIPTokenizer(str(v), str(m), model_max_length=16)


def _text_config(vocab_size: int, hidden: int, projection: int | None = None):
    from transformers import CLIPTextConfig

    kw = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
              num_attention_heads=2, max_position_embeddings=16, bos_token_id=vocab_size - 2,
              eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    if projection:
        kw["projection_dim"] = projection
    return CLIPTextConfig(**kw)


def _vae():
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=32)
    with torch.no_grad():  # random decoders saturate to 0/1 everywhere: keep images mid-grey and sensitive
        vae.decoder.conv_out.weight.mul_(0.05)
        vae.decoder.conv_out.bias.zero_()
    return vae


def build_sd15(folder: Path) -> Path:
    """SD-1.5 layout: CrossAttnDown x2 + Down; text encoder CLIPTextModel; PNDM (SD-1.5's own scheduler)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tok = _tokenizer(folder.parent)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8)
    text = CLIPTextModel(_text_config(len(tok), 32))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def build_sd2(folder: Path) -> Path:
    """SD-2.x layout: CrossAttnDown x2 + Down with linear projections and per-level head dims, a
    v-prediction DDIM scheduler (SD-2's 768 px models)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tok = _tokenizer(folder.parent)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4, 4), use_linear_projection=True, norm_num_groups=8)
    text = CLIPTextModel(_text_config(len(tok), 32))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def build_sdxl(folder: Path) -> Path:
    """SDXL layout: Down (no attention at the top level) + CrossAttnDown x2, two text encoders, text-time
    additional embeddings; Euler (SDXL's own scheduler)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tok = _tokenizer(folder.parent)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), cross_attention_dim=64, attention_head_dim=(2, 4, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 32, norm_num_groups=8)
    text = CLIPTextModel(_text_config(len(tok), 32))
    text_2 = CLIPTextModelWithProjection(_text_config(len(tok), 32, projection=32))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=text, text_encoder_2=text_2, tokenizer=tok,
                                     tokenizer_2=tok, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(folder)
    return folder


def build_inception_weights(path: Path) -> Path:
    """torch-fidelity's Inception-v3 layout with random weights (the real file is 92 MB and downloaded)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Fresh(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the random initialization
            return None

    empty = path.with_suffix(".empty")
    torch.save({}, empty)
    torch.manual_seed(0)
    net = _Fresh("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    empty.unlink()
    for m in net.modules():  # variance-preserving init, so 2048-d features still tell images apart
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


def build_clip(folder: Path) -> Path:
    """A tiny random CLIP model + processor folder, as `[evaluator] clip_model` reads it."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    tok = _tokenizer(folder.parent)
    text = _text_config(len(tok), 32).to_dict()
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8, projection_dim=16)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                              tokenizer=tok)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


TWO_FAMILIES = "[space.tome]\nratio = [0.3, 0.6]\n[space.deepcache]\ninterval = [2, 3]\n"


def study_toml(name: str, model: str, prompts: str | None = None, evaluator: str = "",
               space: str = TWO_FAMILIES, objectives: str | None = None) -> str:
    """A 3-trial random-search study on a tiny model: 3 images x 3 steps at 32 px on CPU, one timing round.
    `evaluator` holds extra [evaluator] lines (e.g. inception_weights, clip_model)."""
    return "\n".join([
        f'name = "{name}"', "n_trials = 3", "seed = 0", *([f"objectives = {objectives}"] if objectives else []),
        "[model]", f'id = "{model}"', 'device = "cpu"', "resolution = 32", "threads = 1",
        "[image_set]", "n_images = 3", "steps = 3", *([f'prompts = "{prompts}"'] if prompts else []),
        "[evaluator]", "latency_images = 1", "latency_repeats = 1", "cheap_reject_images = 0", evaluator,
        "[sampler]", 'name = "random"', space, ""])

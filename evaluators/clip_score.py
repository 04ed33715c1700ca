"""CLIP score of images against their prompts, from a local CLIP folder (`[evaluator] clip_model = PATH`, a
`save_pretrained` CLIPModel + CLIPProcessor). Higher is better: 100 x the mean over images of
max(cos(image embedding, prompt embedding), 0), torchmetrics' definition. Computed here from the model's
own `image_embeds`/`text_embeds` because torchmetrics 1.9's CLIPScore breaks on transformers 5 (its
`get_image_features` returns an output object there) and names hub models only."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from tuner.errors import TunerError


class ClipScorer:
    def __init__(self, folder: str | Path):
        p = Path(folder)
        if not (p / "config.json").is_file():
            raise TunerError(f"evaluator.clip_model: {p} is not a CLIP model folder (no config.json)")
        from transformers import CLIPModel, CLIPProcessor

        from tuner.models.source import check_weight_files

        check_weight_files(p, "evaluator.clip_model")  # plain tensors, before transformers opens a pickle

        try:
            self.model = CLIPModel.from_pretrained(str(p), local_files_only=True).eval()
            self.processor = CLIPProcessor.from_pretrained(str(p), local_files_only=True)
        except Exception as e:  # transformers raises several types for a foreign folder
            raise TunerError(f"evaluator.clip_model: {p} could not be loaded ({type(e).__name__})") from None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> float:
        if len(images) != len(prompts):
            raise ValueError("one prompt per image")
        pixels = [(im.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu() for im in images]
        inputs = self.processor(text=list(prompts), images=pixels, return_tensors="pt", padding=True, truncation=True)
        out = self.model(**inputs)
        img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
        txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
        return float(100.0 * (img * txt).sum(-1).clamp(min=0).mean())

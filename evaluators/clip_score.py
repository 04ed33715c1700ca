"""CLIP score (torchmetrics) of images against their prompts, from a local CLIP folder
(`[evaluator] clip_model = PATH`, a `save_pretrained` CLIPModel + processor). Higher is better:
100 x mean cosine similarity of image and text embeddings, clipped at 0."""

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
        from torchmetrics.multimodal.clip_score import CLIPScore

        try:
            self.metric = CLIPScore(model_name_or_path=str(p))
        except Exception as e:  # transformers raises several types for a foreign folder
            raise TunerError(f"evaluator.clip_model: {p} could not be loaded ({type(e).__name__})") from None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> float:
        self.metric.reset()
        imgs = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        self.metric.update(imgs, list(prompts))
        return float(self.metric.compute())

"""A small CNN digit classifier. Its penultimate features are the proxy FID's feature space
(the role Inception plays for real images), and its predictions give class accuracy (the proxy's
analogue of a CLIP score)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tuner.proxy.data import IMAGE_SIZE, NUM_CLASSES

FEATURE_DIM = 32


class DigitClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.SiLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.SiLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(64, FEATURE_DIM), nn.SiLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images: float in [0, 1], [N, 1, H, W] (resized to the training size if needed)."""
        if images.shape[-1] != IMAGE_SIZE or images.shape[-2] != IMAGE_SIZE:
            images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        return self.trunk(images * 2 - 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class ClassifierFeatures(nn.Module):
    """The feature extractor torchmetrics' FID/KID call (`feature=module`): float images in [0, 1]."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = FEATURE_DIM

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        if images.dtype == torch.uint8 or images.max() > 1.5:
            images = images / 255.0
        if images.shape[1] == 3:
            images = images.mean(dim=1, keepdim=True)
        return self.classifier.features(images)


def load_classifier(device=None, path=None) -> DigitClassifier:
    from tuner.proxy.model import CLASSIFIER_WEIGHTS, load_into, load_state

    path = path or CLASSIFIER_WEIGHTS
    model = load_into(DigitClassifier(), load_state(path, "digit classifier"), path, "digit classifier")
    return model.eval().to(device or "cpu")

"""A folder of reference images for FID (`[evaluator] reference_images = "dir/"`): every PNG/JPEG/WebP in
it (not recursive), as float images in [0, 1] resized to the model's square resolution (Inception resizes
to 299 px anyway; one size lets them stack)."""

from __future__ import annotations

from pathlib import Path

import torch

from tuner.errors import TunerError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MIN_IMAGES = 2  # a covariance needs two samples


def image_files(folder: str | Path, what: str = "evaluator.reference_images") -> list[Path]:
    p = Path(folder)
    if not p.is_dir():
        raise TunerError(f"{what}: folder not found: {p}")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < MIN_IMAGES:
        raise TunerError(f"{what}: {p} holds {len(files)} image(s); FID needs at least {MIN_IMAGES}")
    return files


def load_images(folder: str | Path, size: int, what: str = "evaluator.reference_images") -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor, resize

    out = []
    for f in image_files(folder, what):
        try:
            with Image.open(f) as im:
                t = pil_to_tensor(im.convert("RGB"))
        except (UnidentifiedImageError, OSError):
            raise TunerError(f"{what}: {f} is not a readable image") from None
        out.append(resize(t, [size, size], antialias=True).float() / 255.0)
    return torch.stack(out)

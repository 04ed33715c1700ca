"""Images for people: nearest-neighbour upscaling (16-px proxy tiles stay visible, pixels stay pixels) and a
per-pixel difference map against the baseline's image of the same seed, on one fixed colour scale."""

from __future__ import annotations

import base64
import io
import math

import torch

MIN_DISPLAY_PX = 128  # a tile smaller than this is upscaled by a whole factor (16 px -> x8)
DIFF_VMAX = 0.2  # |difference| (images in [0, 1], channel mean) shown at full brightness; fixed, so maps compare


def upscale_factor(size: int, min_px: int = MIN_DISPLAY_PX) -> int:
    return max(1, math.ceil(min_px / max(1, size)))


def upscale(images: torch.Tensor, factor: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H*f, W*f], each pixel a f x f block (no smoothing that would hide artefacts)."""
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grey (1 channel) images as 3 channels, so they sit beside colour maps in one grid."""
    images = images.detach().float().cpu().clamp(0, 1)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]


def difference_map(images: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Per-pixel |image - baseline| (channel mean) through the magma colour map, 0 black and DIFF_VMAX or
    more bright yellow: [N, 3, H, W] in [0, 1]."""
    from matplotlib import colormaps

    diff = (as_rgb(images) - as_rgb(baseline)).abs().mean(dim=1)  # [N, H, W]
    scaled = (diff / DIFF_VMAX).clamp(0, 1).numpy()
    rgb = colormaps["magma"](scaled)[..., :3]  # [N, H, W, 3]
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


def mean_abs_difference(images: torch.Tensor, baseline: torch.Tensor) -> list[float]:
    """Per image, the mean |difference| to the baseline image of the same seed (0..1)."""
    return (as_rgb(images) - as_rgb(baseline)).abs().mean(dim=(1, 2, 3)).tolist()


def to_pil(image: torch.Tensor):
    """One [C, H, W] image in [0, 1] as a PIL image."""
    from PIL import Image

    array = (as_rgb(image[None])[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(array)


def png_data_uri(image: torch.Tensor) -> str:
    """A [C, H, W] image as an inline `data:image/png;base64,...` (the report works offline, as one file)."""
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

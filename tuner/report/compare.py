"""`tuner apply CONFIG --compare`: the baseline and the accelerated images of the same seeds, timed
interleaved in the same call, drawn as one labelled grid: a baseline row, an accelerated row and a
difference row, with the steps each ran and the speedup measured here."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Sequence

import torch

from tuner.report.gallery import Row, step_counter, steps_text
from tuner.report.images import (DIFF_VMAX, difference_map, mean_abs_difference, to_pil, upscale,
                                 upscale_factor)

LABEL_WIDTH, PAD = 170, 6


@dataclass
class Comparison:
    captions: list[str]  # per column: "seed 3 · class 3" or the prompt
    baseline: Row
    accelerated: Row
    speedup: float  # median baseline call / median accelerated call, timed interleaved here
    repeats: int


def compare(pipe, config, conditions: Sequence, seeds: Sequence[int], steps: int, repeats: int = 3) -> Comparison:
    """Generate both rows with `evaluators.latency.interleaved_medians` (one warm-up, then A B A B ...)."""
    from tuner.apply_config import apply
    from tuner.evaluators.latency import interleaved_medians

    out: dict[str, tuple[torch.Tensor, int | None]] = {}

    def run(name):
        def call():
            with step_counter(pipe) as steps_run:  # our hook's cost is within timing noise (one call per step)
                images = pipe(list(conditions), list(seeds), num_inference_steps=steps)
            out[name] = (images.detach().float().cpu(), steps_run())
        return call

    with torch.no_grad():
        medians = interleaved_medians({"baseline": run("baseline"), "accelerated": run("accelerated")},
                                      repeats=repeats, warmup=1, device=pipe.device,
                                      contexts={"accelerated": lambda: apply(pipe.target, config)})
    captions = [f"seed {s} · " + (f"class {c}" if isinstance(c, int) else str(c)) for c, s in zip(conditions, seeds)]
    rows = {k: Row(out[k][0], out[k][1], medians[k]) for k in out}
    return Comparison(captions, rows["baseline"], rows["accelerated"], medians["baseline"] / medians["accelerated"],
                      repeats)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def grid_image(c: Comparison, title: str):
    """One PIL image: title lines, column captions, three labelled rows (baseline, accelerated, |difference|)."""
    from PIL import Image, ImageDraw

    f = upscale_factor(c.baseline.images.shape[-1])
    tiles = [upscale(c.baseline.images, f), upscale(c.accelerated.images, f),
             upscale(difference_map(c.accelerated.images, c.baseline.images), f)]
    tile = tiles[0].shape[-1]
    font, small = _font(15), _font(12)
    chars = max(8, tile // 7)
    caption_lines = [textwrap.wrap(cap, chars)[:3] for cap in c.captions]
    head = 52 + 15 * max(len(lines) for lines in caption_lines)
    n = len(c.captions)
    width, height = LABEL_WIDTH + n * (tile + PAD), head + 3 * (tile + PAD) + 20
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((PAD, 6), title, fill="black", font=font)
    draw.text((PAD, 26), f"speedup {c.speedup:.2f}x measured here (median of {c.repeats} interleaved calls of {n} "
                         f"images each, after a warm-up)", fill="#333", font=small)
    for j, lines in enumerate(caption_lines):
        draw.multiline_text((LABEL_WIDTH + j * (tile + PAD), 46), "\n".join(lines), fill="#333", font=small, spacing=2)
    means = mean_abs_difference(c.accelerated.images, c.baseline.images)
    labels = [f"baseline\n{steps_text(c.baseline.steps_run)} steps run",
              f"accelerated\n{steps_text(c.accelerated.steps_run)} steps run\n{c.speedup:.2f}x",
              f"|difference|\nblack = same\nyellow >= {DIFF_VMAX:g}"]
    for i, (row, label) in enumerate(zip(tiles, labels)):
        y = head + i * (tile + PAD)
        draw.multiline_text((PAD, y + 4), label, fill="black", font=font, spacing=3)
        for j in range(n):
            img.paste(to_pil(row[j]), (LABEL_WIDTH + j * (tile + PAD), y))
    y = head + 3 * (tile + PAD) - 2
    for j, d in enumerate(means):
        draw.text((LABEL_WIDTH + j * (tile + PAD), y), f"mean |diff| {d:.3f}", fill="#333", font=small)
    return img

"""Prompt sets: a file with one prompt a line, or the set shipped with tuner (tuner/models/prompts.txt:
69 prompts written for this project, covering objects, scenes, people, animals and styles).

Blank lines and lines starting with '#' are skipped. Image i of a image set uses prompt i mod len(prompts).
"""

from __future__ import annotations

from pathlib import Path

from tuner.errors import TunerError

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "prompts.txt"


def read_prompts(path: str | Path | None = None, what: str = "image_set.prompts") -> tuple[str, ...]:
    p = Path(path) if path is not None else DEFAULT_PROMPTS
    if not p.is_file():
        raise TunerError(f"{what}: prompts file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TunerError(f"{what}: {p} is not UTF-8 text") from None
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not prompts:
        raise TunerError(f"{what}: {p} holds no prompt (one prompt a line)")
    return prompts

"""BENCHMARKS.md is shared by every benchmark script: each one replaces only its own `## ` section."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def replace_section(text: str, heading: str, body: str) -> str:
    """Swap the `heading` section (up to the next `## `) for `body`, which starts with the heading;
    append it when the document has no such section."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
    tail = lines[end:]
    return "\n".join(lines[:start] + body.rstrip("\n").split("\n") + ([""] + tail if tail else [])) + ("" if tail else "\n")


def write_section(heading: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    path.write_text(replace_section(text, heading, body))

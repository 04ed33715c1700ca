"""Reading the small text files a user names (study TOML, config JSON) within bounds: a file that is a
folder or a device (`/dev/zero`) is named as such, never read without limit, and a document nested
thousands of levels deep is refused in one line instead of exhausting the parser's recursion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.errors import TunerError

MAX_DEPTH = 64  # tables/arrays/objects inside each other; real studies and configs use at most 5


def read_text(path: str | Path, what: str, max_bytes: int) -> str:
    """The file's text, or one line saying why not (missing, a folder, not a regular file, too big, not UTF-8)."""
    p = Path(path)
    if not p.exists():
        raise TunerError(f"{what} not found: {p}")
    if p.is_dir():
        raise TunerError(f"{what} {p} is a folder, not a file")
    if not p.is_file():
        raise TunerError(f"{what} {p} is not a regular file")
    with open(p, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TunerError(f"{what} {p} is larger than {max_bytes // 1_000_000} MB; refused")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise TunerError(f"{what} {p} is not UTF-8 text") from None


def check_depth(value: Any, what: str, limit: int = MAX_DEPTH) -> Any:
    """`value` unchanged when its dicts and lists nest at most `limit` deep (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > limit:
                raise TunerError(f"{what} is nested more than {limit} levels deep; refused")
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return value


def nested_too_deep(what: str, limit: int = MAX_DEPTH) -> TunerError:
    """For a parser that ran out of recursion (RecursionError) on a deeply nested document."""
    return TunerError(f"{what} is nested more than {limit} levels deep; refused")

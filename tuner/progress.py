"""Progress for commands that run longer than a few seconds: one overall bar with an ETA on a terminal,
one plain line per finished unit otherwise (logs, CI, pipes, and terminals that report 0 columns, where a
bar would print as garbage)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Callable


def bars_enabled(stream=None) -> bool:
    """A bar only on a terminal that reports a width (a 0-column pty, e.g. some CI runners, gets lines)."""
    stream = stream or sys.stderr
    try:
        if not stream.isatty():
            return False
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return False
    return columns > 0 and shutil.get_terminal_size().columns > 0


class Overall:
    """`total` units of work: a tqdm bar (elapsed, ETA) when `bar`, else `log` one line per `advance`
    with the elapsed time and an ETA from the mean unit so far (`log` None: the caller's own lines carry
    `status()`)."""

    def __init__(self, total: int, desc: str, bar: bool, log: Callable[[str], None] | None, unit: str = "step"):
        self.total, self.desc, self.log, self.unit = total, desc, log, unit
        self.done = 0
        self.t0 = time.perf_counter()
        self.bar = None
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def advance(self, what: str, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(n)
            return
        if self.log is not None:
            self.log(f"{self.desc} {self.status()} {what}")

    def status(self) -> str:
        """`[2/5, 30 s, ETA 45 s]`: done, elapsed, and the mean unit so far times the units left."""
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        return f"[{self.done}/{self.total}, {elapsed:.0f} s, ETA {eta:.0f} s]"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Overall":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

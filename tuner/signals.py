"""Stop signals, handled alike: Ctrl-C (SIGINT), SIGTERM (what systemd, Kubernetes and Slurm send) and
SIGHUP (a closed terminal or SSH session). Each raises `Interrupted` in the main thread, a
KeyboardInterrupt, so the study runner gives its running trial back with the signal named in the
reason, closes its worker row, and the CLI exits with 128 + the signal number after one line.
Database writes run inside `deferred()`, which holds the signals until the write is complete."""

from __future__ import annotations

import contextlib
import signal
import threading

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
LINES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)", signal.SIGHUP: "hung up (SIGHUP)"}


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived. A plain KeyboardInterrupt (Python's own Ctrl-C) counts as SIGINT."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(NAMES.get(signum, str(signum)))
        self.signum = signum


def signum_of(e: BaseException) -> int:
    return getattr(e, "signum", signal.SIGINT)


def reason(e: BaseException) -> str:
    """What an abandoned trial's fail_reason says: `interrupted (Ctrl-C)`, `interrupted (SIGTERM)`, ..."""
    return f"interrupted ({NAMES.get(signum_of(e), signum_of(e))})"


def exit_code(e: BaseException) -> int:
    return 128 + int(signum_of(e))


def line(e: BaseException) -> str:
    return f"tuner: {LINES.get(signum_of(e), 'interrupted')}"


def _raise(signum, _frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def raise_on_signals():
    """SIGINT, SIGTERM and SIGHUP raise Interrupted while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def deferred():
    """Hold the stop signals until the block ends, then raise the first one (only in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _f: pending.append(signum)) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            raise Interrupted(pending[0])

"""One thread policy for every process that runs the model: torch intra-op threads are set on purpose,
never left to torch's default (one thread per core).

Why one thread by default: on a CPU shared with even one other busy process, torch's OpenMP workers
spin-wait at every barrier for a core they do not get, and a 2-thread `tuner baseline` ran 7x slower
than a 1-thread one (issue 12; BENCHMARKS.md, "Thread policy"). Studies, `baseline`, `evaluate`,
`apply` and `profile` all call `set_threads` with `[model] threads` or `--threads`.
"""

from __future__ import annotations

from tuner.errors import TunerError

DEFAULT_THREADS = 1
MAX_THREADS = 256


def check_threads(threads: int | None, what: str = "--threads") -> int:
    """The thread count to use (None -> DEFAULT_THREADS), refused when it is not 1..MAX_THREADS."""
    if threads is None:
        return DEFAULT_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise TunerError(f"{what}={threads!r} is out of range (1..{MAX_THREADS})")
    return threads


def set_threads(threads: int | None, what: str = "--threads") -> int:
    """Set torch's intra-op threads for this process; returns the number set."""
    n = check_threads(threads, what)
    import torch

    torch.set_num_threads(n)
    return n

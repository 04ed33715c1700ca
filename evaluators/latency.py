"""Latency of a generation call: warm-up, then the median of k repeats.

Candidates are timed interleaved with the baseline (A B A B ...) in the same run, because these machines
are noisy; speed is reported as a ratio of medians. On CUDA we time with events and synchronize.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch


def time_once(fn: Callable[[], object], device: torch.device | str = "cpu", cuda=None) -> float:
    """Seconds one call of `fn` takes. On CUDA: events recorded on the chosen device's current stream
    around the call (inside `torch.cuda.device(device)`, so `cuda:1` is timed on GPU 1 whatever the current
    device is), with the device synchronized before (no earlier work is counted) and after (all of this
    work is). `cuda` replaces `torch.cuda` (tests)."""
    device = torch.device(device)
    if device.type == "cuda":
        cuda = cuda or torch.cuda
        with cuda.device(device):
            stream = cuda.current_stream(device)
            start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
            cuda.synchronize(device)
            start.record(stream)
            fn()
            end.record(stream)
            cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0  # elapsed_time is in milliseconds
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = 3, warmup: int = 1,
                        device: torch.device | str = "cpu",
                        contexts: dict[str, Callable[[], ContextManager]] | None = None,
                        cuda=None, samples: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin so drift hits all alike.

    `contexts[name]()` is entered around each call of that function but outside the timing (e.g. apply
    an acceleration config before the call and remove it after, so baseline and candidate alternate).
    `samples`, when given, receives every timed call's seconds per function, in round order."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    contexts = contexts or {}

    def call(name, timed):
        with contexts.get(name, nullcontext)():
            return time_once(fns[name], device, cuda) if timed else fns[name]()

    for _ in range(warmup):
        for name in fns:
            call(name, timed=False)
    samples = {} if samples is None else samples
    samples.update({name: [] for name in fns})
    for _ in range(repeats):
        for name in fns:
            samples[name].append(call(name, timed=True))
    return {name: statistics.median(samples[name]) for name in fns}


def blocked_medians(fns: dict[str, Callable[[], object]], repeats: int = 3, warmup: int = 1,
                    device: torch.device | str = "cpu",
                    contexts: dict[str, Callable[[], ContextManager]] | None = None,
                    cuda=None, samples: dict[str, list[float]] | None = None) -> dict[str, float]:
    """`interleaved_medians` for compiled models: each function's context is entered once, around its
    warm-up and all its timed calls. Applying a config to a compiled U-Net rebuilds its graph
    (tuner.methods.compiled), so alternating A B A B would time a compilation in every call; blocks
    time none, at the price of drift between the blocks."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    contexts = contexts or {}
    samples = {} if samples is None else samples
    for name, fn in fns.items():
        with contexts.get(name, nullcontext)():
            for _ in range(max(1, warmup)):  # at least one: the compilation
                fn()
            samples[name] = [time_once(fn, device, cuda) for _ in range(repeats)]
    return {name: statistics.median(samples[name]) for name in fns}

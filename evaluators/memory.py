"""Peak GPU memory of a generation, in GB (`memory_gb`): `torch.cuda.max_memory_reserved` on the chosen
device after its peak counters were reset at the start. Reserved, not allocated: what the process holds
from the GPU is what limits a deployment (and what another process on the GPU cannot use). Measured around
the timed generations (tuner.scoring), so it is the memory of the calls whose latency is reported. On
the CPU: None."""

from __future__ import annotations

import torch

GB = 1024 ** 3


class PeakMemory:
    """with PeakMemory(device) as peak: run() -> peak.gb (None off CUDA). `cuda` replaces torch.cuda (tests)."""

    def __init__(self, device: torch.device | str, cuda=None):
        self.device = torch.device(device)
        self.cuda = cuda or torch.cuda
        self.gb: float | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            self.cuda.synchronize(self.device)
            self.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda" and exc[0] is None:
            self.cuda.synchronize(self.device)
            gb = self.cuda.max_memory_reserved(self.device) / GB
            self.gb = gb if self.gb is None else max(self.gb, gb)  # re-entered: the peak over every call

"""Peak GPU memory of a generation, in GB (`memory_gb`): `torch.cuda.max_memory_allocated` after the
counter was reset at the start. Allocated by tensors, so it is what a config changes (activations of
merged tokens, cached features), not what the caching allocator happens to hold. On the CPU: None."""

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
            self.gb = self.cuda.max_memory_allocated(self.device) / GB

"""How much memory a device has free, and how much an autograd graph holds: what lets the renderer keep a graph
(one pass) instead of rendering twice, and what the benchmarks report.

Free memory is the device's (CUDA: the driver's free bytes plus what torch's caching allocator holds unused; CPU:
the kernel's MemAvailable). Graph bytes are measured, not modelled: on CUDA the allocator's growth, elsewhere the
storages autograd saves (each counted once)."""
from __future__ import annotations

import contextlib
import os

import torch


def free_bytes(device: torch.device) -> int:
    """Bytes a new allocation on ``device`` can use now; 0 where it cannot be known (then nothing is kept)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 0
    return 0


class GraphBytes(contextlib.AbstractContextManager):
    """Bytes retained by the autograd graph built inside the block (``.bytes`` after it): on CUDA the allocator's
    growth (graph and outputs), elsewhere the storages saved for backward, each counted once."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.bytes = 0
        self._seen: set[int] = set()
        self._hooks = None

    def _pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._seen:
            self._seen.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor

    def __enter__(self):
        if self.device.type == "cuda":
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
            self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.bytes = max(torch.cuda.memory_allocated(self.device) - self._start, 0)
        else:
            self._hooks.__exit__(*exc)
        return False

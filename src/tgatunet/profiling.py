"""Measuring what a piece of work costs: time (median of repeats), peak tensor memory, peak resident memory.

Peak memory counts every tensor allocated while the work runs (activations, gradients, temporaries), not the parameters
that existed before it: on CUDA from the caching allocator's statistics, on CPU by following each new tensor storage
from its creation to its release (a dispatch mode; the first call after start-up is slower, so measure after a warm-up).
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _StoragePeak(TorchDispatchMode):
    """Tracks bytes of live tensor storages created under it, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self._sizes:
            return
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor) and item.device.type == "cpu":
                self._track(item)
        return out


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak bytes of tensors allocated while ``fn()`` runs (parameters that already exist excluded)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with _StoragePeak() as tracker:
        fn()
    return int(tracker.peak)


def peak_rss_bytes(fn: Callable[[], Any]) -> int | None:
    """Most resident memory of this process above its level at the start, while ``fn()`` runs.

    Linux only (the kernel's high-water mark, reset through ``/proc/self/clear_refs``); None elsewhere. Unlike
    :func:`peak_memory_bytes` it also counts memory that allocators keep cached and everything that is not a tensor.
    """
    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")

    def read(field: str) -> int:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read_text(), re.MULTILINE).group(1)) * 1024

    try:
        clear.write_text("5")  # resets the high-water mark to the current resident size
        start = read("VmRSS")
    except OSError:
        fn()
        return None
    fn()
    return read("VmHWM") - start


def median_seconds(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, device: torch.device | str = "cpu") -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    device = torch.device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)

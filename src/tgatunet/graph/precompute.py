"""Building the knn graphs of many windows ahead of time, in parallel worker processes.

Which windows: the caller's, usually every window of a run's data as observed, nothing hidden: the inputs that
evaluation, completion and prediction see again. Work is split into chunks; each worker builds the graphs of its
chunks that are missing from the cache in one batched call and writes them (atomically, so workers never clash).
Windows already cached are skipped, so a second build is a cheap check. The parent enforces the size limit at the end.

Cost: the builder's (``O(T^2 * C)`` per window), spread over ``workers`` processes (one thread each); memory per
worker ``O(chunk_size * T * (C + T))``.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tgatunet.graph.cache import CacheStats, DiskGraphStore, GraphCache, write_stats
from tgatunet.graph.knn import KnnGraph

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecomputeReport:
    """What :func:`precompute_graphs` did."""

    directory: Path
    windows: int
    built: int
    already_cached: int
    evicted: int
    seconds: float


def _init_worker() -> None:
    torch.set_num_threads(1)  # the processes are the parallelism


def build_chunk(graph: KnnGraph, directory: Path, values: np.ndarray, visible: np.ndarray) -> CacheStats:
    """Build and store the missing graphs of one chunk of windows (runs in a worker)."""
    cache = GraphCache(graph, directory, max_disk_bytes=None)
    cache.get(torch.from_numpy(values), torch.from_numpy(visible))
    return cache.stats


def precompute_graphs(graph: KnnGraph, directory: Path, values: np.ndarray, visible: np.ndarray, max_bytes: int, workers: int,
                      chunk_size: int = 256, on_progress: Callable[[int, int], None] | None = None) -> PrecomputeReport:
    """Build the graphs of windows ``values, visible [W, T, C]`` into the cache at ``directory``.

    ``max_bytes``: the cache's size limit, enforced once at the end. ``workers``: worker processes; 0 or 1 builds in
    this process. ``on_progress``: called with (windows done, windows in all) after each chunk, for progress bars.
    """

    bounds = [(lo, min(lo + chunk_size, len(values))) for lo in range(0, len(values), chunk_size)]
    start = time.perf_counter()
    total = CacheStats()

    def finished(stats: CacheStats) -> None:
        total.add(stats)
        if on_progress:
            on_progress(total.lookups, len(values))

    if workers <= 1:
        for lo, hi in bounds:
            finished(build_chunk(graph, directory, values[lo:hi], visible[lo:hi]))
    else:
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started its threads
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
            jobs = [pool.submit(build_chunk, graph, directory, values[lo:hi], visible[lo:hi]) for lo, hi in bounds]
            for job in as_completed(jobs):
                finished(job.result())
    total.evicted += DiskGraphStore(directory, max_bytes).enforce_limit()
    if total.evicted:
        log.warning("the graphs exceed graph_cache_max_mb (%.0f MB): %d entries were evicted again. Raise graph_cache_max_mb.",
                    max_bytes / 2**20, total.evicted)
    write_stats(directory, "build", total)
    return PrecomputeReport(directory, len(values), total.built, total.disk_hits, total.evicted, time.perf_counter() - start)

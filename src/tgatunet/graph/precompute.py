"""Building a dataset's knn graphs ahead of time, in parallel worker processes.

Which graphs: every window of every split as observed, nothing hidden. Those
are the inputs that repeat across a run's life: classification at evaluation,
completion, the dynamic need update's pass over the training windows, and
prediction. (A training step hides a fresh random set of values and builds
its graph from what is left, so no graph of a training step is ever seen
twice; validation hides the same values every epoch and fills the cache in
its first epoch. See :class:`tgatunet.train.module.TGATUNetModule`.)

Work is split into chunks of windows; each worker process builds the graphs
of its chunks missing from the cache in one batched call and writes them
(atomically, so workers never clash). Windows already cached are skipped, so a
second build is a cheap check. The parent enforces the disk limit at the end.

Cost: the builder's (``O(T^2 * C)`` per window), spread over ``workers``
processes (one thread each); memory per worker ``O(chunk_size * T * (C + T))``.
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

from tgatunet.config import Config
from tgatunet.data.prepared import PreparedData, prepare_data
from tgatunet.data.splits import SPLITS
from tgatunet.errors import ConfigError
from tgatunet.graph.cache import CacheStats, DiskGraphStore, GraphCache, cache_dir, write_stats
from tgatunet.graph.knn import KnnGraph
from tgatunet.rundir import RunDir

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


def observed_windows(data: PreparedData) -> tuple[torch.Tensor, torch.Tensor]:
    """``values, observed [W, T, C]`` of every window of every split."""
    starts = np.concatenate([data.windows[split].starts for split in SPLITS])
    rows = torch.from_numpy(data.rows(starts))
    return data.values[rows], data.observed[rows]


def _init_worker() -> None:
    # One thread per process: the processes are the parallelism.
    torch.set_num_threads(1)


def build_chunk(graph: KnnGraph, directory: Path, values: np.ndarray, visible: np.ndarray) -> CacheStats:
    """Build and store the missing graphs of one chunk of windows (runs in a worker)."""
    cache = GraphCache(graph, directory, max_disk_bytes=None, max_memory_bytes=0)
    cache.get(torch.from_numpy(values), torch.from_numpy(visible))
    return cache.stats


def precompute_graphs(
    config: Config,
    run_root: Path,
    workers: int,
    chunk_size: int = 256,
    on_progress: Callable[[int, int], None] | None = None,
) -> PrecomputeReport:
    """Build the knn graphs of every window of ``config``'s data into its graph cache.

    Args:
        run_root: the run directory; its normalisation and splits are used when it holds a run.
        workers: worker processes; 0 or 1 builds in this process.
        on_progress: called with (windows done, windows in all) after each chunk, for progress bars.
    """
    if config.graph_type != "knn":
        raise ConfigError(
            f"graph_type is '{config.graph_type}': only knn graphs depend on the data and go to the disk cache "
            "(temporal graphs are built in microseconds and kept in memory). Set graph_type: knn."
        )
    run = RunDir(Path(run_root))
    if run.data_path.is_file():
        stats, splits, _ = run.read_data()
        data = prepare_data(config, stats=stats, block_splits=splits)
    else:
        data = prepare_data(config)
    values, observed = observed_windows(data)
    graph = KnnGraph.from_config(config)
    directory = cache_dir(config, run.root)
    bounds = [(lo, min(lo + chunk_size, len(values))) for lo in range(0, len(values), chunk_size)]

    start = time.perf_counter()
    total = CacheStats()

    def finished(stats: CacheStats) -> None:
        total.add(stats)
        if on_progress:
            on_progress(total.lookups, len(values))

    if workers <= 1:
        for lo, hi in bounds:
            finished(build_chunk(graph, directory, values[lo:hi].numpy(), observed[lo:hi].numpy()))
    else:
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started its threads
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
            jobs = [
                pool.submit(build_chunk, graph, directory, values[lo:hi].numpy(), observed[lo:hi].numpy())
                for lo, hi in bounds
            ]
            for job in as_completed(jobs):
                finished(job.result())
    total.evicted += DiskGraphStore(directory, int(config.graph_cache_max_mb * 2**20)).enforce_limit()
    if total.evicted:
        log.warning(
            "the graphs exceed graph_cache_max_mb (%s MB): %d entries were evicted again. Raise graph_cache_max_mb.",
            config.graph_cache_max_mb,
            total.evicted,
        )
    write_stats(directory, "build", total)
    return PrecomputeReport(
        directory=directory,
        windows=len(values),
        built=total.built,
        already_cached=total.memory_hits + total.disk_hits,
        evicted=total.evicted,
        seconds=time.perf_counter() - start,
    )

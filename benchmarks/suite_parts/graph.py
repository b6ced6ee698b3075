"""Benchmark of graph construction and the graph cache: ``tgatunet bench graph --out DIR``.

What is timed (``profiling.median_seconds``: medians of repeats after a warm-up;
methods interleaved round by round so load changes hit all of them alike;
every figure is the median over rounds, per window):

* **temporal graph**, for each window_size and time_k:
  ``naive``, the baseline, what research code does: Python loops build a
  window's edge list, then a tensor (:func:`naive_temporal_edge_index`, kept
  here, not in the package); ``vectorised``: the builder behind
  :func:`temporal_neighbors` without its LRU; ``cache_hit``: the LRU.
* **knn graph** on synthetic windows (C = 6 channels as in the bundled data,
  standard normal values, 10% of them hidden), for each window_size and
  time_k: ``rebuild``: :meth:`KnnGraph.build` on one window; ``disk``:
  :meth:`GraphCache.get` of one window whose entry is on disk, memory level
  off (warm: written just before, so in the OS page cache, as in a run's
  second epoch or second run); ``memory``: the same lookup answered by the
  in-process LRU. Also ``rebuild_batched`` and ``disk_batched``: a whole batch
  in one call, per window (what training does per step).
* **epoch**: one training epoch (training + validation) on the bundled
  BasicMotions config with ``graph_type: knn``, cache off vs on with a warm
  disk cache (a fresh :class:`GraphCache` per epoch, so validation graphs come
  from disk). To explain the ratio, the graph work of that epoch is also timed
  alone: every batch's graph built (cache off), or training batches built and
  validation batches looked up (cache on).

Headline figures in ``DIR/results.json`` under ``graph``:
``speedup_cache_vs_naive`` (temporal, window_size 128, time_k 1, naive / cache hit),
``knn_speedup_disk_cache_vs_rebuild`` (window_size 128, time_k 1, rebuild / disk, one window),
``epoch_speedup_cache_on_vs_off`` (epoch time cache off / cache on).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first: no display on servers)
import torch  # noqa: E402

from tgatunet.bench.results import write_section  # noqa: E402
from tgatunet.config import Config, load_config  # noqa: E402
from tgatunet.data.prepared import PreparedData, prepare_data  # noqa: E402
from tgatunet.graph.cache import GraphCache  # noqa: E402
from tgatunet.graph.knn import KnnGraph  # noqa: E402
from tgatunet.hardware import trains_on_cuda  # noqa: E402
from tgatunet.graph.temporal import temporal_neighbors  # noqa: E402
from tgatunet.profiling import median_seconds  # noqa: E402
from tgatunet.train.run import build_module, make_loader, quiet_trainer  # noqa: E402

WINDOW_SIZES = (50, 128, 256, 512, 1024)
TIME_KS = (1, 3)
CHANNELS = 6
HEADLINE_T, HEADLINE_K = 128, 1


def naive_temporal_edge_index(num_steps: int, time_k: int) -> torch.Tensor:
    """BASELINE, not used by tgatunet: a window's temporal graph the way research code builds it.

    Nested Python loops append ``(source, target)`` pairs, then the list becomes
    a PyG-style ``edge_index [2, E]``; done again for every window.
    """
    edges = []
    for target in range(num_steps):
        for source in range(max(0, target - time_k), min(num_steps, target + time_k + 1)):
            edges.append((source, target))
    return torch.tensor(edges, dtype=torch.long).t().contiguous()


def _interleaved(
    methods: dict[str, Callable[[], Any]], rounds: int, repeats: int, device: str, warmup: int = 1
) -> dict[str, float]:
    """Median over ``rounds`` of each method's median time; the methods take turns every round."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            times[name].append(median_seconds(fn, repeats=repeats, warmup=warmup, device=device))
    return {name: statistics.median(values) for name, values in times.items()}


def _per_window(fn: Callable[[int], Any], count: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(count):
            fn(i)

    return run


def temporal_timings(sizes, time_ks, rounds: int, repeats: int) -> list[dict[str, Any]]:
    """Seconds per window of the temporal graph: naive, vectorised, cache hit."""
    build = temporal_neighbors.__wrapped__  # the builder without its LRU
    rows = []
    for T in sizes:
        for time_k in time_ks:
            temporal_neighbors(T, time_k, "cpu")  # in the LRU from now on
            # Loop enough calls that even a cache hit (sub-microsecond) is well above timer resolution.
            calls = max(1, 2000 // T)
            seconds = _interleaved(
                {
                    "naive": _per_window(lambda i: naive_temporal_edge_index(T, time_k), calls),
                    "vectorised": _per_window(lambda i: build(T, time_k, "cpu"), calls),
                    "cache_hit": _per_window(lambda i: temporal_neighbors(T, time_k, "cpu"), calls * 100),
                },
                rounds,
                repeats,
                "cpu",
            )
            rows.append(
                {
                    "window_size": T,
                    "time_k": time_k,
                    "naive": seconds["naive"] / calls,
                    "vectorised": seconds["vectorised"] / calls,
                    "cache_hit": seconds["cache_hit"] / (calls * 100),
                }
            )
    return rows


def knn_timings(sizes, time_ks, graph_knn: int, windows: int, rounds: int, repeats: int, work_dir: Path):
    """Seconds per window of the knn graph: rebuild, disk hit, memory hit (one window and batched)."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for T in sizes:
        values = torch.randn(windows, T, CHANNELS, generator=gen)
        visible = torch.rand(windows, T, CHANNELS, generator=gen) > 0.1
        for time_k in time_ks:
            graph = KnnGraph(graph_knn, time_k)
            directory = work_dir / f"knn_T{T}_k{time_k}"
            GraphCache(graph, directory, max_disk_bytes=None, max_memory_bytes=0).get(values, visible)  # warm disk
            disk = GraphCache(graph, directory, max_disk_bytes=None, max_memory_bytes=0)
            memory = GraphCache(graph, directory, max_disk_bytes=None, max_memory_bytes=2**30)
            memory.get(values, visible)

            def one(fn):
                return _per_window(lambda i: fn(values[i : i + 1], visible[i : i + 1]), windows)

            seconds = _interleaved(
                {
                    "rebuild": one(graph.build),
                    "disk": one(disk.get),
                    "memory": one(memory.get),
                    "rebuild_batched": lambda: graph.build(values, visible),
                    "disk_batched": lambda: disk.get(values, visible),
                },
                rounds,
                repeats,
                "cpu",
            )
            # Every timed lookup must have been answered by the level it claims to measure.
            if disk.stats.built or disk.stats.memory_hits or memory.stats.built or memory.stats.disk_hits != windows:
                raise RuntimeError("knn benchmark: a lookup missed the warm cache; the timings would be wrong")
            rows.append({"window_size": T, "time_k": time_k, **{k: v / windows for k, v in seconds.items()}})
    return rows


def _fit_one_epoch(config: Config, data: PreparedData, cache: GraphCache | None) -> None:
    pl.seed_everything(config.training.seed, workers=True, verbose=False)
    module = build_module(config, data, cache)
    trainer = quiet_trainer(config, max_epochs=1)
    trainer.fit(
        module,
        train_dataloaders=make_loader(data, "train", config, shuffle=True),
        val_dataloaders=make_loader(data, "val", config, shuffle=False),
    )


def _epoch_graph_work(
    config: Config, data: PreparedData, open_cache: Callable[[], GraphCache | None], device: str
) -> Callable[[], None]:
    """The graph work of one epoch alone, on the training device: training batches built; validation
    batches built or looked up."""
    graph = KnnGraph.from_config(config)
    batches = {}
    for split in ("train", "val"):
        rows = torch.from_numpy(data.rows(data.windows[split].starts))
        values, observed = data.values[rows].to(device), data.observed[rows].to(device)
        batches[split] = [
            (values[lo : lo + config.training.batch_size], observed[lo : lo + config.training.batch_size])
            for lo in range(0, len(values), config.training.batch_size)
        ]

    def run() -> None:
        cache = open_cache()
        for values, visible in batches["train"]:
            graph.build(values, visible)
        for values, visible in batches["val"]:
            if cache is None:
                graph.build(values, visible)
            else:
                cache.get(values, visible)

    return run


def epoch_timings(config_path: Path, rounds: int, work_dir: Path) -> dict[str, Any]:
    """One training epoch with a knn graph, graph cache off vs on (warm disk)."""
    base = load_config(config_path)
    config = base.with_keys(**{"graph_type": "knn", "epochs": 1, "use_graph_cache": True})
    data = prepare_data(config)
    directory = work_dir / "epoch_cache"

    def fresh_cache() -> GraphCache:
        return GraphCache(KnnGraph.from_config(config), directory, max_disk_bytes=None, max_memory_bytes=2**28)

    warm = fresh_cache()
    _fit_one_epoch(config, data, warm)  # fills the cache with the validation graphs, warms everything else up
    if warm.stats.built != len(data.windows["val"]):
        raise RuntimeError("epoch benchmark: the warm-up epoch did not cache every validation window")
    device = "cuda" if trains_on_cuda(config.performance.accelerator) else "cpu"
    epoch = _interleaved(
        {"off": lambda: _fit_one_epoch(config, data, None), "on": lambda: _fit_one_epoch(config, data, fresh_cache())},
        rounds,
        repeats=1,
        device=device,
        warmup=0,  # the warm-up epoch above
    )
    graphs = _interleaved(
        {
            "off": _epoch_graph_work(config, data, lambda: None, device),
            "on": _epoch_graph_work(config, data, fresh_cache, device),
        },
        rounds,
        repeats=3,
        device=device,
    )
    return {
        "config": str(config_path),
        "graph_knn": config.model.graph_knn,
        "time_k": config.model.time_k,
        "window_size": config.data.window_size,
        "batch_size": config.training.batch_size,
        "windows": {split: len(index) for split, index in data.windows.items() if split != "test"},
        "device": device,
        "epoch_seconds_cache_off": epoch["off"],
        "epoch_seconds_cache_on": epoch["on"],
        "graph_seconds_cache_off": graphs["off"],
        "graph_seconds_cache_on": graphs["on"],
        "graph_share_of_epoch_cache_off": graphs["off"] / epoch["off"],
    }


def plot_graph_benchmark(temporal: list[dict], knn: list[dict], time_k: int, out: Path) -> Path:
    """Seconds per window against window_size, log-log, one line per method."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    temporal_methods = [("naive", "naive loops (baseline)"), ("vectorised", "vectorised"), ("cache_hit", "LRU hit")]
    knn_methods = [
        ("rebuild", "rebuild (one window)"),
        ("rebuild_batched", "rebuild (batched)"),
        ("disk", "disk cache (one window)"),
        ("disk_batched", "disk cache (batched)"),
        ("memory", "memory LRU hit"),
    ]
    panels = [
        (axes[0], temporal, temporal_methods, f"temporal graph (time_k {time_k})"),
        (axes[1], knn, knn_methods, f"knn graph (time_k {time_k})"),
    ]
    for ax, rows, methods, title in panels:
        rows = [r for r in rows if r["time_k"] == time_k]
        sizes = [r["window_size"] for r in rows]
        for key, label in methods:
            ax.plot(sizes, [r[key] * 1e6 for r in rows], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("window_size (steps)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("time per window (µs)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _row(rows: list[dict], T: int, time_k: int) -> dict:
    return next(r for r in rows if r["window_size"] == T and r["time_k"] == time_k)


def run_graph_benchmark(
    out: Path,
    config_path: Path = Path("configs/basicmotions.yaml"),
    quick: bool = False,
    graph_knn: int = 4,
    window_sizes: Sequence[int] = WINDOW_SIZES,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Run the graph benchmark; writes ``out/results.json`` (section ``graph``) and ``out/graph_benchmark.png``.

    ``window_sizes`` must include 128 (the headline figures' size); ``rounds`` overrides the
    number of interleaved rounds (3 with ``quick``, else 5).
    """
    out = Path(out)
    repeats, windows = (3, 16) if quick else (5, 64)
    rounds = rounds or (3 if quick else 5)
    with tempfile.TemporaryDirectory(prefix="tgatunet-graph-bench-") as tmp:
        work = Path(tmp)
        temporal = temporal_timings(window_sizes, TIME_KS, rounds, repeats)
        knn = knn_timings(window_sizes, TIME_KS, graph_knn, windows, rounds, repeats, work)
        epoch = epoch_timings(config_path, rounds, work)
    head_t, head_knn = _row(temporal, HEADLINE_T, HEADLINE_K), _row(knn, HEADLINE_T, HEADLINE_K)
    plot = plot_graph_benchmark(temporal, knn, HEADLINE_K, out / "graph_benchmark.png")
    results = {
        "speedup_cache_vs_naive": head_t["naive"] / head_t["cache_hit"],
        "speedup_vectorised_vs_naive": head_t["naive"] / head_t["vectorised"],
        "knn_speedup_disk_cache_vs_rebuild": head_knn["rebuild"] / head_knn["disk"],
        "knn_speedup_disk_cache_vs_rebuild_batched": head_knn["rebuild_batched"] / head_knn["disk_batched"],
        "knn_speedup_memory_vs_rebuild": head_knn["rebuild"] / head_knn["memory"],
        "epoch_speedup_cache_on_vs_off": epoch["epoch_seconds_cache_off"] / epoch["epoch_seconds_cache_on"],
        "epoch": epoch,
        "temporal_seconds_per_window": temporal,
        "knn_seconds_per_window": knn,
        "settings": {
            "quick": quick,
            "rounds": rounds,
            "repeats_per_round": repeats,
            "knn_windows": windows,
            "knn_channels": CHANNELS,
            "graph_knn": graph_knn,
            "headline": {"window_size": HEADLINE_T, "time_k": HEADLINE_K},
        },
        "method": (
            "Seconds per window, median over rounds of profiling.median_seconds (medians of repeats after a "
            "warm-up), methods interleaved each round. temporal: naive = Python loops to an edge list then a "
            "tensor (baseline), vectorised = temporal_neighbors' builder without LRU, cache_hit = its LRU. knn: "
            "rebuild = KnnGraph.build, disk = GraphCache.get with entries on disk (OS page cache warm) and no "
            "memory level, memory = in-process LRU hit; *_batched = all windows in one call. epoch: one "
            "Lightning fit epoch (train + validation) of the config with graph_type knn; cache on = a fresh "
            "GraphCache on a disk cache warmed by one earlier epoch (training steps hide fresh random values, "
            "so their graphs are built either way; validation graphs come from the cache)."
        ),
        "plot": str(plot),
    }
    write_section(out, "graph", results)
    return results

"""Graph construction and the graph cache: ``python performance_test.py graph [--quick]``.

What is timed (``profiling.median_seconds``: medians of repeats after a warm-up; methods
interleaved round by round so load changes hit all of them alike; every figure is the median
over rounds, per window):

* **temporal graph**, for each window_size and time_k, for a batch of ``batch_size`` windows:
  ``naive``, the baseline, what research code does: Python loops build each window's edge list,
  then a tensor (:func:`naive_temporal_edge_index`, kept here, not in the package), once per
  window; ``vectorised``: :func:`tgatunet.graph.temporal.temporal_neighbors` builds the one
  neighbour table every window of the batch shares (per window: its time / ``batch_size``). There
  is nothing to cache: the table depends on ``T`` and ``time_k`` only, and the model's banded
  layers do not even read it.
* **knn graph** on synthetic windows (C = 6 channels as in the bundled data, standard normal
  values, 10% of them hidden), for each window_size and time_k: ``rebuild``: :meth:`KnnGraph.build`
  on one window; ``disk``: :meth:`GraphCache.get` of one window whose entry is on disk (warm:
  written just before, so in the OS page cache, as when a trained run evaluates or completes the
  same windows again). Also ``rebuild_batched`` and ``disk_batched``: a whole batch in one call.
* **prediction pass**, where the cache is used: ``TrainedModel.predict_windows`` over every window of
  the bundled BasicMotions config with ``graph_type: knn`` (the module as training builds it, in
  eval mode), graph cache off (every graph built) vs on (a warm disk cache, as ``tgatunet cache
  build`` leaves it). Training does not use the cache: it hides fresh random values every step,
  so its graphs never repeat.

Headline figures in ``DIR/results.json`` under ``graph`` (window_size 128, time_k 1):
``temporal_speedup_vectorised_vs_naive``, ``knn_speedup_disk_cache_vs_rebuild`` (one window) and
``predict_speedup_cache_on_vs_off``.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from tgatunet.config import Config, load_config
from tgatunet.data.prepared import WindowIndex, prepare_data
from tgatunet.graph.cache import GraphCache
from tgatunet.graph.knn import KnnGraph
from tgatunet.graph.temporal import temporal_neighbors
from tgatunet.infer.trained import TrainedModel
from tgatunet.profiling import median_seconds

from benchmarks.results import write_section
from benchmarks.setting import DEFAULT_CONFIG
from benchmarks.training import new_module

WINDOW_SIZES = (50, 128, 256, 512, 1024)
TIME_KS = (1, 3)
CHANNELS = 6
BATCH = 16  # the reference setting's batch: windows that share one temporal table
HEADLINE_T, HEADLINE_K = 128, 1


def naive_temporal_edge_index(num_steps: int, time_k: int) -> torch.Tensor:
    """BASELINE, not used by tgatunet: a window's temporal graph the way research code builds it.

    Nested Python loops append ``(source, target)`` pairs, then the list becomes a PyG-style
    ``edge_index [2, E]``; done again for every window.
    """
    edges = []
    for target in range(num_steps):
        for source in range(max(0, target - time_k), min(num_steps, target + time_k + 1)):
            edges.append((source, target))
    return torch.tensor(edges, dtype=torch.long).t().contiguous()


def interleaved(
    methods: dict[str, Callable[[], Any]], rounds: int, repeats: int, device: str = "cpu", warmup: int = 1
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


def temporal_timings(sizes, time_ks, rounds: int, repeats: int, batch: int = BATCH) -> list[dict[str, Any]]:
    """Seconds per window of the temporal graph of a batch: naive loops per window, one vectorised table."""
    rows = []
    for T in sizes:
        for time_k in time_ks:
            seconds = interleaved(
                {
                    "naive": _per_window(lambda i: naive_temporal_edge_index(T, time_k), batch),
                    "vectorised": lambda: temporal_neighbors(T, time_k),
                },
                rounds,
                repeats,
            )
            rows.append(
                {
                    "window_size": T,
                    "time_k": time_k,
                    "naive": seconds["naive"] / batch,
                    "vectorised": seconds["vectorised"] / batch,
                }
            )
    return rows


def knn_timings(sizes, time_ks, graph_knn: int, windows: int, rounds: int, repeats: int, work_dir: Path):
    """Seconds per window of the knn graph: rebuild and disk read-back (one window and batched)."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for T in sizes:
        values = torch.randn(windows, T, CHANNELS, generator=gen)
        visible = torch.rand(windows, T, CHANNELS, generator=gen) > 0.1
        for time_k in time_ks:
            graph = KnnGraph(graph_knn, time_k)
            directory = work_dir / f"knn_T{T}_k{time_k}"
            GraphCache(graph, directory, max_disk_bytes=None).get(values, visible)  # entries on disk
            disk = GraphCache(graph, directory, max_disk_bytes=None)

            def one(fn):
                return _per_window(lambda i: fn(values[i : i + 1], visible[i : i + 1]), windows)

            seconds = interleaved(
                {
                    "rebuild": one(graph.build),
                    "disk": one(disk.get),
                    "rebuild_batched": lambda: graph.build(values, visible),
                    "disk_batched": lambda: disk.get(values, visible),
                },
                rounds,
                repeats,
            )
            # Every timed lookup must have been answered from disk, or the timings measure something else.
            if disk.stats.built or disk.stats.corrupt_rebuilt:
                raise RuntimeError("knn benchmark: a lookup missed the warm cache; the timings would be wrong")
            rows.append({"window_size": T, "time_k": time_k, **{k: v / windows for k, v in seconds.items()}})
    return rows


def predict_timings(config_path: Path, rounds: int, work_dir: Path) -> dict[str, Any]:
    """``predict_windows`` over every window of the config with a knn graph: cache off vs on (warm disk)."""
    config: Config = load_config(config_path).with_keys(graph_type="knn", accelerator="cpu")
    data = prepare_data(config)
    values, observed = data.gather(WindowIndex.concat(list(data.windows.values())))
    module = new_module(config, data).eval()
    model = TrainedModel(module.model, module.config, data.channels, data.class_names, module.patterns, data.stats,
                         module.device, knn=module.knn)
    batch = config.training.batch_size
    warm = GraphCache(KnnGraph.from_config(config), work_dir / "predict_cache", max_disk_bytes=None)
    warm.get(values, observed)  # every window's graph on disk, as `tgatunet cache build` leaves them

    def run(cache: GraphCache | None) -> Callable[[], None]:
        def predict() -> None:
            model.graph_cache = cache
            model.predict_windows(values, observed, batch_size=batch)

        return predict

    cached = GraphCache(KnnGraph.from_config(config), work_dir / "predict_cache", max_disk_bytes=None)
    seconds = interleaved({"off": run(None), "on": run(cached)}, rounds, repeats=1)
    if cached.stats.built:
        raise RuntimeError("prediction benchmark: a lookup missed the warm cache; the timing would be wrong")
    return {
        "config": str(config_path),
        "windows": len(values),
        "window_size": config.data.window_size,
        "graph_knn": config.model.graph_knn,
        "time_k": config.model.time_k,
        "batch_size": batch,
        "seconds_cache_off": seconds["off"],
        "seconds_cache_on": seconds["on"],
    }


def plot_graph_benchmark(temporal: list[dict], knn: list[dict], time_k: int, out: Path) -> Path:
    """Seconds per window against window_size, log-log, one line per method."""
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    temporal_methods = [("naive", "naive loops, per window (baseline)"), ("vectorised", "one table for the batch")]
    knn_methods = [
        ("rebuild", "rebuild (one window)"),
        ("rebuild_batched", "rebuild (batched)"),
        ("disk", "disk cache (one window)"),
        ("disk_batched", "disk cache (batched)"),
    ]
    panels = [
        (axes[0], temporal, temporal_methods, f"temporal graph (time_k {time_k}, batch {BATCH})"),
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
    return out


def _row(rows: list[dict], T: int, time_k: int) -> dict:
    return next(r for r in rows if r["window_size"] == T and r["time_k"] == time_k)


METHOD = (
    "Seconds per window, median over rounds of profiling.median_seconds (medians of repeats after a warm-up), "
    "methods interleaved each round. temporal: naive = Python loops to an edge list then a tensor, once per "
    f"window of a batch of {BATCH} (baseline); vectorised = temporal_neighbors' one table for the batch, divided "
    "by the batch. knn: rebuild = KnnGraph.build, disk = GraphCache.get with every entry on disk (OS page cache "
    "warm); *_batched = all windows in one call. predict: module.predict_windows over every window of the config "
    "with graph_type knn, eval mode, graph cache off vs on (a warm disk cache holding every window's graph)."
)


def run_graph_benchmark(
    out: Path,
    config_path: Path = DEFAULT_CONFIG,
    quick: bool = False,
    graph_knn: int = 4,
    window_sizes: Sequence[int] = WINDOW_SIZES,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Run the graph benchmark; writes ``out/results.json`` (section ``graph``) and ``out/graph_benchmark.png``.

    ``window_sizes`` must include 128 (the headline figures' size); ``rounds`` overrides the number of
    interleaved rounds (3 with ``quick``, else 5).
    """
    out = Path(out)
    repeats, windows = (3, 16) if quick else (5, 64)
    rounds = rounds or (3 if quick else 5)
    with tempfile.TemporaryDirectory(prefix="tgatunet-graph-bench-") as tmp:
        work = Path(tmp)
        temporal = temporal_timings(window_sizes, TIME_KS, rounds, repeats)
        knn = knn_timings(window_sizes, TIME_KS, graph_knn, windows, rounds, repeats, work)
        predict = predict_timings(Path(config_path), rounds, work)
    head_t, head_knn = _row(temporal, HEADLINE_T, HEADLINE_K), _row(knn, HEADLINE_T, HEADLINE_K)
    plot = plot_graph_benchmark(temporal, knn, HEADLINE_K, out / "graph_benchmark.png")
    results = {
        "temporal_speedup_vectorised_vs_naive": head_t["naive"] / head_t["vectorised"],
        "knn_speedup_disk_cache_vs_rebuild": head_knn["rebuild"] / head_knn["disk"],
        "knn_speedup_disk_cache_vs_rebuild_batched": head_knn["rebuild_batched"] / head_knn["disk_batched"],
        "predict_speedup_cache_on_vs_off": predict["seconds_cache_off"] / predict["seconds_cache_on"],
        "predict": predict,
        "temporal_seconds_per_window": temporal,
        "knn_seconds_per_window": knn,
        "settings": {
            "quick": quick,
            "rounds": rounds,
            "repeats_per_round": repeats,
            "temporal_batch": BATCH,
            "knn_windows": windows,
            "knn_channels": CHANNELS,
            "graph_knn": graph_knn,
            "headline": {"window_size": HEADLINE_T, "time_k": HEADLINE_K},
        },
        "method": METHOD,
        "plot": str(plot),
    }
    write_section(out, "graph", results)
    return results

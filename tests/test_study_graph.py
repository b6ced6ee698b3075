"""The study's graph section: its baseline builds the same graph, and a small run writes every figure."""

import json

import pytest

from benchmarks.graph import naive_temporal_edge_index, run_graph_benchmark
from tgatunet.graph.temporal import neighbors_to_edge_index, temporal_neighbors
from tgatunet.profiling import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the machine's cores are shared with the rest of the test run, and threads that
    wait for a busy core make a tiny training many times slower."""
    with torch_threads(1):
        yield


@pytest.mark.parametrize("T,time_k", [(5, 1), (17, 3), (4, 3)])
def test_the_naive_baseline_builds_the_temporal_graph(T, time_k):
    naive = naive_temporal_edge_index(T, time_k)
    ours = neighbors_to_edge_index(*temporal_neighbors(T, time_k))
    assert sorted(map(tuple, naive.t().tolist())) == sorted(map(tuple, ours.t().tolist()))


def test_a_small_benchmark_run_writes_the_figures_and_the_plot(dataset, tmp_path):
    config = dataset["write"]({**dataset["config"], "batch_size": 16})
    results = run_graph_benchmark(
        tmp_path / "out", config_path=config, quick=True, graph_knn=3, window_sizes=(50, 128), rounds=1
    )
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["graph"]
    for key in (
        "temporal_speedup_vectorised_vs_naive",
        "knn_speedup_disk_cache_vs_rebuild",
        "knn_speedup_disk_cache_vs_rebuild_batched",
        "predict_speedup_cache_on_vs_off",
    ):
        assert saved[key] == pytest.approx(results[key]) and saved[key] > 0, key
    predict = saved["predict"]
    assert predict["seconds_cache_off"] > 0 and predict["seconds_cache_on"] > 0
    assert predict["windows"] > 0 and predict["window_size"] == 16
    assert len(saved["temporal_seconds_per_window"]) == len(saved["knn_seconds_per_window"]) == 4  # 2 sizes x 2 time_k
    assert "environment" in saved and "method" in saved
    assert (tmp_path / "out" / "graph_benchmark.png").stat().st_size > 10_000

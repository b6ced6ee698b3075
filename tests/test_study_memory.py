"""The study's memory-optimizer section."""

import json

import pytest
import torch

from benchmarks.memory import run_memory_benchmark
from tgatunet.profiling import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the machine's cores are shared with the rest of the test run, and threads that
    wait for a busy core make a tiny training many times slower."""
    with torch_threads(1):
        yield


def test_memory_benchmark_writes_its_figures(tmp_path):
    # Budgets scaled down with the data, so that the same code paths run in seconds. On the CPU:
    # a CUDA context's fixed memory alone would exceed MB-sized budgets.
    budgets = (0.002, 0.004, 0.008)
    results = run_memory_benchmark(
        tmp_path,
        budgets_gb=budgets,
        batch_size=64,
        window_size=32,
        model={"hidden_channels": 16, "encoder_layers": 1, "decoder_layers": 1, "attention_heads": 2, "time_k": 2},
        device=torch.device("cpu"),
    )
    written = json.loads((tmp_path / "results.json").read_text())["memory"]
    assert written["budgets"] == results["budgets"]
    assert [row["budget_gb"] for row in written["budgets"]] == list(budgets)
    for row in written["budgets"]:
        assert row["peak_gb"] <= row["target_fraction"] * row["budget_gb"]
        assert 1 <= row["chosen_batch_size"] <= 64
    sizes = [row["chosen_batch_size"] for row in written["budgets"]]
    assert sizes == sorted(sizes) and sizes[0] < 64  # more budget, larger micro-batches; the smallest must split
    assert written["saving_vs_off"] > 0 and "same" in written["saving_vs_off_compares"]
    assert written["data_path"]["batched_ms"] > 0 and "environment" in written

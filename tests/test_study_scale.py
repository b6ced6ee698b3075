"""The study's scale section: its measuring parts, on the tiny fixture dataset."""

import copy
from pathlib import Path

import pytest

from benchmarks import epoch_worker
from benchmarks.scale import Alternating, _interleaved_throughput
from tgatunet.config import load_config
from tgatunet.data.store import build_store
from tgatunet.profiling import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the machine's cores are shared with the rest of the test run, and threads that
    wait for a busy core make a tiny training many times slower."""
    with torch_threads(1):
        yield


def _store_config(dataset) -> Path:
    raw = copy.deepcopy(dataset["config"])
    raw.update(data_store=str(dataset["dir"] / "store"), epochs=1, accelerator="cpu")
    path = dataset["write"](raw, "store.yaml")
    build_store(load_config(path), dataset["dir"] / "store")
    return path


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from /proc (Linux)")
def test_epoch_worker_reports_the_peak_of_a_training(dataset):
    result = epoch_worker.main(str(_store_config(dataset)), str(dataset["dir"] / "run"))
    assert result["peak_rss_bytes"] >= result["rss_before_bytes"] > 0
    assert result["train_windows"] == 64 and result["windows_per_second"] > 0


def test_alternating_flips_the_order_every_round_and_records_it():
    batches = Alternating({"a": [1, 2], "b": [10]}, rounds=3)
    assert len(batches) == 6
    assert list(batches) == [1, 10, 10, 2, 1, 10]  # each loader starts over when it runs out
    assert batches.names == ["a", "b", "b", "a", "a", "b"]


def test_interleaved_throughput_times_both_sources_alike(dataset):
    result = _interleaved_throughput(_store_config(dataset), steps=3, warmup=1)
    assert result["ratio"] > 0 and result["step_ms_per_batch"] > 0
    assert result["fetch_ms_per_batch"]["store"] > 0 and result["direct_windows_per_second"]["memory"] > 0
    assert set(result["loading_windows_per_second"]) == {"store", "memory"}

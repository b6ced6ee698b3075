"""Resource monitoring in logs and metrics.json, and the batched data path."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from tgatunet.config import config_from_dict
from tgatunet.data.prepared import WindowDataset, prepare_data
from tgatunet.profiling import peak_rss_bytes
from tgatunet.report import console, print_metrics
from tgatunet.train.callbacks import ProgressBar
from tgatunet.train.loaders import make_loader
from tgatunet.train.monitor import ResourceMonitor
from tgatunet.train.run import train


def test_monitor_figures_appear_in_logs_and_metrics(dataset, caplog):
    # A target of 1% is crossed at once: the warning must show too.
    path = dataset["write"]({**dataset["config"], "epochs": 2, "use_memory_optimizer": True, "memory_target": 0.01})
    with caplog.at_level(logging.WARNING, logger="tgatunet"):
        run = train(path, progress_bar=False)
    assert any("above the 1% target" in r.getMessage() for r in caplog.records)

    frame = pd.read_csv(run.logs / "csv" / "metrics.csv")
    for column in ("monitor/rss_gb", "monitor/system_memory_percent", "perf/windows_per_s", "perf/epochs_per_min"):
        assert column in frame and frame[column].notna().any(), column
    assert (frame["monitor/rss_gb"].dropna() > 0).all()
    assert frame["memory/micro_batch_size"].dropna().eq(8).all()

    metrics = json.loads(run.metrics_path.read_text())
    memory = metrics["memory"]
    assert memory["samples"] >= 3  # steps 1 and 11 (every 10), and the end of training
    assert memory["peak_rss_gb"] >= frame["monitor/rss_gb"].max() - 1e-4
    assert 0 < memory["peak_system_memory_percent"] <= 100
    assert memory["optimizer"]["enabled"] and memory["optimizer"]["plan"]["micro_batch_size"] == 8
    assert metrics["train"]["windows_per_second"] > 0 and metrics["train"]["micro_batch_size"] == 8

    with console.capture() as shown:
        print_metrics(metrics)  # what `tgatunet train` prints at the end
    assert "memory: peak RSS" in " ".join(shown.get().split())


def test_monitor_samples_this_process():
    figures = ResourceMonitor().sample(torch.device("cpu"))
    assert set(figures) == {"rss_gb", "system_memory_percent"}
    assert figures["rss_gb"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_monitor_samples_cuda_memory():
    device = torch.device("cuda")
    held = torch.empty(64 * 2**20, dtype=torch.uint8, device=device)
    figures = ResourceMonitor().sample(device)
    assert figures["cuda_allocated_gb"] >= held.numel() / 2**30
    assert figures["cuda_reserved_gb"] >= figures["cuda_allocated_gb"]
    assert figures["cuda_peak_gb"] >= figures["cuda_allocated_gb"]
    assert 0 < figures["cuda_memory_percent"] <= 100


def test_batched_fetch_equals_window_by_window(dataset):
    data = prepare_data(config_from_dict(dataset["config"]))
    windows = WindowDataset(data, "train")
    indices = np.random.default_rng(0).permutation(len(windows))[:7].tolist()
    batch = windows.__getitems__(indices)
    for b, i in enumerate(indices):
        rows = slice(windows.index.starts[i], windows.index.starts[i] + data.window_size)
        assert torch.equal(batch["values"][b], torch.from_numpy(data.values[rows]))
        assert torch.equal(batch["observed"][b], torch.from_numpy(data.observed[rows]))
        assert batch["label"][b] == windows.index.labels[i] and batch["index"][b] == i
    assert batch["values"].dtype == torch.float32 and batch["observed"].dtype == torch.bool


def test_loader_gives_every_window_once_in_batches(dataset):
    cfg = config_from_dict({**dataset["config"], "fresh_offsets": False})
    data = prepare_data(cfg)
    batches = list(make_loader(data, "train", cfg, shuffle=True))
    assert all(len(b["values"]) <= cfg.training.batch_size for b in batches)
    assert batches[0]["values"].shape[1:] == (cfg.data.window_size, len(data.channels))
    assert sorted(torch.cat([b["index"] for b in batches]).tolist()) == list(range(len(data.windows["train"])))


def test_peak_rss_counts_memory_touched_meanwhile():
    def work():
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, written
        return float(block[-1])

    peak = peak_rss_bytes(work)
    if peak is None:
        pytest.skip("no /proc high-water mark on this system")
    assert peak >= 48 * 2**20


def test_with_fresh_offsets_an_epoch_draws_its_windows_anew(dataset):
    cfg = config_from_dict(dataset["config"])
    data = prepare_data(cfg)
    loader = make_loader(data, "train", cfg, shuffle=True)
    epochs = [torch.cat([b["index"] for b in loader]) for _ in range(2)]
    assert all(len(e) == data.epoch_windows == len(set(e.tolist())) for e in epochs)
    assert set(epochs[0].tolist()) != set(epochs[1].tolist())


@pytest.mark.parametrize(("max_epochs", "expected"), [(-1, "Epoch 3 (step 40/200)"), (10, "Epoch 3/9")])
def test_progress_bar_names_the_step_budget_when_epochs_are_auto(max_epochs, expected):
    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs, global_step=40, max_steps=200)
    assert bar._get_train_description(3).strip() == expected

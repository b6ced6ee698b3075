"""Using the machine: batch_size auto, training data on the device, no host waits in the step, devices auto."""

import logging
import sys

import pytest
import torch

from tgatunet.config import config_from_dict
from tgatunet.data.prepared import prepare_data
from tgatunet.data.resident import fits_on_device
from tgatunet.data.store_windows import window_dataset
from tgatunet.train import batch_search
from tgatunet.train.monitor import ResourceMonitor
from tgatunet.train.processes import choose_processes
from tgatunet.train.plan import read_plan, resolve_plan
from tgatunet.train.run import build_module, train
from tgatunet.infer.rundir import RunDir


@pytest.fixture
def setup(dataset):
    config = config_from_dict(dataset["config"])
    data = prepare_data(config)
    return config, data, build_module(config, data)


def test_batch_search_doubles_until_no_gain_or_no_memory(setup, monkeypatch):
    config, data, module = setup
    rates = {16: 1000.0, 32: 1900.0, 64: 1950.0, 128: 4000.0}  # 64 gains < 5%: the search stops there
    monkeypatch.setattr(batch_search, "_step_seconds",
                        lambda m, batch, ctx, repeats=3: len(batch["values"]) / rates[len(batch["values"])] if repeats else 0.0)
    monkeypatch.setattr(batch_search, "peak_memory_bytes", lambda fn, device: fn() or 2**20 * len(data.windows["train"]))
    choice = batch_search.search_batch(module, window_dataset(data, "train"), config, torch.device("cpu"), largest=128)
    assert [p["batch_size"] for p in choice.curve] == [16, 32, 64]
    assert choice.batch_size == 32 and choice.lr == pytest.approx(config.training.lr * 2**0.5)


def test_batch_search_stops_where_memory_would_cross_the_target(setup, monkeypatch):
    config, data, module = setup
    config = config.with_keys(memory_budget_gb=40 * 2**20 / 2**30, memory_target=1.0)  # 40 MiB
    monkeypatch.setattr(batch_search, "_step_seconds", lambda m, batch, ctx, repeats=3: 0.01 if repeats else 0.0)  # bigger: faster
    peaks = iter([14, 28, 56])  # MiB at 16, 32, 64 windows
    monkeypatch.setattr(batch_search, "peak_memory_bytes", lambda fn, device: (fn(), next(peaks) * 2**20)[1])
    choice = batch_search.search_batch(module, window_dataset(data, "train"), config, torch.device("cpu"), largest=256)
    assert [p["batch_size"] for p in choice.curve] == [16, 32] and choice.batch_size == 32


def test_an_explicit_batch_size_is_kept(setup, tmp_path):
    config, data, _ = setup
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    plan = resolve_plan(config, data, run, writer=True)
    assert (plan.batch_size, plan.lr, plan.batch_search) == (config.training.batch_size, config.training.lr, None)
    assert plan.training_config(config) is config and read_plan(run) == plan


def test_batch_size_auto_trains_with_the_measured_batch_and_records_it(dataset):
    run = train(dataset["write"]({**dataset["config"], "batch_size": "auto", "epochs": 1}), progress_bar=False)
    train_metrics = run.read_metrics()["train"]
    search = train_metrics["batch_search"]
    assert train_metrics["batch_size"] == search["batch_size"] >= 16
    assert search["curve"][0]["batch_size"] == 16 and "sqrt" in search["rule"]
    assert read_plan(run).batch_search == search  # a resume reuses it


def test_data_fits_on_the_device_only_within_its_share(setup):
    _, data, _ = setup
    size = data.values.nbytes + data.observed.nbytes + data.windows["train"].starts.nbytes
    assert fits_on_device(data, free_bytes=4 * size) and not fits_on_device(data, free_bytes=3 * size)


def test_training_from_device_resident_windows_equals_the_host_path(dataset, monkeypatch):
    from tgatunet.train import plan as plan_module

    host = train(dataset["write"]({**dataset["config"], "run_dir": str(dataset["dir"] / "host")}, "h.yaml"), progress_bar=False)
    monkeypatch.setattr(plan_module, "keeps_windows_resident", lambda config, data, device: True)  # on this CPU
    kept = train(dataset["write"]({**dataset["config"], "run_dir": str(dataset["dir"] / "dev")}, "d.yaml"), progress_bar=False)
    assert read_plan(RunDir(dataset["dir"] / "dev")).resident and not read_plan(RunDir(dataset["dir"] / "host")).resident
    assert kept.read_metrics()["train"]["final_val_loss"] == pytest.approx(host.read_metrics()["train"]["final_val_loss"], rel=1e-6)


def test_the_training_step_never_waits_for_the_device(setup, monkeypatch):
    # On a GPU, .item(), bool(), int() and .tolist() of a device tensor make the host wait: count them
    # where tgatunet's own code makes them during training steps.
    import lightning.pytorch as pl

    config, data, module = setup
    calls = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "/tgatunet/" in caller and "/tests/" not in caller:
                calls.append((name, caller, sys._getframe(1).f_lineno))
            return original(self, *args, **kwargs)

        return wrapper

    from tgatunet.train.loaders import make_loader

    trainer = pl.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    for name in ("item", "__bool__", "__int__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    trainer.fit(module, train_dataloaders=make_loader(data, "train", config, shuffle=True))
    assert trainer.global_step == 3
    assert calls == []


def test_devices_auto_measures_both_ways_and_keeps_the_faster(setup):
    config, data, module = setup
    batch = window_dataset(data, "train").__getitems__(list(range(8)))
    choice = choose_processes(module, batch, cores=2)
    rates = choice["windows_per_second"]
    assert set(rates) == {"1_process_2_threads", "2_processes_1_thread"} and all(r > 0 for r in rates.values())
    faster = max(rates, key=rates.get)
    assert choice["processes"] in (1, 2) and (choice["processes"] == 2) == (rates["2_processes_1_thread"] > 1.05 * rates["1_process_2_threads"])
    assert choice["threads_per_process"] == (1 if choice["processes"] == 2 else 2) and faster


def test_the_monitor_warns_once_when_the_gpu_waits(caplog):
    monitor = ResourceMonitor(every_n_steps=1)
    readings = iter([{"rss_gb": 1.0, "system_memory_percent": 10.0, "gpu_utilization_percent": u} for u in (30, 40, 95, 95)])
    monitor.sample = lambda device: next(readings)

    class Module:
        device = torch.device("cpu")

        @staticmethod
        def log_dict(*args, **kwargs):
            pass

    class Trainer:
        loggers, global_step = [], 0

    with caplog.at_level(logging.WARNING, logger="tgatunet"):
        for _epoch in range(2):
            for _ in range(2):
                monitor.on_train_batch_end(Trainer, Module, None, None, 0)
            monitor.on_train_epoch_end(Trainer, Module)
    warnings = [r for r in caplog.records if "GPU was busy" in r.getMessage()]
    assert len(warnings) == 1 and "35%" in warnings[0].getMessage() and "batch_size" in warnings[0].getMessage()


def test_compile_on_cuda_uses_cuda_graphs(dataset, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: seen.append(kwargs.get("mode")) or model)
    config = config_from_dict({**dataset["config"], "compile": True})
    data = prepare_data(config)
    build_module(config, data, "cpu")  # inductor's default mode
    build_module(config, data, "cuda")  # the plan's device kind
    assert seen == [None, "reduce-overhead"]

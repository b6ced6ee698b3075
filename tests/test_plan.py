"""The training plan: resolved once before the Trainer, kept in RUN/plan.json, passed down explicitly."""

import json
from dataclasses import asdict
import os
from pathlib import Path

import pytest
import torch

import tgatunet
from tgatunet.config import config_from_dict
from tgatunet.data.prepared import prepare_data
from tgatunet.infer.rundir import OWNED, RunDir
from tgatunet.train import plan as plan_module
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.plan import PLAN_FILE, read_plan, resolve_plan
from tgatunet.train.run import train


def _no_measuring(*args, **kwargs):
    raise AssertionError("measured again: the plan's choice should have been reused")


def test_the_plan_is_written_once_and_a_resumed_run_reuses_it_without_searching(dataset, monkeypatch):
    writes = []
    write = plan_module.atomic_write_text
    monkeypatch.setattr(plan_module, "atomic_write_text", lambda path, text: writes.append(Path(path).name) or write(path, text))
    path = dataset["write"]({**dataset["config"], "batch_size": "auto", "epochs": 1, "patience": 5})
    run = train(path, progress_bar=False)
    assert writes == [PLAN_FILE] and PLAN_FILE in OWNED
    plan = read_plan(run)
    saved = json.loads((run.root / PLAN_FILE).read_text())
    assert set(saved) >= {"device", "precision", "batch_size", "lr", "batch_search", "processes", "threads_per_process",
                          "strategy", "memory", "resident", "compile"}
    assert plan.batch_search["batch_size"] == plan.batch_size == run.read_metrics()["train"]["batch_size"]
    assert run.read_metrics()["train"]["batch_search"] == plan.batch_search
    assert "batch_search" not in run.read_data()[2]  # one place: plan.json

    monkeypatch.setattr(plan_module, "search_batch", _no_measuring)
    train(dataset["write"]({**dataset["config"], "batch_size": "auto", "epochs": 2, "patience": 5}), resume=True, progress_bar=False)
    assert writes == [PLAN_FILE, PLAN_FILE]
    assert read_plan(run).batch_search == plan.batch_search
    assert run.read_metrics()["train"]["epochs_completed"] == 2


def test_a_resumed_run_reuses_the_measured_process_choice(dataset, tmp_path, monkeypatch):
    config = config_from_dict({**dataset["config"], "batch_size": "auto", "devices": "auto", "accelerator": "cpu"})
    data = prepare_data(config)
    run = RunDir(tmp_path / "run")
    search = {"batch_size": 32, "lr": 0.002, "limit_gb": 1.0, "curve": [], "rule": "measured"}
    choice = {"processes": 2, "threads_per_process": 1, "windows_per_second": {"a": 1.0}}
    saved = {**asdict(resolve_plan(config.with_keys(batch_size=16, devices=1), data, run, writer=False)),
             "batch_search": search, "process_choice": choice}
    run.root.mkdir()
    (run.root / PLAN_FILE).write_text(json.dumps(saved))
    monkeypatch.setattr(plan_module, "search_batch", _no_measuring)
    monkeypatch.setattr(plan_module, "choose_processes", _no_measuring)
    plan = resolve_plan(config, data, run, writer=True)
    assert (plan.batch_size, plan.processes, plan.strategy, plan.accelerator, plan.threads_per_process) == (32, 2, "ddp", "cpu", 1)
    assert plan.lr == pytest.approx(0.002 * 2**0.5)  # the sqrt rule for 2 processes, as the first start had it
    assert plan.training_config(config).training.batch_size == 32


def test_a_launched_process_reads_the_plan_the_first_process_wrote(dataset, tmp_path, monkeypatch):
    config = config_from_dict({**dataset["config"], "use_memory_optimizer": True})
    data = prepare_data(config)
    run = RunDir(tmp_path / "run")
    first = resolve_plan(config, data, run, writer=True)
    assert first.memory is not None and first.micro_batches().size == first.memory.micro_batch_size
    monkeypatch.setattr(plan_module.os, "getppid", os.getpid)  # as if this process had been launched by the first
    monkeypatch.setattr(plan_module, "training_device", _no_measuring)
    monkeypatch.setattr(plan_module, "plan_memory", _no_measuring)
    assert resolve_plan(config, data, run, writer=False) == first


def test_ddp_processes_launched_by_lightning_train_with_the_first_process_batch_search(dataset, tmp_path):
    from test_distributed import _ddp_run

    cfg = {**dataset["config"], "accelerator": "cpu", "devices": 2, "strategy": "ddp", "batch_size": "auto", "epochs": 1,
           "run_dir": str(tmp_path / "ddp")}
    run, ranks = _ddp_run(dataset, tmp_path, cfg)  # the second process would refuse to measure batch_size: auto itself
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert read_plan(run).batch_search["batch_size"] == run.read_metrics()["train"]["batch_size"]


def test_a_plan_left_by_an_earlier_start_is_not_taken_by_an_unrelated_process(dataset, tmp_path):
    config = config_from_dict(dataset["config"])
    data = prepare_data(config)
    run = RunDir(tmp_path / "run")
    resolve_plan(config, data, run, writer=True)  # written by this process, which launched nothing
    other = resolve_plan(config.with_keys(batch_size=4), data, run, writer=False)  # e.g. a torchrun rank
    assert other.batch_size == 4 and read_plan(run).batch_size == config.training.batch_size


def test_no_process_without_a_plan_measures_batch_size_auto(dataset, tmp_path):
    config = config_from_dict({**dataset["config"], "batch_size": "auto"})
    with pytest.raises(tgatunet.errors.RunError, match="measured by the first process"):
        resolve_plan(config, prepare_data(config), RunDir(tmp_path / "run"), writer=False)


def test_the_package_passes_no_environment_variable_between_its_layers(dataset):
    src = Path(tgatunet.__file__).parent
    for path in src.rglob("*.py"):
        assert "TGATUNET_" not in path.read_text(encoding="utf-8"), path
    before = {k for k in os.environ if k.startswith("TGATUNET")}
    train(dataset["write"]({**dataset["config"], "epochs": 1}), progress_bar=False)
    assert {k for k in os.environ if k.startswith("TGATUNET")} == before


def test_the_training_module_gets_its_micro_batches_and_resident_windows_through_its_constructor(dataset, monkeypatch):
    from tgatunet.train import run as run_module

    built, assigned = [], []
    build, setattr_ = run_module.build_module, TGATUNetModule.__setattr__

    def spy_build(*args, **kwargs):
        built.append((build(*args, **kwargs), kwargs))
        return built[-1][0]

    def spy_setattr(self, name, value):
        if name in ("micro_batches", "resident", "compiled") and any(m is self for m, _ in built):
            assigned.append(name)  # set from outside, after construction
        setattr_(self, name, value)

    monkeypatch.setattr(run_module, "build_module", spy_build)
    monkeypatch.setattr(TGATUNetModule, "__setattr__", spy_setattr)
    monkeypatch.setattr(plan_module, "keeps_windows_resident", lambda config, data, device: True)  # on this CPU
    run = train(dataset["write"]({**dataset["config"], "use_memory_optimizer": True, "epochs": 1}), progress_bar=False)
    plan = read_plan(run)
    [(module, kwargs)] = built  # the module trained
    assert assigned == []
    assert kwargs["micro_batches"] is module.micro_batches and module.micro_batches.recover_out_of_memory
    assert module.micro_batches.size == plan.memory.micro_batch_size == run.read_metrics()["train"]["micro_batch_size"]
    assert kwargs["resident"] is module.resident and module.resident.values.device == torch.device("cpu")
    assert plan.device_kind == "cpu"
    assert run.read_metrics()["memory"]["optimizer"]["plan"]["micro_batch_size"] == plan.memory.micro_batch_size


def test_training_device_is_asked_once_per_training(dataset, monkeypatch):
    from tgatunet.train import loaders, run

    calls = []
    device = plan_module.training_device
    for where in (plan_module, loaders, run):
        monkeypatch.setattr(where, "training_device", lambda accelerator: calls.append(accelerator) or device(accelerator))
    train(dataset["write"]({**dataset["config"], "epochs": 1, "use_memory_optimizer": True}), progress_bar=False)
    assert len(calls) == 1

"""Hardware detection, the guide's presets through hardware_profile, and `tgatunet hardware`."""

from __future__ import annotations

import copy

import pytest
import yaml
from typer.testing import CliRunner

import tgatunet.hardware as hardware
from tgatunet.cli import app
from tgatunet.config import FIELDS, PRESETS, config_from_dict
from tgatunet.errors import ConfigError
from tgatunet.hardware import GB, DeviceMemory, Hardware, preset_for_memory

MODEL_KEYS = set(PRESETS["low"])


def _without_model_keys(dataset) -> dict:
    return {k: v for k, v in copy.deepcopy(dataset["config"]).items() if k not in MODEL_KEYS}


def _machine(ram_gb: float, gpu_gb: float | None = None) -> Hardware:
    gpus = (DeviceMemory("cuda", 0, "Fake GPU", int(gpu_gb * GB), int(gpu_gb * GB)),) if gpu_gb else ()
    ram = DeviceMemory("cpu", 0, "RAM", int(ram_gb * GB), int(ram_gb * GB))
    return Hardware(cpu_cores=4, ram=ram, gpus=gpus, mps=False)


@pytest.mark.parametrize("preset", ["low", "medium", "high"])
def test_profile_fills_the_keys_the_file_does_not_set(dataset, preset):
    cfg = config_from_dict({**_without_model_keys(dataset), "hardware_profile": preset})
    for key, value in PRESETS[preset].items():
        assert cfg.flat()[key] == value, key
    assert cfg.performance.hardware_profile == preset


def test_explicit_keys_override_the_profile(dataset):
    raw = {**_without_model_keys(dataset), "hardware_profile": "high", "batch_size": 6, "use_gradient_checkpoint": True}
    cfg = config_from_dict(raw)
    assert cfg.training.batch_size == 6 and cfg.performance.use_gradient_checkpoint is True  # written: kept
    assert (cfg.model.hidden_channels, cfg.model.encoder_layers, cfg.model.attention_heads) == (128, 3, 4)  # not written: preset


def test_without_a_profile_nothing_changes(dataset):
    raw = _without_model_keys(dataset)
    cfg = config_from_dict(raw)
    assert cfg.performance.hardware_profile is None
    for key in MODEL_KEYS:
        assert cfg.flat()[key] == FIELDS[key].default, key


def test_unknown_profile_names_the_allowed_values(dataset):
    with pytest.raises(ConfigError) as info:
        config_from_dict({**_without_model_keys(dataset), "hardware_profile": "huge"}, origin="test.yaml")
    msg = str(info.value)
    assert "'hardware_profile'" in msg and "'huge'" in msg and "medium" in msg


@pytest.mark.parametrize(
    ("gib", "preset"),
    [(4.0, "low"), (7.4, "low"), (7.79, "medium"), (12.0, "medium"), (15.78, "medium"), (23.5, "high"), (80.0, "high")],
)
def test_preset_by_nominal_memory(gib, preset):
    # A card sold as 8 GB reports about 7.8 GiB; a 16 GB V100 about 15.8 GiB.
    assert preset_for_memory(gib * GB) == preset


@pytest.mark.parametrize(
    ("machine", "accelerator", "preset"),
    [
        (_machine(ram_gb=6), "auto", "low"),
        (_machine(ram_gb=32, gpu_gb=12), "auto", "medium"),  # the GPU's memory counts when training on it
        (_machine(ram_gb=32, gpu_gb=12), "cpu", "high"),  # the RAM counts on the CPU
        (_machine(ram_gb=12, gpu_gb=40), "cuda", "high"),
    ],
)
def test_auto_profile_picks_by_the_training_device(dataset, monkeypatch, machine, accelerator, preset):
    monkeypatch.setattr(hardware, "detect_hardware", lambda **_: machine)
    cfg = config_from_dict({**_without_model_keys(dataset), "hardware_profile": "auto", "accelerator": accelerator})
    assert cfg.performance.hardware_profile == preset
    assert cfg.model.hidden_channels == PRESETS[preset]["hidden_channels"]


def test_auto_profile_follows_an_explicit_budget(dataset, monkeypatch):
    def no_detection():
        raise AssertionError("the budget decides; nothing to detect")

    monkeypatch.setattr(hardware, "detect_hardware", no_detection)
    cfg = config_from_dict({**_without_model_keys(dataset), "hardware_profile": "auto", "memory_budget_gb": 4})
    assert cfg.performance.hardware_profile == "low"


def test_resolved_profile_round_trips_through_a_run_config(dataset, monkeypatch):
    monkeypatch.setattr(hardware, "detect_hardware", lambda **_: _machine(ram_gb=12))
    cfg = config_from_dict({**_without_model_keys(dataset), "hardware_profile": "auto", "hidden_channels": 48})
    saved = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))
    assert saved["hardware_profile"] == "medium"
    # Read back (evaluate, resume) on another machine: every key is written, so nothing changes.
    monkeypatch.setattr(hardware, "detect_hardware", lambda **_: _machine(ram_gb=64))
    assert config_from_dict(saved).to_dict() == cfg.to_dict()


def test_memory_keys_are_validated(dataset):
    for key, value in [("memory_target", 1.5), ("memory_target", 0), ("memory_budget_gb", -1)]:
        with pytest.raises(ConfigError, match=key):
            config_from_dict({**dataset["config"], key: value})


def test_detect_hardware_reads_this_machine():
    found = hardware.detect_hardware()
    assert found.cpu_cores >= 1
    assert 0 < found.ram.available_bytes <= found.ram.total_bytes
    assert hardware.training_device("cpu", found) == found.ram


def test_cli_hardware_shows_devices_and_auto_preset():
    result = CliRunner().invoke(app, ["hardware"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "RAM" in flat
    assert any(f"hardware_profile: auto -> {preset}" in flat for preset in PRESETS)


def test_cli_hardware_with_config_shows_the_batch_choice(dataset):
    path = dataset["write"]({**dataset["config"], "batch_size": 24})
    result = CliRunner().invoke(app, ["hardware", "--config", str(path)])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "batch_size 24 -> micro-batches of 24 windows" in flat
    assert "per window" in flat


def test_cli_hardware_reports_a_budget_too_small(dataset):
    path = dataset["write"]({**dataset["config"], "memory_budget_gb": 1e-6})
    result = CliRunner().invoke(app, ["hardware", "--config", str(path)])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "one window at a time" in flat and "memory_budget_gb" in flat
    assert "Traceback" not in result.output


def test_the_auto_profile_reads_gpu_totals_without_starting_cuda_contexts(monkeypatch):
    # mem_get_info starts a CUDA context on every GPU it asks (per rank under DDP): the preset needs totals only.
    class Props:
        total_memory = 24 * GB

    def no_context(device):
        raise AssertionError("torch.cuda.mem_get_info would start a CUDA context")

    cuda = hardware.torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 2)
    monkeypatch.setattr(cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    monkeypatch.setattr(cuda, "get_device_properties", lambda i: Props())
    monkeypatch.setattr(cuda, "mem_get_info", no_context)
    assert hardware.auto_profile("auto", None) == ("high", 24.0, "Fake GPU 0")
    gpus = hardware.detect_hardware(gpu_free_memory=False).gpus
    assert [(g.total_bytes, g.available_bytes) for g in gpus] == [(24 * GB, None)] * 2

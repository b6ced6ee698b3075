"""The study's model section on a tiny scale: each variant is a config, and every figure lands in results.json."""

import json

import pytest
import torch

from benchmarks import model as bench
from benchmarks.training import fit, new_module
from tgatunet.config import PRESETS
from tgatunet.profiling import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the machine's cores are shared with the rest of the test run, and threads that
    wait for a busy core make a tiny training many times slower."""
    with torch_threads(1):
        yield

TINY = {"batch_size": 4, "hidden_channels": 8, "encoder_layers": 1, "decoder_layers": 1, "transformer_layers": 1}
TINY_PRESETS = {"medium": {**TINY, "attention_heads": 2}, "high": {**TINY, "attention_heads": 4}}


def test_each_variant_is_the_preset_with_its_own_keys(tmp_path):
    base, _ = bench.setting_data(tmp_path, window_size=16, blocks=4)
    configs = bench.variant_configs(base, "high", cuda=True)
    assert set(configs) == {*bench.VARIANTS, "standard_fp16"}
    for config in configs.values():
        assert config.model.hidden_channels == PRESETS["high"]["hidden_channels"]
        assert config.training.batch_size == PRESETS["high"]["batch_size"]
    flags = {
        name: (c.model.use_optimized_model, c.performance.use_gradient_checkpoint, c.performance.precision)
        for name, c in configs.items()
    }
    assert flags == {
        "standard": (False, False, "32"),
        "lite": (True, False, "32"),
        "standard_checkpoint": (False, True, "32"),
        "lite_checkpoint": (True, True, "32"),
        "standard_selective": (False, True, "32"),
        "standard_bf16": (False, False, "bf16-mixed"),
        "standard_fp16": (False, False, "16-mixed"),
    }
    assert "standard_fp16" not in bench.variant_configs(base, "high", cuda=False)
    assert configs["standard_selective"].performance.checkpoint_mode == "selective"


def test_the_real_step_learns_under_each_cpu_precision(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "PRESETS", TINY_PRESETS)
    base, data = bench.setting_data(tmp_path, window_size=16, blocks=4)
    configs = bench.variant_configs(base, "medium", cuda=False)
    for name in ("standard", "standard_bf16"):
        module = new_module(configs[name], data)
        before = [p.detach().clone() for p in module.parameters()]
        fit(configs[name], data, 1, module=module)
        assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters())), name


def test_model_benchmark_writes_every_figure(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "PRESETS", TINY_PRESETS)
    monkeypatch.setattr(bench, "WINDOW_SIZE", 16)
    bench.run_model_benchmark(tmp_path / "out", dataset["write"](), rounds=2, epochs=1, steps=1)

    results = json.loads((tmp_path / "out" / "results.json").read_text())["model"]
    for preset in ("medium", "high"):
        figures = results[preset]
        for key in (
            "lite_param_reduction",
            "lite_step_speedup",
            "lite_peak_memory_reduction",
            "checkpoint_memory_reduction",
            "checkpoint_step_time_ratio",
            "selective_checkpoint_memory_reduction",
            "selective_checkpoint_step_time_ratio",
            "bf16_step_speedup",
            "bf16_memory_reduction",
        ):
            assert isinstance(figures[key], float), key
        assert figures["lite_step_speedup"] > 0 and figures["checkpoint_step_time_ratio"] > 0
        assert figures["parameters"]["lite"] < figures["parameters"]["standard"]
        assert figures["peak_memory_mib"]["standard_checkpoint"] < figures["peak_memory_mib"]["standard"]
    assert results["lite_mae_ratio"] > 0 and results["epochs"] == 1
    assert "Lightning" in results["method"]["training_step"]
    assert results["environment"]["torch"] == torch.__version__

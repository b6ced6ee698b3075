"""The model benchmark end to end on a tiny scale: every figure the issue names lands in results.json."""

import json

import torch

from tgatunet.bench import model as bench
from tgatunet.model.tgat_unet import TGATUNet


def test_training_step_learns_under_each_cpu_precision():
    batch = bench.synthetic_batch(4, torch.device("cpu"))
    assert batch["hidden"].any() and not (batch["hidden"] & ~batch["observed"]).any()
    for precision in ("32", "bf16-mixed"):
        torch.manual_seed(0)
        model = TGATUNet(bench.preset_spec("medium", hidden_channels=8, attention_heads=1))
        before = [p.detach().clone() for p in model.parameters()]
        bench.training_step(model, batch, precision)()
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_model_benchmark_writes_every_figure(dataset, tmp_path, monkeypatch):
    tiny = {"batch_size": 2, "hidden_channels": 8, "encoder_layers": 1, "decoder_layers": 1, "transformer_layers": 1}
    monkeypatch.setattr(bench, "PRESETS", {"medium": {**tiny, "attention_heads": 2}, "high": {**tiny, "attention_heads": 4}})
    monkeypatch.setattr(bench, "WINDOW_SIZE", 16)
    bench.run_model_benchmark(tmp_path / "out", dataset["write"](), rounds=2, epochs=1)

    results = json.loads((tmp_path / "out" / "results.json").read_text())["model"]
    for preset in ("medium", "high"):
        figures = results[preset]
        for key in (
            "lite_param_reduction",
            "lite_step_speedup",
            "lite_peak_memory_reduction",
            "checkpoint_memory_reduction",
            "checkpoint_step_time_ratio",
            "bf16_step_speedup",
            "bf16_memory_reduction",
        ):
            assert isinstance(figures[key], float), key
        assert figures["lite_step_speedup"] > 0 and figures["checkpoint_step_time_ratio"] > 0
        assert figures["parameters"]["lite"] < figures["parameters"]["standard"]
    assert results["lite_mae_ratio"] > 0 and results["epochs"] == 1
    assert "activations" in results["method"]["peak_memory"]
    assert results["environment"]["torch"] == torch.__version__

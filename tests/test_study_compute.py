"""The study's compute section: FLOP counting, peak, MFU, latency and the step breakdown (tiny settings; no timing targets)."""

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from benchmarks.breakdown import LABELS, PARTS, op_kind, plot_breakdown, verdict
from benchmarks.cli import app, config_overrides
from benchmarks.flops import count_flops, sustained_matmul_flops
from tgatunet.errors import ConfigError
from tgatunet.train.callbacks import StepTimer

TINY = ["--preset", "low", "--window", "16", "--channels", "3"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """One quick run of the CLI on a tiny setting, shared by the tests below."""
    out = tmp_path_factory.mktemp("compute")
    result = CliRunner().invoke(app, ["compute", "--out", str(out), "--quick", *TINY, "--set", "ff_multiplier=3"])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "results.json").read_text()), result.output


def test_flops_of_a_linear_layer_are_counted_by_hand():
    M, K, N = 32, 24, 16
    layer = torch.nn.Linear(K, N)
    x = torch.randn(M, K, requires_grad=True)
    forward = count_flops(lambda: layer(x))
    assert forward["model"] == 2 * M * K * N
    # backward: the input's and the weight's gradient, one product each
    step = count_flops(lambda: layer(x).sum().backward())
    assert step["model"] == 3 * 2 * M * K * N


def test_cpu_attention_is_counted_like_two_matrix_products():
    B, H, T, d = 2, 3, 8, 4
    q, k, v = (torch.randn(B, H, T, d) for _ in range(3))
    flops = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))["model"]
    assert flops == 2 * (2 * B * H * T * T * d)  # Q K^T and P V


def test_matmul_share_counts_elementwise_work():
    x, w = torch.randn(64, 32), torch.randn(32, 32)
    flops = count_flops(lambda: torch.relu(x @ w))
    assert flops["model"] == 2 * 64 * 32 * 32
    assert flops["elementwise"] == 64 * 32  # one per relu output


def test_peak_is_the_fastest_size():
    peak = sustained_matmul_flops(sizes=(32, 64), repeats=2)
    assert set(peak["by_size"]) == {32, 64}
    assert all(rate > 0 for rate in peak["by_size"].values())
    assert peak["peak_flops_per_second"] == max(peak["by_size"].values())
    assert peak["by_size"][peak["peak_size"]] == peak["peak_flops_per_second"]


def test_cli_writes_the_three_sections_and_the_plot(results):
    out, r, _ = results
    assert {"mfu", "infer_latency", "breakdown"} <= set(r)
    assert (out / "breakdown.png").stat().st_size > 0
    setting = r["mfu"]["setting"]
    assert (setting["preset"], setting["window_size"], setting["channels"]) == ("low", 16, 3)
    assert setting["batch_size"] == 8 and setting["threads"] == 1
    assert setting["config"] == {"ff_multiplier": 3}  # --set, over the preset


def test_utilisation_figures_are_plausible(results):
    mfu = results[1]["mfu"]
    for key in ("train", "infer", "train_2threads", "train_no_checkpoint"):
        assert 0 < mfu[key] < 1.5, key
    assert mfu["peak_flops_per_second"] > 0 and mfu["peak_flops_per_second_2threads"] > 0
    assert mfu["model_flops_per_window_train"] > 2 * mfu["model_flops_per_window_infer"]  # backward ~ 2x forward
    # the low preset checkpoints: the recomputation is counted apart, on top of the model FLOPs
    assert mfu["hardware_flops_per_window_train"] > mfu["model_flops_per_window_train"]  # checkpointing recomputes
    assert 0.5 < mfu["matmul_share_of_flops"] < 1.0


def test_latency_percentiles(results):
    latency = results[1]["infer_latency"]
    assert latency["batch_size"] == 1 and latency["windows"] > 0
    assert 0 < latency["latency_ms_min"] <= latency["latency_ms_p50"] <= latency["latency_ms_p95"]
    compiled = latency["compiled"]  # the model as load_run(compile=True) runs it
    assert compiled["batch_size"] == 1 and compiled["compile_seconds"] > 0
    assert 0 < compiled["latency_ms_min"] <= compiled["latency_ms_p50"] <= compiled["latency_ms_p95"]
    summary = " ".join(results[2].split())  # the CLI's summary names both medians
    assert f"p50 {latency['latency_ms_p50']:.3f} ms" in summary
    assert f"compiled p50 {compiled['latency_ms_p50']:.3f} ms" in summary


def test_breakdown_shares_sum_to_one_and_the_verdict_names_the_largest(results):
    breakdown = results[1]["breakdown"]
    share = breakdown["share"]
    assert set(share) == set(PARTS)
    assert sum(share.values()) == pytest.approx(1.0)
    assert all(s >= 0 for s in share.values())
    assert LABELS[max(share, key=share.get)] in breakdown["verdict"]
    assert breakdown["step_ms"] == pytest.approx(sum(breakdown["ms"].values()))
    assert breakdown["graph_ms_within_forward"] == 0.0  # the temporal graph is not built
    assert "Lightning" in breakdown["method"] and breakdown["steps"] == 10
    ops = breakdown["op_time_share"]
    assert set(ops) == {"matrix_products", "elementwise", "overhead"}
    assert sum(ops.values()) == pytest.approx(1.0)
    assert all(0 < v < 1 for v in ops.values())


@pytest.mark.parametrize("largest", PARTS)
def test_verdict_names_the_largest_part_and_says_what_to_do(largest):
    share = dict.fromkeys(PARTS, 0.05)
    share[largest] = 0.8
    text = verdict(share)
    assert LABELS[largest] in text and "80%" in text
    if largest == "data":
        assert "num_workers" in text
    if largest in ("forward", "backward"):
        assert "compute-bound" in text


def test_verdict_says_what_bounds_a_compute_bound_step():
    share = dict(zip(PARTS, (0.01, 0.4, 0.55, 0.04)))
    bound = verdict(share, {"matrix_products": 0.3, "elementwise": 0.45, "overhead": 0.25})
    assert "30%" in bound and "memory traffic" in bound
    arithmetic = verdict(share, {"matrix_products": 0.8, "elementwise": 0.15, "overhead": 0.05})
    assert "80%" in arithmetic and "memory traffic" not in arithmetic


def test_plot_breakdown_writes_a_png(tmp_path):
    share = dict(zip(PARTS, (0.1, 0.4, 0.45, 0.05)))
    ops = {"matrix_products": 0.3, "elementwise": 0.5, "overhead": 0.2}
    results = {"share": share, "ms": {p: 10 * s for p, s in share.items()}, "step_ms": 10.0, "verdict": verdict(share),
               "op_time_share": ops}  # fmt: skip
    path = plot_breakdown(results, tmp_path / "b.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_the_breakdown_parts_are_the_real_steps_phases():
    assert PARTS == StepTimer.PHASES
    assert op_kind("aten::mm") == "matrix_products" and op_kind("aten::mul") == "elementwise"
    assert op_kind("aten::view") == op_kind("MulBackward0") == op_kind("Optimizer.step#AdamW.step") == "overhead"
    assert op_kind("ProfilerStep#3") is None and op_kind("enumerate(DataLoader)#_SingleProcessDataLoaderIter") is None


def test_copy_bandwidth_is_measured_in_and_out_of_cache(results):
    bandwidth = results[1]["mfu"]["copy_bytes_per_second"]
    assert set(bandwidth) == {str(2**18), str(2**26)}
    # more than 100 MB/s and less than 10 TB/s: a rate, in bytes per second, of a real copy
    assert all(1e8 < rate < 1e13 for rate in bandwidth.values())
    summary = " ".join(results[2].split())
    assert f"{bandwidth[str(2**26)] / 1e9:.1f} GB/s from memory" in summary


def test_copy_bandwidth_counts_bytes_read_and_written(monkeypatch):
    from benchmarks import flops

    monkeypatch.setattr(flops, "median_seconds", lambda fn, **kwargs: fn() or 0.5)
    rates = flops.copy_bandwidth(sizes_bytes=(2**20,), repeats=1)
    # 4 sweeps of a 1 MiB buffer, each reading and writing it, in half a second
    assert rates == {str(2**20): 2 * 2**20 * 4 / 0.5}


def test_set_reads_values_as_yaml_and_rejects_malformed_items():
    assert config_overrides(["ff_multiplier=4", "use_gradient_checkpoint=false", "graph_type = knn"]) == {
        "ff_multiplier": 4,
        "use_gradient_checkpoint": False,
        "graph_type": "knn",
    }
    with pytest.raises(ConfigError, match="write KEY=VALUE"):
        config_overrides(["ff_multiplier"])


def test_set_with_an_unknown_key_fails_with_a_hint(tmp_path):
    result = CliRunner().invoke(app, ["compute", "--out", str(tmp_path), *TINY, "--set", "ff_multiplyer=4"])
    assert result.exit_code == 2
    assert "ff_multiplyer" in result.output and "ff_multiplier" in result.output  # did you mean


def test_set_refuses_keys_the_benchmark_sets_itself(tmp_path):
    result = CliRunner().invoke(app, ["compute", "--out", str(tmp_path), *TINY, "--set", "window_size=32"])
    assert result.exit_code == 2
    assert "'window_size' is the benchmark's to set (use --window)" in " ".join(result.output.split())

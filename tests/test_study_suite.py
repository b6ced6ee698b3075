"""The study's suite: exponent fit, guide verdicts, the sections it measures, its wiring and its commands."""

import json
import math
import sys
import types
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks import suite
from benchmarks.cli import app
from benchmarks.guide_report import guide_comparison, guide_summary, headline_figures, judge, render_report
from benchmarks.results import read_results, write_section
from benchmarks.scaling import ScalingSizes, fit_exponent
from tgatunet.errors import ConfigError
from tgatunet.profiling import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the machine's cores are shared with the rest of the test run, and threads that
    wait for a busy core make a tiny training many times slower."""
    with torch_threads(1):
        yield

TINY = suite.SuiteSettings(
    quick=True,
    train_epochs=1,
    blocks_per_source=3,
    block_length=256,
    infer_repeats=1,
    scaling=ScalingSizes(window_sizes=(16, 32), batch_sizes=(2, 4), dataset_windows=(64, 128), repeats=1),
    model_rounds=1,
    model_epochs=1,
    sections=("runtime", "scaling"),
)


def test_fit_exponent_recovers_a_known_slope():
    sizes = np.array([8, 16, 32, 64, 128, 256], float)
    wobble = np.array([1.03, 0.98, 1.01, 0.97, 1.02, 1.0])  # fixed, mild measurement noise
    exponent, log_factor = fit_exponent(sizes, 0.004 * sizes**1.7 * wobble)
    assert exponent == pytest.approx(1.7, abs=0.03)
    assert math.exp(log_factor) == pytest.approx(0.004, rel=0.2)
    assert fit_exponent([1, 10], [5, 5])[0] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="two different sizes"):
        fit_exponent([4, 4], [1.0, 2.0])


def test_judge_against_the_promised_range():
    assert judge(1.6, 1.5, 3.0) == ("met", "")
    assert judge(1.4, 1.5, 3.0) == ("not met", "below the promised range")
    assert judge(7.0, 2.0, 5.0) == ("met", "above the promised range")


def _hand_made_results() -> dict:
    preset = {
        "lite_step_speedup": 2.0,  # promised 1.5-3x: met
        "lite_peak_memory_reduction": 0.45,  # 30-50%: met
        "lite_param_reduction": 0.30,  # 40-60%: not met
        "checkpoint_step_time_ratio": 1.1,  # speed 0.91x, promised 0.8-1.2x: met
        "checkpoint_memory_reduction": 0.41,  # 40-60%: met
    }
    high = {**preset, "lite_step_speedup": 1.2, "checkpoint_step_time_ratio": 1.5}  # 1.2x and 0.67x: not met
    return {
        "model": {"medium": preset, "high": high},
        "memory": {"saving_vs_off": 0.1},  # 20-40%: not met
        "train": {"samples_per_second": 123.0, "units": {"samples_per_second": "training windows/s"}},
        "infer": {"latency_ms_p50": None, "latency_ms_p50_reason": "compute section skipped"},
    }


def test_guide_rows_say_met_or_not_met_from_the_figures():
    rows = {(r["key"]): r for r in guide_comparison(_hand_made_results())}
    expected = {
        "model.medium.lite_step_speedup": ("met", "2.00x"),
        "model.high.lite_step_speedup": ("not met", "1.20x"),
        "model.medium.lite_peak_memory_reduction": ("met", "45%"),
        "model.medium.lite_param_reduction": ("not met", "30%"),
        "model.medium.checkpoint_step_time_ratio": ("met", "0.91x"),
        "model.high.checkpoint_step_time_ratio": ("not met", "0.67x"),
        "model.medium.checkpoint_memory_reduction": ("met", "41%"),
        "memory.saving_vs_off": ("not met", "10%"),
        "graph.temporal_speedup_vectorised_vs_naive": ("not measured", "-"),
    }
    for key, (verdict, measured) in expected.items():
        assert (rows[key]["verdict"], rows[key]["measured"]) == (verdict, measured), key
    unmeasured = guide_comparison({"memory": {"saving_vs_off": None, "saving_vs_off_compares": "no budget needed it"}})
    (saving,) = [r for r in unmeasured if r["key"] == "memory.saving_vs_off"]
    assert saving["verdict"] == "not measured" and saving["note"] == "no budget needed it"  # the section's own reason
    promises = {(r["optimisation"], r["column"]) for r in guide_comparison({})}
    assert len(promises) == 8  # the guide's table: every promised cell has a row
    assert {o for o, _ in promises} == {
        "graph-construction cache",
        "lightweight model",
        "memory optimizer",
        "gradient checkpointing",
    }


def test_guide_table_judges_each_cell_by_all_its_figures():
    table = {row["optimisation"]: row for row in guide_summary(_hand_made_results())}
    assert table["lightweight model"]["speed-up"] == "1.5-3x: partly met (1 of 2 figures)"
    assert table["lightweight model"]["memory saved"] == "30%-50%: met"
    assert table["lightweight model"]["fewer parameters"] == "40%-60%: not met"
    assert table["memory optimizer"] == {
        "optimisation": "memory optimizer",
        "speed-up": "-",
        "memory saved": "20%-40%: not met",
        "fewer parameters": "-",
    }
    assert table["graph-construction cache"]["speed-up"] == "2-5x: not measured"


def test_report_lists_the_verdicts_and_headline_figures():
    text = render_report(_hand_made_results())
    line = next(row for row in text.splitlines() if "model.high.lite_step_speedup" in row)
    assert "| 1.5-3x |" in line and "**not met**" in line
    line = next(row for row in text.splitlines() if "memory.saving_vs_off" in row)
    assert "20%-40%" in line and "**not met**" in line
    assert "123 training windows/s" in text
    assert "- (compute section skipped)" in text
    figures = {key: value for _, value, key in headline_figures(_hand_made_results())}
    assert figures["mfu.train"] == "- (no section 'mfu' in results.json)"


def test_latency_is_copied_from_the_compute_section(tmp_path):
    write_section(tmp_path, "infer", {"windows_per_second": 10.0})
    suite.copy_latency(tmp_path, "compute section skipped")
    assert read_results(tmp_path)["infer"]["latency_ms_p50_reason"] == "compute section skipped"
    compiled = {"latency_ms_p50": None, "latency_ms_p95": None, "reason": "torch.compile is not supported here"}
    write_section(tmp_path, "infer_latency", {"latency_ms_p50": 4.0, "latency_ms_p95": 6.5, "compiled": compiled})
    suite.copy_latency(tmp_path, "unused")
    infer = read_results(tmp_path)["infer"]
    assert (infer["latency_ms_p50"], infer["latency_ms_p95"], infer["windows_per_second"]) == (4.0, 6.5, 10.0)
    assert "latency_ms_p50_reason" not in infer
    assert infer["latency_ms_p50_compiled"] is None
    assert infer["latency_ms_p50_compiled_reason"] == "torch.compile is not supported here"


def test_suite_measures_its_sections_and_says_which_it_did_not_run(tmp_path):
    out = tmp_path / "out"
    (out / "breakdown.png").parent.mkdir(parents=True)
    (out / "breakdown.png").write_bytes(b"left by an earlier run")
    seen = []
    results = suite.run_suite(out, TINY, on_section=lambda name, state: seen.append((name, state.split(":")[0])))

    assert seen == [
        ("runtime", "start"),
        ("runtime", "done"),
        ("scaling", "start"),
        ("scaling", "done"),
    ]
    saved = json.loads((out / "results.json").read_text())
    assert saved == results
    for key in (
        "train.samples_per_second",
        "train.epochs_per_minute",
        "infer.windows_per_second",
        "infer.batches_per_second",
        "peak_memory_gb.train",
        "peak_memory_gb.infer",
        "memory_use_percent.train",
        "memory_use_percent.infer",
    ):
        section, name = key.split(".")
        assert saved[section][name] > 0, key
        assert name in saved[section]["units"], key
        assert "environment" in saved[section] and "method" in saved[section]
    assert saved["train"]["setting"]["window_size"] == 128 and saved["train"]["setting"]["channels"] == 9
    assert saved["infer"]["latency_ms_p50"] is None and "not run" in saved["infer"]["latency_ms_p50_reason"]
    utilisation = saved["accelerator_utilization_percent"]
    if not saved["train"]["environment"]["cuda"]:
        assert utilisation["train"] is None and utilisation["train_reason"] == "no GPU"
    for axis, sizes in (("window_size", (16, 32)), ("batch_size", (2, 4))):
        assert [p["size"] for p in saved["scaling"][axis]["points"]] == list(sizes)
    for axis in ("window_size", "batch_size", "dataset_size"):
        figures = saved["scaling"][axis]
        assert math.isfinite(figures["time_exponent"]) and math.isfinite(figures["memory_exponent"])
        assert all(p["seconds"] > 0 and p["peak_bytes"] > 0 for p in figures["points"])
        assert (out / f"scaling_{axis}.png").stat().st_size > 10_000
    assert set(saved["suite"]["skipped"]) == {"compute", "graph", "model", "memory"}
    assert not (out / "breakdown.png").exists()  # an earlier run's plot is not passed off as this run's
    report = (out / "report.md").read_text()
    assert "## Sections not run" in report and "scaling_dataset_size.png" in report


def test_suite_runs_the_reused_benchmarks_and_the_compute_section(dataset, tmp_path, monkeypatch):
    """Wiring: each reused benchmark gets the mode's settings; their figures reach report.md."""
    from benchmarks import graph, memory, model

    calls = {}

    def fake(name, figures):
        def run(out, **kwargs):
            calls[name] = kwargs
            write_section(out, name, figures)
            return figures

        return run

    monkeypatch.setattr(graph, "run_graph_benchmark", fake("graph", {"temporal_speedup_vectorised_vs_naive": 3.0}))
    monkeypatch.setattr(model, "run_model_benchmark", fake("model", {"medium": {"lite_param_reduction": 0.5}}))
    monkeypatch.setattr(memory, "run_memory_benchmark", fake("memory", {"saving_vs_off": 0.25}))
    compute = types.ModuleType("benchmarks.compute")

    def measure_compute(out_dir, *, quick=True, device=None):
        calls["compute"] = {"quick": quick, "device": device}
        write_section(out_dir, "mfu", {"train": 0.1})
        write_section(out_dir, "infer_latency", {"latency_ms_p50": 2.0, "latency_ms_p95": 3.0})
        (out_dir / "breakdown.png").write_bytes(b"png")
        return {"mfu": {"train": 0.1}}

    compute.measure_compute = measure_compute
    monkeypatch.setitem(sys.modules, "benchmarks.compute", compute)
    settings = replace(
        TINY, sections=("graph", "model", "memory", "compute"), graph={"rounds": 1}, memory={"batch_size": 64}
    )

    config = dataset["write"]()
    results = suite.run_suite(tmp_path / "out", settings, config_path=config)

    assert calls["graph"] == {"config_path": config, "quick": True, "rounds": 1}
    assert calls["model"] == {"config_path": config, "rounds": 1, "epochs": 1}
    assert calls["memory"] == {"batch_size": 64}
    assert calls["compute"]["quick"] is True
    assert set(results["suite"]["skipped"]) == {"runtime", "scaling"} and results["mfu"]["train"] == 0.1
    assert str(tmp_path / "out" / "breakdown.png") in results["suite"]["plots"]
    rows = {r["key"]: r["verdict"] for r in guide_comparison(results)}
    assert rows["graph.temporal_speedup_vectorised_vs_naive"] == "met"
    assert rows["model.medium.lite_param_reduction"] == "met"
    assert rows["memory.saving_vs_off"] == "met"
    assert "| MFU, training (1 thread) | 0.1 |" in (tmp_path / "out" / "report.md").read_text()


def test_a_missing_config_fails_before_any_section_runs(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        suite.run_suite(tmp_path, replace(TINY, sections=("model",)), config_path=tmp_path / "missing.yaml")
    assert not (tmp_path / "results.json").exists()


def test_the_study_without_subcommand_runs_the_suite_and_prints_the_summary(tmp_path, monkeypatch):
    received = {}

    def fake_run_suite(out, settings, on_section, config_path=None):
        received.update(out=out, settings=settings)
        on_section("runtime", "start")
        on_section("runtime", "done")
        results = {**_hand_made_results(), "suite": {"plots": [], "skipped": {"compute": "not among this run's sections"}}}
        write_section(out, "train", results["train"])
        return results

    monkeypatch.setattr(suite, "run_suite", fake_run_suite)
    result = CliRunner().invoke(app, ["--full", "--out", str(tmp_path), "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert received["settings"].quick is False and received["settings"].threads == 2
    assert received["settings"].scaling == suite.FULL.scaling
    assert "training throughput" in result.output and "not met" in result.output
    assert "section compute not run: not among this run's sections" in result.output


def test_the_study_subcommands_stay():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("graph", "model", "memory", "compute", "scale", "--quick", "--full", "--out", "--config", "--steps"):
        assert name in result.output


def test_config_takes_no_subcommand(tmp_path):
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "c.yaml"), "graph", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no subcommand" in result.output

"""The command line end to end: train, evaluate, complete; user errors without tracebacks."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tgatunet.cli import app

runner = CliRunner()


def test_train_evaluate_complete(dataset):
    config = dataset["write"]()
    run_dir = dataset["dir"] / "run"
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "windows/s" in result.output

    result = runner.invoke(app, ["evaluate", "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "ridge" in result.output and "accuracy" in result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("model", "mean_fill", "ridge"):
        assert metrics["completion"][key]["mae"] > 0
    assert "accuracy" in metrics["classification"] and "windows_per_second" in metrics["train"]

    result = runner.invoke(app, ["complete", "--run", str(run_dir), "--output", str(dataset["dir"] / "out")])
    assert result.exit_code == 0, result.output
    assert (dataset["dir"] / "out" / "partial_completed.csv").is_file()


def test_user_errors_are_one_clear_line(dataset, tmp_path):
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "not found" in result.output and "Traceback" not in result.output

    result = runner.invoke(app, ["evaluate", "--run", str(tmp_path / "no_run")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output

    cfg = dict(dataset["config"])
    cfg["sources"] = [dict(s) for s in cfg["sources"]]
    cfg["sources"][0]["have"] = ["c", "d"]
    result = runner.invoke(app, ["train", "--config", str(dataset["write"](cfg))])
    assert result.exit_code == 2
    assert "'d'" in result.output and "full.csv" in result.output and "Traceback" not in result.output


def test_error_text_in_brackets_is_printed_as_is(dataset):
    cfg = dict(dataset["config"])
    cfg["sources"] = [dict(s) for s in cfg["sources"]]
    cfg["sources"][1]["have"] = ["a"]  # a common modality listed again: the message quotes a list
    result = runner.invoke(app, ["config", "validate", str(dataset["write"](cfg))])
    assert result.exit_code == 2
    assert "['a']" in result.output


def test_bench_measures_the_bundled_config_and_writes_what_to_change(tmp_path):
    from tgatunet.config import KEYS

    config = Path(__file__).resolve().parents[1] / "configs" / "basicmotions.yaml"
    result = CliRunner().invoke(app, ["bench", "--config", str(config), "--steps", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench.json").read_text())
    train = report["train"]
    assert train["windows_per_second"] > 0 and train["peak_memory_gb"] > 0
    assert set(train["step"]["share"]) == {"data", "forward", "backward", "optimizer"}
    assert abs(sum(train["step"]["share"].values()) - 1.0) < 1e-6 and report["verdict"]
    assert report["infer"]["windows_per_second"] > 0 and report["infer"]["latency_ms_p50"] > 0
    tried = [key for v in report["variants"] for key in v["keys"]]
    assert {"use_gradient_checkpoint", "batch_size", "use_optimized_model", "precision"} <= set(tried)
    # The snippet pastes into a config: only known keys, and exactly the recommended ones.
    snippet = yaml.safe_load((tmp_path / "recommended.yaml").read_text()) or {}
    assert set(snippet) <= set(KEYS)
    assert {k: v for k, v in snippet.items() if k != "devices"} == report["recommended"]
    assert "recommended:" in result.output

"""``python performance_test.py``, run as a user runs it: from the repository root and from another directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "performance_test.py"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # One thread: this machine's cores are shared with the rest of the test run.
    env = {**os.environ, "COLUMNS": "120", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # benchmarks/ must be found from the script's own folder
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_the_users_diagnosis_from_the_repository_root(tmp_path):
    out = tmp_path / "diagnosis"
    done = _run(["--config", "configs/basicmotions.yaml", "--steps", "4", "--out", str(out)], cwd=ROOT)
    report = json.loads((out / "bench.json").read_text())
    assert report["train"]["windows_per_second"] > 0 and report["verdict"]
    assert report["variants"] and report["infer"]["windows_per_second"] > 0
    recommended = yaml.safe_load((out / "recommended.yaml").read_text()) or {}
    assert set(recommended) <= set(report["recommended"]) | {"devices"}
    text = " ".join(done.stdout.split())
    assert "recommended:" in text and "bench.json" in text


def test_a_study_section_from_another_directory(tmp_path):
    # The default config (configs/basicmotions.yaml) is found from the repository, not the working directory.
    done = _run(["graph", "--quick", "--window-size", "50", "--rounds", "1", "--out", "out"], cwd=tmp_path)
    graph = json.loads((tmp_path / "out" / "results.json").read_text())["graph"]
    assert graph["predict"]["config"] == str(ROOT / "configs" / "basicmotions.yaml")
    assert graph["temporal_speedup_vectorised_vs_naive"] > 0 and graph["knn_speedup_disk_cache_vs_rebuild"] > 0
    assert sorted({row["window_size"] for row in graph["knn_seconds_per_window"]}) == [50, 128]
    assert (tmp_path / "out" / "graph_benchmark.png").stat().st_size > 10_000
    assert "written:" in done.stdout
    usage = _run(["--help"], cwd=tmp_path).stdout
    assert "Usage: performance_test.py" in usage and "--quick" in usage and "--config" in usage

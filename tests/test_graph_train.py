"""The knn graph in a run: training end to end, what goes through the cache, precomputation, CLI."""

import json

import torch
from typer.testing import CliRunner

from tgatunet.cli import app
from tgatunet.config import load_config
from tgatunet.data.prepared import prepare_data
from tgatunet.evaluate.evaluate import evaluate_run
from tgatunet.graph.cache import GraphCache, cache_summary
from tgatunet.graph.knn import KnnGraph
from tgatunet.evaluate.trained_run import build_graph_cache
from tgatunet.data.prepared import WindowIndex
from tgatunet.train.run import train


def _observed_windows(data):
    return data.gather(WindowIndex.concat(list(data.windows.values())))


def _knn_config(dataset, **extra):
    return {**dataset["config"], "graph_type": "knn", "graph_knn": 3, **extra}


def test_training_with_a_knn_graph_runs_end_to_end(dataset):
    cfg = _knn_config(dataset)
    run = train(dataset["write"](cfg), progress_bar=False)
    metrics = evaluate_run(run.root)
    assert 0.0 <= metrics["classification"]["accuracy"] <= 1.0
    assert isinstance(metrics["completion"]["model"]["mae"], float)

    # Training builds its own graphs (its hidden values never repeat); evaluation caches the
    # graphs of the test windows as it sees them, and a second evaluation reads them all back.
    first = metrics["graph_cache"]
    assert first["built"] > 0
    again = evaluate_run(run.root)["graph_cache"]
    assert again["built"] == 0 and again["disk_hits"] == first["lookups"]
    summary = cache_summary(run.graph_cache)
    assert summary["last_run"]["by"] == "evaluate" and summary["entries"] == first["built"]


def test_without_the_cache_every_graph_is_built(dataset):
    run = train(dataset["write"](_knn_config(dataset, use_graph_cache=False, epochs=1)), progress_bar=False)
    evaluate_run(run.root)
    assert "graph_cache" not in json.loads(run.metrics_path.read_text())
    assert not run.graph_cache.exists()


def test_precomputed_graphs_are_what_the_model_looks_up(dataset):
    path = dataset["write"](_knn_config(dataset, epochs=1))
    config = load_config(path)
    run_root = config.resolved_run_dir("config")
    report = build_graph_cache(config, run_root, workers=0)
    data = prepare_data(config)
    assert report.windows == sum(len(w) for w in data.windows.values()) == report.built
    again = build_graph_cache(config, run_root, workers=0)
    assert again.built == 0 and again.already_cached == report.windows

    values, observed = _observed_windows(data)
    cache = GraphCache(KnnGraph.from_config(config), report.directory, max_disk_bytes=None)
    got = cache.get(values, observed)
    assert cache.stats.disk_hits == len(values)
    want = KnnGraph.from_config(config).build(values, observed)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # A cache built before training is not mistaken for an earlier run, and --overwrite keeps it.
    run = train(path, progress_bar=False)
    train(path, overwrite=True, progress_bar=False)
    assert cache_summary(run.graph_cache)["entries"] >= report.windows


def test_cache_cli_builds_in_parallel_reports_and_clears(dataset):
    path = dataset["write"](_knn_config(dataset))
    runner = CliRunner()
    built = runner.invoke(app, ["cache", "build", "--config", str(path), "--workers", "2"])
    assert built.exit_code == 0, built.output
    cache_dir = dataset["dir"] / "run" / "graph_cache"
    entries = cache_summary(cache_dir)["entries"]
    assert entries > 0 and f"built {entries}" in built.output

    # The parallel build stored the same graphs as a build in this process would.
    config = load_config(path)
    values, observed = _observed_windows(prepare_data(config))
    cache = GraphCache(KnnGraph.from_config(config), cache_dir, max_disk_bytes=None)
    got = cache.get(values, observed)
    want = KnnGraph.from_config(config).build(values, observed)
    assert cache.stats.disk_hits == entries and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])

    info = runner.invoke(app, ["cache", "info", "--dir", str(cache_dir)])
    assert info.exit_code == 0 and f"entries: {entries}" in info.output and "hit rate 0.0%" in info.output
    cleared = runner.invoke(app, ["cache", "clear", "--config", str(path)])
    assert cleared.exit_code == 0 and f"removed {entries} entries" in cleared.output
    assert cache_summary(cache_dir)["entries"] == 0


def test_cache_cli_errors_are_clear(dataset):
    runner = CliRunner()
    neither = runner.invoke(app, ["cache", "info"])
    assert neither.exit_code == 2 and "--config" in neither.output
    temporal = runner.invoke(app, ["cache", "build", "--config", str(dataset["write"]())])
    assert temporal.exit_code == 2 and "graph_type: knn" in temporal.output

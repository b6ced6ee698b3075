"""Evaluation on the test blocks: completion against baselines, and classification.

Completion is scored where the truth is known. For every channel set that some
source *needs*, each other source that *has* some of those channels plays the
needing source: its test windows get exactly those channels hidden, the model
completes them, and the completed values are scored against the hidden truth.
Two baselines are scored on exactly the same windows and values:

* **mean fill**: each channel's training mean;
* **ridge**: linear regression from the visible channels at lags
  ``-ridge_lags .. +ridge_lags`` (edge-padded inside the window), fitted on the
  training windows.

All completion figures are in normalised units (z-scores of the training split).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix, multiclass_f1_score

from tgatunet.data.prepared import PreparedData, WindowIndex
from tgatunet.errors import RunError
from tgatunet.plots import plot_completions, plot_confusion
from tgatunet.apply.predict import TrainedRun, load_run
from tgatunet.train.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    """Hide ``hidden`` (``[C]`` bool) in the windows of source ``source``, as source(s) ``needed_by`` lack them."""

    source: int
    hidden: np.ndarray
    needed_by: list[str]


def completion_scenarios(data: PreparedData) -> list[Scenario]:
    """Every (having source, hidden channel set) pair that evaluation can score."""
    found: dict[tuple[int, tuple[bool, ...]], list[str]] = {}
    for s_need, need in enumerate(data.source_need.numpy()):
        if not need.any():
            continue
        for s_have in range(len(data.source_names)):
            lo, hi = data.row_offsets[s_have], data.row_offsets[s_have + 1]
            has = data.observed[lo:hi].any(axis=0)
            hidden = need & has
            if s_have != s_need and hidden.any():
                found.setdefault((s_have, tuple(hidden.tolist())), []).append(data.source_names[s_need])
    return [Scenario(s, np.array(h), names) for (s, h), names in found.items()]


def lagged(features: np.ndarray, lags: int) -> np.ndarray:
    """``[W, T, F]`` -> ``[W, T, F * (2 * lags + 1)]`` with the values at steps ``t - lags .. t + lags``."""
    T = features.shape[1]
    padded = np.pad(features, ((0, 0), (lags, lags), (0, 0)), mode="edge")
    return np.concatenate([padded[:, i : i + T] for i in range(2 * lags + 1)], axis=-1)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge with an unpenalised intercept: ``x [N, F], y [N, K] -> (weights [F, K], bias [K])``."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    weights = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return weights, y_mean - x_mean @ weights


def ridge_baseline(
    values: np.ndarray,
    observed: np.ndarray,
    hidden: np.ndarray,
    features: np.ndarray,
    lags: int,
    alpha: float,
    test_values: np.ndarray,
) -> np.ndarray:
    """Ridge predictions ``[W, T, H]`` of the ``hidden`` channels (``[C]`` bool) from the ``features`` channels.

    Fitted on the training windows ``values, observed [W', T, C]`` that observe the hidden channels
    throughout and the feature channels somewhere.
    """
    needed = hidden | features
    usable = observed[..., needed].all(axis=-1).any(axis=1) & observed[..., hidden].all(axis=(1, 2))
    if not usable.any():
        raise RunError("the ridge baseline has no training window observing both the hidden and the visible channels.")
    x = lagged(values[usable][..., features], lags).reshape(-1, int(features.sum()) * (2 * lags + 1))
    y = values[usable][..., hidden].reshape(-1, int(hidden.sum()))
    weights, bias = fit_ridge(x.astype(np.float64), y.astype(np.float64), alpha)
    x_test = lagged(test_values[..., features], lags)
    return (x_test @ weights + bias).astype(np.float32)


def _scores(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = prediction - truth
    ok = np.ptp(prediction) > 0 and np.ptp(truth) > 0  # Pearson r is undefined for a constant
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "pearson": float(np.corrcoef(prediction, truth)[0, 1]) if ok else 0.0,
    }


def _summarise(per_channel: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Average over completed channels, plus the per-channel figures."""
    keys = ("mae", "rmse", "pearson")
    mean = {k: float(np.mean([v[k] for v in per_channel.values()])) for k in keys}
    return {**mean, "per_channel": per_channel}


def evaluate_completion(trained: TrainedRun, plot_dir: Path | None = None) -> dict[str, Any]:
    """Completion metrics of the model and both baselines on the test windows."""
    data, config = trained.data, trained.config
    test = data.windows["test"]
    scenarios = completion_scenarios(data)
    if not scenarios:
        return {"note": "no source needs a channel that another source has: nothing to score"}

    train_vals, train_obs = (t.numpy() for t in data.gather(data.windows["train"]))
    collected: dict[str, dict[str, list[np.ndarray]]] = {}
    described = []
    for n, sc in enumerate(scenarios):
        index = test.subset(test.sources == sc.source)
        if len(index) == 0:
            continue
        values, observed = data.gather(index)
        hidden_mask = torch.from_numpy(sc.hidden)[None, None, :]
        recon, _ = trained.module.predict_windows(values, observed & ~hidden_mask)
        vals, obs = values.numpy(), observed.numpy()
        features = obs.any(axis=(0, 1)) & ~sc.hidden
        ridge = ridge_baseline(
            train_vals, train_obs, sc.hidden, features, config.evaluation.ridge_lags, config.evaluation.ridge_alpha, vals
        )
        for k, c in enumerate(np.flatnonzero(sc.hidden)):
            truth_at = obs[..., c]
            train_mean = float(train_vals[..., c][train_obs[..., c]].mean())
            name = data.channels[c]
            bucket = collected.setdefault(name, {"truth": [], "model": [], "mean_fill": [], "ridge": []})
            bucket["truth"].append(vals[..., c][truth_at])
            bucket["model"].append(recon[..., c][truth_at])
            bucket["mean_fill"].append(np.full(int(truth_at.sum()), train_mean, np.float32))
            bucket["ridge"].append(ridge[..., k][truth_at])
        described.append(
            {
                "source": data.source_names[sc.source],
                "hidden": [data.channels[c] for c in np.flatnonzero(sc.hidden)],
                "needed_by": sc.needed_by,
                "windows": len(index),
            }
        )
        if plot_dir is not None and n == 0:
            _plot_examples(data, index, vals, recon, ridge, sc.hidden, plot_dir / "completion_examples.png")

    if not collected:
        return {"note": "no test window of a source that has a needed channel: nothing to score"}
    result: dict[str, Any] = {}
    for method in ("model", "mean_fill", "ridge"):
        per_channel = {
            name: _scores(np.concatenate(b[method]), np.concatenate(b["truth"])) for name, b in collected.items()
        }
        result[method] = _summarise(per_channel)
    result["scenarios"] = described
    result["units"] = "normalised (z-score of the training split)"
    return result


def _plot_examples(
    data: PreparedData,
    index: WindowIndex,
    values: np.ndarray,
    recon: np.ndarray,
    ridge: np.ndarray,
    hidden: np.ndarray,
    out: Path,
) -> None:
    """One test window per class (up to four) with its hidden channels."""
    picks = []
    for label in np.unique(index.labels):
        picks.append(int(np.flatnonzero(index.labels == label)[0]))
    picks = picks[:4]
    cols = np.flatnonzero(hidden)
    titles = [
        f"{index.blocks[i]}\n{data.class_names[index.labels[i]] if index.labels[i] >= 0 else ''}" for i in picks
    ]
    plot_completions(
        values[picks][..., cols], recon[picks][..., cols], ridge[picks], [data.channels[c] for c in cols], titles, out
    )


def evaluate_classification(trained: TrainedRun, plot_dir: Path | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1 and confusion matrix over labelled test windows, as observed."""
    data = trained.data
    test = data.windows["test"]
    test = test.subset(test.labels >= 0)
    if len(test) == 0:
        return {"note": "no labelled test window"}
    values, observed = data.gather(test)
    _, logits = trained.module.predict_windows(values, observed)
    pred = torch.from_numpy(logits.argmax(axis=1))
    target = torch.from_numpy(test.labels)
    k = len(data.class_names)
    matrix = multiclass_confusion_matrix(pred, target, num_classes=k).numpy()
    per_source = {
        name: float((pred.numpy() == test.labels)[test.sources == s].mean())
        for s, name in enumerate(data.source_names)
        if (test.sources == s).any()
    }
    votes = {}
    for block in np.unique(test.blocks):
        at = test.blocks == block
        votes[block] = np.bincount(pred.numpy()[at], minlength=k).argmax() == np.bincount(test.labels[at]).argmax()
    if plot_dir is not None:
        plot_confusion(matrix, data.class_names, plot_dir / "confusion_matrix.png")
    return {
        "accuracy": float((pred == target).float().mean()),
        "macro_f1": float(multiclass_f1_score(pred, target, num_classes=k, average="macro")),
        "per_source_accuracy": per_source,
        "block_vote_accuracy": float(np.mean(list(votes.values()))),
        "windows": len(test),
        "class_names": data.class_names,
        "confusion_matrix": matrix.tolist(),
    }


def evaluate_run(run_dir: str | Path, compile: bool | None = None) -> dict[str, Any]:
    """Evaluate a trained run on its test blocks; results go to ``metrics.json`` and ``plots/``.

    ``compile``: run the model through ``torch.compile`` (None: as the run's config says).
    """
    run = RunDir(Path(run_dir))
    trained = load_run(run, compile=compile)
    if len(trained.data.windows["test"]) == 0:
        raise RunError(f"run '{run.root}' has no test window: set test_fraction > 0 or mark test blocks in split_col.")
    completion = evaluate_completion(trained, run.plots)
    classification = evaluate_classification(trained, run.plots)
    run.update_metrics("completion", completion)
    run.update_metrics("classification", classification)
    cache = trained.module.graph_cache
    if cache is not None:
        cache.save_stats("evaluate")
        run.update_metrics("graph_cache", {"location": str(cache.directory), **cache.stats.to_dict()})
    return run.read_metrics()

"""Evaluation on the test blocks: completion against baselines (:mod:`tgatunet.evaluate.completion`), and classification."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix, multiclass_f1_score

from tgatunet.evaluate.baselines import LaggedRidge
from tgatunet.data.hiding import PATTERNS, hide, need_sets
from tgatunet.evaluate.completion import evaluate_patterns, hidden_values, model_bounds
from tgatunet.evaluate.trained_run import TrainedRun, load_run
from tgatunet.infer.stream import WindowModel, through_windows
from tgatunet.data.normalize import ChannelStats
from tgatunet.data.prepared import PreparedData
from tgatunet.data.windows import window_span, window_starts
from tgatunet.errors import RunError
from tgatunet.plots import plot_completions, plot_confusion, plot_intervals
from tgatunet.train.objective import validation_inputs
from tgatunet.train.temperature import expected_calibration_error
from tgatunet.infer.rundir import RunDir

log = logging.getLogger(__name__)

BASELINES = ("saits",)


def _window_model(trained: TrainedRun, predictor=None) -> WindowModel:
    """The run's model (or a baseline ``predictor`` of windows, with no classes) on the normalised data."""
    C = len(trained.data.channels)
    model = trained.model.windowed(ChannelStats(np.zeros(C), np.ones(C)))
    return model if predictor is None else replace(model, predictor=predictor, classes=["-"])


def training_recordings(data: PreparedData) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(data.values[lo:hi], data.observed[lo:hi]) for _, lo, hi in data.split_segments("train")]


def training_windows(data: PreparedData, stride: int) -> np.ndarray:
    """``[W, T, C]`` training windows at ``stride``, normalised, NaN where not observed (what SAITS learns from)."""
    bounds = np.array([(lo, hi) for _, lo, hi in data.split_segments("train")], dtype=np.int64).reshape(-1, 2)
    starts, _ = window_starts(bounds, window_span(data.window_size, data.downsample), stride)
    rows = data.rows(starts)
    return np.where(data.observed[rows], data.values[rows], np.nan)


def validation_windows(trained: TrainedRun) -> tuple[np.ndarray, np.ndarray]:
    """``(x, x_ori)`` ``[V, T, C]``: the validation windows with the values hidden that select the run (NaN in ``x``),
    batch by batch as its validation loader gave them, and with every observed value (``x_ori``)."""
    model, data = trained.model, trained.data
    values, observed = data.gather(data.windows["val"])
    training = model.config.training  # as the checkpoint has it: batch_size resolved (a number, also after auto)
    size = training.batch_size
    visible = torch.cat([
        validation_inputs(observed[lo : lo + size].to(model.device), None, model.patterns.to(model.device), training, i)[0].cpu()
        for i, lo in enumerate(range(0, len(values), size))
    ]) if len(values) else observed
    return np.where(visible, values, np.nan), np.where(observed, values, np.nan)


def _baseline_models(trained: TrainedRun, baselines: tuple[str, ...]) -> tuple[dict[str, WindowModel], dict[str, Any]]:
    """SAITS trained both ways (:mod:`tgatunet.evaluate.saits`), as window models, with what their training took."""
    models: dict[str, WindowModel] = {}
    trainings: dict[str, Any] = {}
    if "saits" in baselines:
        from tgatunet.evaluate.saits import INSTALL, Hiding, SaitsImputer, available

        if not available():
            log.warning("the SAITS baseline is skipped: PyPOTS is not installed. Add it with: %s", INSTALL)
            return models, trainings
        config, model = trained.config, trained.model
        train, val = training_windows(trained.data, config.data.stride), validation_windows(trained)
        hidings = {"saits_default": None, "saits_task": Hiding.of_training(model.config.training, model.patterns)}
        for name, hiding in hidings.items():
            imputer = SaitsImputer(train, val, hiding, config.evaluation.saits_epochs, config.evaluation.saits_patience,
                                   config.training.seed, model.device)

            models[name], trainings[name] = _window_model(trained, imputer), imputer.summary()
    return models, trainings


def strongest_peer(result: dict[str, Any]) -> dict[str, Any]:
    """Per pattern, the SAITS variant with the lower MAE and the model's MAE as a ratio of it (below 1: ahead)."""
    peers = {}
    for pattern in PATTERNS:
        scored = {m: r["mae"] for m, r in result.get(pattern, {}).items() if m.startswith("saits")}
        if scored and "model" in result[pattern]:
            best = min(scored, key=scored.get)
            peers[pattern] = {"method": best, "mae": scored[best], "model_ratio": result[pattern]["model"]["mae"] / scored[best]}
    return peers


def evaluate_completion(trained: TrainedRun, plot_dir: Path | None = None, baselines: tuple[str, ...] = ()) -> dict[str, Any]:
    """Completion scores of the model and the baselines for every pattern, as ``metrics.json`` records them."""
    data, config = trained.data, trained.config
    ridge = LaggedRidge(training_recordings(data), config.evaluation.ridge_lags, config.evaluation.ridge_alpha)
    window_methods, trainings = _baseline_models(trained, baselines)
    result = evaluate_patterns(data, _window_model(trained), ridge, config, window_methods)
    result["seconds"].update({f"{name}_training": t["seconds"] for name, t in trainings.items()})
    if trainings:
        result["baseline_training"] = trainings
        result["strongest_peer"] = strongest_peer(result)
    result["scenarios"] = [{"source": data.source_names[s], "hidden": [data.channels[c] for c in np.flatnonzero(h)], "needed_by": names}
                           for s, h, names in need_sets(data)]
    result["units"] = "normalised (z-score of the training split)"
    if "need" in result:  # the need pattern's figures also at top level, as earlier metrics.json files had them
        result.update({method: result["need"][method] for method in ("model", "mean_fill", "ridge")})
        if plot_dir is not None:
            _plot_examples(trained, ridge, plot_dir / "completion_examples.png")
    else:
        result["note"] = "no source needs a channel that another source has: the need pattern has nothing to score"
    return result


def _plot_examples(trained: TrainedRun, ridge: LaggedRidge, out: Path) -> None:
    """The first test recordings (up to four) of the need pattern: their hidden channels, true and completed; and
    (``completion_intervals.png``) the completion of the liveliest need recording with its interval band."""
    data, e = trained.data, trained.config.evaluation
    every = hide(data, "need", e.eval_gap_max, e.eval_point_prob, e.eval_seed)
    recordings = every[:4]
    if not recordings:
        return
    length = min(len(r.values) for r in recordings)
    window_model = _window_model(trained)
    finished = through_windows(window_model, hidden_values(recordings), spread=window_model.intervals is not None)
    cols = np.flatnonzero(recordings[0].hidden.any(axis=0))
    stack = lambda arrays: np.stack([a[:length][:, cols] for a in arrays])  # noqa: E731
    plot_completions(stack([r.values for r in recordings]), stack([f.completed for f in finished]),
                     stack([ridge(r.values, r.visible) for r in recordings]), [data.channels[c] for c in cols],
                     [f"{data.source_names[r.source]} #{i}" for i, r in enumerate(recordings)], out)
    if window_model.intervals is not None:
        lively = max(every, key=lambda r: r.values[:, cols].std())
        shown = through_windows(window_model, hidden_values([lively]), spread=True)
        lower, upper = model_bounds(shown, window_model, e.interval_coverage)[0]
        plot_intervals(lively.values[:, cols], shown[0].completed[:, cols], lower[:, cols], upper[:, cols],
                       [data.channels[c] for c in cols], e.interval_coverage, out.with_name("completion_intervals.png"))


def evaluate_classification(trained: TrainedRun, plot_dir: Path | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1, confusion matrix and the calibration error of the probabilities (ECE, with the run's
    temperature and without) over labelled test windows, as observed."""
    data = trained.data
    test = data.windows["test"]
    test = test.subset(test.labels >= 0)
    if len(test) == 0:
        return {"note": "no labelled test window"}
    values, observed = data.gather(test)
    _, logits, _ = trained.model.predict_windows(values, observed)
    pred = torch.from_numpy(logits.argmax(axis=1))
    target = torch.from_numpy(test.labels)
    k = len(data.class_names)
    matrix = multiclass_confusion_matrix(pred, target, num_classes=k).numpy()
    per_source = {name: float((pred.numpy() == test.labels)[test.sources == s].mean())
                  for s, name in enumerate(data.source_names) if (test.sources == s).any()}
    votes = {}
    for block in np.unique(test.blocks):
        at = test.blocks == block
        votes[block] = np.bincount(pred.numpy()[at], minlength=k).argmax() == np.bincount(test.labels[at]).argmax()
    if plot_dir is not None:
        plot_confusion(matrix, data.class_names, plot_dir / "confusion_matrix.png")
    return {"accuracy": float((pred == target).float().mean()),
            "macro_f1": float(multiclass_f1_score(pred, target, num_classes=k, average="macro")),
            "per_source_accuracy": per_source, "block_vote_accuracy": float(np.mean(list(votes.values()))),
            "windows": len(test), "class_names": data.class_names, "confusion_matrix": matrix.tolist(),
            "ece": expected_calibration_error(torch.from_numpy(logits), target), "temperature": trained.model.temperature,
            "ece_unscaled": expected_calibration_error(torch.from_numpy(logits) * trained.model.temperature, target)}


def evaluate_run(run_dir: str | Path, compile: bool | None = None, baselines: tuple[str, ...] = (),
                 allow_changed_data: bool = False) -> dict[str, Any]:
    """Evaluate a trained run on its test blocks; results go to ``metrics.json`` and ``plots/``.

    ``compile``: run the model through ``torch.compile`` (None: as the run's config says).
    ``baselines``: extra baselines to train and score (:data:`BASELINES`; ``saits`` needs PyPOTS).
    ``allow_changed_data``: score although a source file changed since the run trained.
    """
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise RunError(f"unknown baseline(s) {unknown}; the ones tgatunet can train are {list(BASELINES)}.")
    run = RunDir(Path(run_dir))
    trained = load_run(run, compile=compile, allow_changed_data=allow_changed_data)
    if len(trained.data.windows["test"]) == 0:
        raise RunError(f"run '{run.root}' has no test window: set test_fraction > 0 or mark test blocks in split_col.")
    completion = evaluate_completion(trained, run.plots, tuple(baselines))
    classification = evaluate_classification(trained, run.plots)
    run.note_written(run.plots / "completion_examples.png", run.plots / "completion_intervals.png", run.plots / "confusion_matrix.png")
    run.update_metrics("completion", completion)
    run.update_metrics("classification", classification)
    cache = trained.model.graph_cache
    if cache is not None:
        cache.save_stats("evaluate")
        run.update_metrics("graph_cache", {"location": str(cache.directory), **cache.stats.to_dict()})
    return run.read_metrics()

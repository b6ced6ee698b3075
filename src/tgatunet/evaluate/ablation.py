"""Ablation of the dynamic need update: the same run with the update flipped, scored the same way.

``tgatunet evaluate --run RUN --ablation need-update`` trains the counterpart of ``RUN``: the same config (same data,
splits, seed, epochs, patience) with ``dynamic_need_update`` flipped, in ``RUN/ablation/need_update_on`` or
``RUN/ablation/need_update_off``; evaluates both runs on the same test windows; and writes both sets of figures to
``RUN/metrics.json`` as ``need_update.with`` and ``need_update.without``, with which one is better on each figure,
whichever that is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from tgatunet.errors import RunError
from tgatunet.evaluate.evaluate import evaluate_run
from tgatunet.train.run import train
from tgatunet.files import atomic_write_text
from tgatunet.infer.rundir import RunDir

log = logging.getLogger(__name__)


def _figures(run: RunDir, metrics: dict[str, Any]) -> dict[str, Any]:
    completion, classification = metrics.get("completion", {}), metrics.get("classification", {})
    if "model" not in completion or "accuracy" not in classification:
        raise RunError(f"run '{run.root}' has no completion or classification score to compare "
                       f"({completion.get('note') or classification.get('note')}).")
    train = metrics.get("train", {})
    return {"completion_mae": completion["model"]["mae"], "accuracy": classification["accuracy"], "macro_f1": classification["macro_f1"],
            "epochs_completed": train.get("epochs_completed"), "best_val_mae": train.get("best_val_mae"), "run": str(run.root)}


def _better(with_: float, without: float, lower_is_better: bool) -> str:
    if with_ == without:
        return "tie"
    return "with" if (with_ < without) == lower_is_better else "without"


def train_counterpart(run: RunDir, changes: dict[str, Any], folder: Path, progress_bar: bool = False) -> RunDir:
    """Train ``run``'s config with ``changes`` into ``folder`` (a fresh run; its config file beside it)."""
    raw = {**run.read_config().to_dict(), **changes, "run_dir": str(folder)}
    config_path = folder.with_suffix(".yaml")
    atomic_write_text(config_path, yaml.safe_dump(raw, sort_keys=False))
    log.info("training %s with %s", folder, changes)
    return train(config_path, overwrite=True, run_dir=folder, progress_bar=progress_bar)


def need_update_ablation(run_dir: str | Path, progress_bar: bool = False) -> dict[str, Any]:
    """Train and evaluate the counterpart of ``run_dir`` with ``dynamic_need_update`` flipped; compare.

    ``run_dir`` must be trained; its own scores are read from its ``metrics.json`` (it is
    evaluated first if they are missing). Returns the ``need_update`` section written there.
    """
    run = RunDir(Path(run_dir))
    run.require_trained()
    config = run.read_config()
    flipped = not config.training.dynamic_need_update
    counterpart_dir = run.root / "ablation" / f"need_update_{'on' if flipped else 'off'}"
    counterpart = train_counterpart(run, {"dynamic_need_update": flipped}, counterpart_dir, progress_bar)
    _, splits, info = run.read_data()
    _, other_splits, other_info = counterpart.read_data()
    if other_splits != splits or other_info["stats"] != info["stats"]:
        raise RunError(f"the counterpart run '{counterpart.root}' drew other splits or normalisation than '{run.root}': "
                       "the source files changed since the run was trained. Retrain the run first.")

    metrics = run.read_metrics()
    if "completion" not in metrics or "classification" not in metrics:
        metrics = evaluate_run(run.root)
    figures = {config.training.dynamic_need_update: _figures(run, metrics), flipped: _figures(counterpart, evaluate_run(counterpart.root))}
    run.note_written(counterpart.root)  # a run inside this one: --overwrite of this one removes it
    result = {
        "with": figures[True],
        "without": figures[False],
        "better": {"completion_mae": _better(figures[True]["completion_mae"], figures[False]["completion_mae"], True),
                   "accuracy": _better(figures[True]["accuracy"], figures[False]["accuracy"], False)},
        "same"
: {"seed": config.training.seed, "epochs": config.training.epochs, "patience": config.training.patience},
        "need_update": {"every": config.training.need_update_every, "start": config.training.need_update_start},
        "units": "completion_mae in normalised units (z-score of the training split), test blocks",
    }
    run.update_metrics("need_update", result)
    return result

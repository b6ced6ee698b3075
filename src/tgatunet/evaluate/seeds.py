"""The same run trained with other seeds, every figure as mean and spread: ``tgatunet evaluate --seeds N``.

A seed decides the initialisation, the hidden values and window offsets of every step and the shuffling; the block
split stays the run's (``split_seed``), and evaluation hides the same values in every run (``eval_seed``). Seed
``s + k`` (``k = 1 .. N - 1``, ``s`` the run's) is trained into ``RUN/seeds/seed_<s+k>``; the run itself is the first.
All are evaluated the same way, and ``metrics.json`` records, under ``seeds``, each completion figure
(``completion.<pattern>.<method>.{mae,rmse,pearson}``) and classification figure as ``{mean, std, values}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tgatunet.evaluate.ablation import train_counterpart
from tgatunet.data.hiding import PATTERNS
from tgatunet.evaluate.evaluate import evaluate_run
from tgatunet.infer.rundir import RunDir

CLASSIFICATION = ("accuracy", "macro_f1", "block_vote_accuracy")


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, standard deviation (sample, ddof 1; 0 for one value) and the values."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": [float(v) for v in values]}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every figure found in all of ``runs``' metrics, as :func:`spread`."""
    completion: dict[str, Any] = {}
    for pattern in PATTERNS:
        methods = set.intersection(*(set(m["completion"].get(pattern, {})) for m in runs))
        for method in sorted(methods):
            completion.setdefault(pattern, {})[method] = {key: spread([m["completion"][pattern][method][key] for m in runs])
                                                          for key in ("mae", "rmse", "pearson")}
        if all(pattern in m["completion"].get("intervals", {}) for m in runs):
            intervals = [m["completion"]["intervals"][pattern] for m in runs]
            completion.setdefault("intervals", {})[pattern] = {
                **{who: {key: spread([i[who][key] for i in intervals]) for key in ("coverage", "width", "interval_score")}
                   for who in ("model", "reference")},
                "score_ratio": spread([i["score_ratio"] for i in intervals])}

    classification = {key: spread([m["classification"][key] for m in runs]) for key in CLASSIFICATION
                      if all(key in m["classification"] for m in runs)}
    return {"completion": completion, "classification": classification}


def seed_repeats(run_dir: str | Path, seeds: int, baselines: tuple[str, ...] = (), progress_bar: bool = False) -> dict[str, Any]:
    """Evaluate ``run_dir`` and ``seeds - 1`` retrainings with the next seeds; returns the ``seeds`` section."""
    run = RunDir(Path(run_dir))
    run.require_trained()
    config = run.read_config()
    first = config.training.seed
    same_split = {"split_seed": first if config.data.split_seed is None else config.data.split_seed}
    metrics = [evaluate_run(run.root, baselines=baselines)]
    roots = [str(run.root)]
    for seed in range(first + 1, first + seeds):
        other = train_counterpart(run, {"seed": seed, **same_split}, run.root / "seeds" / f"seed_{seed}", progress_bar)
        metrics.append(evaluate_run(other.root, baselines=baselines))
        run.note_written(other.root)  # a run inside this one: --overwrite of this one removes it
        roots.append(str(other.root))
    result = {"seeds": list(range(first, first + seeds)), "runs": roots, **aggregate(metrics)}
    run.update_metrics("seeds", result)
    return result

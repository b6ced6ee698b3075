"""The quality benchmark: completion and classification on real recordings of people the model never saw.

For each dataset (:mod:`benchmarks.quality.datasets`) the model is trained as a user
trains it (``tgatunet train``, the dataset's config, seed 7) and scored as a user scores
it (``tgatunet evaluate --seeds N --baselines saits``): the run and its retrainings with
the next seeds, each beside SAITS trained both ways on the same training windows
(PyPOTS's default masking and the task's own hiding, each stopped early on the same
validation values). Every command runs in its own process. The figures are means and
sample standard deviations over the seeds of the need / gaps / points MAE of each method,
window accuracy, and training seconds; the model's MAE is compared with the better
SAITS variant per pattern, and its training time with that variant's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tgatunet.evaluate.seeds import aggregate
from tgatunet.infer.rundir import RunDir

from benchmarks.quality.datasets import DATASETS, prepare
from benchmarks.results import write_section
from benchmarks.runs import tgatunet, write_variant

PATTERNS = ("need", "gaps", "points")
PEERS = ("saits_default", "saits_task")
# The targets of the benchmark: the model's MAE as a share of the better SAITS variant's, per pattern.
TARGET_RATIO = {"need": 0.95, "gaps": 1.0, "points": 1.0}


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": [float(v) for v in values]}


def score_dataset(name: str, config: Path, out: Path, seeds: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train, evaluate over ``seeds`` seeds with both SAITS variants; the dataset's figures."""
    if overrides:
        config = write_variant(config, "config_variant", overrides)
    run = out / "runs" / name
    tgatunet("train", "--config", str(config), "--run-dir", str(run), "--overwrite")
    tgatunet("evaluate", "--run", str(run), "--seeds", str(seeds), "--baselines", "saits")
    metrics = json.loads((run / "metrics.json").read_text())
    # One seed: evaluate writes no seeds section; the run is the only seed.
    runs = metrics["seeds"]["runs"] if seeds > 1 else [str(run)]
    per_seed = [json.loads((Path(r) / "metrics.json").read_text()) for r in runs]
    figures = aggregate(per_seed)
    completion = figures["completion"]
    result: dict[str, Any] = {
        "dataset": DATASETS[name].summary,
        "seeds": metrics["seeds"]["seeds"] if seeds > 1 else [RunDir(run).read_config().training.seed],
        "windows": metrics["train"]["windows"],
        "mae": {p: {m: completion[p][m]["mae"] for m in completion[p]} for p in PATTERNS if p in completion},
        "accuracy": figures["classification"].get("accuracy"),
        "training_seconds": {
            "model": _spread([m["train"]["train_seconds"] for m in per_seed]),
            **{peer: _spread([m["completion"]["seconds"][f"{peer}_training"] for m in per_seed]) for peer in PEERS},
        },
        "peer_epochs": {peer: [m["completion"]["baseline_training"][peer]["epochs"] for m in per_seed] for peer in PEERS},
        "model_stopped_by": [m["train"].get("stopped_by") for m in per_seed],
    }
    result["versus_better_saits"] = compare(result)
    return result


def compare(result: dict[str, Any]) -> dict[str, Any]:
    """Per pattern: the better SAITS variant (lower mean MAE), the model's MAE ratio to it and whether the target
    is met; and the model's training time as a ratio of that variant's on the need pattern."""
    out: dict[str, Any] = {}
    for pattern, methods in result["mae"].items():
        peer = min(PEERS, key=lambda p: methods[p]["mean"])
        ratio = methods["model"]["mean"] / methods[peer]["mean"]
        out[pattern] = {"peer": peer, "ratio": ratio, "target": TARGET_RATIO[pattern], "met": ratio <= TARGET_RATIO[pattern]}
    if "need" in out:
        peer = out["need"]["peer"]
        out["time_ratio"] = result["training_seconds"]["model"]["mean"] / result["training_seconds"][peer]["mean"]
    return out


def run_quality(
    out: Path, names: list[str], seeds: int, wheel_dir: Path, overrides: dict[str, Any] | None = None,
    on_dataset: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Every dataset in ``names``; the ``quality`` section of ``OUT/results.json`` and ``OUT/quality.md``."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"seeds": seeds, "overrides": overrides or {}, "datasets": {}}
    for name in names:
        if on_dataset:
            on_dataset(name, "start")
        config = prepare(name, out / "data", wheel_dir)
        results["datasets"][name] = score_dataset(name, config, out, seeds, overrides or {})
        write_section(out, "quality", results)  # each finished dataset kept, should a later one fail
        if on_dataset:
            on_dataset(name, "done")
    (out / "quality.md").write_text(markdown_table(results))
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """The table docs/PERFORMANCE.md shows: MAE mean ± std per dataset, pattern and method; accuracy; times."""
    lines = ["| dataset | pattern | tgatunet | SAITS (PyPOTS default) | SAITS (task hiding) | tgatunet / better SAITS |",
             "|---|---|---|---|---|---|"]
    for name, r in results["datasets"].items():
        for pattern, methods in r["mae"].items():
            cells = [f"{methods[m]['mean']:.3f} ± {methods[m]['std']:.3f}" for m in ("model", *PEERS)]
            v = r["versus_better_saits"][pattern]
            lines.append(f"| {name} | {pattern} | {' | '.join(cells)} | {v['ratio']:.3f} ({'met' if v['met'] else 'not met'}, "
                         f"≤ {v['target']}) |")
    lines += ["", "| dataset | training windows | accuracy | tgatunet training s | SAITS default s | SAITS task s | "
              "time / better SAITS (need) |", "|---|---|---|---|---|---|---|"]
    for name, r in results["datasets"].items():
        t = r["training_seconds"]
        acc = r["accuracy"]
        lines.append(f"| {name} | {r['windows']['train']} | {acc['mean']:.3f} ± {acc['std']:.3f} | "
                     + " | ".join(f"{t[m]['mean']:.0f}" for m in ("model", *PEERS))
                     + f" | {r['versus_better_saits'].get('time_ratio', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"

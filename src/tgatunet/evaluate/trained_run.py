"""A trained run with its own data (its sources, normalised and split as when it trained): what evaluation scores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tgatunet.config import Config
from tgatunet.data.prepared import PreparedData, WindowIndex, prepare_data
from tgatunet.errors import RunError
from tgatunet.graph.cache import cache_dir
from tgatunet.graph.knn import KnnGraph
from tgatunet.graph.precompute import PrecomputeReport, precompute_graphs
from tgatunet.infer.rundir import RunDir
from tgatunet.infer.trained import TrainedModel, load_trained
from tgatunet.train.prepare import source_hashes


def run_data(run: RunDir, config: Config, allow_changed_data: bool = False) -> PreparedData:
    """The sources of ``config`` prepared with the normalisation and splits of ``run`` (when it has them).

    A source file that changed since the run trained is refused (its test blocks would not be the ones
    the run held out, and its scores would mean nothing) unless ``allow_changed_data``."""
    if not run.data_path.is_file():
        return prepare_data(config)
    stats, splits, info = run.read_data()
    saved = info.get("source_sha256", {})
    changed = [name for name, digest in source_hashes(config).items() if saved.get(name) not in (None, digest)]
    if changed and not allow_changed_data:
        raise RunError(f"source(s) {changed} of run '{run.root}' changed since it trained (their SHA-256 differs from data.json), "
                       "so its test blocks and normalisation no longer describe them. Retrain, or score anyway with "
                       "--allow-changed-data (in Python allow_changed_data=True).")
    try:
        data = prepare_data(config, stats=stats, block_splits=splits)
    except KeyError as err:
        raise RunError(f"the sources of run '{run.root}' hold block {err} that the run never saw (its block ids changed); "
                       "retrain on the current data.") from None
    for key, now in [("channels", data.channels), ("class_names", data.class_names)]:
        if info[key] != now:
            raise RunError(f"the sources changed since run '{run.root}' was trained: {key} were {info[key]}, now {now}. "
                           "Retrain on the current data.")
    return data


@dataclass
class TrainedRun:
    """A run's config, its data (with the run's splits and normalisation) and its model: what evaluation scores."""

    run: RunDir
    config: Config
    data: PreparedData
    model: TrainedModel


def load_run(run: RunDir, device: torch.device | None = None, compile: bool | None = None, allow_changed_data: bool = False) -> TrainedRun:
    """The model of ``run`` and the run's own data, as :func:`~tgatunet.infer.trained.load_trained` and
    :func:`run_data` give them."""
    run.require_trained()
    config = run.read_config()
    return TrainedRun(run, config, run_data(run, config, allow_changed_data), load_trained(run, device, compile))


def build_graph_cache(config: Config, run_root: Path, workers: int, on_progress: Callable[[int, int], None] | None = None) -> PrecomputeReport:
    """Build the knn graphs of every window of ``config``'s data, as observed, into its run's graph cache.

    The windows are those evaluation reads: with the run's normalisation and splits when
    ``run_root`` holds a trained run.
    """
    if config.model.graph_type != "knn":
        raise RunError(f"graph_type is '{config.model.graph_type}': only knn graphs depend on the data and go to the disk cache "
                       "(the temporal graph needs no building). Set graph_type: knn.")
    data = run_data(RunDir(Path(run_root)), config)
    values, observed = data.gather(WindowIndex.concat(list(data.windows.values())))
    return precompute_graphs(KnnGraph.from_config(config), cache_dir(config, run_root), values.numpy(), observed.numpy(),
                             int(config.performance.graph_cache_max_mb * 2**20), workers, on_progress=on_progress)

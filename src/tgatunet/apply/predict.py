"""Loading a trained run: the model from its directory alone, and the run's own data when it is scored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tgatunet.apply.stream import WindowModel
from tgatunet.config import Config
from tgatunet.data.prepared import PreparedData, WindowIndex, prepare_data
from tgatunet.errors import RunError
from tgatunet.graph.cache import cache_dir, open_graph_cache
from tgatunet.graph.knn import KnnGraph
from tgatunet.graph.precompute import PrecomputeReport, precompute_graphs
from tgatunet.hardware import training_device
from tgatunet.model.compile import CompiledOrEager
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.rundir import RunDir

log = logging.getLogger(__name__)


def load_model(run: RunDir, device: torch.device | None = None, compile: bool | None = None) -> WindowModel:
    """The trained model of ``run`` with everything needed to apply it, read from the run directory only
    (its config, ``data.json`` and checkpoint: never the training sources).

    Args:
        device: where the model runs (default: where the run's config would train).
        compile: run the model through ``torch.compile``
            (:class:`~tgatunet.model.compile.CompiledOrEager`: eager where that is not supported);
            None: as the run's config says (``compile``). Compiling takes seconds to a minute per
            input shape, once; it pays off where many windows follow.
    """
    run.require_trained()
    config = run.read_config()
    stats, _, info = run.read_data()
    device = device or training_device(config.performance.accelerator).torch_device
    module = _load_checkpoint(run, device)
    module.graph_cache = open_graph_cache(config, run.root)
    wanted = config.performance.compile if compile is None else compile
    module.compiled = CompiledOrEager.for_inference(module.model, module.device) if wanted else None
    d = config.data
    return WindowModel(module, info["channels"], info["class_names"], stats, d.window_size, d.downsample, d.stride)


def _load_checkpoint(run: RunDir, device: torch.device) -> TGATUNetModule:
    """The model of the best checkpoint; of ``last.ckpt``, with a warning, when the best one cannot be read."""
    failures = []
    for path in run.inference_checkpoints():
        try:
            module = TGATUNetModule.load_from_checkpoint(path, map_location=device)
        except Exception as err:  # truncated, empty, not a checkpoint: every reader has its own error type
            failures.append(f"'{path}' ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'})")
            continue
        if failures:
            log.warning("checkpoint %s cannot be read; using '%s' instead.", failures[0], path)
        return module.eval()
    raise RunError(f"no checkpoint of run '{run.root}' can be read: {'; '.join(failures)}. Train the run again.")


def run_data(run: RunDir, config: Config) -> PreparedData:
    """The sources of ``config`` prepared with the normalisation and splits of ``run`` (when it has them)."""
    if not run.data_path.is_file():
        return prepare_data(config)
    stats, splits, info = run.read_data()
    data = prepare_data(config, stats=stats, block_splits=splits)
    for key, now in [("channels", data.channels), ("class_names", data.class_names)]:
        if info[key] != now:
            raise RunError(
                f"the sources changed since run '{run.root}' was trained: {key} were {info[key]}, now {now}. "
                "Retrain on the current data."
            )
    return data


@dataclass
class TrainedRun:
    """A run's config, its data (with the run's splits and normalisation) and its model: what evaluation scores."""

    run: RunDir
    config: Config
    data: PreparedData
    module: TGATUNetModule


def load_run(run: RunDir, device: torch.device | None = None, compile: bool | None = None) -> TrainedRun:
    """The model of ``run`` and the run's own data, as :func:`load_model` and :func:`run_data` give them."""
    model = load_model(run, device, compile)
    config = run.read_config()
    return TrainedRun(run, config, run_data(run, config), model.module)


def build_graph_cache(
    config: Config, run_root: Path, workers: int, on_progress: Callable[[int, int], None] | None = None
) -> PrecomputeReport:
    """Build the knn graphs of every window of ``config``'s data, as observed, into its run's graph cache.

    The windows are those evaluation reads: with the run's normalisation and splits when
    ``run_root`` holds a trained run.
    """
    if config.model.graph_type != "knn":
        raise RunError(
            f"graph_type is '{config.model.graph_type}': only knn graphs depend on the data and go to the disk cache "
            "(the temporal graph needs no building). Set graph_type: knn."
        )
    data = run_data(RunDir(Path(run_root)), config)
    values, observed = data.gather(WindowIndex.concat(list(data.windows.values())))
    return precompute_graphs(
        KnnGraph.from_config(config), cache_dir(config, run_root), values.numpy(), observed.numpy(),
        int(config.performance.graph_cache_max_mb * 2**20), workers, on_progress=on_progress,
    )

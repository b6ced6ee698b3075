"""Getting a run directory ready for training: a new run, an overwritten one, or a resumed one.

A new run claims its folder (:meth:`RunDir.claim`: only a marked run folder is ever cleared), saves DataFrame sources
into it, and records the content hash of every source file, so that a resume can tell when the data changed under it
(the saved normalisation and splits would no longer describe the data). A resume needs a readable ``last.ckpt``, the
same config (up to :data:`RESUMABLE_CHANGES`) and, unless ``allow_changed_data``, the same source files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import torch

from tgatunet.config import Config
from tgatunet.data.prepared import PreparedData, prepare_data
from tgatunet.data.sources import grid_rate, source_path
from tgatunet.data.store_windows import StoreData, store_data
from tgatunet.errors import DataError, RunError
from tgatunet.files import atomic_write, sha256_file
from tgatunet.infer.rundir import RunDir

Data = PreparedData | StoreData

# Keys that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {
    "epochs", "patience", "num_workers", "accelerator", "run_dir", "apply_step", "interval_coverage",
    # Where the same windows are read from, and by how many processes.
    "data_store", "devices", "num_nodes",
    # How a step is computed, not what: the memory optimizer keeps each step's gradient.
    "use_memory_optimizer", "memory_target", "memory_budget_gb",
    # A profile that resolves to other model keys is caught by those keys.
    "hardware_profile", "use_graph_cache", "graph_cache_dir", "graph_cache_max_mb",
}


def load_data(config: Config, stats=None, block_splits: dict[str, str] | None = None) -> Data:
    """The run's windows: read lazily from the config's ``data_store``, else from the sources into memory."""
    if config.data.data_store is not None:
        return store_data(config, stats=stats, block_splits=block_splits)
    return prepare_data(config, stats=stats, block_splits=block_splits)


def data_info(data: Data, config: Config) -> dict[str, Any]:
    """What ``data.json`` records about the prepared data and the files it came from."""
    return {"channels": data.channels, "class_names": data.class_names, "source_names": data.source_names, "stats": data.stats.to_dict(),
            "block_splits": data.block_splits, "windows": window_counts(data), "skipped_blocks": data.skipped_blocks,
            "source_sha256": source_hashes(config), "sample_rate_hz": grid_rate(config)}


def window_counts(data: Data) -> dict[str, int]:
    """Windows per split; for training, per epoch (with fresh offsets they are drawn from every start row)."""
    return {**{split: len(index) for split, index in data.windows.items()}, "train": data.epoch_windows}


def source_hashes(config: Config) -> dict[str, str]:
    return {s.name: sha256_file(source_path(config, s)) for s in config.data.sources if s.path is not None}


def check_trainable(data: Data, processes: int = 1) -> None:
    """What training needs of the data beyond reading it: validation windows for every process, labels."""
    if len(data.windows["val"]) < processes:
        raise RunError(f"{len(data.windows['val'])} validation window(s) for {processes} process(es): the run needs validation "
                       "blocks to select its model. Raise val_fraction, add blocks, or mark blocks 'val' in split_col.")
    if not len(data.class_names) or not (data.windows["train"].labels >= 0).any():
        raise DataError("no training window has a label: fill label_col in the training blocks (the model also classifies).")
    if len(data.class_names) < 2:
        raise DataError(f"label_col holds one class only ({data.class_names[0]!r}); the model also classifies, so it needs at least "
                        "two classes (e.g. the activity, or the recording's condition).")


def _save_frame(name: str, frame: pd.DataFrame, path: Path) -> None:
    try:
        atomic_write(path, lambda handle: frame.to_parquet(handle, index=False))
    except (ValueError, TypeError, pa.ArrowException) as err:
        raise DataError(f"source '{name}': the DataFrame cannot be saved as Parquet ({err}); give each column one type.") from None


def save_frames(config: Config, run: RunDir, write: bool) -> Config:
    """``config`` with every DataFrame source named by its file ``RUN/sources/<name>.parquet`` (saved there when
    ``write``), so that the run's saved config, a resume and ``tgatunet complete`` find the data."""
    if not any(s.frame is not None for s in config.data.sources):
        return config
    sources = []
    for source in config.data.sources:
        entry = source.model_dump(mode="json")
        if source.frame is not None:
            path = run.root / "sources" / f"{source.name}.parquet"
            if write:
                _save_frame(source.name, source.frame, path)
                run.note_written(path)
            entry["path"] = str(path.resolve())
        sources.append(entry)
    return config.with_keys(sources=sources)


def protected_paths(config: Config, config_file: Path | None) -> list[Path]:
    """The files a run must never delete: its config file and its sources."""
    files = [source_path(config, s) for s in config.data.sources if s.path is not None]
    return [*files, *([config_file] if config_file else [])]


def check_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, or a clear error if it is not a whole one."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated, empty, or not a checkpoint: every reader's own error type
        raise RunError(f"checkpoint '{path}' is damaged ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}). "
                       "It cannot be resumed from: start the run again (--overwrite; in Python overwrite=True).") from None


def _check_resumable(run: RunDir, config: Config, allow_changed_data: bool) -> None:
    if not run.last_checkpoint.is_file():
        raise RunError(f"nothing to resume: '{run.last_checkpoint}' does not exist. Train without --resume (resume=False).")
    if not any(k.startswith("model.spread.") for k in check_checkpoint(run.last_checkpoint).get("state_dict", {})):
        raise RunError(f"cannot resume: '{run.last_checkpoint}' was written by an earlier tgatunet, whose model lacks the head "
                       "that completion intervals need. Start the run again (--overwrite; in Python overwrite=True).")
    before, after = run.read_config().to_dict(), config.to_dict()
    changed = sorted(k for k in before if k not in RESUMABLE_CHANGES and before[k] != after.get(k))
    if changed:
        raise RunError(f"cannot resume: the config differs from the interrupted run in {changed}. Only {sorted(RESUMABLE_CHANGES)} "
                       "may change; start a new run (--overwrite, in Python overwrite=True, or another run_dir) instead.")
    saved = run.read_data()[2].get("source_sha256", {})
    moved = [name for name, digest in source_hashes(config).items() if saved.get(name) not in (None, digest)]
    if moved and not allow_changed_data:
        raise RunError(f"cannot resume: source(s) {moved} changed since the run started, so its normalisation and splits no longer "
                       "describe them. Start a new run (--overwrite), or resume anyway keeping the old ones (--allow-changed-data).")


def prepare_run_dir(run: RunDir, config: Config, resume: bool, overwrite: bool, writer: bool, protected: list[Path],
                    allow_changed_data: bool = False) -> tuple[Config, Data]:
    """Check and write the run directory (only the ``writer``, global rank 0, does); the config as the run
    keeps it (DataFrame sources saved there) and the data."""
    if resume or not writer:
        config = save_frames(config, run, write=False)
        if not resume:
            return config, load_data(config)
        if writer:
            _check_resumable(run, config, allow_changed_data)
        stats, splits, _ = run.read_data()
        data = load_data(config, stats=stats, block_splits=splits)
        if writer:
            run.write_config(config)
        return config, data
    run.claim(overwrite, protected)
    config = save_frames(config, run, write=True)
    data = load_data(config)
    run.write_config(config)
    run.write_data(data_info(data, config))
    return config, data

"""Writing completed copies of the sources.

Each source file is read again as it is; the model runs over windows that
cover every row of every block (the last window flush with the block end, a
block shorter than a window padded and masked); overlapping predictions are
averaged per row. Only missing values of the source's ``need`` channels are
filled. Every other cell is left as read, so observed values are
bit-identical, rows keep their order, and a ``<channel>_imputed`` column marks
each filled value. The input file is never written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tgatunet.data.sources import load_source, read_table, source_path
from tgatunet.data.windows import average_overlaps, covering_starts, row_index
from tgatunet.errors import DataError, RunError
from tgatunet.apply.predict import TrainedRun, load_run
from tgatunet.train.rundir import RunDir

log = logging.getLogger(__name__)

IMPUTED_SUFFIX = "_imputed"


@dataclass(frozen=True)
class CompletedSource:
    """What :func:`complete_run` wrote for one source."""

    name: str
    output: Path
    rows: int
    filled: dict[str, int]


def cover_windows(bounds: np.ndarray, window_size: int, downsample: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows covering every row of every segment.

    Returns ``rows [W, T]`` (clamped into each segment) and ``inside [W, T]`` (False on padding).
    """
    rows, inside = [], []
    for lo, hi in bounds:
        # With downsampling, a window sees every downsample-th row; each phase of rows
        # (lo, lo+1, ... lo+downsample-1 onwards) is covered as its own sequence.
        for phase in range(min(downsample, int(hi - lo))):
            first = int(lo) + phase
            length = -(-(int(hi) - first) // downsample)  # rows of this phase
            steps = covering_starts(0, length, window_size, max(1, stride // downsample))
            r = row_index(first + steps * downsample, window_size, downsample)
            inside.append(r < hi)
            rows.append(np.minimum(r, hi - 1))
    return np.concatenate(rows), np.concatenate(inside)


def complete_source(trained: TrainedRun, index: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """The completed table of source ``index`` and the number of values filled per channel."""
    config, data = trained.config, trained.data
    source = config.data.sources[index]
    table = load_source(config, source)
    frame = read_table(table.path, source.name)
    for channel in source.need:
        flag = channel + IMPUTED_SUFFIX
        if flag in frame.columns:
            raise DataError(f"source '{source.name}' ({table.path}): column '{flag}' exists already; rename it.")

    normalised = data.stats.apply(table.values)  # [N, C]
    observed = ~np.isnan(normalised)
    rows, inside = cover_windows(table.segment_bounds, config.data.window_size, config.data.downsample, config.data.stride)
    values = torch.from_numpy(np.nan_to_num(normalised[rows], nan=0.0))  # [W, T, C]
    visible = torch.from_numpy(observed[rows] & inside[..., None])  # [W, T, C]
    recon, _ = trained.module.predict_windows(values, visible)

    mean, _ = average_overlaps(rows, recon, len(normalised), inside)
    completed = data.stats.invert(mean)  # [N, C] raw units

    filled = {}
    for channel in source.need:
        c = data.channels.index(channel)
        missing = np.isnan(table.values[:, c])
        column = frame[channel].to_numpy(dtype=np.float64, copy=True) if channel in frame else np.full(len(frame), np.nan)
        column[missing] = completed[missing, c]
        frame[channel] = column
        frame[channel + IMPUTED_SUFFIX] = missing
        filled[channel] = int(missing.sum())
    return frame, filled


def write_table(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(path)


def complete_run(
    run_dir: str | Path, source: str | None = None, output: str | Path | None = None, compile: bool | None = None
) -> list[CompletedSource]:
    """Complete the ``need`` channels of each source (or of ``source``) of a trained run.

    ``compile``: run the model through ``torch.compile`` (None: as the run's config says).
    """
    run = RunDir(Path(run_dir))
    trained = load_run(run, compile=compile)
    names = [s.name for s in trained.config.data.sources]
    if source is not None and source not in names:
        raise RunError(f"unknown source '{source}'; the run's sources are {names}.")
    out_dir = Path(output) if output else run.root / "completed"
    written = []
    for i, src in enumerate(trained.config.data.sources):
        if (source is not None and src.name != source) or not src.need:
            continue
        in_path = source_path(trained.config, src)
        suffix = ".parquet" if in_path.suffix.lower() in (".parquet", ".pq") else ".csv"
        out_path = out_dir / f"{src.name}_completed{suffix}"
        if out_path.resolve() == in_path.resolve():
            raise RunError(f"output '{out_path}' is the input file; choose another --output folder.")
        frame, filled = complete_source(trained, i)
        write_table(frame, out_path)
        written.append(CompletedSource(src.name, out_path, len(frame), filled))
        log.info("completed %s: %s -> %s", src.name, filled, out_path)
    if not written:
        log.warning("no source with 'need' channels%s: nothing to complete.", f" named {source}" if source else "")
    return written

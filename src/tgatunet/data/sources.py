"""Reading one source file into arrays on the model's grid, with errors that name file and column.

A source is a CSV or Parquet table. Without a time column or rate, each row is one step of the model's grid. A timed
source (``time_col`` and/or ``rate_hz``, :mod:`tgatunet.data.timeline`) is resampled onto the grid of
``sample_rate_hz`` (:mod:`tgatunet.data.resample`), each channel at its own rate; a grid step takes the label of the
last row at or before it. Reading yields a :class:`SourceTable`: the configured channels as one float32 array
``[N, C]`` on the grid (NaN = not observed), block segments, and raw labels. Nothing here modifies the file.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tgatunet.config import Config, SourceConfig
from tgatunet.data.datasets import BUNDLED_SCHEME, resolve_bundled
from tgatunet.data.resample import grid_length, grid_ratio, rows_before, segment_on_grid
from tgatunet.data.tables import PARQUET, TableReader, numeric_cells
from tgatunet.data.timeline import RHYTHM_ROWS, Timing, channel_steps, check_rate, lattice, rhythm, row_seconds
from tgatunet.errors import DataError, shown

log = logging.getLogger(__name__)

UPSAMPLING_WARNED = 4.0  # a source brought up by more than this factor is warned about: its fine detail is made up
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class SourceTable:
    """One source's rows, in file order.

    Attributes:
        name: source name from the config.
        path: the file it was read from.
        values: ``[N, C]`` float32 in the config's channel order; NaN where not observed
            (including every channel the source does not have).
        segment_bounds: ``[S, 2]`` int64 ``[start, end)`` row ranges of contiguous blocks.
        segment_blocks: ``[S]`` block name of each segment (a block may span several segments
            when its rows are not consecutive; its segments share one split).
        labels: ``[N]`` class name of each row (:func:`label_text`; None where unlabelled).
        block_split: split fixed by ``split_col`` for each block name, or empty.
    """

    name: str
    path: Path
    values: np.ndarray
    segment_bounds: np.ndarray
    segment_blocks: np.ndarray
    labels: np.ndarray
    block_split: dict[str, str]


def read_table(path: Path, source_name: str) -> pd.DataFrame:
    """A CSV (every cell as text) or Parquet (its own column types) file, whole."""
    _check_file(path, source_name)
    reader = TableReader(path)
    chunks = list(reader.chunks())
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=reader.columns)


def _check_file(path: Path, source_name: str) -> None:
    if not path.is_file():
        raise DataError(f"source '{source_name}': file '{path}' not found. Check 'path' in the config.")
    if path.suffix.lower() not in (".csv", ".txt", ".gz", *PARQUET):
        raise DataError(f"source '{source_name}': '{path}' has suffix '{path.suffix}'; use a .csv or .parquet file.")


def label_text(value) -> str | None:
    """A label cell as its class name: text as written, a whole number without ``.0``; None for an empty cell.

    Raises TypeError for a cell holding several values (a list, an array): it names no class.
    """
    if isinstance(value, str):
        return value.strip() or None
    if not pd.api.types.is_scalar(value):
        raise TypeError(f"not a single value: {type(value).__name__}")
    if value is None or pd.isna(value):
        return None
    if isinstance(value, numbers.Real):
        number = float(value)
        return str(int(number)) if number.is_integer() else str(value)
    return str(value)


def _cell_texts(frame: pd.DataFrame, column: str, where: str, role: str) -> np.ndarray:
    """:func:`label_text` of every cell of ``column``, or a :class:`DataError` naming the first cell it cannot name."""
    texts = np.empty(len(frame), dtype=object)
    for row, value in enumerate(frame[column]):
        try:
            texts[row] = label_text(value)
        except TypeError:
            raise DataError(f"{where}: {role} '{column}' row {row} holds {shown(value)}; each cell must be one value "
                            "(text or a number).") from None
    return texts


def _segments(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous runs of equal block values: ``[S, 2]`` bounds and ``[S]`` block names."""
    n = len(blocks)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64), np.array([], dtype=object)
    change = np.flatnonzero(blocks[1:] != blocks[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]])
    return np.stack([starts, ends], axis=1).astype(np.int64), blocks[starts]


def source_path(config: Config, source: SourceConfig) -> Path:
    """A source's file: bundled, absolute, or relative to the config file."""
    if source.path is None:
        raise DataError(f"source '{source.name}' is a DataFrame, not a file.")
    if source.path.startswith(BUNDLED_SCHEME):
        return resolve_bundled(source.path)
    return config.resolve(source.path)


def source_timing(config: Config, source: SourceConfig) -> Timing:
    """A source's time column, rate and gap limit, the global keys filling in what the source does not set (the
    global ``time_col`` for the sources whose file has that column)."""
    time_col = source.time_col
    if time_col is None and config.data.time_col is not None:
        columns = source.frame.columns if source.frame is not None else _header(source_path(config, source), source.name)
        time_col = config.data.time_col if config.data.time_col in columns else None
    return Timing(time_col, source.rate_hz, source.max_gap_s if source.max_gap_s is not None else config.data.max_gap_s)


def _header(path: Path, source_name: str) -> list[str]:
    _check_file(path, source_name)
    return TableReader(path).columns


def _source_frame(config: Config, source: SourceConfig, rows: int | None = None) -> tuple[Path, pd.DataFrame]:
    if source.frame is not None:
        frame = source.frame if rows is None else source.frame.head(rows)
        return Path(f"<DataFrame {source.name}>"), frame
    path = source_path(config, source)
    if rows is None:
        return path, read_table(path, source.name)
    _check_file(path, source.name)
    return path, next(iter(TableReader(path, rows).chunks()), pd.DataFrame())


def source_rate(config: Config, source: SourceConfig) -> float:
    """Rows per second of a timed source: ``rate_hz``, or measured on its first rows' times (:func:`rhythm`)."""
    timing = source_timing(config, source)
    if timing.rate_hz is not None:
        return timing.rate_hz
    path, frame = _source_frame(config, source, RHYTHM_ROWS)
    where = f"source '{source.name}' ({path})"
    _check_columns(frame, where, source, config, None, None, timing.time_col)
    seconds, _ = row_seconds(frame[timing.time_col], where, 0)
    return rhythm(seconds, _blocks(frame, config, source, where), timing, where)[0]


def grid_rate(config: Config) -> float | None:
    """Steps per second of the model's grid: ``sample_rate_hz``, or (auto) the lowest rate of the timed sources;
    None when no source is timed and no rate is set (rows are steps)."""
    if config.data.sample_rate_hz != "auto":
        return float(config.data.sample_rate_hz)
    timed = [s for s in config.data.sources if source_timing(config, s).timed]
    return min(source_rate(config, s) for s in timed) if timed else None


def load_source(config: Config, source: SourceConfig, grid_hz: float | None) -> SourceTable:
    """Read one source and check it against the config; a timed source is resampled onto ``grid_hz``
    (:func:`grid_rate`)."""
    path, frame = _source_frame(config, source)
    where = f"source '{source.name}' ({path})"
    if len(frame) == 0:
        raise DataError(f"{where}: the file has no rows.")

    label_col = source.label_col or config.data.label_col
    timing = source_timing(config, source)
    _check_columns(frame, where, source, config, label_col, source.block_col or config.data.block_col, timing.time_col)
    values = _modality_values(frame, where, source, config)
    blocks = _blocks(frame, config, source, where)
    labels = _cell_texts(frame, label_col, where, "label_col")
    block_split: dict[str, str] = {}
    if config.data.split_col is not None:
        block_split = _block_splits(frame[config.data.split_col], blocks, where, config.data.split_col)
    if timing.timed and grid_hz is not None:
        values, bounds, segment_blocks, labels = _on_grid(frame, values, blocks, labels, timing, grid_hz, where, config.channels)
        return SourceTable(source.name, path, values, bounds, segment_blocks, labels, block_split)
    bounds, segment_blocks = _segments(blocks)
    return SourceTable(source.name, path, values, bounds, segment_blocks, labels, block_split)


def _blocks(frame: pd.DataFrame, config: Config, source: SourceConfig, where: str) -> np.ndarray:
    """``[n]`` each row's block name ("0" for every row without a block column)."""
    block_col = source.block_col or config.data.block_col
    if block_col is None:
        return np.full(len(frame), "0", dtype=object)
    if block_col not in frame.columns:
        raise DataError(f"{where}: block_col '{block_col}' is not a column of the file.")
    blocks = _cell_texts(frame, block_col, where, "block_col")
    if any(b is None for b in blocks):
        row = next(i for i, b in enumerate(blocks) if b is None)
        raise DataError(f"{where}: block_col '{block_col}' is empty at row {row}; every row needs a block.")
    return blocks


def _on_grid(frame: pd.DataFrame, values: np.ndarray, blocks: np.ndarray, labels: np.ndarray, timing: Timing, grid_hz: float,
             where: str, channels: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A timed source's rows resampled onto the grid: values ``[G, C]`` float32, segment bounds and blocks, labels."""
    seconds = row_seconds(frame[timing.time_col], where, 0)[0] if timing.time_col else None
    rate, step = rhythm(seconds, blocks, timing, where)
    if seconds is not None and timing.rate_hz is not None:
        check_rate(seconds, blocks, timing.rate_hz, where, 0)
    positions, starts, _ = lattice(seconds, blocks, step, timing.max_gap_s, where, 0, None)
    ratio = grid_ratio(rate, grid_hz)
    steps = channel_steps(positions, starts, ~np.isnan(values))
    warn_upsampling(where, ratio, steps, ~np.isnan(values).all(axis=0), channels)
    grid_values, grid_labels, bounds, names = [], [], [], []
    cuts = [*np.flatnonzero(starts), len(blocks)]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        at, n = positions[lo:hi], grid_length(int(positions[hi - 1]), ratio)
        grid_values.append(segment_on_grid(at, values[lo:hi], steps, ratio, 0, n))
        grid_labels.append(labels[lo:hi][rows_before(at, np.arange(n), ratio)])
        start = bounds[-1][1] if bounds else 0
        bounds.append((start, start + n))
        names.append(blocks[lo])
    return (np.concatenate(grid_values).astype(np.float32), np.array(bounds, dtype=np.int64).reshape(-1, 2),
            np.array(names, dtype=object), np.concatenate(grid_labels))


def warn_upsampling(where: str, ratio, steps: np.ndarray, observed: np.ndarray, channels: list[str]) -> None:
    """A warning naming the channels brought onto the grid by more than :data:`UPSAMPLING_WARNED` times their rate."""
    up = {channels[c]: float(ratio * int(steps[c])) for c in np.flatnonzero(observed) if float(ratio * int(steps[c])) > UPSAMPLING_WARNED}
    if up:
        log.warning("%s: %s up-sampled onto the model's grid by up to %.3gx; detail finer than their own rate is interpolated, "
                    "not recorded. A lower sample_rate_hz uses them as recorded.", where, ", ".join(f"'{c}'" for c in up), max(up.values()))


def _check_columns(frame: pd.DataFrame, where: str, source: SourceConfig, config: Config, label_col, block_col, time_col) -> None:
    found = f"Columns found: {', '.join(map(str, frame.columns))}."
    for column, role in [(label_col, "label_col"), (block_col, "block_col"), (config.data.split_col, "split_col"), (time_col, "time_col")]:
        if column is not None and column not in frame.columns:
            raise DataError(f"{where}: {role} '{column}' is not a column of the file. {found}")
    missing = [c for c in [*config.data.common_modalities, *source.have] if c not in frame.columns]
    if missing:
        close = {c: [str(x) for x in frame.columns if str(x).lower() == c.lower()] for c in missing}
        hint = "".join(f" Did you mean '{v[0]}' for '{k}'?" for k, v in close.items() if v)
        raise DataError(f"{where}: modality column(s) {missing} (from common_modalities/have) are not in the file.{hint} {found}")


def _modality_values(frame: pd.DataFrame, where: str, source: SourceConfig, config: Config) -> np.ndarray:
    """``[N, C]`` float32 in the config's channel order, NaN where not observed or not the source's."""
    channels, expected = config.channels, [*config.data.common_modalities, *source.have]
    values = np.full((len(frame), len(channels)), np.nan, dtype=np.float32)
    for j, channel in enumerate(channels):
        if channel in expected or (channel in source.need and channel in frame.columns):
            values[:, j] = numeric_cells(frame[channel], where, 0)
    for channel in expected:
        if np.isnan(values[:, channels.index(channel)]).all():
            raise DataError(f"{where}: column '{channel}' has no observed value at all. Move it to this source's 'need' list if the source lacks it.")
    for channel in source.need:
        held = int((~np.isnan(values[:, channels.index(channel)])).sum())
        if held:
            log.warning("%s: '%s' is listed in 'need' but the file holds %d observed value(s) of it; they are used as "
                        "observed inputs and kept in completed copies. Move it to 'have' if the source records it.", where, channel, held)
    return values


def _block_splits(split: pd.Series, blocks: np.ndarray, where: str, column: str) -> dict[str, str]:
    names = split.astype(str).str.strip().str.lower()
    unknown = sorted(set(names) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(f"{where}: split_col '{column}' holds {unknown[:5]}; allowed values are train, val, test.")
    per_block = pd.DataFrame({"block": blocks, "split": names.map(SPLIT_NAMES)})
    counts = per_block.groupby("block")["split"].nunique()
    mixed = counts[counts > 1]
    if len(mixed):
        raise DataError(f"{where}: block '{mixed.index[0]}' has rows in several splits in split_col '{column}'; "
                        "a block must belong to one split, or windows would leak between splits.")
    return per_block.groupby("block")["split"].first().to_dict()


def encode_labels(tables: list[SourceTable]) -> tuple[list[str], list[np.ndarray]]:
    """Map the class names of all sources' rows to class indices (-1 = no label)."""
    names, index = order_classes({lab for t in tables for lab in t.labels if lab is not None})
    coded = [np.array([index.get(v, -1) if v is not None else -1 for v in t.labels], dtype=np.int64) for t in tables]
    return names, coded


def order_classes(labels: set[str]) -> tuple[list[str], dict[str, int]]:
    """Class names in order, numerically when every name is a number, else as text; and each name's index."""
    try:
        ordered = sorted(labels, key=float)
    except ValueError:
        ordered = sorted(labels)
    return ordered, {v: i for i, v in enumerate(ordered)}

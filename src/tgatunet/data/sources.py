"""Reading one source file into arrays, with errors that name file and column.

A source is a CSV or Parquet table, one row per time step. Reading it yields a :class:`SourceTable`: the configured
channels as one float32 array ``[N, C]`` (NaN = not observed), block segments, and raw labels. Nothing here modifies the
file.
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
from tgatunet.data.tables import PARQUET, TableReader, numeric_cells
from tgatunet.errors import DataError, shown

log = logging.getLogger(__name__)

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
    if not path.is_file():
        raise DataError(f"source '{source_name}': file '{path}' not found. Check 'path' in the config.")
    if path.suffix.lower() not in (".csv", ".txt", ".gz", *PARQUET):
        raise DataError(f"source '{source_name}': '{path}' has suffix '{path.suffix}'; use a .csv or .parquet file.")
    reader = TableReader(path)
    chunks = list(reader.chunks())
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=reader.columns)


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


def load_source(config: Config, source: SourceConfig) -> SourceTable:
    """Read one source and check it against the config."""
    if source.frame is not None:
        path, frame = Path(f"<DataFrame {source.name}>"), source.frame
    else:
        path = source_path(config, source)
        frame = read_table(path, source.name)
    where = f"source '{source.name}' ({path})"
    if len(frame) == 0:
        raise DataError(f"{where}: the file has no rows.")

    label_col = source.label_col or config.data.label_col
    block_col = source.block_col or config.data.block_col
    _check_columns(frame, where, source, config, label_col, block_col)
    values = _modality_values(frame, where, source, config)

    if block_col is None:
        blocks = np.full(len(frame), "0", dtype=object)
    else:
        blocks = _cell_texts(frame, block_col, where, "block_col")
        if any(b is None for b in blocks):
            row = next(i for i, b in enumerate(blocks) if b is None)
            raise DataError(f"{where}: block_col '{block_col}' is empty at row {row}; every row needs a block.")
    bounds, segment_blocks = _segments(blocks)
    labels = _cell_texts(frame, label_col, where, "label_col")

    block_split: dict[str, str] = {}
    if config.data.split_col is not None:
        block_split = _block_splits(frame[config.data.split_col], blocks, where, config.data.split_col)
    return SourceTable(source.name, path, values, bounds, segment_blocks, labels, block_split)


def _check_columns(frame: pd.DataFrame, where: str, source: SourceConfig, config: Config, label_col, block_col) -> None:
    found = f"Columns found: {', '.join(map(str, frame.columns))}."
    for column, role in [(label_col, "label_col"), (block_col, "block_col"), (config.data.split_col, "split_col")]:
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

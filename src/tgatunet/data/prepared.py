"""From a config to ready-to-batch windows.

:func:`prepare_data` reads every source, splits blocks, fits normalisation on
the training blocks, and lays all sources out as one contiguous float32 array
``[N, C]`` with its observation mask. A window is then nothing but a start row:
:class:`WindowDataset` slices it out on demand, with no per-sample copies of
the tables.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from tgatunet.config import Config
from tgatunet.data.frozen import freeze
from tgatunet.data.normalize import ChannelStats
from tgatunet.data.sources import SourceTable, encode_labels, load_source
from tgatunet.data.splits import SPLITS, split_blocks
from tgatunet.data.windows import row_index, window_labels, window_span, window_starts
from tgatunet.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowIndex:
    """The windows of one split: ``[W]`` arrays of start row, label, source index, block key."""

    starts: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    blocks: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def subset(self, keep: np.ndarray) -> WindowIndex:
        return WindowIndex(self.starts[keep], self.labels[keep], self.sources[keep], self.blocks[keep])


@dataclass(frozen=True)
class WindowedData:
    """The windows of each split and what describes them, wherever their rows are kept.

    Attributes:
        source_need: ``[S, C]`` bool, the channels each source needs.
        row_offsets: ``[S + 1]`` first row of each source, in the row numbering of the windows' starts.
        block_splits: block key (``source/block``) -> split.
        skipped_blocks: segments shorter than one window, left out.
    """

    channels: list[str]
    class_names: list[str]
    source_names: list[str]
    stats: ChannelStats
    source_need: torch.Tensor
    row_offsets: np.ndarray
    windows: dict[str, WindowIndex]
    block_splits: dict[str, str]
    window_size: int
    downsample: int
    skipped_blocks: int

    def rows(self, starts: np.ndarray) -> np.ndarray:
        """``[W, T]`` absolute rows of windows starting at ``starts``."""
        return row_index(starts, self.window_size, self.downsample)

    def need_patterns(self) -> torch.Tensor:
        """``[P, C]`` bool: the distinct non-empty channel sets that some source needs."""
        return need_patterns(self.source_need)


@dataclass(frozen=True)
class PreparedData(WindowedData):
    """All sources as one normalised array in memory, plus the windows of each split.

    ``values`` and ``observed`` are read-only (:class:`~tgatunet.data.frozen.ReadOnlyTensor`):
    validation and test windows read them, so nothing may write them. Training inputs that
    change during a run (the dynamic need update) live in their own buffer
    (:class:`~tgatunet.data.training_inputs.TrainingInputs`).

    Attributes:
        values: ``[N, C]`` float32, normalised, 0 where not observed; read-only.
        observed: ``[N, C]`` bool observation mask; read-only.
    """

    values: torch.Tensor
    observed: torch.Tensor


def need_patterns(source_need: torch.Tensor) -> torch.Tensor:
    """``[S, C]`` bool needs per source -> ``[P, C]`` bool distinct non-empty channel sets."""
    unique = {tuple(row.tolist()) for row in source_need if row.any()}
    if not unique:
        return torch.zeros(0, source_need.shape[1], dtype=torch.bool)
    return torch.tensor(sorted(unique), dtype=torch.bool)


def source_need_mask(config: Config) -> torch.Tensor:
    """``[S, C]`` bool: the channels each source of ``config`` needs."""
    channels = config.channels
    need = torch.zeros(len(config.sources), len(channels), dtype=torch.bool)
    for i, src in enumerate(config.sources):
        for ch in src.need:
            need[i, channels.index(ch)] = True
    return need


def _majority(labels: np.ndarray) -> int:
    labelled = labels[labels >= 0]
    return int(np.bincount(labelled).argmax()) if len(labelled) else -1


def index_windows(
    config: Config,
    bounds: np.ndarray,
    seg_keys: np.ndarray,
    seg_source: np.ndarray,
    block_splits: dict[str, str],
    label_windows: Callable[[np.ndarray], np.ndarray],
) -> tuple[dict[str, WindowIndex], int]:
    """The windows of each split, and how many segments were too short for one.

    Args:
        bounds: ``[S, 2]`` absolute ``[start, end)`` rows of every segment.
        seg_keys: ``[S]`` block key (``source/block``) of each segment.
        seg_source: ``[S]`` source index of each segment.
        block_splits: block key -> split.
        label_windows: window start rows ``[W]`` -> window labels ``[W]`` (-1 = none).
    """
    span = window_span(config.window_size, config.downsample)
    starts, seg_of_window = window_starts(bounds, span, config.stride)
    skipped = int(((bounds[:, 1] - bounds[:, 0]) < span).sum())
    if skipped:
        log.warning(
            "%d block segment(s) shorter than one window (%d rows) were skipped for training and evaluation.",
            skipped,
            span,
        )
    if len(starts) == 0:
        longest = int((bounds[:, 1] - bounds[:, 0]).max())
        raise DataError(
            f"no window left after windowing: a window spans {span} rows (window_size {config.window_size}, "
            f"downsample {config.downsample}) but the longest block has {longest} rows. "
            "Lower window_size or downsample, or check block_col."
        )

    win_blocks = seg_keys[seg_of_window]
    win_split = np.array([block_splits[k] for k in win_blocks])
    all_windows = WindowIndex(starts, label_windows(starts), seg_source[seg_of_window], win_blocks)
    windows = {name: all_windows.subset(win_split == name) for name in SPLITS}
    if len(windows["train"]) == 0:
        raise DataError("no training window: every block went to val/test. Lower val_fraction/test_fraction.")
    counts = Counter(win_split.tolist())
    log.info("windows: %s", ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS))
    return windows, skipped


def prepare_data(
    config: Config,
    stats: ChannelStats | None = None,
    block_splits: dict[str, str] | None = None,
    tables: list[SourceTable] | None = None,
) -> PreparedData:
    """Read, split, normalise and window every source of ``config``.

    Args:
        stats: normalisation to reuse (e.g. a trained run's); fitted on the training blocks if None.
        block_splits: block key -> split to reuse (e.g. a trained run's); drawn if None.
        tables: already-read sources (skips reading the files).
    """
    tables = tables if tables is not None else [load_source(config, s) for s in config.sources]
    class_names, row_labels = encode_labels(tables)
    channels = config.channels

    offsets = np.cumsum([0] + [len(t.values) for t in tables])
    raw = np.concatenate([t.values for t in tables])
    labels = np.concatenate(row_labels)
    bounds = np.concatenate([t.segment_bounds + off for t, off in zip(tables, offsets)])
    seg_keys = np.concatenate([[f"{t.name}/{b}" for b in t.segment_blocks] for t in tables]).astype(object)
    seg_source = np.concatenate([np.full(len(t.segment_bounds), i) for i, t in enumerate(tables)])

    if block_splits is None:
        block_rows: dict[str, list[np.ndarray]] = {}
        for key, (lo, hi) in zip(seg_keys, bounds):
            block_rows.setdefault(key, []).append(labels[lo:hi])
        block_label = {k: _majority(np.concatenate(v)) for k, v in block_rows.items()}
        fixed = {f"{t.name}/{b}": s for t in tables for b, s in t.block_split.items()}
        block_splits = split_blocks(block_label, config.val_fraction, config.test_fraction, config.seed, fixed)

    windows, skipped = index_windows(
        config,
        bounds,
        seg_keys,
        seg_source,
        block_splits,
        lambda starts: window_labels(labels, row_index(starts, config.window_size, config.downsample), config.label_rule),
    )

    if stats is None:
        train_rows = np.concatenate(
            [np.arange(lo, hi) for key, (lo, hi) in zip(seg_keys, bounds) if block_splits[key] == "train"]
        )
        stats = ChannelStats.fit(raw[train_rows])
    normalised = stats.apply(raw)
    observed = ~np.isnan(normalised)
    need = source_need_mask(config)

    return PreparedData(
        channels=channels,
        class_names=class_names,
        source_names=[t.name for t in tables],
        stats=stats,
        values=freeze(torch.from_numpy(np.nan_to_num(normalised, nan=0.0))),
        observed=freeze(torch.from_numpy(observed)),
        source_need=need,
        row_offsets=offsets,
        windows=windows,
        block_splits=block_splits,
        window_size=config.window_size,
        downsample=config.downsample,
        skipped_blocks=skipped,
    )


class WindowDataset(Dataset):
    """Windows of one split, sliced from the shared arrays.

    Item: ``values [T, C]`` float32, ``observed [T, C]`` bool, ``label`` (-1 = none),
    ``source`` index, ``index`` (position within the split).
    """

    def __init__(self, data: PreparedData, split: str) -> None:
        self.data = data
        self.index = data.windows[split]
        self.offsets = np.arange(data.window_size) * data.downsample  # [T]
        # Read-only NumPy views of the frozen arrays: indexing them is cheaper than going through
        # the read-only tensor, and gives fresh, writable copies just the same.
        self.values, self.observed = data.values.numpy(), data.observed.numpy()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rows = int(self.index.starts[i]) + self.offsets
        return {
            "values": torch.from_numpy(self.values[rows]),
            "observed": torch.from_numpy(self.observed[rows]),
            "label": torch.tensor(int(self.index.labels[i])),
            "source": torch.tensor(int(self.index.sources[i])),
            "index": torch.tensor(i),
        }


class BatchedWindowDataset(WindowDataset):
    """A :class:`WindowDataset` that a DataLoader reads one batch at a time.

    The DataLoader hands :meth:`__getitems__` a batch's indices: one gather per array instead
    of one slice per window plus a stack, many times faster (``tgatunet bench memory`` measures
    it). What it returns is already a batch: load with ``collate_fn=collate_windows``.
    """

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of windows ``indices``: :class:`WindowDataset` items stacked, ``values [B, T, C]`` etc."""
        index = np.asarray(indices, dtype=np.int64)  # [B]
        rows = self.data.rows(self.index.starts[index]).reshape(-1)  # [B * T]
        shape = (len(index), self.data.window_size, self.values.shape[1])

        def gather(array: np.ndarray) -> torch.Tensor:
            # numpy's take runs on one thread; torch's parallel gather was seen waiting ~40 ms on a
            # busy OpenMP pool for a copy that takes 0.1 ms.
            return torch.from_numpy(array.take(rows, axis=0).reshape(shape))

        return {
            "values": gather(self.values),
            "observed": gather(self.observed),
            "label": torch.from_numpy(self.index.labels[index].astype(np.int64)),
            "source": torch.from_numpy(self.index.sources[index].astype(np.int64)),
            "index": torch.from_numpy(index),
        }


def collate_windows(batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """DataLoader ``collate_fn``: batches from :class:`BatchedWindowDataset` pass as they are, items are stacked."""
    return batch if isinstance(batch, dict) else default_collate(batch)

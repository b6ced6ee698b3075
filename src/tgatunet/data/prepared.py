"""From a config to ready-to-batch windows.

:func:`prepare_data` reads every source, splits blocks, fits normalisation on the training blocks, and lays all sources
out as one contiguous float32 array ``[N, C]`` with its observation mask. A window is then nothing but a start row:
:class:`WindowDataset` gathers a batch of them on demand, with no per-sample copies of the tables.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from tgatunet.config import Config
from tgatunet.data.normalize import ChannelStats
from tgatunet.data.sources import SourceTable, encode_labels, grid_rate, load_source
from tgatunet.data.splits import SPLITS, split_blocks
from tgatunet.data.windows import labels_of_windows, row_index, window_span, window_starts
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

    @classmethod
    def concat(cls, parts: list[WindowIndex]) -> WindowIndex:
        """The windows of ``parts``, one after the other."""
        columns = zip(*((p.starts, p.labels, p.sources, p.blocks) for p in parts))
        return cls(*(np.concatenate(column) for column in columns))


@dataclass(frozen=True)
class WindowedData:
    """The windows of each split and what describes them, wherever their rows are kept.

    With ``fresh_offsets`` the training split holds a window at every start row of its
    blocks; an epoch draws ``epoch_windows`` of them (as many as ``step_size`` would give),
    so training sees the series at fresh offsets each epoch.

    Attributes:
        source_need: ``[S, C]`` bool, the channels each source needs.
        epoch_windows: training windows per epoch.
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
    epoch_windows: int

    def rows(self, starts: np.ndarray) -> np.ndarray:
        """``[W, T]`` absolute rows of windows starting at ``starts``."""
        return row_index(starts, self.window_size, self.downsample)

    def need_patterns(self) -> torch.Tensor:
        """``[P, C]`` bool: the distinct non-empty channel sets that some source needs."""
        unique = {tuple(row.tolist()) for row in self.source_need if row.any()}
        if not unique:
            return torch.zeros(0, self.source_need.shape[1], dtype=torch.bool)
        return torch.tensor(sorted(unique), dtype=torch.bool)


@dataclass(frozen=True)
class PreparedData(WindowedData):
    """All sources as one normalised array in memory, plus the windows of each split.

    ``values`` and ``observed`` are read-only NumPy arrays: validation and test windows read them, and any write to them
    raises. Batches are gathered copies. Training inputs that change during a run (the dynamic need update) live in
    their own buffer (:class:`~tgatunet.data.training_inputs.TrainingInputs`).

    Attributes:
        values: ``[N, C]`` float32, normalised, 0 where not observed; read-only.
        observed: ``[N, C]`` bool observation mask; read-only.
        segments: ``[S, 2]`` ``[start, end)`` rows of every block segment (contiguous rows of one block).
        segment_blocks: ``[S]`` block key of each segment.
    """

    values: np.ndarray
    observed: np.ndarray
    segments: np.ndarray
    segment_blocks: np.ndarray

    def split_segments(self, split: str) -> list[tuple[int, int, int]]:
        """``(source, start, end)`` of the segments whose block is in ``split``."""
        sources = np.searchsorted(self.row_offsets, self.segments[:, 0], side="right") - 1
        return [(int(s), int(lo), int(hi)) for s, (lo, hi), key in zip(sources, self.segments, self.segment_blocks)
                if self.block_splits[key] == split]

    def gather(self, index: WindowIndex) -> tuple[torch.Tensor, torch.Tensor]:
        """``values, observed [W, T, C]`` of the windows in ``index`` (fresh, writable copies)."""
        rows = self.rows(index.starts)
        return torch.from_numpy(self.values[rows]), torch.from_numpy(self.observed[rows])


def warn_extreme_values(values: np.ndarray, stats: ChannelStats, channels: list[str]) -> None:
    """Warn, naming the channel, when a few extreme values (a sentinel like 1e30 or -9999) set its scale.

    Normalisation divides by the standard deviation; one huge value inflates it and squashes
    every ordinary value of the channel to about zero. Compared with the spread of the middle
    half of the values (interquartile range), such a standard deviation stands out by far.
    """
    for c, channel in enumerate(channels):
        column = values[:, c][~np.isnan(values[:, c])]
        if not len(column):
            continue
        q1, q3 = np.percentile(column, [25, 75])
        spread = (q3 - q1) / 1.349  # the standard deviation of a normal distribution with that IQR
        if spread > 0 and stats.std[c] > 100 * spread:
            extreme = float(np.abs(column).max())
            log.warning("channel '%s': a few extreme values (largest |value| %.3g) dominate its normalisation (std %.3g against "
                        "%.3g for the middle half); its ordinary values are squashed to about 0. Check for sentinel values and "
                        "leave such cells empty.", channel, extreme, stats.std[c], spread)


def source_need_mask(config: Config) -> torch.Tensor:
    """``[S, C]`` bool: the channels each source of ``config`` needs."""
    channels = config.channels
    need = torch.zeros(len(config.data.sources), len(channels), dtype=torch.bool)
    for i, src in enumerate(config.data.sources):
        for ch in src.need:
            need[i, channels.index(ch)] = True
    return need


def index_windows(config: Config, bounds: np.ndarray, seg_keys: np.ndarray, seg_source: np.ndarray, block_splits: dict[str, str],
                  label_windows: Callable[[np.ndarray], np.ndarray]) -> tuple[dict[str, WindowIndex], int, int]:
    """The windows of each split, how many segments were too short for one, and training windows per epoch.

    Segments: ``bounds [S, 2]`` absolute ``[start, end)`` rows, ``seg_keys [S]`` block key (``source/block``),
    ``seg_source [S]`` source index. ``label_windows``: window start rows ``[W]`` -> window labels ``[W]`` (-1 = none).
    """
    d = config.data
    span = window_span(d.window_size, d.downsample)
    starts, seg_of_window = window_starts(bounds, span, d.stride)
    skipped = int(((bounds[:, 1] - bounds[:, 0]) < span).sum())
    if skipped:
        log.warning("%d block segment(s) shorter than one window (%d rows) were skipped for training and evaluation.", skipped, span)
    if len(starts) == 0:
        longest = int((bounds[:, 1] - bounds[:, 0]).max())
        raise DataError(f"no window left after windowing: a window spans {span} rows (window_size {d.window_size}, "
                        f"downsample {d.downsample}) but the longest block has {longest} rows. "
                        "Lower window_size or downsample, or check block_col.")
    win_blocks = seg_keys[seg_of_window]
    win_split = np.array([block_splits[k] for k in win_blocks])
    all_windows = WindowIndex(starts, label_windows(starts), seg_source[seg_of_window], win_blocks)
    windows = {name: all_windows.subset(win_split == name) for name in SPLITS}
    if len(windows["train"]) == 0:
        raise DataError("no training window: every block went to val/test. Lower val_fraction/test_fraction.")
    counts = Counter(win_split.tolist())
    log.info("windows: %s", ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS))
    if config.training.fresh_offsets:
        train = np.flatnonzero(np.array([block_splits[k] == "train" for k in seg_keys]))
        pool, seg = window_starts(bounds[train], span, 1)
        seg = train[seg]
        windows["train"] = WindowIndex(pool, label_windows(pool), seg_source[seg], seg_keys[seg])
    return windows, skipped, counts.get("train", 0)


def draw_splits(config: Config, tables: list[SourceTable], labels: np.ndarray, bounds: np.ndarray, seg_keys: np.ndarray):
    """Block key -> split: ``split_col``'s where given, else a seeded draw stratified by each block's majority label."""
    block_rows: dict[str, list[np.ndarray]] = {}
    for key, (lo, hi) in zip(seg_keys, bounds):
        block_rows.setdefault(key, []).append(labels[lo:hi])
    block_label = {}
    for key, parts in block_rows.items():
        labelled = np.concatenate(parts)
        labelled = labelled[labelled >= 0]
        block_label[key] = int(np.bincount(labelled).argmax()) if len(labelled) else -1
    fixed = {f"{t.name}/{b}": s for t in tables for b, s in t.block_split.items()}
    d = config.data
    seed = config.training.seed if d.split_seed is None else d.split_seed
    return split_blocks(block_label, d.val_fraction, d.test_fraction, seed, fixed)


def prepare_data(config: Config, stats: ChannelStats | None = None, block_splits: dict[str, str] | None = None,
                 tables: list[SourceTable] | None = None) -> PreparedData:
    """Read, split, normalise and window every source of ``config`` (``tables``: sources already read).

    ``stats`` (normalisation) and ``block_splits`` (block key -> split) to reuse, e.g. a trained run's; None: fitted
    on the training blocks, and drawn.
    """
    if tables is None:
        grid_hz = grid_rate(config)
        tables = [load_source(config, s, grid_hz) for s in config.data.sources]
    class_names, row_labels = encode_labels(tables)
    offsets = np.cumsum([0] + [len(t.values) for t in tables])
    raw = np.concatenate([t.values for t in tables])
    labels = np.concatenate(row_labels)
    bounds = np.concatenate([t.segment_bounds + off for t, off in zip(tables, offsets)])
    seg_keys = np.concatenate([[f"{t.name}/{b}" for b in t.segment_blocks] for t in tables]).astype(object)
    seg_source = np.concatenate([np.full(len(t.segment_bounds), i) for i, t in enumerate(tables)])
    if block_splits is None:
        block_splits = draw_splits(config, tables, labels, bounds, seg_keys)

    d = config.data
    windows, skipped, epoch_windows = index_windows(
        config, bounds, seg_keys, seg_source, block_splits,
        lambda starts: labels_of_windows(labels, starts, d.window_size, d.downsample, d.label_rule),
    )
    if stats is None:
        train = [np.arange(lo, hi) for key, (lo, hi) in zip(seg_keys, bounds) if block_splits[key] == "train"]
        stats = ChannelStats.fit(raw[np.concatenate(train)])
        warn_extreme_values(raw[np.concatenate(train)], stats, config.channels)
    normalised = stats.apply(raw)
    observed = ~np.isnan(normalised)
    values = np.nan_to_num(normalised, nan=0.0)
    for array in (values, observed):
        array.setflags(write=False)
    return PreparedData(
        channels=config.channels, class_names=class_names, source_names=[t.name for t in tables], stats=stats,
        source_need=source_need_mask(config), row_offsets=offsets, windows=windows, block_splits=block_splits,
        window_size=d.window_size, downsample=d.downsample, skipped_blocks=skipped, epoch_windows=epoch_windows,
        values=values, observed=observed, segments=bounds, segment_blocks=seg_keys,
    )


class WindowDataset(Dataset):
    """Windows of one split, gathered from the shared arrays a batch at a time.

    A DataLoader hands :meth:`__getitems__` a batch's indices: one gather per array. What
    it returns is already a batch; load with ``collate_fn=collate_windows``.

    Item (batch): ``values [T, C]`` (``[B, T, C]``) float32, ``observed`` bool of the same
    shape, ``label`` (-1 = none), ``source`` index, ``index`` (position within the split).
    """

    def __init__(self, data: PreparedData, split: str) -> None:
        self.data = data
        self.index = data.windows[split]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([i]).items()}

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``values, observed [B, T, C]`` of the windows ``index`` (fresh copies)."""
        rows = self.data.rows(self.index.starts[index])  # [B, T]
        return self.data.values[rows], self.data.observed[rows]

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)  # [B]
        values, observed = self.read(index)
        return {"values": torch.from_numpy(values), "observed": torch.from_numpy(observed),
                "label": torch.from_numpy(self.index.labels[index].astype(np.int64)),
                "source": torch.from_numpy(self.index.sources[index].astype(np.int64)), "index": torch.from_numpy(index)}


def collate_windows(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataLoader ``collate_fn``: :meth:`WindowDataset.__getitems__` returns whole batches already."""
    return batch

"""Windows read lazily from a data store, with memory that does not grow with the dataset.

:func:`store_data` gives what :func:`~tgatunet.data.prepared.prepare_data` gives (the same splits, windows, labels and
normalisation, from the same functions) except the rows themselves, which stay on disk: :class:`StoreWindowDataset`
reads each window's rows when it is asked for it. Everything that scans the dataset (block labels for the split, window
labels, normalisation statistics of the training split) streams over the store in bounded chunks. What stays in memory
is the window index: a few integers per window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tgatunet.config import Config
from tgatunet.data.normalize import ChannelStats
from tgatunet.data.prepared import PreparedData, WindowDataset, WindowedData, index_windows, source_need_mask
from tgatunet.data.splits import split_blocks
from tgatunet.data.store import DataStore, open_store
from tgatunet.data.windows import row_index, window_labels, window_span

# Rows read at once when scanning the store (x channels x 4 bytes per read).
CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class StoreData(WindowedData):
    """A store's windows: the rows stay on disk, in ``store``, and are read when a window is asked for."""

    store: DataStore


def _source_of(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.searchsorted(offsets, rows, side="right") - 1


def _segment_chunks(bounds: np.ndarray, offsets: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """``(source, first row in the source, rows)`` pieces of at most CHUNK_ROWS covering the segments ``bounds``."""
    for lo, hi in bounds:
        source = int(_source_of(np.array([lo]), offsets)[0])
        for first in range(int(lo), int(hi), CHUNK_ROWS):
            yield source, first - int(offsets[source]), min(CHUNK_ROWS, int(hi) - first)


def _block_labels(store: DataStore, bounds: np.ndarray, offsets: np.ndarray, seg_keys: np.ndarray) -> dict[str, int]:
    """Majority class of each block's labelled rows (-1 if none), as ``prepare_data`` draws splits by."""
    counts: dict[str, np.ndarray] = {}
    classes = len(store.class_names)
    for key, segment in zip(seg_keys, bounds):
        total = counts.setdefault(key, np.zeros(classes, dtype=np.int64))
        for source, first, rows in _segment_chunks(segment[None], offsets):
            labels = store.read_labels(source, first, rows)
            total += np.bincount(labels[labels >= 0], minlength=classes)
    return {key: int(c.argmax()) if c.sum() else -1 for key, c in counts.items()}


def _window_labels(store: DataStore, offsets: np.ndarray, config: Config, starts: np.ndarray) -> np.ndarray:
    """``[W]`` labels of the windows starting at (sorted) ``starts``, reading the labels in bounded runs."""
    span = window_span(config.data.window_size, config.data.downsample)
    sources = _source_of(starts, offsets)
    out = np.empty(len(starts), dtype=np.int64)
    i = 0
    while i < len(starts):
        # Windows of one source starting within CHUNK_ROWS rows of the first: one read covers them.
        end = int(np.searchsorted(starts, starts[i] + CHUNK_ROWS, side="left"))
        end = max(i + 1, min(end, int(np.searchsorted(sources, sources[i], side="right"))))
        source, lo = int(sources[i]), int(starts[i])
        labels = store.read_labels(source, lo - int(offsets[source]), int(starts[end - 1]) + span - lo)
        rows = row_index(starts[i:end] - lo, config.data.window_size, config.data.downsample)
        out[i:end] = window_labels(labels, rows, config.data.label_rule)
        i = end
    return out


def store_data(config: Config, stats: ChannelStats | None = None, block_splits: dict[str, str] | None = None) -> StoreData:
    """Open the config's ``data_store`` and index its windows (nothing but the index is loaded).

    Args:
        stats: normalisation to reuse (e.g. a trained run's); fitted on the training blocks if None.
        block_splits: block key -> split to reuse; drawn as ``prepare_data`` draws it if None.
    """
    store = open_store(config)
    offsets = np.cumsum([0] + [s.rows for s in store.sources])
    bounds = np.concatenate([store.segments(i) + offsets[i] for i in range(len(store.sources))])
    seg_keys = np.array([f"{s.name}/{b}" for s in store.sources for b in s.segment_blocks], dtype=object)
    seg_source = np.concatenate([np.full(len(s.segment_blocks), i) for i, s in enumerate(store.sources)])

    if block_splits is None:
        fixed = {f"{s.name}/{b}": split for s in store.sources for b, split in s.block_split.items()}
        block_labels = _block_labels(store, bounds, offsets, seg_keys)
        block_splits = split_blocks(block_labels, config.data.val_fraction, config.data.test_fraction,
                                    config.training.seed if config.data.split_seed is None else config.data.split_seed, fixed)

    windows, skipped, epoch_windows = index_windows(config, bounds, seg_keys, seg_source, block_splits,
                                                    lambda starts: _window_labels(store, offsets, config, starts))

    if stats is None:
        train = bounds[np.array([block_splits[k] == "train" for k in seg_keys])]
        stats = ChannelStats.fit_chunks(lambda: (store.read_values(*piece) for piece in _segment_chunks(train, offsets)), len(store.channels))
    return StoreData(channels=store.channels, class_names=store.class_names, source_names=[s.name for s in store.sources], stats=stats,
                     source_need=source_need_mask(config), row_offsets=offsets, windows=windows, block_splits=block_splits,
                     window_size=config.data.window_size, downsample=config.data.downsample, skipped_blocks=skipped,
                     epoch_windows=epoch_windows, store=store)


CALIBRATION_CELLS = 50_000_000  # at most this many values of the validation recordings held in memory (200 MB)


def validation_recordings(data: StoreData) -> PreparedData:
    """The store's validation segments in memory (normalised, 0 where not observed), as in-memory data holding nothing
    else: what the completion intervals are calibrated on. Segments are taken in store order up to
    :data:`CALIBRATION_CELLS` values; the rest of the store stays on disk."""
    store, split = data.store, {}
    values, observed, segments, keys, offsets = [], [], [], [], [0]
    budget = CALIBRATION_CELLS // len(data.channels)
    for i, source in enumerate(store.sources):
        for (lo, hi), block in zip(store.segments(i), source.segment_blocks):
            key = f"{source.name}/{block}"
            if data.block_splits.get(key) != "val" or budget < hi - lo:
                continue
            budget -= hi - lo
            start = sum(len(v) for v in values)
            seen = store.read_observed(i, int(lo), int(hi - lo))
            values.append(np.where(seen, data.stats.apply(store.read_values(i, int(lo), int(hi - lo))), 0.0).astype(np.float32))
            observed.append(seen)
            segments.append((start, start + hi - lo))
            keys.append(key)
            split[key] = "val"
        offsets.append(sum(len(v) for v in values))
    C = len(data.channels)
    return PreparedData(channels=data.channels, class_names=data.class_names, source_names=data.source_names, stats=data.stats,
                        source_need=data.source_need, row_offsets=np.array(offsets), windows={}, block_splits=split,
                        window_size=data.window_size, downsample=data.downsample, skipped_blocks=0, epoch_windows=0,
                        values=np.concatenate([np.zeros((0, C), np.float32), *values]),
                        observed=np.concatenate([np.zeros((0, C), bool), *observed]),
                        segments=np.array(segments, dtype=np.int64).reshape(-1, 2), segment_blocks=np.array(keys, dtype=object))


class StoreWindowDataset(WindowDataset):
    """Windows of one split read from the store a batch at a time (the batches of :class:`WindowDataset`).

    The batch's rows are read into one buffer and normalised in one operation.
    """

    def __init__(self, data: StoreData, split: str) -> None:
        super().__init__(data, split)
        self.span = window_span(data.window_size, data.downsample)

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``values [B, T, C]`` (normalised, 0 where not observed) and ``observed [B, T, C]`` of windows ``index``."""
        store, channels = self.data.store, len(self.data.channels)
        raw = np.empty((len(index), self.span, channels), dtype=np.float32)  # [B, span, C]
        observed = np.empty((len(index), self.span, channels), dtype=bool)
        for b, i in enumerate(index):
            source = int(self.index.sources[i])
            first = int(self.index.starts[i]) - int(self.data.row_offsets[source])
            raw[b] = store.read_values(source, first, self.span)
            observed[b] = store.read_observed(source, first, self.span)
        step = self.data.downsample
        observed = np.ascontiguousarray(observed[:, ::step])  # [B, T, C]
        values = self.data.stats.apply(raw[:, ::step])
        np.copyto(values, 0.0, where=~observed)
        return values, observed


def window_dataset(data: PreparedData | StoreData, split: str) -> WindowDataset:
    """The split's windows, fetched a batch at a time, from memory or from the store."""
    return StoreWindowDataset(data, split) if isinstance(data, StoreData) else WindowDataset(data, split)

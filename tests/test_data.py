"""Tests of the data contract: reading sources, windows, splits by block, normalisation, datasets."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tgatunet.config import Config, config_from_dict
from tgatunet.data.normalize import ChannelStats
from tgatunet.data.prepared import PreparedData, WindowDataset, collate_windows, prepare_data
from tgatunet.data.sources import load_source, source_path
from tgatunet.data.splits import split_blocks
from tgatunet.data.windows import window_labels, window_span
from tgatunet.errors import DataError

CHANNELS = ["a", "b", "c"]


# --- helpers -------------------------------------------------------------------------


def _raw(dataset, **changes) -> dict:
    raw = copy.deepcopy(dataset["config"])
    raw.update(changes)
    return raw


def _config(dataset, **changes) -> Config:
    return config_from_dict(_raw(dataset, **changes))


def _write(dataset, name: str, frame: pd.DataFrame, suffix: str = ".csv") -> Path:
    path = dataset["dir"] / f"{name}_edited{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def _config_with_frames(dataset, full=None, partial=None, suffix=".csv", **changes) -> Config:
    """Config whose sources read edited copies of the fixture frames."""
    raw = _raw(dataset, **changes)
    for i, (name, frame) in enumerate((("full", full), ("partial", partial))):
        if frame is not None:
            raw["sources"][i]["path"] = str(_write(dataset, name, frame, suffix))
    return config_from_dict(raw)


def _frames(dataset) -> dict[str, pd.DataFrame]:
    return {k: v.copy() for k, v in dataset["frames"].items()}


def _data_error(config: Config) -> str:
    with pytest.raises(DataError) as info:
        prepare_data(config)
    return str(info.value)


def _row_blocks(dataset, frames=None) -> np.ndarray:
    """Block key (``source/block``) of every row of the concatenated sources."""
    frames = frames or dataset["frames"]
    return np.concatenate([(name + "/" + frames[name]["subject"].astype(str)).to_numpy() for name in ("full", "partial")])


def _spans(data: PreparedData, split: str) -> list[np.ndarray]:
    span = window_span(data.window_size, data.downsample)
    return [np.arange(s, s + span) for s in data.windows[split].starts]


# --- bad inputs: DataError naming file and column ------------------------------------


def test_missing_file(dataset):
    raw = _raw(dataset)
    missing = dataset["dir"] / "nope.csv"
    raw["sources"][0]["path"] = str(missing)
    msg = _data_error(config_from_dict(raw))
    assert str(missing) in msg and "'full'" in msg and "not found" in msg


@pytest.mark.parametrize("column", ["a", "c"])  # a common and a have column
def test_modality_column_absent(dataset, column):
    frames = _frames(dataset)
    cfg = _config_with_frames(dataset, full=frames["full"].drop(columns=[column]))
    msg = _data_error(cfg)
    assert "full_edited.csv" in msg and f"'{column}'" in msg and "not in the file" in msg


def test_modality_column_case_hint(dataset):
    frames = _frames(dataset)
    cfg = _config_with_frames(dataset, full=frames["full"].rename(columns={"c": "C"}))
    msg = _data_error(cfg)
    assert "Did you mean 'C' for 'c'" in msg


def test_non_numeric_modality_value(dataset):
    frames = _frames(dataset)
    full = frames["full"].astype({"b": object})
    full.loc[7, "b"] = "oops"
    msg = _data_error(_config_with_frames(dataset, full=full))
    assert "full_edited.csv" in msg and "'b'" in msg and "row 7" in msg and "oops" in msg


def test_have_channel_never_observed(dataset):
    frames = _frames(dataset)
    full = frames["full"]
    full["c"] = np.nan
    msg = _data_error(_config_with_frames(dataset, full=full))
    assert "full_edited.csv" in msg and "'c'" in msg and "no observed value" in msg and "need" in msg


def test_missing_label_column(dataset):
    frames = _frames(dataset)
    msg = _data_error(_config_with_frames(dataset, partial=frames["partial"].drop(columns=["label"])))
    assert "partial_edited.csv" in msg and "label_col 'label'" in msg


def test_missing_block_column(dataset):
    frames = _frames(dataset)
    msg = _data_error(_config_with_frames(dataset, full=frames["full"].drop(columns=["subject"])))
    assert "full_edited.csv" in msg and "block_col 'subject'" in msg


def test_per_source_label_col_override(dataset):
    frames = _frames(dataset)
    raw = _raw(dataset)
    raw["sources"][1]["path"] = str(_write(dataset, "partial", frames["partial"].rename(columns={"label": "activity"})))
    raw["sources"][1]["label_col"] = "activity"
    data = prepare_data(config_from_dict(raw))
    assert data.class_names == ["fast", "slow"]
    assert set(data.windows["train"].sources.tolist()) == {0, 1}


def test_no_window_left(dataset):
    msg = _data_error(_config(dataset, window_size=41))  # blocks have 40 rows
    assert "no window left" in msg and "41" in msg and "40 rows" in msg and "window_size" in msg


def test_downsample_counts_in_window_span(dataset):
    # 16 steps every 3 rows span 46 rows > 40: no window.
    msg = _data_error(_config(dataset, downsample=3))
    assert "no window left" in msg and "downsample" in msg


def test_unsupported_suffix(dataset):
    path = dataset["dir"] / "full.json"
    dataset["frames"]["full"].to_json(path)
    raw = _raw(dataset)
    raw["sources"][0]["path"] = str(path)
    msg = _data_error(config_from_dict(raw))
    assert str(path) in msg and "'.json'" in msg and ".csv" in msg


def test_split_col_unknown_value(dataset):
    frames = _frames(dataset)
    for f in frames.values():
        f["split"] = "train"
    frames["partial"].loc[frames["partial"]["subject"] == "partial03", "split"] = "testing"
    msg = _data_error(_config_with_frames(dataset, frames["full"], frames["partial"], split_col="split"))
    assert "partial_edited.csv" in msg and "'split'" in msg and "testing" in msg


def test_split_col_missing_from_file(dataset):
    frames = _frames(dataset)
    frames["full"]["split"] = "train"
    msg = _data_error(_config_with_frames(dataset, frames["full"], frames["partial"], split_col="split"))
    assert "partial_edited.csv" in msg and "split_col 'split'" in msg


def test_block_in_two_splits(dataset):
    frames = _frames(dataset)
    for f in frames.values():
        f["split"] = "train"
    full = frames["full"]
    rows = full.index[full["subject"] == "full05"]
    full.loc[rows[: len(rows) // 2], "split"] = "test"
    msg = _data_error(_config_with_frames(dataset, full, frames["partial"], split_col="split"))
    assert "full_edited.csv" in msg and "full05" in msg and "'split'" in msg


# --- short blocks, need columns, parquet ------------------------------------------------


def test_short_block_skipped_with_warning(dataset, caplog):
    frames = _frames(dataset)
    full = frames["full"]
    short = full.index[full["subject"] == "full04"][10:]  # leave 10 rows < window_size 16
    full = full.drop(index=short).reset_index(drop=True)
    cfg = _config_with_frames(dataset, full=full)
    with caplog.at_level(logging.WARNING, logger="tgatunet"):
        data = prepare_data(cfg)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 block segment" in r.getMessage() and "skipped" in r.getMessage() for r in warnings)
    assert data.skipped_blocks == 1
    windowed = {b for w in data.windows.values() for b in w.blocks.tolist()}
    assert "full/full04" not in windowed
    expected = {f"full/full{i:02d}" for i in range(12) if i != 4} | {f"partial/partial{i:02d}" for i in range(12)}
    assert windowed == expected


def test_no_warning_without_short_blocks(dataset, caplog):
    with caplog.at_level(logging.WARNING, logger="tgatunet"):
        data = prepare_data(_config(dataset))
    assert data.skipped_blocks == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _need_unobserved(data: PreparedData) -> None:
    c = data.channels.index("c")
    lo, hi = data.row_offsets[1], data.row_offsets[2]
    assert not data.observed[lo:hi, c].any()
    assert (data.values[lo:hi, c] == 0).all()
    assert data.observed[lo:hi, :c].all()
    assert data.observed[: data.row_offsets[1]].all()  # full observes every channel
    assert data.source_need.tolist() == [[False, False, False], [False, False, True]]


def test_need_column_absent_from_file(dataset):
    assert "c" not in dataset["frames"]["partial"].columns
    _need_unobserved(prepare_data(_config(dataset)))


def test_need_column_present_but_empty(dataset):
    frames = _frames(dataset)
    frames["partial"]["c"] = np.nan
    path = _write(dataset, "partial", frames["partial"])
    assert "c" in pd.read_csv(path).columns
    _need_unobserved(prepare_data(_config_with_frames(dataset, partial=frames["partial"])))


def test_need_column_partly_filled_is_observed_where_filled(dataset):
    frames = _frames(dataset)
    partial = frames["partial"]
    partial["c"] = np.nan
    partial.loc[5:9, "c"] = 1.5
    data = prepare_data(_config_with_frames(dataset, partial=partial))
    c = data.channels.index("c")
    observed = data.observed[data.row_offsets[1] : data.row_offsets[2], c]
    assert np.flatnonzero(observed).tolist() == [5, 6, 7, 8, 9]


def test_parquet_loads_like_csv(dataset):
    frames = _frames(dataset)
    csv_data = prepare_data(_config(dataset))
    pq_cfg = _config_with_frames(dataset, frames["full"], frames["partial"], suffix=".parquet")
    assert all(str(source_path(pq_cfg, s)).endswith(".parquet") for s in pq_cfg.data.sources)
    pq_data = prepare_data(pq_cfg)
    assert pq_data.channels == csv_data.channels
    assert pq_data.class_names == csv_data.class_names
    assert pq_data.block_splits == csv_data.block_splits
    assert np.array_equal(pq_data.observed, csv_data.observed)
    torch.testing.assert_close(pq_data.values, csv_data.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pq_data.stats.mean, csv_data.stats.mean, rtol=1e-6)
    for split in ("train", "val", "test"):
        assert np.array_equal(pq_data.windows[split].starts, csv_data.windows[split].starts)
        assert np.array_equal(pq_data.windows[split].labels, csv_data.windows[split].labels)


def test_parquet_tables_equal_csv_tables(dataset):
    frames = _frames(dataset)
    pq_cfg = _config_with_frames(dataset, frames["full"], frames["partial"], suffix=".parquet")
    csv_cfg = _config(dataset)
    for pq_src, csv_src in zip(pq_cfg.data.sources, csv_cfg.data.sources):
        pq, csv = load_source(pq_cfg, pq_src, None), load_source(csv_cfg, csv_src, None)
        np.testing.assert_array_equal(pq.values, csv.values)
        np.testing.assert_array_equal(pq.segment_bounds, csv.segment_bounds)
        assert pq.labels.tolist() == csv.labels.tolist()


# --- splits by block ----------------------------------------------------------------------


def test_no_test_or_val_window_in_training(dataset):
    data = prepare_data(_config(dataset))
    for split in ("val", "test"):
        assert len(data.windows[split]) > 0, f"no {split} window: the check would be vacuous"
    train_blocks = set(data.windows["train"].blocks.tolist())
    train_rows = set(np.concatenate(_spans(data, "train")).tolist())
    row_blocks = _row_blocks(dataset)
    for split in ("val", "test"):
        assert not train_blocks & set(data.windows[split].blocks.tolist())
        assert not train_rows & set(np.concatenate(_spans(data, split)).tolist())
    assert not set(data.windows["val"].blocks.tolist()) & set(data.windows["test"].blocks.tolist())
    # block_splits agrees with where each window went
    for split, index in data.windows.items():
        assert all(data.block_splits[b] == split for b in index.blocks.tolist())
        assert all(row_blocks[s] == b for s, b in zip(index.starts.tolist(), index.blocks.tolist()))
    assert set(data.block_splits) == set(row_blocks.tolist())


def test_split_deterministic_for_seed_and_changes_with_seed(dataset):
    first = prepare_data(_config(dataset, seed=3))
    again = prepare_data(_config(dataset, seed=3))
    assert first.block_splits == again.block_splits
    for split in ("train", "val", "test"):
        assert np.array_equal(first.windows[split].starts, again.windows[split].starts)
    other = prepare_data(_config(dataset, seed=4))
    assert other.block_splits != first.block_splits


def test_split_col_fixes_blocks(dataset):
    frames = _frames(dataset)
    fixed_test = {"full/full00", "full/full01", "partial/partial00", "partial/partial01"}
    for name, f in frames.items():
        f["split"] = np.where((name + "/" + f["subject"]).isin(fixed_test), "Test", "train")
    cfg = _config_with_frames(dataset, frames["full"], frames["partial"], split_col="split")
    data = prepare_data(cfg)
    splits = data.block_splits
    assert {k for k, v in splits.items() if v == "test"} == fixed_test
    val = {k for k, v in splits.items() if v == "val"}
    assert val, "val must be drawn from the train blocks when split_col gives none"
    assert not val & fixed_test
    assert set(data.windows["test"].blocks.tolist()) == fixed_test
    # another seed may draw other val blocks, never other test blocks
    other = prepare_data(_config_with_frames(dataset, frames["full"], frames["partial"], split_col="split", seed=11))
    assert {k for k, v in other.block_splits.items() if v == "test"} == fixed_test


def test_split_col_with_val_keeps_given_val(dataset):
    frames = _frames(dataset)
    given = {"full": {"full02": "val", "full03": "validation", "full04": "test"}, "partial": {"partial05": "test"}}
    for name, f in frames.items():
        f["split"] = f["subject"].map(given[name]).fillna("train")
    data = prepare_data(_config_with_frames(dataset, frames["full"], frames["partial"], split_col="split"))
    assert {k for k, v in data.block_splits.items() if v == "val"} == {"full/full02", "full/full03"}
    assert {k for k, v in data.block_splits.items() if v == "test"} == {"full/full04", "partial/partial05"}


def test_stratified_split_keeps_both_labels_everywhere(dataset):
    data = prepare_data(_config(dataset))
    for split in ("train", "val", "test"):
        assert set(data.windows[split].labels.tolist()) == {0, 1}, split


def test_stratification_keeps_rare_class_in_train():
    # 3 blocks of a rare class among 30: a pooled draw would often send all three to val/test.
    blocks = {f"common{i:02d}": 0 for i in range(30)} | {f"rare{i}": 1 for i in range(3)}
    for seed in range(40):
        result = split_blocks(blocks, 0.3, 0.3, seed)
        assert any(result[f"rare{i}"] == "train" for i in range(3)), seed
        assert set(result.values()) == {"train", "val", "test"}


@pytest.mark.parametrize("rare", [1, 2])
def test_very_rare_class_stays_in_train(rare):
    # A class with only one or two blocks can always keep one in training; it must.
    blocks = {f"common{i:02d}": 0 for i in range(20)} | {f"rare{i}": 1 for i in range(rare)}
    lost = [
        seed
        for seed in range(40)
        if not any(r == "train" for k, r in split_blocks(blocks, 0.2, 0.2, seed).items() if k.startswith("rare"))
    ]
    assert not lost, f"class 1 has no training block for seeds {lost}"


def test_split_blocks_fractions():
    blocks = {f"b{i:02d}": i % 2 for i in range(20)}
    result = split_blocks(blocks, 0.2, 0.1, 0)
    counts = {s: sum(v == s for v in result.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 14, "val": 4, "test": 2}
    assert split_blocks(blocks, 0.0, 0.0, 0) == {k: "train" for k in blocks}


# --- windows ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("window_size", "step", "downsample"), [(16, 8, 1), (8, 5, 3), (10, 1, 2)])
def test_windows_stay_in_block_with_stride_and_downsample(dataset, window_size, step, downsample):
    data = prepare_data(_config(dataset, window_size=window_size, step_size=step, downsample=downsample, fresh_offsets=False))
    span = window_span(window_size, downsample)
    assert span == (window_size - 1) * downsample + 1
    row_blocks = _row_blocks(dataset)
    starts_by_block: dict[str, list[int]] = {}
    for index in data.windows.values():
        for start, block in zip(index.starts.tolist(), index.blocks.tolist()):
            assert set(row_blocks[start : start + span].tolist()) == {block}
            starts_by_block.setdefault(block, []).append(start)
    assert len(starts_by_block) == 24
    for block, starts in starts_by_block.items():
        rows = np.flatnonzero(row_blocks == block)
        starts = sorted(starts)
        assert starts[0] == rows[0]
        assert np.all(np.diff(starts) == step)
        assert len(starts) == (len(rows) - span) // step + 1  # as many as fit
    # rows of a window step by `downsample`
    rows = data.rows(data.windows["train"].starts[:3])
    assert rows.shape == (3, window_size)
    assert np.all(np.diff(rows, axis=1) == downsample)


def test_default_stride_is_half_window(dataset):
    raw = _raw(dataset)
    del raw["step_size"]
    raw["fresh_offsets"] = False
    data = prepare_data(config_from_dict(raw))
    per_block = (40 - 16) // 8 + 1
    assert sum(len(w) for w in data.windows.values()) == 24 * per_block


def test_window_items_follow_downsampled_file_rows(dataset):
    cfg = _config(dataset, window_size=6, step_size=7, downsample=4)
    data = prepare_data(cfg)
    raw = np.concatenate(
        [dataset["frames"]["full"][CHANNELS].to_numpy(), dataset["frames"]["partial"][["a", "b"]].assign(c=np.nan).to_numpy()]
    )
    ds = WindowDataset(data, "train")
    for i in (0, len(ds) // 2, len(ds) - 1):
        item = ds[i]
        start = int(data.windows["train"].starts[i])
        expected = raw[start : start + 21 : 4]
        restored = data.stats.invert(item["values"].numpy())
        obs = item["observed"].numpy()
        np.testing.assert_allclose(restored[obs], expected[obs], rtol=1e-4, atol=1e-4)
        assert np.array_equal(obs, ~np.isnan(expected))


def test_window_labels_last_and_majority():
    row_labels = np.array([0, 0, 1, 1, 1, 0, -1, -1, 2, 1])
    rows = np.array(
        [
            [0, 1, 2],  # 0 0 1
            [3, 4, 5],  # 1 1 0
            [5, 6, 7],  # 0 -1 -1
            [6, 7, 7],  # -1 -1 -1
            [8, 9, 1],  # 2 1 0: three-way tie
            [4, 8, 9],  # 1 2 1
            [1, 2, 8],  # 0 1 2
            [2, 0, 6],  # 1 0 -1: tie -> smallest
        ]
    )
    assert window_labels(row_labels, rows, "last").tolist() == [1, 0, -1, -1, 0, 1, 2, -1]
    assert window_labels(row_labels, rows, "majority").tolist() == [0, 1, 0, -1, 0, 1, 0, 0]


def test_prepared_window_labels_follow_rule(dataset):
    frames = _frames(dataset)
    # relabel the first 10 rows of each block, so last and majority disagree on early windows
    for f in frames.values():
        f["label"] = np.where(f.groupby("subject").cumcount() < 10, "rest", f["label"])
    for rule in ("last", "majority"):
        data = prepare_data(_config_with_frames(dataset, frames["full"], frames["partial"], label_rule=rule))
        names = data.class_names
        assert names == ["fast", "rest", "slow"]
        row_labels = np.concatenate([frames["full"]["label"], frames["partial"]["label"]])
        for index in data.windows.values():
            for start, label in zip(index.starts.tolist(), index.labels.tolist()):
                window = row_labels[start : start + 16]
                if rule == "last":
                    expected = window[-1]
                else:
                    values, counts = np.unique(window, return_counts=True)
                    expected = values[counts.argmax()]
                assert names[label] == expected


# --- normalisation -----------------------------------------------------------------------------


def _scaled(frame: pd.DataFrame, block: str, channels: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame["subject"] == block, channels] *= 1000.0
    return frame


def test_normalisation_fitted_on_training_rows_only(dataset):
    cfg = _config(dataset)
    base = prepare_data(cfg)
    test_blocks = [k for k, v in base.block_splits.items() if v == "test" and k.startswith("full/")]
    val_blocks = [k for k, v in base.block_splits.items() if v == "val" and k.startswith("full/")]
    train_blocks = [k for k, v in base.block_splits.items() if v == "train" and k.startswith("full/")]
    assert test_blocks and train_blocks

    full = dataset["frames"]["full"]
    for block in test_blocks + val_blocks:
        full = _scaled(full, block.split("/")[1], CHANNELS)
    changed = prepare_data(_config_with_frames(dataset, full=full))
    assert changed.block_splits == base.block_splits
    np.testing.assert_array_equal(changed.stats.mean, base.stats.mean)
    np.testing.assert_array_equal(changed.stats.std, base.stats.std)

    train_changed = prepare_data(
        _config_with_frames(dataset, full=_scaled(dataset["frames"]["full"], train_blocks[0].split("/")[1], CHANNELS))
    )
    assert train_changed.block_splits == base.block_splits
    assert not np.allclose(train_changed.stats.mean, base.stats.mean)
    assert not np.allclose(train_changed.stats.std, base.stats.std)


def test_normalised_training_values_are_standard(dataset):
    frames = _frames(dataset)
    frames["full"].loc[[3, 50, 51], "a"] = np.nan  # some unobserved cells
    data = prepare_data(_config_with_frames(dataset, full=frames["full"]))
    row_blocks = _row_blocks(dataset, frames)
    train = np.array([data.block_splits[b] == "train" for b in row_blocks])
    values, observed = data.values[train], data.observed[train]
    for j, channel in enumerate(data.channels):
        v = values[observed[:, j], j]
        assert len(v) > 100, channel
        assert abs(v.mean()) < 1e-4, channel
        assert abs(v.std() - 1.0) < 1e-4, channel
    # and the stats are those of the raw training rows
    raw = pd.concat([frames["full"], frames["partial"]], ignore_index=True)[CHANNELS].to_numpy()[train]
    np.testing.assert_allclose(data.stats.mean, np.nanmean(raw, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.stats.std, np.nanstd(raw, axis=0), rtol=1e-5)


def test_channel_stats_round_trip():
    values = np.array([[1.0, np.nan, 5.0], [3.0, np.nan, 5.0], [np.nan, np.nan, 5.0]])
    stats = ChannelStats.fit(values)
    np.testing.assert_allclose(stats.mean, [2.0, 0.0, 5.0])
    np.testing.assert_allclose(stats.std, [1.0, 1.0, 1.0])  # unobserved / constant channel: std 1
    normalised = stats.apply(values)
    assert normalised.dtype == np.float32
    assert np.isnan(normalised[:, 1]).all()
    np.testing.assert_allclose(stats.invert(normalised)[:, [0, 2]], values[:, [0, 2]])
    again = ChannelStats.from_dict(stats.to_dict())
    np.testing.assert_array_equal(again.mean, stats.mean)
    np.testing.assert_array_equal(again.std, stats.std)


def test_reuse_stats_and_block_splits_reproduces(dataset):
    first = prepare_data(_config(dataset, seed=3))
    # Another seed would draw other blocks; the given splits and stats must win.
    second = prepare_data(_config(dataset, seed=99), stats=first.stats, block_splits=first.block_splits)
    assert second.block_splits == first.block_splits
    assert second.stats is first.stats
    assert np.array_equal(second.values, first.values)
    assert np.array_equal(second.observed, first.observed)
    for split in ("train", "val", "test"):
        for field in ("starts", "labels", "sources", "blocks"):
            assert np.array_equal(getattr(second.windows[split], field), getattr(first.windows[split], field))
    assert prepare_data(_config(dataset, seed=99)).block_splits != first.block_splits


def test_reuse_stats_with_new_data_applies_old_stats(dataset):
    first = prepare_data(_config(dataset))
    full = _scaled(dataset["frames"]["full"], "full00", CHANNELS)
    second = prepare_data(_config_with_frames(dataset, full=full), stats=first.stats, block_splits=first.block_splits)
    np.testing.assert_array_equal(second.stats.mean, first.stats.mean)
    untouched = slice(40, None)  # rows after block full00
    assert np.array_equal(second.values[untouched], first.values[untouched])


# --- WindowDataset ------------------------------------------------------------------------------


def test_window_dataset_items(dataset):
    frames = _frames(dataset)
    frames["full"].loc[[0, 1, 2, 90], "b"] = np.nan
    data = prepare_data(_config_with_frames(dataset, full=frames["full"]))
    c = data.channels.index("c")
    b = data.channels.index("b")
    seen_sources = set()
    for split in ("train", "val", "test"):
        ds = WindowDataset(data, split)
        assert len(ds) == len(data.windows[split]) > 0
        for i in range(len(ds)):
            item = ds[i]
            assert item["values"].shape == (16, 3) and item["values"].dtype == torch.float32
            assert item["observed"].shape == (16, 3) and item["observed"].dtype == torch.bool
            assert torch.all(item["values"][~item["observed"]] == 0)
            assert int(item["label"]) == int(data.windows[split].labels[i]) and int(item["label"]) in (0, 1)
            assert int(item["index"]) == i
            source = int(item["source"])
            seen_sources.add(source)
            if source == 1:
                assert not item["observed"][:, c].any()
            else:
                assert item["observed"][:, c].all()
    assert seen_sources == {0, 1}
    # the NaN cells of 'b' are unobserved, 0 in values, everywhere they fall into a window
    for row in (0, 1, 2, 90):
        assert not data.observed[row, b] and data.values[row, b] == 0
    first = WindowDataset(data, data.block_splits["full/full00"])
    hits = [i for i in range(len(first)) if int(first.index.starts[i]) == 0]
    assert hits, "the first window of full00 starts at row 0"
    item = first[hits[0]]
    assert item["observed"][:3, b].tolist() == [False] * 3 and item["observed"][3:, b].all()


def test_window_dataset_batches_with_dataloader(dataset):
    data = prepare_data(_config(dataset))
    loader = torch.utils.data.DataLoader(WindowDataset(data, "train"), batch_size=5, shuffle=False, collate_fn=collate_windows)
    batch = next(iter(loader))
    assert batch["values"].shape == (5, 16, 3)
    assert batch["observed"].shape == (5, 16, 3)
    assert batch["label"].shape == (5,)


# --- inputs are never modified --------------------------------------------------------------------


def _fingerprint(paths: list[Path]) -> list[tuple[bytes, int]]:
    return [(p.read_bytes(), os.stat(p).st_mtime_ns) for p in paths]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_input_files_not_modified(dataset, suffix):
    frames = _frames(dataset)
    frames["partial"]["c"] = np.nan  # a present-but-empty need column
    cfg = _config_with_frames(dataset, frames["full"], frames["partial"], suffix=suffix)
    paths = [source_path(cfg, s) for s in cfg.data.sources]
    before = _fingerprint(paths)
    listing = sorted(p.name for p in dataset["dir"].iterdir())
    data = prepare_data(cfg)
    for src in cfg.data.sources:
        load_source(cfg, src, None)
    assert len(data.windows["train"]) > 0
    assert _fingerprint(paths) == before
    assert sorted(p.name for p in dataset["dir"].iterdir()) == listing  # nothing written next to them


def test_prepared_arrays_cannot_be_written_and_batches_are_copies(dataset):
    # Validation and test windows read these arrays: nothing a run does may change them.
    data = prepare_data(_config(dataset))
    for array in (data.values, data.observed):
        with pytest.raises(ValueError, match="read-only"):
            array[0, 0] = 1
        with pytest.raises(ValueError, match="read-only"):
            array[1:3] *= 2
    before = data.values.copy()
    batch = WindowDataset(data, "val").__getitems__([0, 1])
    batch["values"].add_(1.0)  # a batch is the model's to change
    values, _ = data.gather(data.windows["test"])
    values.zero_()
    assert np.array_equal(data.values, before)

"""Completed copies of the sources: observed values bit-identical, rows in order, inputs untouched."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from tgatunet.apply.complete import complete_run, cover_windows
from tgatunet.errors import RunError
from tgatunet.train.run import train


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def trained(dataset):
    frames = dataset["frames"]
    # A block shorter than one window, and a need column present but partly filled.
    partial = frames["partial"].copy()
    short = partial[partial["subject"] == "partial00"].head(5).assign(subject="short")
    partial = pd.concat([partial, short], ignore_index=True)
    partial["c"] = np.nan
    partial.loc[3, "c"] = 0.25
    partial.to_csv(dataset["paths"]["partial"], index=False)
    before = {name: _digest(path) for name, path in dataset["paths"].items()}
    run = train(dataset["write"](), progress_bar=False)
    return {"run": run, "before": before, "partial": partial, **dataset}


def test_completion_fills_need_values_and_keeps_everything_else(trained):
    written = complete_run(trained["run"].root)
    assert [w.name for w in written] == ["partial"]
    out = pd.read_csv(written[0].output)
    original = pd.read_csv(trained["paths"]["partial"])

    assert len(out) == len(original)
    assert list(out.columns) == [*original.columns, "c_imputed"]
    for column in original.columns:
        if column == "c":
            continue
        # Same rows, same order, same values to the bit.
        pd.testing.assert_series_equal(out[column], original[column], check_exact=True)
    assert out.loc[3, "c"] == 0.25 and not out.loc[3, "c_imputed"]
    filled = out["c_imputed"].to_numpy()
    assert filled.sum() == len(out) - 1 == written[0].filled["c"]
    assert np.isfinite(out["c"]).all()
    # The short block is completed too, not dropped.
    assert out.loc[out["subject"] == "short", "c"].notna().all()


def test_inputs_are_never_modified(trained):
    complete_run(trained["run"].root)
    after = {name: _digest(path) for name, path in trained["paths"].items()}
    assert after == trained["before"]


def test_parquet_source_gives_parquet_output(dataset, tmp_path):
    parquet = tmp_path / "partial.parquet"
    dataset["frames"]["partial"].to_parquet(parquet)
    cfg = dataset["config"]
    cfg["sources"][1]["path"] = str(parquet)
    run = train(dataset["write"](cfg), progress_bar=False)
    written = complete_run(run.root, source="partial", output=tmp_path / "out")
    out = pd.read_parquet(written[0].output)
    pd.testing.assert_series_equal(out["a"], dataset["frames"]["partial"]["a"], check_exact=True)
    assert out["c_imputed"].all()


def test_unknown_source_is_a_clear_error(trained):
    with pytest.raises(RunError, match="unknown source 'nope'.*full"):
        complete_run(trained["run"].root, source="nope")


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        complete_run(tmp_path / "no_run")


@pytest.mark.parametrize("length,window,stride,down", [(40, 16, 8, 1), (37, 16, 5, 1), (9, 16, 8, 1), (50, 10, 4, 2)])
def test_cover_windows_reach_every_row_once_or_more(length, window, stride, down):
    bounds = np.array([[0, length], [length, length + 23]])
    rows, inside = cover_windows(bounds, window, down, stride)
    seen = np.zeros(length + 23, dtype=int)
    np.add.at(seen, rows[inside], 1)
    assert (seen > 0).all()
    for r, ok in zip(rows, inside):
        block = 0 if r[0] < length else 1
        lo, hi = bounds[block]
        assert ((r >= lo) & (r < hi)).all()

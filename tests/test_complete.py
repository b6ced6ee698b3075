"""Completed copies of the sources: observed values bit-identical, rows in order, inputs untouched."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from tgatunet.infer.predict import complete_run
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


def _text(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_completion_fills_need_values_and_keeps_everything_else(trained):
    written = {w.name: w for w in complete_run(trained["run"].root, fill="need")}
    assert sorted(written) == ["full", "partial"]  # every source gets its class predictions
    out, original = _text(written["partial"].outputs["completed"]), _text(trained["paths"]["partial"])
    assert len(out) == len(original)
    assert list(out.columns) == [*original.columns, "c_imputed", "predicted", "p_fast", "p_slow"]
    for column in original.columns:
        if column != "c":  # same rows, same order, same cells to the character
            assert out[column].tolist() == original[column].tolist(), column
    assert out.loc[3, "c"] == "0.25" and out.loc[3, "c_imputed"] == "False"
    filled = out["c_imputed"] == "True"
    assert filled.sum() == len(out) - 1 == written["partial"].filled["c"]
    assert np.isfinite(pd.to_numeric(out["c"])).all()
    # The short block is completed too, not dropped.
    assert out.loc[out["subject"] == "short", "c"].ne("").all()
    assert written["full"].filled == {}  # fill need: the source that has every channel gets predictions only


def test_fill_all_also_fills_sensor_dropouts(dataset, tmp_path):
    partial = dataset["frames"]["partial"].copy()
    partial.loc[[2, 7, 8], "a"] = np.nan
    partial.to_csv(dataset["paths"]["partial"], index=False)
    run = train(dataset["write"](), progress_bar=False)
    (written,) = complete_run(run.root, source="partial", output=tmp_path / "all")
    out = _text(written.outputs["completed"])
    assert (out["a_imputed"] == "True").tolist() == [i in (2, 7, 8) for i in range(len(out))]
    assert out["a"].ne("").all() and written.filled["a"] == 3 and written.filled["c"] == len(out)


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
    (written,) = complete_run(run.root, source="partial", output=tmp_path / "out")
    out = pd.read_parquet(written.outputs["completed"])
    pd.testing.assert_series_equal(out["a"], dataset["frames"]["partial"]["a"], check_exact=True)
    assert out["c_imputed"].all()


def test_an_output_may_not_land_on_a_source(dataset):
    # A source whose file is named like another source's output, in the output folder.
    clash = dataset["dir"] / "partial_completed.csv"
    dataset["frames"]["full"].to_csv(clash, index=False)
    cfg = dataset["config"]
    cfg["sources"][0]["path"] = str(clash)
    run = train(dataset["write"](cfg), progress_bar=False)
    before = _digest(clash)
    with pytest.raises(RunError, match="overwrite an input"):
        complete_run(run.root, output=dataset["dir"])
    assert _digest(clash) == before


def test_unknown_source_is_a_clear_error(trained):
    with pytest.raises(RunError, match="unknown source 'nope'.*full"):
        complete_run(trained["run"].root, source="nope")


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        complete_run(tmp_path / "no_run")


@pytest.mark.parametrize("length,window,stride,down", [(40, 16, 8, 1), (37, 16, 5, 1), (9, 16, 8, 1), (50, 10, 4, 2)])
@pytest.mark.parametrize("chunk", [3, 1000])
def test_the_stream_hands_back_every_row_once_in_order(length, window, stride, down, chunk):
    from tgatunet.infer.stream import Stream, WindowModel
    from tgatunet.data.normalize import ChannelStats

    class Echo:
        """A model that reconstructs each value as its window's first value, so coverage is visible."""

        def predict_windows(self, values, visible, batch_size):
            recon = values[:, :1].expand_as(values).numpy().astype(np.float32)
            return recon, np.zeros((len(values), 2), np.float32), None

    stats = ChannelStats(mean=np.zeros(1), std=np.ones(1))
    model = WindowModel(Echo(), ["x"], ["a", "b"], stats, window, down, stride)
    stream = Stream(model, fillable=np.array([True]))
    n = length + 23
    values = np.arange(n, dtype=float)[:, None]
    values[::3] = np.nan  # every third value missing: filled from the windows covering it
    blocks = np.array(["one"] * length + ["two"] * 23, dtype=object)
    parts = []
    for lo in range(0, n, chunk):
        parts += stream.feed(values[lo : lo + chunk], blocks[lo : lo + chunk], lo)
    parts += stream.finish()
    rows = np.concatenate([np.arange(p.first_row, p.first_row + len(p.completed)) for p in parts])
    assert rows.tolist() == list(range(n))
    completed = np.concatenate([p.completed for p in parts])
    assert not np.isnan(completed).any()
    assert np.array_equal(completed[1::3], values[1::3])  # observed values as they came
    starts = {(b, lo) for w in stream.windows for b, lo in zip(w.blocks, w.first_row)}
    assert all(lo >= (0 if b == "one" else length) for b, lo in starts)  # no window crosses a block


@pytest.mark.parametrize("length,window,stride,down", [(40, 16, 8, 1), (37, 16, 5, 1), (50, 10, 4, 2)])
def test_how_rows_arrive_does_not_change_what_the_windows_see(length, window, stride, down):
    """The window flush with a block's end reads rows that earlier windows already covered: they must still be there."""
    from tgatunet.data.normalize import ChannelStats
    from tgatunet.infer.stream import Stream, WindowModel

    class WindowMean:
        def predict_windows(self, values, visible, batch_size):
            v, m = values.numpy(), visible.numpy()
            mean = (v * m).sum(axis=1, keepdims=True) / np.maximum(m.sum(axis=1, keepdims=True), 1)
            return np.broadcast_to(mean, v.shape).astype(np.float32), mean[:, 0, :1].repeat(2, axis=1).astype(np.float32), None

    n = length + 23
    values = np.sin(np.arange(n, dtype=float))[:, None]
    values[::3] = np.nan
    blocks = np.array(["one"] * length + ["two"] * 23, dtype=object)

    def completed(chunk):
        stream = Stream(WindowModel(WindowMean(), ["x"], ["a", "b"], ChannelStats(np.zeros(1), np.ones(1)), window, down,
                                    stride), fillable=np.array([True]))
        parts = [p for lo in range(0, n, chunk) for p in stream.feed(values[lo : lo + chunk], blocks[lo : lo + chunk], lo)]
        return np.concatenate([p.completed for p in parts + stream.finish()])

    whole = completed(n)
    for chunk in (1, 3, 7):
        np.testing.assert_allclose(completed(chunk), whole, rtol=0, atol=1e-12)

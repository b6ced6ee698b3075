"""A trained run applied to new recordings: tgatunet predict, and the same from Python."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import base_config, make_frames
from typer.testing import CliRunner

import tgatunet
from tgatunet.infer.predict import predict_files
from tgatunet.cli import app
from tgatunet.errors import DataError, RunError

CLASSES = ["fast", "slow"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on files that are deleted afterwards, and a new recording unlike the training files."""
    folder = tmp_path_factory.mktemp("predict")
    frames = make_frames()
    paths = {}
    for name, frame in frames.items():
        paths[name] = folder / "train_data" / f"{name}.csv"
        paths[name].parent.mkdir(exist_ok=True)
        frame.to_csv(paths[name], index=False)
    config = {**base_config(paths), "run_dir": str(folder / "run")}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    run = tgatunet.train(folder / "config.yaml", progress_bar=False)
    shutil.rmtree(folder / "train_data")  # applying a run never reads its training files

    new = make_frames(seed=5, blocks=3, rows=30)["full"]
    new = new[["c", "label", "subject", "a"]].copy()  # another order, no channel b, c partly missing
    new.loc[[3, 4, 5, 40], "c"] = np.nan
    new.insert(1, "note", ["000", "NA", "None", "null", "n/a", "01", "1", ""] * (len(new) // 8) + [""] * (len(new) % 8))  # cells as text
    path = folder / "new.csv"
    new.to_csv(path, index=False)
    return {"run": run, "new": new, "path": path, "dir": folder}


def _text(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_a_new_file_is_completed_with_its_cells_kept(trained):
    out_dir = trained["dir"] / "out"
    (applied,) = predict_files(trained["run"].directory, [trained["path"]], out_dir)
    given, out = _text(trained["path"]), _text(applied.outputs["completed"])
    assert len(out) == len(given) == applied.rows
    assert list(out.columns[: len(given.columns)]) == list(given.columns)  # input columns first, in their order
    for column in ("label", "subject", "note", "a"):  # every cell to the character
        assert out[column].tolist() == given[column].tolist(), column
    observed = given["c"] != ""
    assert out.loc[observed, "c"].tolist() == given.loc[observed, "c"].tolist()
    assert (out["c_imputed"] == "True").tolist() == (~observed).tolist()  # exactly the filled cells
    assert out["b"].ne("").all() and out["b_imputed"].eq("True").all()  # the absent channel, completed
    assert applied.filled == {"a": 0, "b": len(given), "c": int((~observed).sum())}
    assert {f"p_{k}" for k in CLASSES} <= set(out.columns) and set(out["predicted"]) <= set(CLASSES)


def test_fill_need_fills_only_the_channels_the_file_lacks(trained):
    (applied,) = predict_files(trained["run"].directory, [trained["path"]], trained["dir"] / "need", fill="need")
    out = _text(applied.outputs["completed"])
    assert "c_imputed" not in out.columns and "b_imputed" in out.columns
    assert out["c"].tolist() == _text(trained["path"])["c"].tolist()  # drop-outs left as they are
    assert applied.filled == {"b": len(out)}


def test_window_row_and_block_predictions_agree(trained):
    (applied,) = predict_files(trained["run"].directory, [trained["path"]], trained["dir"] / "levels")
    rows = pd.read_csv(applied.outputs["completed"])
    windows = pd.read_csv(applied.outputs["windows"], dtype={"block": str})
    blocks = pd.read_csv(applied.outputs["blocks"], dtype={"block": str})
    p = [f"p_{k}" for k in CLASSES]
    assert np.allclose(windows[p].sum(axis=1), 1.0) and np.allclose(rows[p].sum(axis=1), 1.0)
    assert (windows["predicted"] == np.array(CLASSES)[windows[p].to_numpy().argmax(axis=1)]).all()
    for i in (0, 17, len(rows) - 1):  # a row's probabilities: the mean over the windows covering it
        covering = windows[(windows["first_row"] <= i) & (windows["last_row"] >= i)]
        assert np.allclose(rows.loc[i, p].to_numpy(float), covering[p].mean().to_numpy(), atol=1e-9)
    for _, block in blocks.iterrows():  # a block's: the mean over its windows
        own = windows[windows["block"] == block["block"]]
        assert block["windows"] == len(own) and np.allclose(block[p].to_numpy(float), own[p].mean().to_numpy())
    assert sorted(blocks["block"]) == sorted(trained["new"]["subject"].unique())


def test_cli_and_python_give_identical_outputs(trained):
    path, out = trained["dir"] / "same.parquet", trained["dir"] / "cli"
    trained["new"].to_parquet(path, index=False)
    args = ["predict", "--run", str(trained["run"].directory), "--input", str(path), "--output", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "rows" in result.output and "windows" in result.output and "filled" in result.output
    cli = pd.read_parquet(out / "same_completed.parquet")
    python = trained["run"].complete(pd.read_parquet(path))
    assert list(cli.columns) == list(python.columns)
    for column in cli.columns:
        assert np.array_equal(cli[column].to_numpy(), python[column].to_numpy()), column  # bit for bit
    cli_windows = pd.read_parquet(out / "same_windows.parquet")
    python_windows = trained["run"].predict_proba(pd.read_parquet(path))
    assert np.array_equal(cli_windows[["p_fast", "p_slow"]].to_numpy(), python_windows[["p_fast", "p_slow"]].to_numpy())


def test_parquet_in_and_out_keeps_types_and_values(trained):
    path = trained["dir"] / "new.parquet"
    frame = trained["new"].astype({"a": np.float32})
    frame.to_parquet(path, index=False)
    (applied,) = predict_files(trained["run"].directory, [path], trained["dir"] / "pq")
    out = pd.read_parquet(applied.outputs["completed"])
    assert out["a"].dtype == np.float32 and np.array_equal(out["a"].to_numpy(), frame["a"].to_numpy())
    assert out["note"].tolist() == frame["note"].tolist()
    kept = frame["c"].notna().to_numpy()
    assert np.array_equal(out["c"].to_numpy()[kept], frame["c"].to_numpy()[kept]) and out["c"].notna().all()
    (as_csv,) = predict_files(trained["run"].directory, [path], trained["dir"] / "pq_csv", fmt="csv")
    assert as_csv.outputs["completed"].suffix == ".csv"


def test_streaming_in_small_chunks_gives_the_same_result(trained):
    from tgatunet.infer.outputs import apply_frame
    from tgatunet.infer.rundir import RunDir
    from tgatunet.infer.trained import load_trained

    model = load_trained(RunDir(trained["run"].directory)).windowed()
    frame = pd.read_csv(trained["path"])
    whole = apply_frame(model, frame, block_col="subject").tables
    chunked = apply_frame(model, frame, block_col="subject", chunk_rows=7).tables
    for name in ("completed", "windows", "blocks"):
        pd.testing.assert_frame_equal(chunked[name], whole[name], check_exact=False, atol=1e-6, rtol=1e-6)


def test_reading_a_long_parquet_file_holds_one_chunk_at_a_time(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tgatunet.data.tables import TableReader

    group = pa.table({f"ch{i}": np.random.default_rng(i).standard_normal(20_000) for i in range(4)})  # 640 KB
    path = tmp_path / "long.parquet"
    with pq.ParquetWriter(path, group.schema) as writer:
        for _ in range(40):
            writer.write_table(group)
    before, peak, rows = pa.total_allocated_bytes(), 0, 0
    for chunk in TableReader(path, chunk_rows=20_000).chunks():
        rows += len(chunk)
        peak = max(peak, pa.total_allocated_bytes() - before)
    assert rows == 800_000
    assert peak < 8 * group.nbytes, f"{peak / group.nbytes:.1f} of 40 row groups held while reading"


def test_numpy_arrays_are_completed_in_their_channel_order(trained):
    run = trained["run"]
    frame = pd.read_csv(trained["path"])
    values = frame[["c", "a"]].to_numpy()  # [N, C], channel b absent
    filled = run.complete(values, channels=["c", "a"])
    assert filled.shape == values.shape and not np.isnan(filled).any()
    assert np.array_equal(filled[:, 1], values[:, 1])
    windows = np.stack([values[:20], values[20:40]])  # [W, T, C], each window on its own
    assert run.complete(windows, channels=["c", "a"]).shape == (2, 20, 2)
    with pytest.raises(DataError, match="channels"):
        run.complete(values, channels=["c"])
    with pytest.raises(DataError, match="not numbers"):
        run.complete(np.array([["1.0", "x"]] * 20, dtype=object), channels=["c", "a"])


def test_an_array_is_completed_as_the_same_data_in_a_frame(trained):
    run = trained["run"]
    frame = pd.read_csv(trained["path"])
    windows = np.stack([frame[["a", "c"]].to_numpy()[lo : lo + 20] for lo in (0, 20, 40)])  # [3, 20, 2]
    as_frame = pd.DataFrame(windows.reshape(-1, 2), columns=["a", "c"]).assign(w=np.repeat(["0", "1", "2"], 20))
    want = run.complete(as_frame, block_col="w")[["a", "c"]].to_numpy().reshape(windows.shape)
    np.testing.assert_allclose(run.complete(windows, channels=["a", "c"]), want, rtol=0, atol=1e-12)


def test_complete_predict_and_predict_proba_of_one_frame_run_the_model_once(trained, monkeypatch):
    run = tgatunet.load(trained["run"].directory)
    frame = pd.read_csv(trained["path"])
    computed = []  # windows through the model
    model = run._model.predictor
    monkeypatch.setattr(model, "predict_windows",
                        lambda v, *a, **k: computed.append(len(v)) or type(model).predict_windows(model, v, *a, **k))
    completed, windows, probs = run.complete(frame), run.predict(frame), run.predict_proba(frame)
    assert sum(computed) == len(windows) == len(probs) > 0 and len(completed) == len(frame)  # one pass
    completed["a"] = 0.0  # the caller's copy: the next view is unchanged
    assert not (run.complete(frame)["a"] == 0.0).all() and sum(computed) == len(windows)
    run.predict(frame.assign(a=frame["a"] + 1.0))  # new content: a new pass
    assert sum(computed) == 2 * len(windows)


def test_loading_and_applying_a_run_does_not_import_the_training_stack(trained):
    script = ("import sys, pandas as pd, tgatunet; run = tgatunet.load(sys.argv[1]); run.complete(pd.read_csv(sys.argv[2])); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'torchmetrics', 'tensorboard')))")
    done = subprocess.run([sys.executable, "-c", script, str(trained["run"].directory), str(trained["path"])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_run_object_describes_itself(trained):
    run = tgatunet.load(trained["run"].directory)
    assert run.channels == ["a", "b", "c"] and run.classes == CLASSES
    assert run.config.data.window_size == 16 and "channels" in repr(run)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda f: f.rename(columns={"a": "x", "c": "y"}), "none of the run's channels"),
        (lambda f: f.assign(a="high"), "column 'a' is not numeric: row 0 holds 'high'"),
        (lambda f: f.assign(p_fast=1.0), "already has column"),
    ],
)
def test_bad_input_is_a_clear_error_naming_the_file_and_column(trained, change, message):
    path = trained["dir"] / "bad.csv"
    change(trained["new"].copy()).to_csv(path, index=False)
    with pytest.raises(DataError, match=message) as info:
        predict_files(trained["run"].directory, [path], trained["dir"] / "bad_out")
    assert "bad.csv" in str(info.value)
    assert not (trained["dir"] / "bad_out" / "bad_completed.csv").exists()  # nothing half-written


def test_cli_errors_without_tracebacks(trained):
    runner = CliRunner()
    missing = runner.invoke(app, ["predict", "--run", str(trained["run"].directory), "--input", "nope.csv"])
    assert missing.exit_code == 2 and "not found" in missing.output and "Traceback" not in missing.output
    header = trained["dir"] / "dupe.csv"
    header.write_text("a,a,c\n1,2,3\n")
    dupe = runner.invoke(app, ["predict", "--run", str(trained["run"].directory), "--input", str(header)])
    assert dupe.exit_code == 2 and "more than once" in dupe.output


def test_an_output_never_replaces_an_input(trained):
    named = trained["dir"] / "clash.csv"
    trained["new"].to_csv(named, index=False)
    other = trained["dir"] / "clash_completed.csv"
    trained["new"].to_csv(other, index=False)
    with pytest.raises(RunError, match="overwrite an input"):
        predict_files(trained["run"].directory, [named, other], trained["dir"])


def test_train_takes_dataframe_sources_and_keeps_them_in_the_run(tmp_path):
    frames = make_frames(blocks=10, rows=30)
    config = base_config({"full": "unused", "partial": "unused"})
    for source in config["sources"]:
        del source["path"]
        source["frame"] = frames[source["name"]]
    run = tgatunet.train(config, run_dir=tmp_path / "run", progress_bar=False)
    saved = run.config.data.sources
    assert [s.path for s in saved] == [str((tmp_path / "run" / "sources" / f"{n}.parquet").resolve()) for n in ("full", "partial")]
    assert pd.read_parquet(saved[1].path).equals(frames["partial"])
    assert run.evaluate()["classification"]["accuracy"] >= 0.0  # the saved sources are the run's data
    with pytest.raises(tgatunet.ConfigError, match="exactly one of 'path'"):
        tgatunet.train({**config, "sources": [{"name": "x", "have": ["a"]}]}, run_dir=tmp_path / "r2")


def test_the_quickstart_example_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gyr_x_imputed" in done.stdout and "recordings classified right" in done.stdout
    assert (tmp_path / "runs" / "quickstart" / "checkpoints").is_dir()

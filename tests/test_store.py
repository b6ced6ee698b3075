"""The out-of-core store: same data as in memory, validated on open, stale stores refused, training from it."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tgatunet.cli import app
from tgatunet.infer.predict import complete_run
from tgatunet.config import config_from_dict
from tgatunet.data import store_windows
from tgatunet.data.prepared import WindowDataset, prepare_data
from tgatunet.data.store import MANIFEST, build_store, open_store
from tgatunet.data.store_windows import StoreWindowDataset, store_data
from tgatunet.errors import ConfigError, DataError
from tgatunet.evaluate.evaluate import evaluate_run
from tgatunet.train.run import train

runner = CliRunner()


def _raw(dataset, **changes) -> dict:
    raw = copy.deepcopy(dataset["config"])
    raw["data_store"] = str(dataset["dir"] / "store")
    raw.update(changes)
    return raw


def _built(dataset, **changes):
    config = config_from_dict(_raw(dataset, **changes))
    build_store(config, config.data_store_path())
    return config


def _assert_same_data(config, stats_atol=1e-12):
    memory = prepare_data(config)
    lazy = store_data(config)
    assert lazy.channels == memory.channels and lazy.class_names == memory.class_names
    assert lazy.source_names == memory.source_names and lazy.block_splits == memory.block_splits
    assert lazy.skipped_blocks == memory.skipped_blocks
    assert torch.equal(lazy.need_patterns(), memory.need_patterns())
    np.testing.assert_array_equal(lazy.row_offsets, memory.row_offsets)
    np.testing.assert_allclose(lazy.stats.mean, memory.stats.mean, rtol=0, atol=stats_atol)
    np.testing.assert_allclose(lazy.stats.std, memory.stats.std, rtol=1e-12)
    # With the in-memory statistics, every item is identical, bit for bit.
    same_stats = store_data(config, stats=memory.stats, block_splits=memory.block_splits)
    for split, index in memory.windows.items():
        for field in ("starts", "labels", "sources", "blocks"):
            np.testing.assert_array_equal(getattr(lazy.windows[split], field), getattr(index, field))
        expected, got = WindowDataset(memory, split), StoreWindowDataset(same_stats, split)
        assert len(expected) == len(got)
        for i in range(len(expected)):
            a, b = expected[i], got[i]
            for key in a:
                assert torch.equal(a[key], b[key]), (split, i, key)


def test_round_trip_equals_in_memory_data(dataset):
    _assert_same_data(_built(dataset))


@pytest.mark.parametrize("changes", [{"downsample": 2, "window_size": 8}, {"label_rule": "majority", "step_size": 3}])
def test_round_trip_with_downsampling_majority_labels_and_small_read_chunks(dataset, monkeypatch, changes):
    monkeypatch.setattr(store_windows, "CHUNK_ROWS", 7)  # many short reads, windows straddling them
    _assert_same_data(_built(dataset, **changes))


def test_round_trip_with_numeric_and_missing_labels(dataset):
    frames = {k: v.copy() for k, v in dataset["frames"].items()}
    raw = _raw(dataset)
    for i, (name, frame) in enumerate(frames.items()):
        frame["label"] = (frame["label"] == "fast").astype(float) * 10 + 2  # classes 2 and 12
        frame.loc[frame.index % 7 == 0, "label"] = np.nan
        path = dataset["dir"] / f"{name}_numeric.csv"
        frame.to_csv(path, index=False)
        raw["sources"][i]["path"] = str(path)
    config = config_from_dict(raw)
    build_store(config, config.data_store_path())
    assert store_data(config).class_names == ["2.0", "12.0"]  # the cells as written, in numeric order
    _assert_same_data(config)


def test_up_to_date_store_is_kept_and_stale_store_refused_then_rebuilt(dataset):
    config = _built(dataset)
    _, built = build_store(config, config.data_store_path())
    assert not built
    frame = dataset["frames"]["partial"].copy()
    frame.loc[5, "a"] += 1.0
    frame.to_csv(dataset["paths"]["partial"], index=False)
    with pytest.raises(DataError, match="stale") as info:
        store_data(config)
    assert "partial" in str(info.value) and str(dataset["paths"]["partial"]) in str(info.value)
    assert "tgatunet data prepare" in str(info.value)
    _, built = build_store(config, config.data_store_path())
    assert built
    assert store_data(config).windows["train"].starts.size == prepare_data(config).windows["train"].starts.size
    assert sorted(p.name for p in dataset["dir"].iterdir() if p.name.startswith(".store")) == []


def _manifest(config) -> dict:
    return json.loads((config.data_store_path() / MANIFEST).read_text())


def _write_manifest(config, manifest: dict) -> None:
    (config.data_store_path() / MANIFEST).write_text(json.dumps(manifest))


def test_missing_store_names_the_command_that_makes_it(dataset):
    config = config_from_dict(_raw(dataset))
    with pytest.raises(DataError, match="does not exist.*tgatunet data prepare"):
        store_data(config)


def test_corrupt_manifest_refused(dataset):
    config = _built(dataset)
    (config.data_store_path() / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="manifest .* is damaged"):
        open_store(config)
    manifest = _manifest(_built(dataset))
    del manifest["sources"][0]["rows"]
    _write_manifest(config, manifest)
    with pytest.raises(DataError, match="sources.0.rows"):
        open_store(config)


def test_other_format_version_refused(dataset):
    config = _built(dataset)
    manifest = _manifest(config)
    manifest["format_version"] = 99
    _write_manifest(config, manifest)
    with pytest.raises(DataError, match="version 99"):
        open_store(config)


def test_wrong_shapes_refused(dataset):
    config = _built(dataset)
    manifest = _manifest(config)
    manifest["sources"][1]["arrays"]["values"]["shape"][1] = 4
    _write_manifest(config, manifest)
    with pytest.raises(DataError, match=r"values.npy' is <f4 \[\d+, 4\].*needs <f4 \[\d+, 3\]"):
        open_store(config)

    config = _built(dataset)  # manifest and file agree with each other, not with the rows
    manifest = _manifest(config)
    manifest["sources"][0]["rows"] += 1
    _write_manifest(config, manifest)
    with pytest.raises(DataError, match="needs"):
        open_store(config)


def test_truncated_or_altered_array_refused(dataset):
    config = _built(dataset)
    path = config.data_store_path() / "source_001" / "observed.npy"
    content = path.read_bytes()
    path.write_bytes(content[:-5])
    with pytest.raises(DataError, match="observed.npy' holds .* bytes"):
        open_store(config)
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))  # same size, one value flipped
    with pytest.raises(DataError, match="observed.npy' does not match its hash"):
        open_store(config)


def test_store_of_another_config_refused(dataset):
    config = _built(dataset)
    with pytest.raises(DataError, match="prepared for another config: source 'full' label_col"):
        open_store(config_from_dict(_raw(dataset, label_col="subject")))
    with pytest.raises(DataError, match="prepared for another config: the channel list"):
        open_store(config_from_dict(_raw(dataset, common_modalities=["b", "a"])))
    assert open_store(config).channels == ["a", "b", "c"]


def test_prepare_refuses_a_folder_that_is_not_a_store(dataset):
    config = config_from_dict(_raw(dataset, data_store=str(dataset["dir"])))
    with pytest.raises(DataError, match="is not a tgatunet store"):
        build_store(config, config.data_store_path())


def test_cli_prepare(dataset):
    path = dataset["write"](_raw(dataset))
    result = runner.invoke(app, ["data", "prepare", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "2 source(s)" in result.output
    result = runner.invoke(app, ["data", "prepare", "--config", str(path)])
    assert result.exit_code == 0 and "up to date" in result.output
    raw = _raw(dataset)
    del raw["data_store"]
    result = runner.invoke(app, ["data", "prepare", "--config", str(dataset["write"](raw, "plain.yaml"))])
    assert result.exit_code == 2 and "--out" in result.output and "Traceback" not in result.output


def test_training_from_the_store_end_to_end(dataset):
    # The memory optimizer probes memory with a batch of the store's windows.
    raw = _raw(dataset, run_dir=str(dataset["dir"] / "store_run"), use_memory_optimizer=True)
    config = config_from_dict(raw)
    build_store(config, config.data_store_path())
    run = train(dataset["write"](raw, "store.yaml"), progress_bar=False)
    in_memory = train(
        dataset["write"](
            {**dataset["config"], "run_dir": str(dataset["dir"] / "memory_run"), "use_memory_optimizer": True},
            "memory.yaml",
        ),
        progress_bar=False,
    )
    stored, memory = run.read_metrics()["train"], in_memory.read_metrics()["train"]
    assert stored["windows"] == memory["windows"]
    assert stored["best_val_mae"] == pytest.approx(memory["best_val_mae"], rel=1e-4)
    assert run.read_data()[1] == in_memory.read_data()[1]
    assert run.read_metrics()["memory"]["optimizer"]["enabled"]
    # The leakage guard fingerprints the same validation and test inputs, whichever way they are read.
    guard, memory_guard = run.read_metrics()["leakage_guard"], in_memory.read_metrics()["leakage_guard"]
    assert guard["held"] and guard["start"] == memory_guard["start"]
    # The completion intervals are calibrated on the same validation recordings, read from the store.
    tables = [json.loads(r.calibration_path.read_text())["intervals"] for r in (run, in_memory)]
    np.testing.assert_allclose(tables[0]["quantiles"], tables[1]["quantiles"], rtol=1e-3, atol=1e-3)
    assert tables[0]["counts"] == tables[1]["counts"]
    metrics = evaluate_run(run.root)
    assert metrics["completion"]["model"]["mae"] > 0
    written = {w.name: w for w in complete_run(run.root)}
    assert written["partial"].filled["c"] > 0


def test_dynamic_need_update_on_a_store_is_a_config_error(dataset):
    with pytest.raises(ConfigError, match="data_store"):
        config_from_dict(_raw(dataset, dynamic_need_update=True, need_update_start=0))

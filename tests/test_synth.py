"""Synthetic datasets: valid against the data contract, deterministic, and learnable."""

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from tgatunet.cli import app
from tgatunet.config import load_config
from tgatunet.data.prepared import prepare_data
from tgatunet.data.synth import SynthSpec, generate, write_synthetic


def test_written_dataset_loads_with_its_config(tmp_path):
    spec = SynthSpec(sources=3, channels=6, missing_per_source=2, blocks_per_source=6, block_length=100, file_format="parquet")
    config = load_config(write_synthetic(spec, tmp_path))
    data = prepare_data(config)
    assert sorted(data.channels) == [f"ch{i:02d}" for i in range(6)]
    assert len(data.class_names) == 3
    # Every source lacks its need channels entirely, and every channel is observed somewhere.
    for s, src in enumerate(config.data.sources):
        rows = slice(data.row_offsets[s], data.row_offsets[s + 1])
        for ch in src.need:
            assert not data.observed[rows, data.channels.index(ch)].any()
    assert data.observed.any(axis=0).all()


def test_same_seed_same_data_other_seed_other_data():
    a, _ = generate(SynthSpec(blocks_per_source=2, block_length=50, seed=1))
    b, _ = generate(SynthSpec(blocks_per_source=2, block_length=50, seed=1))
    c, _ = generate(SynthSpec(blocks_per_source=2, block_length=50, seed=2))
    pd.testing.assert_frame_equal(a["source_0"], b["source_0"])
    assert not a["source_0"]["ch00"].equals(c["source_0"]["ch00"])


def test_channels_are_coupled_and_labels_depend_on_signals():
    frames, _ = generate(SynthSpec(sources=1, channels=4, missing_per_source=0, blocks_per_source=30, block_length=300, nan_fraction=0.0))
    frame = frames["source_0"]
    values = frame[[f"ch{i:02d}" for i in range(4)]].to_numpy()
    corr = np.corrcoef(values.T)
    assert np.abs(corr[np.triu_indices(4, 1)]).max() > 0.3
    # The dominant frequency of a block tells its class.
    peak = {}
    for _, part in frame.groupby("block"):
        spectrum = np.abs(np.fft.rfft(part["ch00"] - part["ch00"].mean()))
        peak.setdefault(part["label"].iloc[0], []).append(int(spectrum[1:].argmax()))
    medians = sorted(np.median(v) for v in peak.values())
    assert medians[0] < medians[-1]


def test_cli_writes_files(tmp_path):
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path), "--blocks", "3", "--length", "60"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "source_2.csv").is_file()
    bad = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path), "--format", "xls"])
    assert bad.exit_code == 2 and "csv" in bad.output


def test_a_dataset_at_several_rates_is_written_as_devices_write_it(tmp_path):
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path), "--rates", "64,32,4", "--sources", "2", "--channels", "6",
                                      "--blocks", "4", "--length", "512"])
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "config.yaml")
    assert (config.data.time_col, config.data.sample_rate_hz) == ("time", 32.0)
    frame = pd.read_csv(tmp_path / "source_0.csv")
    assert np.allclose(np.diff(frame["time"][:10]), 1 / 64)
    held = frame[["ch00", "ch01", "ch02"]].notna().mean().to_numpy()  # 64, 32 and 4 Hz: every row, every 2nd, every 16th
    assert np.allclose(held, [1, 1 / 2, 1 / 16], atol=0.02)
    data = prepare_data(config)
    assert data.observed[:, data.channels.index("ch02")].mean() > 0.3  # the 4 Hz channel is on the grid, not missing
    bad = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "x"), "--rates", "64,30"])
    assert bad.exit_code != 0 and "each the fastest divided by a whole number" in bad.output

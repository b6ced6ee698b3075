"""Sources as devices write them: time columns, rates, slow channels inside fast files, gaps; the model's grid and
the completions written back at each row's own time."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tgatunet.config import config_from_dict
from tgatunet.data.resample import on_grid
from tgatunet.data.sources import load_source
from tgatunet.data.timeline import RHYTHM_ROWS, Timing, channel_steps, lattice
from tgatunet.errors import ConfigError, DataError
from tgatunet.infer.regrid import Regrid


def _amplitude(x: np.ndarray, f: float, fs: float) -> float:
    """Least-squares amplitude of the sine of frequency ``f`` in ``x`` sampled at ``fs``."""
    t = np.arange(len(x)) / fs
    basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)
    coef = np.linalg.lstsq(basis, x, rcond=None)[0]
    return float(np.hypot(*coef))


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_decimating_and_back_keeps_a_sine_below_the_new_nyquist_and_removes_one_above(factor):
    fs, n = 100.0, 6000
    nyquist = fs / factor / 2
    t = np.arange(n) / fs
    G = (n - 1) // factor + 1
    for share, kept in [(0.2, True), (0.5, True), (0.8, True), (1.5, False), (2.5, False)]:
        f = share * nyquist
        x = np.sin(2 * np.pi * f * t + 0.3)
        down = on_grid(np.arange(n), x, Fraction(1, factor), Fraction(0), 0, G)
        back = on_grid(np.arange(G), down, Fraction(factor), Fraction(0), 0, (G - 1) * factor + 1)
        inner = slice(n // 10, -n // 10)  # away from the recording's two ends
        if kept:
            assert abs(_amplitude(back[inner], f, fs) - 1.0) < 0.01, (factor, f)
            assert np.abs(back[inner] - x[: len(back)][inner]).max() < 0.02
        elif f < fs / 2:  # above the new Nyquist: removed, not folded onto a lower frequency
            assert np.abs(down[G // 10 : -G // 10]).max() < 0.05, (factor, f)


def test_a_gap_stays_unobserved_and_the_grid_keeps_the_samples_at_the_same_rate():
    q = np.array([0, 1, 2, 3, 10, 11, 12])
    v = np.arange(7, dtype=float)
    same = on_grid(q, v, Fraction(1), Fraction(0), 0, 13)
    assert np.array_equal(same[q], v) and np.isnan(same[4:10]).all()
    up = on_grid(q, v, Fraction(2), Fraction(0), 0, 25)  # twice the rate: nothing between samples 3 and 10
    assert np.isnan(up[7:20]).all() and np.isfinite(up[:7]).all() and np.isfinite(up[20:]).all()


def _timed_frame(rows: int, seed: int = 0, hz: float = 20.0) -> pd.DataFrame:
    """Two blocks of a, b at ``hz`` and c at hz / 4 (empty between its samples), drop-outs, and a 3 s jump in time."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows) / hz
    t[rows // 3 :] += 3.0
    a = np.sin(2 * np.pi * 0.7 * t) + 0.1 * rng.standard_normal(rows)
    b = np.cos(2 * np.pi * 0.3 * t)
    c = np.full(rows, np.nan)
    c[::4] = np.sin(2 * np.pi * 0.2 * t[::4])
    a[rng.random(rows) < 0.02] = np.nan
    block = np.where(np.arange(rows) < rows * 2 // 3, "s1", "s2")
    t[rows * 2 // 3 :] -= t[rows * 2 // 3]
    return pd.DataFrame({"subject": block, "label": "walk", "t": t, "a": a, "b": b, "c": c})


def _config(frame: pd.DataFrame, **data) -> object:
    raw = {"common_modalities": ["a", "b", "c"], "sources": [{"name": "s", "frame": frame}], "block_col": "subject",
           "label_col": "label", "time_col": "t", "window_size": 16, **data}
    return config_from_dict(raw)


def test_a_slow_channel_inside_a_fast_file_is_recognised_not_missing():
    frame = _timed_frame(2000)
    seconds = frame["t"].to_numpy()
    positions, starts, _ = lattice(seconds, frame["subject"].to_numpy(object), 0.05, 1.0, "f", 0, None)
    steps = channel_steps(positions, starts, frame[["a", "b", "c"]].notna().to_numpy())
    assert list(steps) == [1, 1, 4]
    table = load_source(_config(frame, max_gap_s=1.0), _config(frame).data.sources[0], 20.0)
    c = table.values[:, 2]
    for lo, hi in table.segment_bounds:  # c is observed on the grid wherever its samples reach
        inner = c[lo:hi][4:-4]  # a segment may begin and end between two samples of c
        assert np.isfinite(inner).all()


def test_time_gaps_split_blocks_into_segments_or_stay_unobserved():
    frame = _timed_frame(600)
    split = load_source(_config(frame, max_gap_s=1.0), _config(frame).data.sources[0], 20.0)
    assert [str(b) for b in split.segment_blocks] == ["s1", "s1", "s2"]
    assert np.array_equal(np.diff(split.segment_bounds[:, 0]), [200, 200])  # the jump is not on the grid
    whole = load_source(_config(frame), _config(frame).data.sources[0], 20.0)
    assert [str(b) for b in whole.segment_blocks] == ["s1", "s2"]
    jump = whole.values[200:260]  # 3 s at 20 Hz with no row: every channel unobserved there
    assert np.isnan(jump[:, :2]).all() and len(whole.values) == len(split.values) + 60


def test_datetimes_with_a_zone_without_one_and_seconds_give_the_same_grid():
    frame = _timed_frame(400).query("subject == 's1'").copy()
    start = pd.Timestamp("2024-05-01 10:00:00")
    naive = frame.assign(t=start + pd.to_timedelta(frame["t"], unit="s"))
    zoned = naive.assign(t=naive["t"].dt.tz_localize("Europe/Berlin"))
    text = zoned.assign(t=zoned["t"].map(lambda v: v.isoformat()))
    grids = [load_source(_config(f), _config(f).data.sources[0], 10.0).values for f in (frame, naive, zoned, text)]
    for grid in grids[1:]:
        np.testing.assert_array_equal(grid, grids[0])


def test_window_settings_in_seconds():
    frame = _timed_frame(100)
    config = _config(frame, window_size=None, sample_rate_hz=50, window_seconds=2.56, step_seconds=0.64)
    assert (config.data.window_size, config.data.stride) == (128, 32)
    with pytest.raises(ConfigError, match="sample_rate_hz as a number"):
        _config(frame, window_size=None, window_seconds=2.0)
    with pytest.raises(ConfigError, match="give one of them"):
        _config(frame, sample_rate_hz=50, window_seconds=2.0, window_size=64)


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.assign(t=f["t"].where(f.index != 7, f["t"][6])), r"block 's1' row 7 repeats the time of row 6"),
    (lambda f: f.assign(t=f["t"].where(f.index != 7, 0.01)), r"block 's1' row 7 has an earlier time than row 6"),
    (lambda f: f.assign(t=f["t"].astype(object).where(f.index != 5, "soon")), r"row 5 holds 'soon', which is not a number of seconds"),
    (lambda f: f.assign(t=f["t"].where(f.index != 5, np.nan)), r"time column 't' is empty or not a time at row 5"),
    (lambda f: f.assign(t=[pd.Timestamp("2024-05-01 10:00", tz="Europe/Berlin" if i < 50 else "America/New_York") + pd.Timedelta(seconds=i)
                           for i in range(len(f))]), "mixes time zones"),
    (lambda f: f.assign(t=["2024-05-01T10:00:00+01:00" if i < 50 else "2024-05-01T11:00:00" for i in range(len(f))]),
     "mixes time zones"),
])
def test_bad_times_are_refused_naming_the_rows(edit, message):
    frame = edit(_timed_frame(300))
    with pytest.raises(DataError, match=message):
        load_source(_config(frame), _config(frame).data.sources[0], 20.0)


def test_a_rate_that_disagrees_with_the_timestamps_names_block_and_rows():
    frame = _timed_frame(300)
    config = config_from_dict({**_config(frame).to_dict(), "sources": [{"name": "s", "frame": frame, "rate_hz": 25.0}]})
    with pytest.raises(DataError, match=r"block 's1' rows 0-199: the timestamps step 0.05 s \(20 Hz\) but rate_hz is 25"):
        load_source(config, config.data.sources[0], 20.0)
    agreeing = config_from_dict({**config.to_dict(), "sources": [{"name": "s", "frame": frame, "rate_hz": 20.2}]})
    load_source(agreeing, agreeing.data.sources[0], 20.0)  # within 2%


def test_a_source_up_sampled_more_than_four_times_is_warned_about(caplog):
    frame = _timed_frame(300)
    with caplog.at_level(logging.WARNING):
        load_source(_config(frame), _config(frame).data.sources[0], 20.0)
    assert not caplog.records  # c (5 Hz) 4x: not more than 4
    with caplog.at_level(logging.WARNING):
        load_source(_config(frame), _config(frame).data.sources[0], 40.0)
    assert "'c' up-sampled onto the model's grid by up to 8x" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_source(_config(frame), _config(frame).data.sources[0], 100.0)
    assert "'a', 'b', 'c' up-sampled onto the model's grid by up to 20x" in caplog.text


def test_a_table_streamed_in_pieces_is_resampled_as_the_whole():
    rows = RHYTHM_ROWS + 40_000
    frame = _timed_frame(rows, seed=1)
    for grid_hz in (10.0, 15.0, 40.0):
        config = _config(frame, max_gap_s=1.0)
        whole = load_source(config, config.data.sources[0], grid_hz)
        values = frame[["a", "b", "c"]].to_numpy().astype(np.float32).astype(np.float64)  # as training reads them
        blocks = frame["subject"].to_numpy(object)
        regrid = Regrid(Timing("t", None, 1.0), grid_hz, ["a", "b", "c"], np.ones(3, bool), "f")
        got, starts = [], []
        for lo in range(0, rows, 7919):
            g, _, _, s = regrid.feed(frame.iloc[lo : lo + 7919], values[lo : lo + 7919], blocks[lo : lo + 7919], lo)
            got.append(g), starts.append(s)
        g, _, _, s = regrid.finish()
        got, starts = np.concatenate([*(x for x in got if x.size), g]), np.concatenate([*starts, s])
        np.testing.assert_array_equal(got.astype(np.float32), whole.values)
        assert np.array_equal(np.flatnonzero(starts), whole.segment_bounds[:, 0])


# --- a trained run on timed sources -------------------------------------------------------------------------------------


def _two_rate_sources(root: Path) -> dict[str, Path]:
    """``full`` at 20 Hz (a, b every row, c every second row: a 10 Hz channel) with seconds; ``partial`` at 10 Hz
    (a, b; needs c) with zoned datetimes, in Parquet."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_frames

    frames = make_frames(rows=80)
    parts = []
    for block, g in frames["full"].groupby("subject", sort=False):
        n = len(g)
        t = np.arange(2 * n - 1) / 20.0
        part = {"subject": block, "label": np.repeat(g["label"].to_numpy(), 2)[: 2 * n - 1], "t": t}
        for c in "abc":
            part[c] = np.interp(t, np.arange(n) / 10.0, g[c].to_numpy())
        part["c"][1::2] = np.nan
        parts.append(pd.DataFrame(part))
    paths = {"full": root / "full.csv", "partial": root / "partial.parquet"}
    pd.concat(parts, ignore_index=True).to_csv(paths["full"], index=False)
    partial = frames["partial"].copy()
    partial["t"] = pd.Timestamp("2024-05-01T12:00:00Z") + pd.to_timedelta(np.tile(np.arange(80) / 10.0, 12), unit="s")
    partial.to_parquet(paths["partial"], index=False)
    return paths


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory) -> Path:
    from tgatunet.train.run import train

    root = tmp_path_factory.mktemp("timed")
    paths = _two_rate_sources(root)
    config = {"common_modalities": ["a", "b"], "time_col": "t",
              "sources": [{"name": "full", "path": str(paths["full"]), "have": ["c"]},
                          {"name": "partial", "path": str(paths["partial"]), "need": ["c"]}],
              "block_col": "subject", "label_col": "label", "window_size": 16, "step_size": 8, "val_fraction": 0.2,
              "test_fraction": 0.2, "seed": 3, "batch_size": 8, "hidden_channels": 16, "epochs": 2, "max_gap_s": 1.0,
              "run_dir": str(root / "run")}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    train(root / "config.yaml")
    return root / "run"


def test_the_grid_is_the_slowest_source_and_is_kept_with_the_run(timed_run):
    import tgatunet

    run = tgatunet.load(timed_run)
    assert run.sample_rate_hz == 10.0


def test_completed_at_each_rows_own_time_observed_values_untouched(timed_run, tmp_path):
    import tgatunet

    run = tgatunet.load(timed_run)
    full = pd.read_csv(timed_run.parent / "full.csv")
    full.loc[40, "c"] = np.nan  # a drop-out at one of c's own sample times (rows 0, 2, 4, ...)
    full.loc[41:43, "a"] = np.nan
    out = run.complete(full)
    assert list(out.index) == list(full.index) and out["t"].equals(full["t"])
    for ch in "abc":
        seen = full[ch].notna()
        assert np.array_equal(out.loc[seen, ch].to_numpy(), full.loc[seen, ch].to_numpy())  # bit for bit
    assert list(np.flatnonzero(out["c_imputed"])) == [40]  # c filled at its own sample time only
    assert list(np.flatnonzero(out["a_imputed"])) == [41, 42, 43]
    every = run.complete(full, fill="grid")
    assert every["c_imputed"].sum() == full["c"].isna().sum()  # asked: every row
    probs = out.filter(like="p_").to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_complete_writes_each_source_at_its_own_rows(timed_run):
    from tgatunet.infer.predict import complete_run

    written = {w.name: w for w in complete_run(timed_run)}
    partial = pd.read_parquet(timed_run.parent / "partial.parquet")
    done = pd.read_parquet(written["partial"].outputs["completed"])
    assert len(done) == len(partial) and done["t"].equals(partial["t"]) and done["c_imputed"].all()
    windows = pd.read_parquet(written["partial"].outputs["windows"])
    assert (windows["first_row"] <= windows["last_row"]).all() and windows["last_row"].max() == len(partial) - 1


def test_predict_on_the_command_line_equals_the_api(timed_run, tmp_path):
    from typer.testing import CliRunner

    import tgatunet
    from tgatunet.cli import app

    frame = pd.read_csv(timed_run.parent / "full.csv").rename(columns={"t": "seconds"})
    frame.loc[10:30, "b"] = np.nan
    path = tmp_path / "rec.parquet"
    frame.to_parquet(path, index=False)
    result = CliRunner().invoke(app, ["predict", "--run", str(timed_run), "--input", str(path), "--output", str(tmp_path / "out"),
                                      "--time-col", "seconds", "--interval"])
    assert result.exit_code == 0, result.output
    cli = pd.read_parquet(tmp_path / "out" / "rec_completed.parquet")
    api = tgatunet.load(timed_run).complete(frame, time_col="seconds", interval=True)
    pd.testing.assert_frame_equal(cli, api.reset_index(drop=True), check_dtype=False)
    assert cli["b_imputed"].sum() == 21 and cli.loc[10:30, "b_lower"].notna().all()


def test_a_time_column_for_a_run_trained_on_steps_is_refused():
    from tgatunet.data.normalize import ChannelStats
    from tgatunet.infer.outputs import apply_frame
    from tgatunet.infer.stream import WindowModel

    model = WindowModel(None, ["a", "b", "c"], ["walk"], ChannelStats(np.zeros(3), np.ones(3)), 16, 1, 8)  # rows as steps
    frame = _timed_frame(100)
    with pytest.raises(DataError, match="trained with rows as steps"):
        apply_frame(model, frame, timing=Timing("t"), grid_hz=None)
    with pytest.raises(DataError, match="rate_hz must be a positive number"):
        Timing(None, -1.0)


def test_a_store_holds_timed_sources_on_the_grid_and_notices_a_new_rate(tmp_path):
    from tgatunet.data.store import build_store, open_store

    frame = _timed_frame(600)
    frame.to_csv(tmp_path / "s.csv", index=False)
    raw = {"common_modalities": ["a", "b", "c"], "sources": [{"name": "s", "path": str(tmp_path / "s.csv")}], "block_col": "subject",
           "label_col": "label", "time_col": "t", "max_gap_s": 1.0, "window_size": 16, "sample_rate_hz": 10}
    config = config_from_dict(raw)
    store, _ = build_store(config, tmp_path / "store")
    grid = load_source(config, config.data.sources[0], 10.0).values
    np.testing.assert_array_equal(store.read_values(0, 0, len(grid)), grid)
    with pytest.raises(DataError, match="grid_hz is 10.0 in the store but 20.0 in the config"):
        open_store(config_from_dict({**raw, "sample_rate_hz": 20}), tmp_path / "store")


def test_each_block_is_completed_on_its_own_even_where_its_last_row_falls_between_grid_steps(timed_run):
    import tgatunet

    run = tgatunet.load(timed_run)
    full = pd.read_csv(timed_run.parent / "full.csv")
    full = full.drop(full.groupby("subject").tail(1).index).reset_index(drop=True)  # 158 rows at 20 Hz: ends mid-step of 10 Hz
    full.loc[full.groupby("subject").tail(3).index, "a"] = np.nan
    together = run.complete(full)
    first = full[full["subject"] == full["subject"].iloc[0]]
    alone = run.complete(first)
    pd.testing.assert_frame_equal(together.iloc[: len(first)][["a", "a_imputed"]], alone[["a", "a_imputed"]])
    assert together["a_imputed"].sum() == full["a"].isna().sum()


def test_the_global_time_column_applies_to_the_sources_that_have_it():
    frame = _timed_frame(300)
    steps = frame.drop(columns="t").iloc[::2].reset_index(drop=True)  # already on the 10 Hz grid, no time column
    config = config_from_dict({"common_modalities": ["a", "b", "c"], "block_col": "subject", "label_col": "label", "time_col": "t",
                               "window_size": 16, "sources": [{"name": "timed", "frame": frame}, {"name": "steps", "frame": steps}]})
    from tgatunet.data.sources import grid_rate, source_timing

    assert [source_timing(config, s).time_col for s in config.data.sources] == ["t", None]
    assert grid_rate(config) == 20.0
    assert len(load_source(config, config.data.sources[1], 20.0).values) == len(steps)


def test_a_slow_channel_off_the_grids_phase_or_changing_its_rhythm_keeps_its_samples():
    n = 400
    t = np.arange(n) / 20.0
    c = np.full(n, np.nan)
    c[1:200:2] = np.sin(t[1:200:2])  # 10 Hz, on the odd rows: half a grid step off a 10 Hz grid
    c[202::2] = np.sin(t[202::2])  # then on the even rows: its rhythm shifts
    frame = pd.DataFrame({"subject": "s", "label": "x", "t": t, "a": np.sin(t), "b": np.cos(t), "c": c})
    config = _config(frame)
    grid = load_source(config, config.data.sources[0], 10.0).values[:, 2]
    assert np.isfinite(grid[1:99]).all() and np.isfinite(grid[101:199]).all()  # no sample lost on either side of the change


def test_timestamps_that_jitter_do_not_drift_or_invent_gaps():
    rng = np.random.default_rng(0)
    n = 38_400  # ten minutes at 64 Hz, each time off by 4 ms (a quarter step) at random
    t = np.arange(n) / 64 + rng.normal(0, 0.004, n)
    t = np.maximum.accumulate(t) + np.arange(n) * 1e-7
    positions, _, _ = lattice(t, np.full(n, "s", dtype=object), 1 / 64, None, "f", 0, None)
    assert 0 <= (positions - np.arange(n)).min() and (positions - np.arange(n)).max() <= 1


def test_times_written_with_offsets_across_a_daylight_saving_change_are_one_clock():
    frame = _timed_frame(300).query("subject == 's1'").copy()
    zoned = frame.assign(t=pd.Timestamp("2024-10-27T00:59:55Z").tz_convert("Europe/Berlin") + pd.to_timedelta(frame["t"], unit="s"))
    text = zoned.assign(t=zoned["t"].map(lambda v: v.isoformat()))  # +02:00, then +01:00
    assert text["t"].str[-6:].nunique() == 2
    grids = [load_source(_config(f), _config(f).data.sources[0], 20.0).values for f in (zoned, text)]
    np.testing.assert_array_equal(grids[0], grids[1])


def test_the_runs_gap_limit_holds_when_the_time_column_is_named_and_windows_in_a_gap_are_left_out(timed_run):
    import tgatunet

    run = tgatunet.load(timed_run)  # trained with max_gap_s: 1.0
    frame = pd.read_csv(timed_run.parent / "full.csv")
    first = frame["subject"] == frame["subject"].iloc[0]
    frame.loc[first & (frame.index >= 100), "t"] += 20.0  # a 20 s jump in time inside the first recording
    windows = [run.apply(frame, time_col=t).tables["windows"] for t in (None, "t")]
    pd.testing.assert_frame_equal(windows[0], windows[1])
    assert (windows[0]["block"] == frame["subject"].iloc[0]).sum() > 4  # split at the jump: windows on each side
    wide = run.apply(frame, max_gap_s=100.0).tables["windows"]  # not split: no window without a row of the table
    assert (wide["first_row"] >= 0).all() and (wide["first_row"] <= wide["last_row"]).all()


def test_an_array_has_no_times_to_resample(timed_run):
    import tgatunet

    with pytest.raises(DataError, match="an array holds no times"):
        tgatunet.load(timed_run).complete(np.zeros((40, 3)), channels=["a", "b", "c"], time_col="t")

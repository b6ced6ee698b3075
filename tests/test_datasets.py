"""Tests for the bundled BasicMotions dataset and the bundled: path scheme."""

from pathlib import Path

import pandas as pd
import pytest

from tgatunet.data.datasets import (
    BUNDLED_SCHEME,
    list_bundled,
    load_basic_motions,
    resolve_bundled,
)

ACC = ["acc_x", "acc_y", "acc_z"]
GYR = ["gyr_x", "gyr_y", "gyr_z"]
META = ["recording", "split", "activity", "time_s"]


@pytest.fixture(scope="module")
def sources() -> dict[str, pd.DataFrame]:
    return load_basic_motions()


def test_files_resolve_and_load(sources):
    for name in ("watch_full", "watch_acc"):
        path = resolve_bundled(f"{BUNDLED_SCHEME}basic_motions/{name}.csv")
        assert path.is_file()
        assert f"{BUNDLED_SCHEME}basic_motions/{name}.csv" in list_bundled()
        assert len(sources[name]) > 0


def test_columns(sources):
    assert list(sources["watch_full"].columns) == META + ACC + GYR
    assert list(sources["watch_acc"].columns) == META + ACC
    assert not any(c.startswith("gyr") for c in sources["watch_acc"].columns)


def test_recordings(sources):
    both = pd.concat(sources.values(), ignore_index=True)
    per_rec = both.groupby("recording")
    assert per_rec.ngroups == 80
    assert (per_rec.size() == 100).all()
    assert (both.drop_duplicates("recording")["split"].value_counts() == 40).all()
    # a recording lives in exactly one source
    assert set(sources["watch_full"].recording).isdisjoint(sources["watch_acc"].recording)
    for df in sources.values():
        times = df.groupby("recording", sort=False)["time_s"].apply(list)
        expected = [round(0.1 * t, 1) for t in range(100)]
        assert all(t == pytest.approx(expected) for t in times)


def test_official_test_split_is_shared(sources):
    for df in sources.values():
        recs = df.drop_duplicates("recording")
        assert (recs["split"] == "test").sum() == 20
        assert (recs["split"] == "train").sum() == 20


def test_classes(sources):
    for df in sources.values():
        recs = df.drop_duplicates("recording")
        assert recs["activity"].nunique() == 4
        # balanced: 5 recordings per class per split in each source
        assert (recs.groupby(["split", "activity"]).size() == 5).all()


def test_single_split_and_label_per_recording(sources):
    for df in sources.values():
        assert (df.groupby("recording")[["split", "activity"]].nunique() == 1).all().all()
        assert (df["recording"].str.split("_").str[0] == df["split"]).all()


def test_no_nan(sources):
    for df in sources.values():
        assert not df.isna().any().any()


def test_unknown_bundled_name_lists_available():
    with pytest.raises(FileNotFoundError) as exc:
        resolve_bundled(f"{BUNDLED_SCHEME}basic_motions/nope.csv")
    msg = str(exc.value)
    assert "bundled:basic_motions/watch_full.csv" in msg
    assert "bundled:basic_motions/watch_acc.csv" in msg


def test_plain_paths_pass_through(tmp_path):
    assert resolve_bundled("data/x.csv") == Path("data/x.csv")
    assert resolve_bundled(str(tmp_path)) == tmp_path

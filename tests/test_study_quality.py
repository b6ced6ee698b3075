"""The quality benchmark: datasets split by person, the better SAITS variant per pattern, targets met or not."""

import hashlib
import io
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks.quality.datasets import WATCH_SPLIT, Wheel, convert_watch
from benchmarks.quality.run import compare, markdown_table


def _spread(mean: float) -> dict:
    return {"mean": mean, "std": 0.01, "values": [mean]}


def _result() -> dict:
    return {
        "mae": {
            "need": {"model": _spread(0.30), "saits_default": _spread(0.45), "saits_task": _spread(0.33)},
            "gaps": {"model": _spread(0.36), "saits_default": _spread(0.34), "saits_task": _spread(0.35)},
        },
        "training_seconds": {"model": _spread(100.0), "saits_default": _spread(300.0), "saits_task": _spread(200.0)},
        "accuracy": _spread(0.99), "windows": {"train": 352},
    }


def test_the_model_is_compared_with_the_better_saits_variant_of_each_pattern():
    versus = compare(_result())
    assert versus["need"]["peer"] == "saits_task" and versus["need"]["ratio"] == pytest.approx(0.30 / 0.33)
    assert versus["need"]["met"]  # 0.909 <= 0.95
    assert versus["gaps"]["peer"] == "saits_default" and not versus["gaps"]["met"]  # 1.06 > 1.0
    assert versus["time_ratio"] == pytest.approx(0.5)  # against the need pattern's better variant
    table = markdown_table({"datasets": {"toy": {**_result(), "versus_better_saits": versus}}})
    assert "| toy | need | 0.300 ± 0.010 | 0.450 ± 0.010 | 0.330 ± 0.010 | 0.909 (met, ≤ 0.95) |" in table


def _fake_seglearn_wheel(path):
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.arange(1, 11), 2)
    data = {"X": [rng.standard_normal((30, 6)) for _ in subjects], "y": np.arange(len(subjects)) % 7,
            "subject": subjects, "side": np.tile([0.0, 1.0], 10), "X_labels": ["ax", "ay", "az", "wx", "wy", "wz"],
            "y_labels": ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]}
    buffer = io.BytesIO()
    np.save(buffer, np.array(data, dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("seglearn/data/watch_dataset.npy", buffer.getvalue())


def test_the_watch_dataset_is_split_by_subject_and_the_acc_only_watch_lacks_the_gyroscope(tmp_path):
    wheel = tmp_path / "seglearn.whl"
    _fake_seglearn_wheel(wheel)
    config = yaml.safe_load(convert_watch(wheel, tmp_path / "watch").read_text())
    full = pd.read_csv(tmp_path / "watch" / "watch_full.csv")
    acc = pd.read_csv(tmp_path / "watch" / "watch_acc.csv")
    assert "gyr_x" in full and "gyr_x" not in acc and config["sources"][1]["need"] == ["gyr_x", "gyr_y", "gyr_z"]
    both = pd.concat([full, acc])
    assert (both.groupby("subject")["split"].nunique() == 1).all()  # a person is in one split only
    assert both.groupby("subject")["split"].first().to_dict() == WATCH_SPLIT
    assert set(full.loc[full["split"] == "test", "subject"]) == {5, 6}  # the need pattern's unseen people


def test_a_wheel_whose_checksum_changed_is_refused(tmp_path):
    (tmp_path / "x-1-py3-none-any.whl").write_bytes(b"not the archive")
    wheel = Wheel("x", "1", "x-1-py3-none-any.whl", hashlib.sha256(b"the archive").hexdigest())
    with pytest.raises(RuntimeError, match="SHA-256"):
        wheel.fetch(tmp_path)

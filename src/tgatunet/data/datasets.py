"""Datasets bundled with tgatunet.

Small real datasets ship inside the package under ``tgatunet/data/bundled/`` so that examples, configs and tests run
without downloads. A config refers to them with the ``bundled:`` scheme, e.g. ``bundled:basic_motions/watch_full.csv``,
which :func:`resolve_bundled` turns into a real file path of the installed package. Each dataset folder has a
``README.md`` with its origin, licence notes and the script that regenerates it; README.md (Bundled data) describes
``basic_motions``, the one bundled now.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

import pandas as pd

BUNDLED_SCHEME = "bundled:"
_DATA_SUFFIXES = (".csv", ".parquet")


def _bundled_root() -> Path:
    # The package is installed as plain files (no zip import), so as_file
    # returns the real directory without extracting anything.
    with as_file(files("tgatunet.data") / "bundled") as root:
        return Path(root)


def list_bundled() -> list[str]:
    """Return the ``bundled:`` paths of all bundled data files, sorted."""
    root = _bundled_root()
    if not root.is_dir():
        return []
    return sorted(BUNDLED_SCHEME + p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix in _DATA_SUFFIXES)


def resolve_bundled(path: str) -> Path:
    """Map ``bundled:<dataset>/<file>`` to the file inside the package.

    Paths without the ``bundled:`` scheme are returned unchanged as a Path. Raises FileNotFoundError, listing the
    available bundled files, if the bundled file does not exist.
    """
    if not str(path).startswith(BUNDLED_SCHEME):
        return Path(path)
    rel = str(path)[len(BUNDLED_SCHEME):].lstrip("/")
    target = _bundled_root().joinpath(*rel.split("/"))
    if not rel or not target.is_file():
        available = ", ".join(list_bundled()) or "(none)"
        raise FileNotFoundError(f"no bundled file {path!r}; available: {available}")
    return target


def load_basic_motions() -> dict[str, pd.DataFrame]:
    """Load the two BasicMotions sources: ``{"watch_full": df, "watch_acc": df}``."""
    # Block ids and labels are strings; keep them from being parsed as anything else.
    dtypes = {"recording": str, "split": str, "activity": str}
    return {name: pd.read_csv(resolve_bundled(f"{BUNDLED_SCHEME}basic_motions/{name}.csv"), dtype=dtypes) for name in ("watch_full", "watch_acc")}

"""Whole tgatunet commands, each in its own process as a user runs them, for the scripts in ``benchmarks/scripts``.

A process of its own keeps thread settings, compiled graphs and memory peaks of
one variant from leaking into the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def tgatunet(*args: str, env: dict[str, str] | None = None) -> None:
    """``python -m tgatunet ARGS`` with its output hidden; a failure raises."""
    subprocess.run([sys.executable, "-m", "tgatunet", *args], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})


def train_run(config: Path, run_dir: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``tgatunet train`` of ``config`` into ``run_dir`` (replaced); returns the run's ``metrics.json``."""
    tgatunet("train", "--config", str(config), "--run-dir", str(run_dir), "--overwrite", env=env)
    return json.loads((run_dir / "metrics.json").read_text())


def write_variant(base: Path, name: str, overrides: dict[str, Any]) -> Path:
    """``base``'s config with ``overrides``, written beside it (its source paths are relative to its folder)."""
    path = base.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(base.read_text()), **overrides}))
    return path

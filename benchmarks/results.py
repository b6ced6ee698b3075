"""Writing benchmark figures: one ``results.json`` per output folder, one section per benchmark.

A figure named ``graph.speedup_cache_vs_naive`` is ``results["graph"]["speedup_cache_vs_naive"]``.
Each benchmark replaces its own section and keeps the others, so the suite's
sections accumulate in one file. Every section records how it was measured and
on what.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from tgatunet import __version__
from tgatunet.files import atomic_write_text


def environment() -> dict[str, Any]:
    """Library versions, device and thread count: what a figure was measured on."""
    import lightning

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or platform.machine()
    return {
        "tgatunet": __version__,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "device": device,
        "cuda": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def read_results(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_section(out_dir: Path, section: str, values: dict[str, Any]) -> Path:
    """Replace ``section`` of ``out_dir/results.json`` with ``values`` plus the environment."""
    out_dir = Path(out_dir)
    results = read_results(out_dir)
    results[section] = {**values, "environment": environment()}
    path = out_dir / "results.json"
    atomic_write_text(path, json.dumps(results, indent=2, default=float))
    return path

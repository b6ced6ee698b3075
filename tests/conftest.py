"""Shared fixtures: a tiny two-source dataset written to disk, and its config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml


def make_frames(seed: int = 0, blocks: int = 12, rows: int = 40) -> dict[str, pd.DataFrame]:
    """Two sources of coupled signals: ``full`` has a, b, c; ``partial`` has a, b and needs c.

    Channel ``c`` is a lagged mix of ``a`` and ``b``; the label is which of two
    rhythms drives the block.
    """
    rng = np.random.default_rng(seed)
    frames = {}
    for name in ("full", "partial"):
        parts = []
        for b in range(blocks):
            label = b % 2
            t = np.arange(rows)
            freq = 0.15 if label == 0 else 0.35
            a = np.sin(freq * t + rng.uniform(0, 6)) + 0.1 * rng.standard_normal(rows)
            bb = np.cos(freq * t) + 0.1 * rng.standard_normal(rows)
            c = 0.7 * np.roll(a, 1) - 0.4 * bb + 0.05 * rng.standard_normal(rows)
            part = pd.DataFrame(
                {
                    "subject": f"{name}{b:02d}",
                    "label": ["slow", "fast"][label],
                    "a": a,
                    "b": bb,
                }
            )
            if name == "full":
                part["c"] = c
            parts.append(part)
        frames[name] = pd.concat(parts, ignore_index=True)
    return frames


def base_config(paths: dict[str, Path]) -> dict:
    return {
        "common_modalities": ["a", "b"],
        "sources": [
            {"name": "full", "path": str(paths["full"]), "have": ["c"]},
            {"name": "partial", "path": str(paths["partial"]), "need": ["c"]},
        ],
        "block_col": "subject",
        "label_col": "label",
        "window_size": 16,
        "step_size": 8,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "seed": 3,
        "batch_size": 8,
        "hidden_channels": 16,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "transformer_layers": 1,
        "attention_heads": 2,
        "epochs": 2,
        "patience": 5,
    }


@pytest.fixture
def dataset(tmp_path: Path) -> dict:
    """Files on disk plus a writer of configs: ``{"paths", "frames", "config", "write"}``."""
    frames = make_frames()
    paths = {}
    for name, frame in frames.items():
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    config = base_config(paths)

    def write(cfg: dict | None = None, name: str = "config.yaml") -> Path:
        cfg = dict(config) if cfg is None else cfg
        cfg.setdefault("run_dir", str(tmp_path / "run"))
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return {"paths": paths, "frames": frames, "config": config, "write": write, "dir": tmp_path}

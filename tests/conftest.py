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


def assert_equally_near_neighbours(got, want, values, visible, time_k: int) -> None:
    """Two knn tables ``(index, valid) [B, T, K]`` of the same windows pick equally near neighbours.

    Devices round the distances differently, so a near tie may be broken either way, and an
    invalid slot (no step shares a channel) may point at any step: the temporal slots and the
    validity must be equal, and the valid knn slots' distances (the mean squared difference
    over the channels both steps show) equal up to rounding.
    """
    import torch

    (gi, gv), (wi, wv) = (t.cpu() for t in got), (t.cpu() for t in want)
    K0 = 2 * time_k + 1
    assert torch.equal(gi[..., :K0], wi[..., :K0]) and torch.equal(gv, wv)
    v = visible.double()
    x = torch.where(visible, values.double(), 0.0)
    both = v @ v.mT  # [B, T, T]
    # Steps sharing no channel are never neighbours (0 / 0 -> inf): their invalid slots may point anywhere.
    dist = (((x * x) @ v.mT + v @ (x * x).mT - 2 * x @ x.mT) / both).nan_to_num(nan=float("inf"))
    knn_valid = gv[..., K0:]
    got_d = dist.gather(2, gi[..., K0:]).masked_fill(~knn_valid, float("inf")).sort(-1).values
    want_d = dist.gather(2, wi[..., K0:]).masked_fill(~knn_valid, float("inf")).sort(-1).values
    torch.testing.assert_close(got_d, want_d, atol=1e-5, rtol=1e-5)


def repoint_copy(root: Path) -> None:
    """A run copied to ``root`` (``root/data`` with its config, ``root/run``): both configs pointed at the copy's files."""
    raw = yaml.safe_load((root / "data" / "config.yaml").read_text())
    for source in raw["sources"]:
        source["path"] = str(root / "data" / Path(source["path"]).name)
    raw["run_dir"] = str(root / "run")
    (root / "data" / "config.yaml").write_text(yaml.safe_dump(raw))
    saved = yaml.safe_load((root / "run" / "config.yaml").read_text())
    saved["sources"] = raw["sources"]
    (root / "run" / "config.yaml").write_text(yaml.safe_dump(saved))

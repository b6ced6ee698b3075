"""The reference setting of the suite's training and inference figures, on synthetic data.

The study fixes one setting for the headline figures: the performance guide's
``medium`` preset (:data:`tgatunet.config.PRESETS`: batch 16, width 64, 2/2 GAT
levels, 1 transformer layer, 2 heads, gradient checkpointing on),
``window_size`` 128, 9 channels, fp32 (``precision: "32"``). The data come from
:mod:`tgatunet.data.synth`: 3 Parquet sources of 9 channels, each but the first
lacking 2 of them, 3 classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tgatunet.config import PRESETS
from tgatunet.data.synth import SynthSpec, write_synthetic

# The repository's root: the study's default config is found from here, whatever the working directory.
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "basicmotions.yaml"

PRESET = "medium"
WINDOW_SIZE = 128
CHANNELS = 9
SOURCES = 3


def setting_keys() -> dict[str, Any]:
    """Config keys of the reference setting (windows overlap by half, as ``tgatunet data synth`` writes them)."""
    return {**PRESETS[PRESET], "window_size": WINDOW_SIZE, "step_size": WINDOW_SIZE // 2, "precision": "32"}


def describe() -> dict[str, Any]:
    """The setting as recorded next to every figure measured at it."""
    return {"preset": PRESET, **setting_keys(), "channels": CHANNELS, "sources": SOURCES, "data": "tgatunet.data.synth"}


def write_setting_data(
    folder: Path, blocks_per_source: int, block_length: int, channels: int = CHANNELS, **overrides: Any
) -> Path:
    """Write a synthetic dataset and its config at the reference setting; returns the config path.

    Args:
        blocks_per_source: recordings per source.
        block_length: rows per recording.
        channels: modality channels (each source lacks up to 2 of them).
        overrides: config keys that replace the setting's (e.g. ``epochs``, ``window_size``).
    """
    spec = SynthSpec(
        sources=SOURCES,
        channels=channels,
        missing_per_source=min(2, channels - 1),
        blocks_per_source=blocks_per_source,
        block_length=block_length,
        file_format="parquet",
    )
    path = write_synthetic(spec, folder)
    raw = {**yaml.safe_load(path.read_text(encoding="utf-8")), **setting_keys(), **overrides}
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path

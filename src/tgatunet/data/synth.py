"""Synthetic multi-source multimodal datasets in the data contract, with a matching config.

Signals are built the way real sensor channels relate to each other: every block (recording) is driven by two latent
rhythms whose frequency and amplitude depend on the block's class, and every channel is its own mix of those rhythms at
its own lag, plus a slow drift and sensor noise. So a missing channel is predictable from the others (through the shared
rhythms, not by copying), and the label is predictable from the signals.

Each source lacks a different subset of channels (its ``need``); every
channel is present in at least one source, so each can be learnt and scored.

With ``rates`` (Hz, e.g. 64, 32, 4) the files are written as devices write them: a ``time`` column in seconds, one row
per sample of the fastest rate, and each channel at its own rate (channel ``c`` at ``rates[c % len(rates)]``): a slower
channel is anti-aliased and holds a value only at its own sample times, its cells empty between them. The config then
names the time column and sets ``sample_rate_hz`` to the second fastest rate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from scipy.signal import resample_poly

from tgatunet.errors import DataError
from tgatunet.files import atomic_write, atomic_write_text

# Marks a folder written by write_synthetic, which may write it again.
MARKER = ".tgatunet-synth"


@dataclass(frozen=True)
class SynthSpec:
    """Shape of a synthetic dataset; the same spec (seed included) gives the same files."""

    sources: int = 3  # source files
    channels: int = 9  # modality channels in total
    missing_per_source: int = 2  # channels each source lacks (0 for the first source)
    blocks_per_source: int = 20  # recordings per source
    block_length: int = 400  # rows per recording
    classes: int = 3
    nan_fraction: float = 0.01  # share of observed cells left empty at random
    file_format: str = "csv"  # or "parquet"
    seed: int = 0
    rates: tuple[float, ...] = ()  # Hz per channel, in turn; each a whole fraction of the fastest (empty: rows are steps)

    def __post_init__(self) -> None:
        if self.sources < 1 or self.channels < 2 or self.classes < 2 or self.block_length < 2:
            raise ValueError("need at least 1 source, 2 channels, 2 classes and 2 rows per block")
        if not 0 <= self.missing_per_source < self.channels:
            raise ValueError(f"missing_per_source must be in [0, {self.channels - 1}]")
        if self.file_format not in ("csv", "parquet"):
            raise ValueError("file_format must be 'csv' or 'parquet'")
        if any(not r > 0 for r in self.rates) or any(max(self.rates) % r for r in self.rates):
            raise ValueError(f"rates {list(self.rates)} must be positive, each the fastest divided by a whole number (e.g. 64, 32, 4)")

    def every(self, channel: int) -> int:
        """Rows between two samples of ``channel`` (1 without rates)."""
        return round(max(self.rates) / self.rates[channel % len(self.rates)]) if self.rates else 1


def channel_names(n: int) -> list[str]:
    return [f"ch{i:02d}" for i in range(n)]


def missing_channels(spec: SynthSpec) -> list[list[str]]:
    """Channels each source lacks: source 0 has all; the others lack a rotating window of channels."""
    names = channel_names(spec.channels)
    out = [[]]
    for s in range(1, spec.sources):
        first = ((s - 1) * spec.missing_per_source) % spec.channels
        out.append([names[(first + j) % spec.channels] for j in range(spec.missing_per_source)])
    return out


def _block_signals(rng: np.random.Generator, label: int, spec: SynthSpec, mixing: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """``[block_length, channels]`` signals of one block of class ``label``."""
    t = np.arange(spec.block_length + int(lags.max()) + 1, dtype=np.float64)
    base = 0.04 + 0.05 * label / max(spec.classes - 1, 1)  # class sets the main rhythm's frequency
    f1 = base * rng.uniform(0.9, 1.1)
    f2 = 2.7 * f1 * rng.uniform(0.95, 1.05)
    amp = 1.0 + 0.5 * (label % 2)  # and, for odd classes, its strength
    r1 = amp * np.sin(2 * np.pi * f1 * t + rng.uniform(0, 2 * np.pi))
    r2 = np.sin(2 * np.pi * f2 * t + rng.uniform(0, 2 * np.pi)) * (1 + 0.3 * np.sin(2 * np.pi * 0.005 * t))
    drift = np.cumsum(rng.normal(0, 0.02, size=len(t)))
    n = spec.block_length
    cols = []
    for c in range(spec.channels):
        lag = int(lags[c])
        mix = mixing[c, 0] * r1[lag : lag + n] + mixing[c, 1] * r2[lag : lag + n] + mixing[c, 2] * drift[:n]
        cols.append(mix + rng.normal(0, 0.15, size=n))
    return np.stack(cols, axis=1)


def generate(spec: SynthSpec) -> tuple[dict[str, pd.DataFrame], dict]:
    """The source tables and a config dict (paths relative to the folder they are written to)."""
    rng = np.random.default_rng(spec.seed)
    names = channel_names(spec.channels)
    mixing = rng.normal(0, 1, size=(spec.channels, 3)) * np.array([1.0, 0.7, 0.5])
    lags = rng.integers(0, 6, size=spec.channels)
    missing = missing_channels(spec)
    common = [c for c in names if not any(c in m for m in missing)]
    frames, sources = {}, []
    for s in range(spec.sources):
        parts = []
        for b in range(spec.blocks_per_source):
            label = b % spec.classes
            values = _at_own_rates(_block_signals(rng, label, spec, mixing, lags), spec)
            values[rng.random(values.shape) < spec.nan_fraction] = np.nan
            part = pd.DataFrame(values, columns=names)
            if spec.rates:
                part.insert(0, "time", np.arange(spec.block_length) / max(spec.rates))
            part.insert(0, "label", f"class_{label}")
            part.insert(0, "block", f"s{s}_b{b:03d}")
            parts.append(part.drop(columns=missing[s]))
        name = f"source_{s}"
        frames[name] = pd.concat(parts, ignore_index=True)
        have = [c for c in names if c not in common and c not in missing[s]]
        sources.append({"name": name, "path": f"{name}.{spec.file_format}", "have": have, "need": missing[s]})
    config = {"common_modalities": common, "sources": sources, "block_col": "block", "label_col": "label",
              "window_size": min(128, spec.block_length), "step_size": max(1, min(128, spec.block_length) // 2), "seed": spec.seed}
    if spec.rates:
        fastest = sorted(set(spec.rates), reverse=True)
        grid = fastest[1] if len(fastest) > 1 else fastest[0]
        steps = max(4, min(128, spec.block_length * grid // fastest[0]))
        config.update(time_col="time", sample_rate_hz=grid, window_size=int(steps), step_size=int(steps) // 2)
    return frames, config


def _at_own_rates(values: np.ndarray, spec: SynthSpec) -> np.ndarray:
    """``[n, C]`` signals at the fastest rate with each slower channel anti-aliased and kept at its own sample times."""
    out = values.copy()
    for c in range(values.shape[1]):
        k = spec.every(c)
        if k > 1:
            out[:, c] = np.nan
            out[::k, c] = resample_poly(values[:, c], 1, k)[: len(out[::k])]
    return out


def _claim(out_dir: Path) -> None:
    """Make ``out_dir`` ours (:data:`MARKER`), or refuse a folder holding files this command did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"'{out_dir}' is a file; give a new or empty folder for the synthetic data.")
    found = sorted(out_dir.iterdir()) if out_dir.is_dir() else []
    if found and not (out_dir / MARKER).is_file():
        raise DataError(f"'{out_dir}' holds files that `tgatunet data synth` did not write (e.g. '{found[0].name}'); "
                        "give a new or empty folder, so that nothing of yours is overwritten.")
    atomic_write_text(out_dir / MARKER, json.dumps({"tgatunet": "synthetic data"}))


def write_synthetic(spec: SynthSpec, out_dir: str | Path) -> Path:
    """Write the sources and ``config.yaml`` to ``out_dir``; returns the config path.

    ``out_dir`` must be new, empty, or written by this function before (it marks the folder).
    """
    out_dir = Path(out_dir)
    _claim(out_dir)
    frames, config = generate(spec)
    for name, frame in frames.items():
        if spec.file_format == "parquet":
            atomic_write(out_dir / f"{name}.parquet", lambda handle: frame.to_parquet(handle, index=False))
        else:
            atomic_write(out_dir / f"{name}.csv", lambda handle: frame.to_csv(handle, index=False))
    config_path = out_dir / "config.yaml"
    header = f"# Synthetic data written by `tgatunet data synth` ({spec})\n"
    atomic_write_text(config_path, header + yaml.safe_dump(config, sort_keys=False))
    return config_path

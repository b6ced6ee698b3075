"""The run directory: where a run's config, data description, checkpoints, metrics and plots live.

Layout::

    RUN_DIR/
      config.yaml            the resolved config of the run
      data.json              channels, classes, sources, normalisation, block splits
      checkpoints/best.ckpt  lowest validation loss
      checkpoints/last.ckpt  end of the latest epoch (what --resume continues)
      logs/                  TensorBoard events and metrics.csv
      metrics.json           training, completion and classification figures
      plots/                 loss curves, completed vs true signals, confusion matrix
      completed/             completed copies of the sources (tgatunet complete)
      graph_cache/           knn graphs by content (default location; kept by --overwrite)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tgatunet.config import Config, config_from_dict
from tgatunet.data.normalize import ChannelStats
from tgatunet.errors import RunError
from tgatunet.files import atomic_write_text


@dataclass(frozen=True)
class RunDir:
    """Paths and readers of one run directory."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data_path(self) -> Path:
        return self.root / "data.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def graph_cache(self) -> Path:
        return self.root / "graph_cache"

    def require_trained(self) -> None:
        """Fail with a clear message unless the run has a config and a checkpoint."""
        if not self.root.is_dir():
            raise RunError(f"run directory '{self.root}' does not exist. Train first: tgatunet train --config FILE")
        for path in (self.config_path, self.data_path):
            if not path.is_file():
                raise RunError(f"'{self.root}' is not a complete run: '{path.name}' is missing. Train it again.")
        if not (self.best_checkpoint.is_file() or self.last_checkpoint.is_file()):
            raise RunError(f"run '{self.root}' has no checkpoint yet; train it (or --resume) first.")

    def checkpoint_for_inference(self) -> Path:
        return self.best_checkpoint if self.best_checkpoint.is_file() else self.last_checkpoint

    def write_config(self, config: Config) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(config.to_dict(), sort_keys=False))

    def read_config(self) -> Config:
        raw = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        return config_from_dict(raw, origin=str(self.config_path), config_dir=self.root)

    def write_data(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.data_path, json.dumps(info, indent=1))

    def read_data(self) -> tuple[ChannelStats, dict[str, str], dict[str, Any]]:
        """Normalisation, block splits and the rest of ``data.json``."""
        info = json.loads(self.data_path.read_text(encoding="utf-8"))
        return ChannelStats.from_dict(info["stats"]), info["block_splits"], info

    def read_metrics(self) -> dict[str, Any]:
        if not self.metrics_path.is_file():
            return {}
        return json.loads(self.metrics_path.read_text(encoding="utf-8"))

    def update_metrics(self, section: str, values: Any) -> None:
        """Replace one top-level section of ``metrics.json``, keeping the others."""
        metrics = self.read_metrics()
        metrics[section] = values
        atomic_write_text(self.metrics_path, json.dumps(metrics, indent=2, default=float))

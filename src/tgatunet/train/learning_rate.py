"""The learning rate of a step: a linear warm-up, then halved whenever the validation error stalls.

``lr(step) = lr * min(1, (step + 1) / warmup_steps) * scale``, where ``scale`` halves (down to 1/32) after
``patience`` validation checks without a lower validation completion MAE. It follows the run's progress rather than a
length fixed in advance, so it suits ``epochs: auto``, where early stopping decides the length; the warm-up keeps the
first steps of a fresh AdamW, whose moment estimates are still poor, from moving the weights too far.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class LearningRate:
    """The learning-rate policy and its state (saved with checkpoints, so a resumed run continues it)."""

    base: float
    warmup_steps: int = 100
    patience: int = 4
    smallest_scale: float = 1 / 32
    best: float = math.inf
    stalled: int = 0
    scale: float = 1.0

    def at(self, step: int) -> float:
        return self.base * min(1.0, (step + 1) / self.warmup_steps) * self.scale

    def observe(self, error: float) -> None:
        """One validation check's completion error."""
        if error < self.best * (1 - 1e-4):
            self.best, self.stalled = error, 0
            return
        self.stalled += 1
        if self.stalled >= self.patience:
            self.scale, self.stalled = max(self.scale / 2, self.smallest_scale), 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)

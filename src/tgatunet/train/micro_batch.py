"""One training step computed in micro-batches: the same gradient, a lower memory peak.

A step over a batch of ``B`` windows runs as micro-batches of at most ``size`` windows, one after the other; each
one's backward adds its gradient into ``.grad``. Each micro-batch loss is its share of the batch loss (its sums
divided by the *whole batch's* counts), so the accumulated gradient is the
batch's own, while only one micro-batch's activations are alive at a time::

    peak memory ~ fixed + per_window * size      instead of      fixed + per_window * B

On an out-of-memory error (CUDA's, or ``MemoryError``) the step's partial gradients are dropped, ``size`` is halved
and the same step runs again from its first window: no window is skipped, and the smaller size is kept for the steps
that follow.

Under DDP the gradients are averaged across processes once per step: every micro-batch's backward but the last runs
under ``hold_sync`` (Lightning's ``block_backward_sync``), and the last one's all-reduce carries the sum.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

import torch

from tgatunet.errors import RunError

log = logging.getLogger(__name__)

OUT_OF_MEMORY = (torch.cuda.OutOfMemoryError, MemoryError)


@dataclass(frozen=True)
class SizeChange:
    """A change of micro-batch size during training, and why."""

    step: int
    reason: str  # "out_of_memory" (a step failed and was retried) or "memory_target" (usage crossed it)
    old: int
    new: int


class MicroBatches:
    """Runs a step's forward and backward in micro-batches of ``size`` windows (None: the whole batch at once).

    ``recover_out_of_memory``: retry a step that runs out of memory with half the size (else the error propagates).
    """

    def __init__(self, size: int | None = None, recover_out_of_memory: bool = False) -> None:
        if size is not None and size < 1:
            raise ValueError(f"micro-batch size must be >= 1, got {size}")
        self.size = size
        self.recover_out_of_memory = recover_out_of_memory
        self.changes: list[SizeChange] = []
        self.steps_by_size: Counter[int] = Counter()

    def lower(self, current: int, new: int, step: int, reason: str) -> None:
        """Use micro-batches of ``new`` windows (clamped to >= 1) instead of ``current`` from now on."""
        self.size = max(1, new)
        self.changes.append(SizeChange(step, reason, current, self.size))

    def accumulate(self, batch_size: int, contribution: Callable[[slice], dict[str, torch.Tensor]], backward: Callable[[torch.Tensor], None],
                   reset: Callable[[], None], step: int,
                   hold_sync: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> dict[str, torch.Tensor]:
        """Run one step over ``batch_size`` windows; returns every key of the contributions, summed and detached.

        ``contribution``: ``rows -> {"loss": scalar with grad, ...}``, a micro-batch's share of the step's loss and of
        any other figure to add up (e.g. correct predictions). ``backward``: Lightning's ``manual_backward``.
        ``reset``: drops partial gradients before a retry. ``step``: the global step, for the record of size changes.
        ``hold_sync``: the context in which a backward does not synchronise gradients across processes.
        """
        while True:
            size = min(self.size or batch_size, batch_size)
            try:
                totals = self._run(batch_size, size, contribution, backward, hold_sync)
            except OUT_OF_MEMORY as err:
                if not self.recover_out_of_memory:
                    raise
                if size == 1:
                    raise RunError("out of memory with a micro-batch of a single window: lower window_size or "
                                   "hidden_channels, set use_gradient_checkpoint: true, or free memory on the device.") from err
            else:
                self.steps_by_size[size] += 1
                return totals
            # Outside the except block the failed attempt's tensors (held by the traceback) are free.
            reset()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.lower(size, size // 2, step, "out_of_memory")
            log.warning("out of memory at step %d with micro-batches of %d windows: retrying the step with %d", step, size, self.size)

    @staticmethod
    def _run(batch_size: int, size: int, contribution: Callable[[slice], dict[str, torch.Tensor]], backward: Callable[[torch.Tensor], None],
             hold_sync: Callable[[], AbstractContextManager]) -> dict[str, torch.Tensor]:
        totals: dict[str, torch.Tensor] = {}
        starts = range(0, batch_size, size)
        for lo in starts:
            part = contribution(slice(lo, min(lo + size, batch_size)))
            with hold_sync() if lo != starts[-1] else contextlib.nullcontext():
                backward(part["loss"])
            for key, value in part.items():
                totals[key] = totals[key] + value.detach() if key in totals else value.detach()
        return totals

    def summary(self) -> dict:
        """Sizes used (steps per size) and every change, for ``metrics.json``."""
        steps = {str(k): v for k, v in sorted(self.steps_by_size.items())}
        return {"micro_batch_size": self.size, "steps_by_micro_batch_size": steps, "changes": [asdict(c) for c in self.changes]}

"""``batch_size: auto``: the batch that fills the training device, measured, and the learning rate that goes with it.

Starting at 16 windows, the batch doubles while its training step (forward, backward, in the run's precision) fits
``memory_target`` of the memory budget and makes at least 5% more windows per second than the batch before, up to a
quarter of an epoch's windows; the fastest batch measured is kept. Its learning rate follows the square-root rule for
Adam-type optimisers (Malladi et al., 2022): ``lr x sqrt(batch / 16)``, ``lr`` being the config's (meant for 16
windows), after the usual warm-up (:mod:`tgatunet.train.learning_rate`). With ``epochs: auto`` the budget is counted
in windows, so a larger batch takes proportionally fewer steps.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tgatunet.config import Config
from tgatunet.data.prepared import WindowDataset
from tgatunet.profiling import peak_memory_bytes
from tgatunet.train.memory_optimizer import memory_budget, precision_context

log = logging.getLogger(__name__)

REFERENCE_BATCH = 16
GAIN = 1.05


@dataclass
class BatchChoice:
    """The batch chosen, the learning rate for it, and the measurements behind them."""

    batch_size: int
    lr: float
    limit_gb: float
    curve: list[dict[str, float]] = field(default_factory=list)
    rule: str = (f"doubling from {REFERENCE_BATCH} while the step fits memory_target and is >= {GAIN:.2f}x faster per window; "
                 f"lr x sqrt(batch / {REFERENCE_BATCH})")

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def _step_seconds(module: Any, batch: dict[str, torch.Tensor], context, repeats: int = 3) -> float:
    def step() -> None:
        with context():
            module.losses(batch, *module.inputs(batch))["loss"].backward()
        module.zero_grad(set_to_none=True)

    step()  # warm-up: allocator, kernel choice (and, with repeats=0, the one step measured for memory)
    if not repeats:
        return 0.0
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if batch["values"].is_cuda:
            torch.cuda.synchronize(batch["values"].device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def search_batch(module: Any, dataset: WindowDataset, config: Config, device: torch.device, largest: int = 8192) -> BatchChoice:
    """Measure ``module``'s training step (on ``device``) at growing batches of ``dataset``'s windows; choose one."""
    budget, _ = memory_budget(device, config.performance.memory_budget_gb)
    limit = config.performance.memory_target * budget
    context = precision_context(config.performance.precision, device)
    dtype = next(module.parameters()).dtype
    curve, best, size = [], None, REFERENCE_BATCH
    module.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        while size <= min(largest, max(REFERENCE_BATCH, len(dataset))):
            batch = dataset.__getitems__([i % len(dataset) for i in range(size)])
            batch = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}
            peak = peak_memory_bytes(lambda: _step_seconds(module, batch, context, repeats=0), device)
            if curve and peak > limit:
                break
            rate = size / _step_seconds(module, batch, context)
            curve.append({"batch_size": size, "windows_per_second": rate, "peak_gb": peak / 2**30})
            if best is not None and rate < GAIN * best["windows_per_second"]:
                break
            best = curve[-1] if best is None or rate > best["windows_per_second"] else best
            size *= 2
    chosen = int(best["batch_size"])
    lr = config.training.lr * math.sqrt(chosen / REFERENCE_BATCH)
    log.info("batch_size auto: %d windows (%.0f windows/s), lr %.3g", chosen, best["windows_per_second"], lr)
    return BatchChoice(chosen, lr, limit / 2**30, curve)

"""The memory optimizer: micro-batch size from measured memory, lowered when memory runs high.

With ``use_memory_optimizer: true`` a step's ``batch_size`` windows go through the model in micro-batches
(:mod:`tgatunet.train.micro_batch`): the step's gradient stays the same, its memory peak does not. Before training
(:mod:`tgatunet.train.plan`), the peak memory of one training micro-batch (forward and backward, as
:meth:`TGATUNetModule.losses` computes it) is measured with :func:`tgatunet.profiling.peak_memory_bytes` at two small
sizes, and a line is fitted through the two points::

    peak(b) = fixed + per_window * b

where ``fixed`` also counts what a step holds whatever ``b`` is: the parameters, their gradients, AdamW's two moment
tensors, and the step's whole batch of inputs and hidden-value mask. The chosen size is the largest
``b <= batch_size`` with ``peak(b) <= memory_target * budget``, measured and refined (:func:`choose_micro_batch`).
During training :class:`MemoryOptimizer` lowers the size when the memory in use crosses the target; an out-of-memory
error is recovered by :class:`~tgatunet.train.micro_batch.MicroBatches` itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import psutil
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision

from tgatunet.config import Config
from tgatunet.data.prepared import WindowDataset
from tgatunet.errors import RunError
from tgatunet.hardware import GB
from tgatunet.profiling import peak_memory_bytes
from tgatunet.train.micro_batch import MicroBatches

log = logging.getLogger(__name__)

PROBE_SIZES = (4, 8)
# Parameter-sized tensors a step holds besides the measured micro-batch: the weights, the
# gradients (kept from one micro-batch to the next), AdamW's exp_avg and exp_avg_sq.
PARAMETER_COPIES = 4


@dataclass(frozen=True)
class MemoryModel:
    """``peak(b) = fixed + per_window * b`` bytes, for micro-batches of ``b`` windows."""

    fixed: float
    per_window: float

    @classmethod
    def through(cls, points: dict[int, int]) -> MemoryModel:
        """The line through two measured ``{size: peak bytes}`` points (flat through one)."""
        (b1, p1), (b2, p2) = sorted(points.items())[0], sorted(points.items())[-1]
        if b1 == b2:
            return cls(fixed=float(p1), per_window=0.0)
        # Measurements are noisy at small sizes; memory never shrinks with more windows.
        per_window = max((p2 - p1) / (b2 - b1), 0.0)
        return cls(fixed=p2 - per_window * b2, per_window=per_window)

    def peak(self, size: int) -> float:
        return self.fixed + self.per_window * size

    def max_size(self, limit: float) -> int:
        """The largest micro-batch whose predicted peak stays within ``limit`` (0 if none does)."""
        if self.fixed > limit:
            return 0
        if self.per_window <= 0:
            return 2**31 - 1
        return int((limit - self.fixed) // self.per_window)


def choose_micro_batch(measure: Callable[[int], int], limit: float, batch_size: int, probe_sizes: tuple[int, int] = PROBE_SIZES,
                       refinements: int = 4) -> tuple[int, MemoryModel, dict[int, int]]:
    """The largest micro-batch ``<= batch_size`` whose measured peak stays within ``limit`` bytes.

    The line through two small probes predicts the size; that size is measured. If it does not
    fit (memory grew faster than the line), the size is interpolated between the largest size
    that fitted and the smallest that did not, and measured again, up to ``refinements`` times.

    Args:
        measure: ``size -> peak bytes`` of one training step with micro-batches of ``size``.

    Returns:
        ``(size, memory model near the limit, every measurement {size: peak})``.

    Raises:
        RunError: not even one window fits.
    """
    large = min(probe_sizes[1], batch_size)
    small = min(probe_sizes[0], max(1, large // 2))
    points = {b: measure(b) for b in sorted({small, large})}
    model = MemoryModel.through(points)
    size = min(batch_size, model.max_size(limit))
    for _ in range(refinements + 1):
        if size >= 1 and size not in points:
            points[size] = measure(size)
        fits = max((b for b, peak in points.items() if peak <= limit), default=0)
        over = min((b for b, peak in points.items() if peak > limit), default=None)
        if over is None or fits == batch_size or over == fits + 1:
            break
        # The line was optimistic: interpolate between the sizes on either side of the limit.
        low = fits or min(points)
        model = MemoryModel.through({low: points[low], over: points[over]})
        size = min(over - 1, max(fits + 1, model.max_size(limit)))
    if fits >= 1:
        return fits, model, points
    if 1 not in points:
        points[1] = measure(1)
    if points[1] <= limit:
        return 1, model, points
    raise RunError(f"a training step needs {points[1] / GB:.2f} GB even with one window at a time, above the memory target "
                   f"{limit / GB:.2f} GB (memory_target x budget). Raise memory_budget_gb or memory_target, or lower "
                   "window_size or hidden_channels, or set use_gradient_checkpoint: true.")


def memory_budget(device: torch.device, budget_gb: float | None) -> tuple[int, str]:
    """Bytes training may use on ``device``, and where that figure comes from."""
    if budget_gb is not None:
        return int(budget_gb * GB), "memory_budget_gb"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # What this process's allocator already holds is its to use too.
        return int(free + torch.cuda.memory_reserved(device)), "free GPU memory"
    return int(psutil.virtual_memory().available), "available RAM"


def precision_context(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """Lightning's training-step context for config key ``precision`` (autocast for the mixed ones)."""
    plugin = MixedPrecision(precision, device.type) if precision.endswith("-mixed") else Precision()
    return plugin.train_step_context


def _tensor_bytes(tensors: Iterator[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class MemoryPlan:
    """The optimizer's choice and what it is based on (all memory in bytes)."""

    device: str
    batch_size: int
    micro_batch_size: int
    budget: int
    budget_from: str
    target: float
    fixed: float
    per_window: float
    measured: dict[int, int]

    @property
    def limit(self) -> float:
        return self.target * self.budget

    @property
    def model(self) -> MemoryModel:
        return MemoryModel(self.fixed, self.per_window)

    def summary(self) -> dict[str, Any]:
        """Figures for ``metrics.json`` and ``tgatunet hardware``, in GB and MB."""
        return {"device": self.device, "batch_size": self.batch_size, "micro_batch_size": self.micro_batch_size,
                "budget_gb": round(self.budget / GB, 4), "budget_from": self.budget_from, "target_fraction": self.target,
                "limit_gb": round(self.limit / GB, 4), "fixed_gb": round(self.fixed / GB, 4), "per_window_mb": round(self.per_window / 2**20, 4),
                "predicted_peak_gb": round(self.model.peak(self.micro_batch_size) / GB, 4),
                "largest_fitting_micro_batch": self.model.max_size(self.limit),
                "measured_peak_gb": {str(k): round(v / GB, 4) for k, v in sorted(self.measured.items())}}



def plan_memory(module: Any, dataset: WindowDataset, config: Config, device: torch.device,
                step_context: Callable[[], contextlib.AbstractContextManager] | None = None) -> MemoryPlan:
    """Measure the training step of ``module`` on ``device`` and choose its micro-batch size.

    ``module`` is a :class:`~tgatunet.train.module.TGATUNetModule` already on ``device``. The
    probes run on copies of the first training windows, in training mode, inside
    ``step_context`` (default: the config's precision, as Lightning sets it up), with the random
    number generators forked: training draws the same numbers with and without the optimizer.
    """
    params = _tensor_bytes(module.parameters())
    one = dataset.__getitems__([0])
    per_window_inputs = _tensor_bytes(iter(one.values())) + one["observed"].numel()  # + hidden mask (bool)
    fixed_extra = params * PARAMETER_COPIES + per_window_inputs * config.training.batch_size
    context = step_context or precision_context(config.performance.precision, device)

    def measure(size: int) -> int:
        batch = dataset.__getitems__([i % len(dataset) for i in range(size)])
        # As Lightning's precision plugin converts them: floating inputs in the weights' type (bf16-true).
        dtype = next(module.parameters()).dtype
        batch = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}

        def step() -> None:
            with context():
                module.losses(batch, *module.inputs(batch))["loss"].backward()

        module.zero_grad(set_to_none=True)
        peak = peak_memory_bytes(step, device)
        module.zero_grad(set_to_none=True)
        return peak + fixed_extra

    was_training = module.training
    module.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        budget, budget_from = memory_budget(device, config.performance.memory_budget_gb)
        size, model, measured = choose_micro_batch(measure, config.performance.memory_target * budget, config.training.batch_size)
    module.train(was_training)
    return MemoryPlan(str(device), config.training.batch_size, size, budget, budget_from, config.performance.memory_target,
                      model.fixed, model.per_window, measured)


def memory_in_use(device: torch.device, plan: MemoryPlan, size: int, planned_rss: int) -> int:
    """Bytes training holds now, with micro-batches of ``size`` windows.

    CUDA: what the caching allocator has reserved (every live tensor and the cache around them).
    The CPU has no allocator statistics: the plan's prediction for ``size``, plus what the
    process's resident memory grew since planning (``planned_rss``). The probes' memory stays with
    the allocator and is reused by training, so growth beyond it is memory the prediction missed.
    """
    if device.type == "cuda":
        return int(torch.cuda.memory_reserved(device))
    return int(plan.model.peak(size) + psutil.Process(os.getpid()).memory_info().rss - planned_rss)


class MemoryOptimizer(pl.Callback):
    """Lowers the micro-batch size of the plan (measured before training) when memory crosses the target.

    Args:
        plan: the memory plan of the training (:func:`plan_memory`, in :mod:`tgatunet.train.plan`).
        usage: ``micro-batch size -> bytes`` in use now; default :func:`memory_in_use`.
    """

    def __init__(self, plan: MemoryPlan, usage: Callable[[int], int] | None = None) -> None:
        self.plan = plan
        self.usage = usage
        self._acted_at = 0  # CPU: the reading when the size was last lowered

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.usage is None:
            device, plan, planned_rss = pl_module.device, self.plan, psutil.Process(os.getpid()).memory_info().rss
            self.usage = lambda size: memory_in_use(device, plan, size, planned_rss)
        p = self.plan
        log.info("memory optimizer: micro-batches of %d of the %d windows per step (budget %.2f GB from %s, target %.0f%%, "
                 "predicted peak %.2f GB = %.3f GB fixed + %.2f MB per window)", p.micro_batch_size, p.batch_size, p.budget / GB,
                 p.budget_from, 100 * p.target, p.model.peak(p.micro_batch_size) / GB, p.fixed / GB, p.per_window / 2**20)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        micro: MicroBatches = pl_module.micro_batches
        current = min(micro.size or len(batch["index"]), len(batch["index"]))
        pl_module.log("memory/micro_batch_size", float(current), on_step=True, on_epoch=False)
        used = self.usage(current)
        # The CPU allocator keeps what it freed (no empty_cache there): a reading that has not
        # grown since the last lowering is that memory, not a new excess.
        if used <= self.plan.limit or used <= self._acted_at or current == 1:
            return
        # The excess says how much a window really costs (the fitted fixed part kept); at most
        # halve at once, as part of an excess may not scale with the windows at all.
        per_window = max(used - self.plan.fixed, 1.0) / current
        fits = math.floor((self.plan.limit - self.plan.fixed) / per_window)
        micro.lower(current, min(current - 1, max(current // 2, fits)), trainer.global_step, "memory_target")
        log.warning("memory in use %.2f GB crossed the target %.2f GB: micro-batches lowered from %d to %d windows",
                    used / GB, self.plan.limit / GB, current, micro.size)
        if pl_module.device.type == "cuda":
            torch.cuda.empty_cache()  # reserved memory now shows the new, smaller working set
        else:
            self._acted_at = used

    def summary(self, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The plan and what happened during training, for ``metrics.json``."""
        return {"enabled": True, "plan": self.plan.summary(), **pl_module.micro_batches.summary()}

"""Diagnosing a config on this machine and its data: ``tgatunet bench --config FILE``.

Every figure comes from the real training step of :class:`~tgatunet.train.module.TGATUNetModule` run by Lightning (a
short fit of ``steps`` steps on the config's own training windows, timed by :class:`~tgatunet.train.callbacks.StepTimer`);
README.md (Command line) lists what is measured. A setting tried one at a time is recommended when it is at least 5%
faster (or, for gradient checkpointing, when memory would otherwise cross ``memory_target`` of the budget) and fits the
memory budget; changes that alter the model or its optimisation (lite model, batch, precision) say so. Processes are
judged by the one-thread step against the all-threads step. The report goes to ``OUT/bench.json``, the recommended
keys to ``OUT/recommended.yaml``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tgatunet.config import Config, load_config, yaml_value
from tgatunet.files import atomic_write_text
from tgatunet.hardware import GB, detect_hardware, training_device
from tgatunet.profiling import peak_memory_bytes, torch_threads
from tgatunet.train.callbacks import StepTimer
from tgatunet.train.loaders import make_loader
from tgatunet.train.memory_optimizer import memory_budget
from tgatunet.train.run import Data, build_module, load_data, quiet_trainer

log = logging.getLogger(__name__)

FASTER = 1.05  # a change must buy at least this speed-up to be recommended
CHANGES_THE_MODEL = {
    "use_optimized_model": "the lite model: fewer parameters, its completion error measured in docs/PERFORMANCE.md",
    "batch_size": "a larger batch takes fewer optimiser steps per epoch: check the validation metric",
    "precision": "bf16 rounds activations to 8 bits of mantissa: check the validation metric",
}
ADVICE = {
    "data": "batches wait for data: set num_workers (e.g. 2-4) or prepare a data_store on a fast disk",
    "optimizer": "the optimiser step dominates: the model is small for the batch; raise batch_size",
    "forward": "the step is compute-bound in the forward pass",
    "backward": "the step is compute-bound in the backward pass (with checkpointing it recomputes the forward)",
}


@dataclass
class Measurement:
    """One setting's training step and peak memory."""

    keys: dict[str, Any]
    step: dict[str, Any]
    peak_bytes: int
    error: str | None = None

    @property
    def windows_per_second(self) -> float:
        return self.step.get("windows_per_second", 0.0)


def _fit(config: Config, data: Data, steps: int, callbacks: list, device: torch.device) -> None:
    torch.manual_seed(config.training.seed)
    module = build_module(config, data, device.type)
    loader = make_loader(data, "train", config, shuffle=True, cuda=device.type == "cuda")
    trainer = quiet_trainer(config, callbacks, max_steps=steps, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader)


def measure_setting(config: Config, data: Data, steps: int, device: torch.device, keys: dict | None = None) -> Measurement:
    """The training step of ``config`` with ``keys`` changed on ``device`` (the config's training device):
    phases over ``steps`` steps, then peak memory of 2."""
    keys = keys or {}
    try:
        variant = config.with_keys(**keys) if keys else config
        timer = StepTimer(skip=min(2, steps - 1))
        _fit(variant, data, steps, [timer], device)
        peak = peak_memory_bytes(lambda: _fit(variant, data, 2, [], device), device)
        return Measurement(keys, timer.summary(), peak)
    except Exception as err:  # a setting this machine cannot run (e.g. no bf16 kernels) is reported, not fatal
        log.warning("bench: %s could not be measured: %s", keys or "the config", err)
        return Measurement(keys, {}, 0, f"{type(err).__name__}: {err}")


def inference_figures(config: Config, data: Data, device: torch.device, repeats: int = 20) -> dict[str, float]:
    """Windows per second of the model over the validation (else training) windows, and one window's latency."""
    module = build_module(config, data, device.type).to(device).eval()
    split = "val" if len(data.windows["val"]) else "train"
    batch = next(iter(make_loader(data, split, config, shuffle=False, cuda=device.type == "cuda")))
    values, visible = batch["values"], batch["observed"]
    module.predict_windows(values, visible)  # warm-up
    start = time.perf_counter()
    for _ in range(3):
        module.predict_windows(values, visible, batch_size=config.training.batch_size)
    throughput = 3 * len(values) / (time.perf_counter() - start)
    one = values[:1], visible[:1]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module.predict_windows(*one)
        times.append(time.perf_counter() - start)
    return {"windows_per_second": throughput, "latency_ms_p50": 1e3 * sorted(times)[len(times) // 2]}


def candidate_changes(config: Config, device: torch.device) -> list[dict[str, Any]]:
    """The single-key changes worth measuring for ``config`` on ``device``."""
    perf, model = config.performance, config.model
    changes = [{"use_gradient_checkpoint": not perf.use_gradient_checkpoint}, {"batch_size": 2 * config.training.batch_size}]
    if not model.use_optimized_model:
        changes.append({"use_optimized_model": True})
    if perf.precision == "32":
        changes.append({"precision": "bf16-mixed"})
    if device.type == "cuda" and not perf.compile:
        changes.append({"compile": True})
    return changes


def choose(base: Measurement, variants: list[Measurement], limit: float) -> dict[str, Any]:
    """The recommended keys: every change that is at least 5% faster and fits ``limit`` bytes.

    When the config as it is does not fit, checkpointing on is recommended if it fits.
    """
    chosen: dict[str, Any] = {}
    for v in variants:
        if v.error or v.peak_bytes > limit:
            continue
        saves_memory = base.peak_bytes > limit and v.keys.get("use_gradient_checkpoint") is True
        if saves_memory or v.windows_per_second >= FASTER * base.windows_per_second:
            chosen.update(v.keys)
    return chosen


def process_advice(config: Config, data: Data, steps: int, device: torch.device) -> dict[str, Any]:
    """Whether more processes would use the machine better, and the figures behind it."""
    hardware = detect_hardware(gpu_free_memory=False)
    if device.type == "cuda":
        gpus = len(hardware.gpus)
        return {"gpus": gpus, "recommend_devices": gpus if gpus > 1 else None}
    cores = hardware.cpu_cores
    if cores < 2:
        return {"cpu_cores": cores, "recommend_devices": None}
    with torch_threads(1):
        one = measure_setting(config, data, steps, device).windows_per_second
    with torch_threads(cores):
        many = measure_setting(config, data, steps, device).windows_per_second
    # N processes of one thread each can reach up to N times the one-thread rate (estimate).
    better = one * cores > FASTER * many
    return {"cpu_cores": cores, "windows_per_second_1_thread": one, f"windows_per_second_{cores}_threads": many,
            "recommend_devices": cores if better else None,
            "basis": "estimate: N processes x the one-thread rate, against one process with N threads"}


def verdict(share: dict[str, float]) -> str:
    """The largest phase of the step, its share, and what to do about it."""
    largest = max(share, key=share.get)
    parts = ", ".join(f"{phase} {value:.0%}" for phase, value in share.items())
    return f"{parts}. {ADVICE[largest]}."


@dataclass
class BenchReport:
    """What ``tgatunet bench`` measured and recommends."""

    config: str
    device: str
    base: Measurement
    variants: list[Measurement]
    inference: dict[str, float]
    processes: dict[str, Any]
    budget_bytes: int
    limit_bytes: float
    recommended: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        def row(m: Measurement) -> dict[str, Any]:
            return {"keys": m.keys, "windows_per_second": m.windows_per_second, "peak_memory_gb": m.peak_bytes / GB,
                    "step": m.step, **({"error": m.error} if m.error else {})}

        return {"config": self.config, "device": self.device, "seconds": self.seconds, "train": row(self.base),
                "verdict": verdict(self.base.step["share"]) if self.base.step.get("steps") else None,
                "variants": [row(v) for v in self.variants], "infer": self.inference, "processes": self.processes,
                "memory_budget_gb": self.budget_bytes / GB, "memory_limit_gb": self.limit_bytes / GB, "recommended": self.recommended,
                "notes": {k: CHANGES_THE_MODEL[k] for k in self.recommended if k in CHANGES_THE_MODEL}}



def recommended_yaml(report: BenchReport) -> str:
    """The recommended keys as a config snippet, with why each one is there."""
    if not report.recommended:
        return "# tgatunet bench: no change measured to be at least 5% faster within the memory budget.\n"
    lines = ["# tgatunet bench: measured on this machine; paste into your config."]
    for key, value in report.recommended.items():
        note = CHANGES_THE_MODEL.get(key, "measured faster, or needed to fit memory")
        lines.append(f"{key}: {yaml_value(value)}  # {note}")

    if report.processes.get("recommend_devices"):
        lines.append(f"devices: {report.processes['recommend_devices']}  # {report.processes.get('basis', 'one process per GPU')}")
    return "\n".join(lines) + "\n"


def run_bench(config_path: str | Path, out: str | Path, steps: int = 12, on_progress: Callable[[str], None] | None = None) -> BenchReport:
    """Measure ``config_path`` on this machine and write ``OUT/bench.json`` and ``OUT/recommended.yaml``."""
    start = time.perf_counter()
    progress = on_progress or (lambda _: None)
    config = load_config(config_path)
    data = load_data(config)
    device = training_device(config.performance.accelerator).torch_device
    budget, _ = memory_budget(device, config.performance.memory_budget_gb)
    limit = config.performance.memory_target * budget
    progress("the config as it is")
    base = measure_setting(config, data, steps, device)
    if base.error:
        raise RuntimeError(f"the config's own training step failed: {base.error}")
    variants = []
    for keys in candidate_changes(config, device):
        progress(", ".join(f"{k}: {v}" for k, v in keys.items()))
        variants.append(measure_setting(config, data, steps, device, keys))
    progress("inference")
    inference = inference_figures(config, data, device)
    progress("processes")
    processes = process_advice(config, data, steps, device)
    report = BenchReport(str(config_path), str(device), base, variants, inference, processes, budget, limit)
    report.recommended = choose(base, variants, limit)
    report.seconds = time.perf_counter() - start
    out = Path(out)
    atomic_write_text(out / "bench.json", json.dumps(report.to_dict(), indent=1, default=float))
    atomic_write_text(out / "recommended.yaml", recommended_yaml(report))
    return report

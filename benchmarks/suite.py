"""The whole study: ``python performance_test.py [--quick | --full] [--out DIR]``.

Sections, in order; each writes its part of ``OUT/results.json``:

* ``runtime``: training and inference at the reference setting
  (:mod:`benchmarks.throughput`): sections ``train``, ``infer``,
  ``peak_memory_gb``, ``memory_use_percent``, ``accelerator_utilization_percent``;
* ``compute``: MFU, single-window latency and the step breakdown
  (:mod:`benchmarks.compute`, sections ``mfu``, ``infer_latency``,
  ``breakdown`` and ``breakdown.png``); its latency figures are copied into
  ``infer`` (``latency_ms_p50``, ``latency_ms_p95``, and the compiled model's as
  ``latency_ms_p50_compiled``, ``latency_ms_p95_compiled``);
* ``scaling``: time and peak memory against window_size, batch size and
  dataset size (:mod:`benchmarks.scaling`, ``scaling_<axis>.png``);
* ``graph``, ``model``, ``memory``: the benchmarks of the ``graph``, ``model``
  and ``memory`` subcommands, with the mode's settings.

Then the ``suite`` section (mode, settings, sections not run, seconds
per section, plots) and ``report.md`` (:mod:`benchmarks.guide_report`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tgatunet.config import load_config
from tgatunet.hardware import training_device
from tgatunet.profiling import torch_threads

from benchmarks.guide_report import write_report
from benchmarks.results import read_results, write_section
from benchmarks.scaling import AXES, ScalingSizes, measure_scaling
from benchmarks.setting import DEFAULT_CONFIG, write_setting_data

log = logging.getLogger(__name__)

SECTIONS = ("runtime", "compute", "scaling", "graph", "model", "memory")
LATENCY_KEYS = ("latency_ms_p50", "latency_ms_p95")


@dataclass(frozen=True)
class SuiteSettings:
    """Sizes, repeats and rounds of every section (:data:`QUICK`, :data:`FULL`).

    Attributes:
        quick: the mode, also handed to the graph and compute benchmarks.
        threads: torch CPU threads while the suite runs (the issue's setting: 1); None keeps torch's choice.
        train_epochs: epochs of the training-throughput run.
        blocks_per_source, block_length: size of its synthetic data (3 sources).
        infer_repeats: timed inference passes over that data.
        scaling: sizes of the scaling axes.
        graph: keyword arguments of :func:`benchmarks.graph.run_graph_benchmark` besides out, config and quick.
        model_rounds, model_epochs: of :func:`benchmarks.model.run_model_benchmark`.
        memory: keyword arguments of :func:`benchmarks.memory.run_memory_benchmark` besides out.
        sections: the sections to run, from :data:`SECTIONS`.
    """

    quick: bool
    train_epochs: int
    blocks_per_source: int
    block_length: int
    infer_repeats: int
    scaling: ScalingSizes
    model_rounds: int
    model_epochs: int
    graph: Mapping[str, Any] = field(default_factory=dict)
    memory: Mapping[str, Any] = field(default_factory=dict)
    threads: int | None = 1
    sections: tuple[str, ...] = SECTIONS


# Every section, at sizes a small CPU machine runs in minutes; FULL is for real hardware.
QUICK = SuiteSettings(
    quick=True,
    train_epochs=3,
    blocks_per_source=10,
    block_length=512,
    infer_repeats=3,
    scaling=ScalingSizes(
        window_sizes=(32, 64, 128, 256),
        batch_sizes=(4, 8, 16, 32, 64),
        dataset_windows=(64, 128, 256, 512),
        epoch_repeats=2,
    ),
    model_rounds=5,
    model_epochs=4,
)
FULL = SuiteSettings(
    quick=False,
    train_epochs=10,
    blocks_per_source=40,
    block_length=1024,
    infer_repeats=10,
    scaling=ScalingSizes(
        window_sizes=(32, 64, 128, 256, 512, 1024),
        batch_sizes=(4, 8, 16, 32, 64, 128, 256),
        dataset_windows=(256, 512, 1024, 2048, 4096, 8192),
        repeats=7,
        epoch_repeats=3,
    ),
    model_rounds=15,
    model_epochs=20,
)


@dataclass
class _Context:
    out: Path
    work: Path
    settings: SuiteSettings
    config_path: Path
    device: torch.device


def _runtime(ctx: _Context) -> None:
    from benchmarks.throughput import measure_runtime

    s = ctx.settings
    config = write_setting_data(
        ctx.work / "runtime", s.blocks_per_source, s.block_length, epochs=s.train_epochs, patience=s.train_epochs
    )
    for name, values in measure_runtime(config, ctx.work / "runtime_run", s.infer_repeats, ctx.device).items():
        write_section(ctx.out, name, values)


def _compute(ctx: _Context) -> None:
    from benchmarks.compute import measure_compute

    measure_compute(ctx.out, quick=ctx.settings.quick, device=ctx.device)  # plots breakdown.png too


def _scaling(ctx: _Context) -> None:
    write_section(ctx.out, "scaling", measure_scaling(ctx.out, ctx.work / "scaling", ctx.settings.scaling, ctx.device))


def _graph(ctx: _Context) -> None:
    from benchmarks.graph import run_graph_benchmark

    run_graph_benchmark(ctx.out, config_path=ctx.config_path, quick=ctx.settings.quick, **ctx.settings.graph)


def _model(ctx: _Context) -> None:
    from benchmarks.model import run_model_benchmark

    s = ctx.settings
    run_model_benchmark(ctx.out, config_path=ctx.config_path, rounds=s.model_rounds, epochs=s.model_epochs)


def _memory(ctx: _Context) -> None:
    from benchmarks.memory import run_memory_benchmark

    run_memory_benchmark(ctx.out, **ctx.settings.memory)


RUNNERS: dict[str, Callable[[_Context], None]] = {
    "runtime": _runtime,
    "compute": _compute,
    "scaling": _scaling,
    "graph": _graph,
    "model": _model,
    "memory": _memory,
}


def copy_latency(out: Path, missing: str) -> None:
    """Put the single-window latency of section ``infer_latency`` into section ``infer``.

    Where it was not measured, the keys are null and ``<key>_reason`` is ``missing``.
    """
    results = read_results(out)
    if "infer" not in results:
        return
    infer = {k: v for k, v in results["infer"].items() if k != "environment"}
    latency = results.get("infer_latency", {})
    compiled = latency.get("compiled", {})
    for figures, suffix, reason in ((latency, "", missing), (compiled, "_compiled", compiled.get("reason", missing))):
        for key in LATENCY_KEYS:
            name = key + suffix
            infer[name] = figures.get(key)
            infer.pop(f"{name}_reason", None)
            if infer[name] is None:
                infer[f"{name}_reason"] = reason
    infer["latency_source"] = "section infer_latency (benchmarks.compute); _compiled: its 'compiled' figures"
    write_section(out, "infer", infer)


OUTPUT_PLOTS = ("graph_benchmark.png", *(f"scaling_{axis}.png" for axis in AXES), "breakdown.png")


def _plots(out: Path) -> list[str]:
    return [str(out / name) for name in OUTPUT_PLOTS if (out / name).is_file()]


def run_suite(
    out: Path,
    settings: SuiteSettings = QUICK,
    config_path: Path = DEFAULT_CONFIG,
    on_section: Callable[[str, str], None] = lambda name, state: None,
) -> dict[str, Any]:
    """Run ``settings.sections`` (in :data:`SECTIONS` order); write ``out/results.json``, ``out/report.md`` and the plots; return the results.

    Args:
        config_path: the config of the graph benchmark's epoch and the model benchmark's trainings.
        on_section: told ``(name, "start")`` before each section and ``(name, "done")`` after.
    """
    unknown = sorted(set(settings.sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown benchmark sections {unknown}; choose from {list(SECTIONS)}")
    if {"graph", "model"} & set(settings.sections):
        load_config(config_path)  # a bad config fails now, not after minutes of other sections
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # A new results.json and plots: figures left by an earlier run must not pass for this run's.
    for stale in ["results.json", "report.md", *OUTPUT_PLOTS]:
        (out / stale).unlink(missing_ok=True)
    device = training_device("auto").torch_device
    skipped = {name: "not among this run's sections" for name in SECTIONS if name not in settings.sections}
    seconds: dict[str, float] = {}
    threads = torch_threads(settings.threads) if settings.threads is not None else contextlib.nullcontext()
    with threads, tempfile.TemporaryDirectory(prefix="tgatunet-suite-") as work:
        ctx = _Context(out, Path(work), settings, Path(config_path), device)
        for name in [n for n in SECTIONS if n in settings.sections]:
            on_section(name, "start")
            started = time.perf_counter()
            RUNNERS[name](ctx)
            seconds[name] = time.perf_counter() - started
            on_section(name, "done")
    copy_latency(out, "the compute section was not run")
    write_section(
        out,
        "suite",
        {
            "quick": settings.quick,
            "settings": dataclasses.asdict(settings),
            "sections": list(settings.sections),
            "skipped": skipped,
            "seconds": seconds,
            "total_seconds": sum(seconds.values()),
            "plots": _plots(out),
            "device": str(device),
        },
    )
    results = read_results(out)
    write_report(results, out / "report.md")
    return results

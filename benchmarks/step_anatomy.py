#!/usr/bin/env python
"""The same operations inside the training step and on their own: how much the step's memory traffic costs them.

Profiles the training step of ``bench compute``'s reference setting (medium
preset, window 128, 9 synthetic channels, float32, one thread, no gradient
checkpointing) with ``torch.profiler`` (``record_shapes``), takes the matrix
products and multiplications that use the most self CPU time, and times each
again on its own: fresh contiguous tensors of the same shapes, called
repeatedly, so its operands stay in the cache. Inside the step an operand has
usually left the cache since it was written; the ratio is what that costs.
Prints the step's profiled self CPU time and its matrix products' share, then,
per operation and shapes: calls per step, microseconds per call in the step and
alone, and for matrix products the GFLOP/s of both.

Usage::

    python scripts/step_anatomy.py [--steps 5] [--top 12]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tgatunet.bench.breakdown import MATMUL_OPS
from tgatunet.bench.compute import Setting, prepare_setting, without_checkpointing
from tgatunet.bench.step import TrainStep, to_device

OPS = {"aten::mm": torch.mm, "aten::addmm": torch.addmm, "aten::mul": torch.mul}


def flops(name: str, shapes: list[list[int]]) -> int:
    """FLOPs of one matrix product with these input shapes (0 for other ops)."""
    if name == "aten::mm":
        (m, k), (_, n) = shapes
    elif name == "aten::addmm":
        (m, k), (_, n) = shapes[1], shapes[2]
    else:
        return 0
    return 2 * m * k * n


def alone_us(name: str, shapes: list[list[int]], repeats: int = 50) -> float:
    """Median microseconds of the op on fresh contiguous tensors of ``shapes``, warm."""
    tensors = [torch.randn(shape) for shape in shapes if shape]
    op = OPS[name]
    for _ in range(5):
        op(*tensors)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        op(*tensors)
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        config, data, module, loader = prepare_setting(Setting(), Path(tmp), device)
        step = TrainStep(without_checkpointing(module, config, data), to_device(next(iter(loader)), device))
    for _ in range(3):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    totals = prof.key_averages()
    step_ms = sum(e.self_cpu_time_total for e in totals) / args.steps / 1e3
    matmul_ms = sum(e.self_cpu_time_total for e in totals if e.key in MATMUL_OPS) / args.steps / 1e3
    print(f"step: {step_ms:.1f} ms of self CPU time (profiled), {matmul_ms:.1f} ms of it in matrix products")
    events = [
        e
        for e in prof.key_averages(group_by_input_shape=True)
        if e.key in OPS and all(isinstance(s, list) for s in e.input_shapes) and any(e.input_shapes)
    ]
    events.sort(key=lambda e: -e.self_cpu_time_total)
    print(f"{'op':12s} {'shapes':44s} {'calls':>5s} {'in step':>9s} {'alone':>9s} {'ratio':>6s}  GFLOP/s step / alone")
    for e in events[: args.top]:
        shapes = [s for s in e.input_shapes if s]
        in_step = e.self_cpu_time_total / e.count
        alone = alone_us(e.key, shapes)
        rate = flops(e.key, shapes)
        rates = f"  {rate / in_step / 1e3:5.1f} / {rate / alone / 1e3:5.1f}" if rate else ""
        label = " x ".join(str(s) for s in shapes)
        print(
            f"{e.key[6:]:12s} {label[:44]:44s} {math.ceil(e.count / args.steps):5d} {in_step:7.0f}us "
            f"{alone:7.0f}us {in_step / alone:5.1f}x{rates}"
        )


if __name__ == "__main__":
    main()

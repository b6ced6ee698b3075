#!/usr/bin/env python
"""The same operations inside the training step and on their own: how much the step's memory traffic costs them.

Profiles the real training step (``TGATUNetModule`` run by Lightning) at the
study's ``compute`` reference setting (medium preset, window 128, 9 synthetic
channels, float32, one thread, no gradient checkpointing) with
``torch.profiler`` (``record_shapes``), takes the matrix
products and multiplications that use the most self CPU time, and times each
again on its own: fresh contiguous tensors of the same shapes, called
repeatedly, so its operands stay in the cache. Inside the step an operand has
usually left the cache since it was written; the ratio is what that costs.
Prints the step's profiled self CPU time and its matrix products' share, then,
per operation and shapes: calls per step, microseconds per call in the step and
alone, and for matrix products the GFLOP/s of both.

Usage::

    python benchmarks/scripts/step_anatomy.py [--steps 5] [--top 12]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

import torch  # noqa: E402

from benchmarks.breakdown import op_kind  # noqa: E402
from benchmarks.compute import Setting, synthetic_config  # noqa: E402
from benchmarks.training import profile_steps  # noqa: E402
from tgatunet.train.run import load_data  # noqa: E402

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
        config = synthetic_config(Setting(), Path(tmp), device).with_keys(use_gradient_checkpoint=False)
        data = load_data(config)
    prof = profile_steps(config, data, args.steps, record_shapes=True)
    totals = [e for e in prof.key_averages() if op_kind(e.key) is not None]
    step_ms = sum(e.self_cpu_time_total for e in totals) / args.steps / 1e3
    matmul_ms = sum(e.self_cpu_time_total for e in totals if op_kind(e.key) == "matrix_products") / args.steps / 1e3
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

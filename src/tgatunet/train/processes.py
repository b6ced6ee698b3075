"""``devices: auto`` on a CPU: one process using every core, or one data-parallel process per core?

Measured once, before training: the run's training step (forward, backward, the gradients averaged over the processes
with gloo as DDP does, the optimiser step) on its own windows, first in this process with a thread per core, then in N
processes of one thread each, every one with a batch of ``batch_size`` windows, as Lightning's DDP runs them. The
faster per window is kept: ``train.processes`` and ``train.threads_per_process`` in ``metrics.json``. With N processes
a step sees N x ``batch_size`` windows, and the learning rate is scaled by sqrt(N), the rule of ``batch_size: auto``
(:mod:`tgatunet.train.batch_search`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tgatunet.profiling import torch_threads

log = logging.getLogger(__name__)

STEPS = 6
FASTER = 1.05


def _steps(module: Any, batch: dict[str, torch.Tensor], steps: int, world: int) -> float:
    """Seconds of ``steps`` training steps of ``module`` on ``batch`` (gradients all-reduced over ``world``)."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()

    def step() -> None:
        module.losses(batch, *module.inputs(batch))["loss"].backward()
        if world > 1:  # one all-reduce of every gradient together, as DDP's buckets do
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            flat = torch.cat([g.flatten() for g in grads])
            dist.all_reduce(flat)
            for g, part in zip(grads, torch.split(flat, [g.numel() for g in grads])):
                g.copy_(part.view_as(g))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def _worker(rank: int, world: int, port: int, module: Any, batch: dict[str, torch.Tensor], queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    seconds = _steps(module, batch, STEPS, world)
    dist.destroy_process_group()
    if rank == 0:
        queue.put(seconds)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_processes(module: Any, batch: dict[str, torch.Tensor], cores: int) -> dict[str, Any]:
    """``{processes, threads_per_process, windows_per_second: {...}}`` for a batch of ``batch``'s windows."""
    with torch_threads(cores):
        one = len(batch["values"]) * STEPS / _steps(module, batch, STEPS, 1)
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    port = _free_port()
    workers = [context.Process(target=_worker, args=(r, cores, port, module, batch, queue)) for r in range(cores)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    many = cores * len(batch["values"]) * STEPS / queue.get() if all(w.exitcode == 0 for w in workers) else 0.0
    processes = cores if many > FASTER * one else 1
    log.info("devices auto: %d process(es) (%.0f windows/s with %d threads, %.0f with %d processes of one thread)",
             processes, one, cores, many, cores)
    return {"processes": processes, "threads_per_process": 1 if processes > 1 else cores,
            "windows_per_second": {f"1_process_{cores}_threads": one, f"{cores}_processes_1_thread": many}}


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

"""The training plan: every choice of how a run trains, made once before the Trainer is built.

:func:`resolve_plan` decides what the config leaves to the machine (the device, asked once per training; the precision
Lightning runs; ``batch_size: auto`` and its learning rate; ``devices: auto`` on a CPU; the memory optimizer's
micro-batch; whether the training windows stay on the GPU) and the first process writes it to ``RUN/plan.json``. A
resumed run reuses its measured choices (batch search, process choice); the processes Lightning launches for DDP read
the whole plan. It is passed down to the Trainer, the loaders, the callbacks and the module's constructor.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from lightning.pytorch.plugins.precision import HalfPrecision, MixedPrecision, Precision

from tgatunet.config import Config
from tgatunet.data.prepared import PreparedData
from tgatunet.data.resident import fits_on_device
from tgatunet.data.store_windows import window_dataset
from tgatunet.errors import RunError
from tgatunet.files import atomic_write_text
from tgatunet.hardware import DeviceMemory, training_device
from tgatunet.infer.rundir import RunDir
from tgatunet.train.batch_search import BatchChoice, search_batch
from tgatunet.train.memory_optimizer import MemoryPlan, plan_memory
from tgatunet.train.micro_batch import MicroBatches
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.prepare import Data
from tgatunet.train.processes import choose_processes, cpu_cores

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class TrainingPlan:
    """The resolved choices of one training, as ``RUN/plan.json`` keeps them."""

    device: str  # torch device of the first process: "cpu", "cuda:0", "mps"
    accelerator: str  # Lightning's accelerator argument
    precision: str  # what runs, in the config's spelling (Lightning runs 16-mixed as bf16-mixed on a CPU)
    batch_size: int
    lr: float
    batch_search: dict | None  # batch_size: auto: the measurements behind batch_size and lr (None: the config's)
    processes: int | str  # Lightning's devices per node
    strategy: str
    threads_per_process: int | None  # None: torch's default
    process_choice: dict | None  # devices: auto on a CPU: the measured comparison
    memory: MemoryPlan | None  # the memory optimizer's plan and micro-batch (None: whole batches)
    resident: bool  # the training windows are kept on the GPU
    compile: bool
    pid: int = 0  # the process that resolved it: the processes it launches (DDP) read it

    @property
    def device_kind(self) -> str:
        return torch.device(self.device).type

    def training_config(self, config: Config) -> Config:
        """``config`` with the plan's batch size and learning rate (what the module, loaders and budget read)."""
        t = config.training
        return config if (t.batch_size, t.lr) == (self.batch_size, self.lr) else config.with_keys(batch_size=self.batch_size, lr=self.lr)

    def micro_batches(self) -> MicroBatches:
        return MicroBatches(self.memory.micro_batch_size, recover_out_of_memory=True) if self.memory else MicroBatches()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingPlan:
        memory = raw["memory"] and MemoryPlan(**{**raw["memory"], "measured": {int(k): v for k, v in raw["memory"]["measured"].items()}})
        return cls(**{**raw, "memory": memory})


def build_module(config: Config, data: Data, device_kind: str | None = None, **training: Any) -> TGATUNetModule:
    """The module of ``config``; ``training``: what a training's plan gives it (``micro_batches``, ``resident``)."""
    return TGATUNetModule(config=config.flat(), channels=data.channels, class_names=data.class_names, need_patterns=data.need_patterns().tolist(),
                          device_kind=device_kind or training_device(config.performance.accelerator).kind, **training)


def precision_ran(precision: str, device_kind: str) -> str:
    """The precision Lightning runs for config key ``precision``: 16-mixed runs as bf16-mixed on a CPU."""
    return "bf16-mixed" if precision == "16-mixed" and device_kind == "cpu" else precision


def measure_batch(config: Config, data: Data, device: DeviceMemory) -> BatchChoice:
    """``batch_size: auto``: the batch search on the training device."""
    probe = config.with_keys(batch_size=16)
    module = build_module(probe, data, device.kind).to(device.torch_device)
    # At most a quarter of an epoch's windows: a batch that is most of the data leaves too few steps to learn in.
    return search_batch(module, window_dataset(data, "train"), probe, device.torch_device, max(16, data.epoch_windows // 4))


def measure_memory(config: Config, data: Data, device: DeviceMemory, precision: str) -> MemoryPlan:
    """The memory optimizer's plan, measured on the module as training builds it, in Lightning's precision
    ``precision`` (weights converted as Lightning converts them, the training step's context)."""
    plugin = HalfPrecision(precision) if precision == "bf16-true" else Precision()
    if precision.endswith("-mixed"):
        plugin = MixedPrecision(precision, device.kind if device.kind in ("cpu", "mps") else "cuda")
    module = plugin.convert_module(build_module(config, data, device.kind).to(device.torch_device))
    return plan_memory(module, window_dataset(data, "train"), config, device.torch_device, plugin.train_step_context)


def keeps_windows_resident(config: Config, data: Data, device: torch.device) -> bool:
    """Whether the training windows stay on the GPU: training on CUDA from memory (no need update) and they fit."""
    cuda_from_memory = device.type == "cuda" and isinstance(data, PreparedData) and not config.training.dynamic_need_update
    return cuda_from_memory and fits_on_device(data, torch.cuda.mem_get_info(device)[0])


def _batch(config: Config, data: Data, device: DeviceMemory, saved: TrainingPlan | None, writer: bool) -> dict | None:
    """``batch_size: auto``: the search's summary, the run's own if it has one (None: the config's batch)."""
    if config.training.batch_size != "auto":
        return None
    if saved is not None and saved.batch_search is not None:
        return saved.batch_search
    if not writer:
        raise RunError("batch_size: auto is measured by the first process: start the training with Lightning's "
                       "launcher (devices in the config), or set batch_size to a number for torchrun or SLURM.")
    return measure_batch(config, data, device).summary()


def _processes(config: Config, data: Data, batch_size: int, saved: TrainingPlan | None, writer: bool) -> dict | None:
    """``devices: auto`` on a CPU: the measured faster of one process of N threads and N processes of one."""
    if saved is not None and saved.process_choice is not None:
        return saved.process_choice
    cores = cpu_cores()
    if cores < 2 or not writer:
        return None
    batch = window_dataset(data, "train").__getitems__(list(range(min(len(data.windows["train"]), batch_size))))
    return choose_processes(build_module(config, data, "cpu"), batch, cores)


def resolve_plan(config: Config, data: Data, run: RunDir, writer: bool) -> TrainingPlan:
    """The plan of this training. The first process (``writer``) resolves it, reusing the measured choices of
    the run's ``plan.json`` (a resumed run), and writes it; the processes it launches (Lightning's DDP) read that
    file; others (torchrun, SLURM) resolve their own, measuring nothing."""
    saved = read_plan(run)
    if saved is not None and not writer and saved.pid == os.getppid():  # launched by the first process (Lightning)
        return saved
    perf, t = config.performance, config.training
    device = training_device(perf.accelerator)
    search = _batch(config, data, device, saved, writer)
    batch_size, lr = (search["batch_size"], search["lr"]) if search else (t.batch_size, t.lr)
    cpu_auto = perf.devices == "auto" and device.kind == "cpu"
    choice = _processes(config, data, batch_size, saved, writer) if cpu_auto else None
    processes = choice["processes"] if choice else 1 if cpu_auto else perf.devices
    precision = precision_ran(perf.precision, device.kind)
    plan = TrainingPlan(device=str(device.torch_device), accelerator="cpu" if choice else "gpu" if perf.accelerator == "cuda" else perf.accelerator,
                        precision=precision, batch_size=batch_size, lr=lr * math.sqrt(processes) if choice else lr, batch_search=search,
                        processes=processes, strategy=("ddp" if processes > 1 else "auto") if choice else perf.strategy,
                        threads_per_process=choice["threads_per_process"] if choice else None, process_choice=choice, memory=None,
                        resident=keeps_windows_resident(config, data, device.torch_device), compile=perf.compile, pid=os.getpid())

    if perf.use_memory_optimizer:
        plan = replace(plan, memory=measure_memory(plan.training_config(config), data, device, precision))
    if writer:
        atomic_write_text(run.root / PLAN_FILE, json.dumps(asdict(plan), indent=1))
        run.note_written(run.root / PLAN_FILE)
    return plan


def read_plan(run: RunDir) -> TrainingPlan | None:
    """The plan in the run directory, if one was written."""
    if not (path := run.root / PLAN_FILE).is_file():
        return None
    try:
        return TrainingPlan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunError(f"'{path}' is damaged ({type(err).__name__}: {err}); train the run again (--overwrite).") from None

"""What the machine has: devices, their memory, and the hardware preset that fits it.

The performance guide sorts machines by memory: ``low`` below 8 GB, ``medium`` 8-16 GB, ``high`` above 16 GB (DESIGN
section 1). The memory that counts is the training device's: the GPU's on CUDA, the machine's RAM on CPU (and on Apple's
MPS, whose memory is the RAM). Sizes are compared in whole GB, rounded, so that a card sold as "8 GB" (about 7.8 GiB
usable) is an 8 GB card. GB here means 2**30 bytes, as everywhere in tgatunet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil
import torch

GB = 2**30


@dataclass(frozen=True)
class DeviceMemory:
    """One device that can train: ``kind`` (``cuda``, ``mps``, ``cpu``), its name and memory in bytes (available None: not read)."""

    kind: str
    index: int
    name: str
    total_bytes: int
    available_bytes: int | None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.kind, self.index) if self.kind == "cuda" else torch.device(self.kind)


@dataclass(frozen=True)
class Hardware:
    """The machine: CPU cores, RAM, and every accelerator torch can use."""

    cpu_cores: int
    ram: DeviceMemory
    gpus: tuple[DeviceMemory, ...]
    mps: bool


def detect_hardware(gpu_free_memory: bool = True) -> Hardware:
    """Read CPU, RAM and CUDA devices from the system (no allocation on any device).

    Args:
        gpu_free_memory: also read each GPU's free memory. That starts a CUDA context on every GPU
            (hundreds of MB each, per process: under DDP, per rank); without it a GPU's
            ``available_bytes`` is None and only its total is read.
    """
    memory = psutil.virtual_memory()
    ram = DeviceMemory("cpu", 0, "RAM", int(memory.total), int(memory.available))
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if gpu_free_memory:
                free, total = (int(b) for b in torch.cuda.mem_get_info(i))
            else:
                free, total = None, int(torch.cuda.get_device_properties(i).total_memory)
            gpus.append(DeviceMemory("cuda", i, torch.cuda.get_device_name(i), total, free))
    return Hardware(cpu_cores=os.cpu_count() or 1, ram=ram, gpus=tuple(gpus), mps=bool(torch.backends.mps.is_available()))


def training_device(accelerator: str, hardware: Hardware | None = None) -> DeviceMemory:
    """The device a run with config key ``accelerator`` trains and predicts on, chosen as Lightning chooses it.

    ``auto`` takes the first CUDA GPU, else MPS, else the CPU. ``hardware``: the machine
    (default: :func:`detect_hardware` without reading free GPU memory).
    """
    hardware = hardware or detect_hardware(gpu_free_memory=False)
    if accelerator in ("auto", "gpu", "cuda") and hardware.gpus:
        return hardware.gpus[0]
    if accelerator in ("auto", "gpu", "mps") and hardware.mps:
        return DeviceMemory("mps", 0, "Apple MPS (shared RAM)", hardware.ram.total_bytes, hardware.ram.available_bytes)
    return hardware.ram


def preset_for_memory(total_bytes: float) -> str:
    """The guide's preset for a device of ``total_bytes``: low (< 8 GB), medium (8-16 GB), high (> 16 GB)."""
    nominal_gb = round(total_bytes / GB)
    if nominal_gb < 8:
        return "low"
    return "medium" if nominal_gb <= 16 else "high"


def auto_profile(accelerator: str, budget_gb: float | None) -> tuple[str, float, str]:
    """``(preset, memory in GB it was chosen by, what that memory is)`` that ``hardware_profile: auto`` picks.

    By ``memory_budget_gb`` when the config sets one (the user's word on what training may use), else by the
    training device's total memory.
    """
    if budget_gb is not None:
        return preset_for_memory(budget_gb * GB), float(budget_gb), "memory_budget_gb"
    device = training_device(accelerator)
    return preset_for_memory(device.total_bytes), device.total_bytes / GB, device.name

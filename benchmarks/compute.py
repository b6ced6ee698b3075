"""How much of the machine the model's step uses: ``python performance_test.py compute [--quick|--full]``.

**Setting** (:class:`Setting`, recorded with every figure): a hardware preset of the performance
guide (:data:`tgatunet.config.PRESETS`, ``medium`` by default: batch 16, hidden 64, 2/2 GAT
levels, one transformer layer, 2 heads, gradient checkpointing on), window 128, 9 channels of
synthetic data (:mod:`tgatunet.data.synth`, 3 sources, each lacking some channels), float32, one
torch thread. The data go through the real pipeline (``load_data``, ``make_loader``), and the
module is the one training builds (``build_module``).

**The training step** is the real one: ``TGATUNetModule.training_step`` run by Lightning
(:mod:`benchmarks.training`), timed by :class:`~tgatunet.train.callbacks.StepTimer`.

**Model FLOPs** (:mod:`benchmarks.flops`) are counted over a one-step fit: forward + backward
for training, the forward for inference. With gradient checkpointing the backward pass
recomputes blocks; those FLOPs are counted apart (``hardware_flops_per_window_train``) and left
out of the model FLOPs, as model-FLOPs utilisation defines them: the model FLOPs are counted on
the same config with checkpointing off. With ``graph_type: knn`` the knn graph's distance
products are in the count too.

**MFU**: each round measures the matmul peak with the setting's threads, then the training
step (``train``), the step with checkpointing off (``train_no_checkpoint``, when the preset
checkpoints) and inference (``infer``: ``module.predict_windows`` on a batch of the preset's
size, what prediction runs); then the peak and the training step with two threads
(``train_2threads``, CPU only). ``mfu.X = model FLOPs / seconds / that round's peak``, the median
over rounds; a training time is the median step of one fit, an inference time
:func:`tgatunet.profiling.median_seconds` of 3 calls after one warm-up call.

**Latency** (``infer_latency``): ``module.predict_windows`` on one window (batch 1), eval mode,
after a warm-up; each call timed on its own; median and 95th percentile. Then the same with the
model compiled as ``load_run(compile=True)`` compiles it (``infer_latency.compiled``, with the
compile time): where one window at a time is served, per-operation overhead is most of eager
execution's time, and compiled code fuses the element-wise work into a few loops.

**Breakdown** (:mod:`benchmarks.breakdown`): where a step's time goes.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.breakdown import measure_breakdown, plot_breakdown
from benchmarks.flops import copy_bandwidth, count_flops, sustained_matmul_flops
from benchmarks.results import write_section
from benchmarks.setting import write_setting_data
from benchmarks.training import fit, new_module, step_seconds
from tgatunet.config import PRESETS, Config, load_config
from tgatunet.errors import ConfigError
from tgatunet.hardware import training_device
from tgatunet.model.compile import CompiledOrEager
from tgatunet.profiling import median_seconds, torch_threads
from tgatunet.train.loaders import make_loader
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.run import Data, load_data

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32}


@dataclass(frozen=True)
class Setting:
    """What the figures are measured on.

    Attributes:
        preset: a key of :data:`tgatunet.config.PRESETS` (batch size, model sizes, checkpointing).
        window_size: time steps per window.
        channels: modality channels of the synthetic data.
        threads: torch threads of the step, the inference and the single-window latency.
        dtype: of the model and the peak matrix products (float32).
        config: further config keys (e.g. ``{"graph_type": "knn"}``); they override the preset.
    """

    preset: str = "medium"
    window_size: int = 128
    channels: int = 9
    threads: int = 1
    dtype: str = "float32"
    config: dict[str, Any] = field(default_factory=dict)

    def describe(self, config: Config) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "window_size": self.window_size,
            "channels": self.channels,
            "batch_size": config.training.batch_size,
            "hidden_channels": config.model.hidden_channels,
            "gradient_checkpoint": config.performance.use_gradient_checkpoint,
            "lite_model": config.model.use_optimized_model,
            "graph_type": config.model.graph_type,
            "dtype": self.dtype,
            "threads": self.threads,
            **({"config": self.config} if self.config else {}),
        }


# Config keys the benchmark sets itself, and why a setting may not override them.
FIXED_KEYS = {
    "window_size": "use --window",
    "step_size": "windows overlap by half",
    "hardware_profile": "use --preset",
    "accelerator": "it runs on CUDA where there is one, else on the CPU",
    "compile": "it times the eager model, and the compiled one for the single-window latency on its own",
}


def synthetic_config(setting: Setting, folder: Path, device: torch.device) -> Config:
    """Write the setting's synthetic sources to ``folder``; their config with the preset applied, for ``device``."""
    if setting.preset not in PRESETS:
        raise ConfigError(f"compute: unknown preset '{setting.preset}'; choose one of {', '.join(PRESETS)}")
    fixed = sorted(FIXED_KEYS.keys() & setting.config.keys())
    if fixed:
        reasons = "; ".join(f"'{key}' is the benchmark's to set ({FIXED_KEYS[key]})" for key in fixed)
        raise ConfigError(f"compute: {reasons}")
    T = setting.window_size
    keys = {
        **PRESETS[setting.preset],
        "window_size": T,
        "step_size": T // 2,
        "hardware_profile": setting.preset,
        "accelerator": "cuda" if device.type == "cuda" else "cpu",
        **setting.config,
    }
    # Windows overlap by half: 7 per recording of 4 * T rows.
    return load_config(write_setting_data(folder, 20, 4 * T, channels=setting.channels, **keys))


def prepare_setting(setting: Setting, folder: Path, device: torch.device):
    """The setting's config, data, module (on ``device``) and training DataLoader."""
    config = synthetic_config(setting, folder, device)
    data = load_data(config)
    return config, data, new_module(config, data), make_loader(data, "train", config, shuffle=True)


@dataclass(frozen=True)
class Workload:
    """Something timed in the utilisation rounds: ``seconds()`` measures one run of ``flops`` model FLOPs
    with ``threads`` threads."""

    seconds: Callable[[], float]
    flops: float
    threads: int


def utilisation_rounds(
    workloads: dict[str, Workload], rounds: int, sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> dict[str, Any]:
    """Per round and thread count: the matmul peak, then each workload of that thread count.

    Returns:
        per workload: its utilisation (median over rounds of ``flops / seconds / that round's peak``)
        and ``<name>_ms`` (median seconds, in ms); per thread count ``n``: ``peak_<n>`` (median over
        rounds of the round's peak, FLOP/s) and ``peak_by_size_<n>`` (median FLOP/s of each size).
    """
    thread_counts = sorted({w.threads for w in workloads.values()})
    peaks: dict[int, list[float]] = {n: [] for n in thread_counts}
    by_size: dict[int, dict[int, list[float]]] = {n: {size: [] for size in sizes} for n in thread_counts}
    seconds: dict[str, list[float]] = {name: [] for name in workloads}
    for r in range(rounds):
        log.info("compute benchmark: utilisation round %d of %d", r + 1, rounds)
        for n in thread_counts:
            peak = sustained_matmul_flops(dtype, device, n, sizes)
            peaks[n].append(peak["peak_flops_per_second"])
            for size, rate in peak["by_size"].items():
                by_size[n][size].append(rate)
            with torch_threads(n):
                for name, w in workloads.items():
                    if w.threads == n:
                        seconds[name].append(w.seconds())
    figures: dict[str, Any] = {f"peak_{n}": statistics.median(peaks[n]) for n in thread_counts}
    for n in thread_counts:
        figures[f"peak_by_size_{n}"] = {str(size): statistics.median(rates) for size, rates in by_size[n].items()}
    for name, w in workloads.items():
        figures[name] = statistics.median([w.flops / t / p for t, p in zip(seconds[name], peaks[w.threads])])
        figures[f"{name}_ms"] = 1e3 * statistics.median(seconds[name])
    return figures


def predict(module: TGATUNetModule, values: torch.Tensor, visible: torch.Tensor) -> Callable[[], None]:
    """What prediction runs on these windows (``predict_windows``, eval mode, one batch); training mode after."""

    def run() -> None:
        module.eval()
        try:
            module.predict_windows(values, visible, batch_size=len(values))
        finally:
            module.train()

    return run


def single_window_latency(module: TGATUNetModule, batch: dict, calls: int, threads: int) -> dict[str, Any]:
    """Milliseconds of the prediction of one window (the batch's first), call by call."""
    one = predict(module, batch["values"][:1], batch["observed"][:1])
    with torch_threads(threads):
        median_seconds(one, repeats=1, warmup=max(20, calls // 10), device=module.device)
        ms = sorted(1e3 * median_seconds(one, repeats=1, warmup=0, device=module.device) for _ in range(calls))
    return {
        "latency_ms_p50": statistics.median(ms),
        "latency_ms_p95": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        "latency_ms_min": ms[0],
        "windows": calls,
        "batch_size": 1,
        "threads": threads,
    }


def compiled_window_latency(module: TGATUNetModule, batch: dict, calls: int, threads: int) -> dict[str, Any]:
    """:func:`single_window_latency` with the model compiled as ``load_run(compile=True)`` compiles it;
    ``compile_seconds`` is the first call's time. Where ``torch.compile`` is not supported, the figures
    are None with ``reason``."""
    before = module.compiled
    module.compiled = compiled = CompiledOrEager.for_inference(module.model, module.device)
    try:
        with torch_threads(threads):
            first = predict(module, batch["values"][:1], batch["observed"][:1])
            compile_seconds = median_seconds(first, repeats=1, warmup=0, device=module.device)
        if compiled.compiled is None:
            return {"latency_ms_p50": None, "latency_ms_p95": None, "reason": "torch.compile is not supported here"}
        return {**single_window_latency(module, batch, calls, threads), "compile_seconds": compile_seconds}
    finally:
        module.compiled = before


def training_workloads(config: Config, data: Data, module: TGATUNetModule, setting: Setting, steps: int):
    """The training and inference workloads with their FLOP counts (see the module docstring)."""
    checkpoints = config.performance.use_gradient_checkpoint
    plain_config = config.with_keys(use_gradient_checkpoint=False) if checkpoints else config
    plain = new_module(plain_config, data) if checkpoints else module
    batch = next(iter(make_loader(data, "train", config, shuffle=True)))
    infer = predict(module, batch["values"], batch["observed"])
    hardware = count_flops(lambda: fit(config, data, 1, module=module))
    flops = {"train": count_flops(lambda: fit(plain_config, data, 1, module=plain)), "infer": count_flops(infer)}
    n = setting.threads
    workloads = {
        "train": Workload(lambda: step_seconds(config, data, steps, module), flops["train"]["model"], n),
        "infer": Workload(lambda: median_seconds(infer, repeats=3, warmup=1, device=module.device), flops["infer"]["model"], n),
    }
    if checkpoints:
        workloads["train_no_checkpoint"] = Workload(lambda: step_seconds(plain_config, data, steps, plain), flops["train"]["model"], n)
    if module.device.type == "cpu":
        workloads["train_2threads"] = Workload(lambda: step_seconds(config, data, steps, module), flops["train"]["model"], 2)
    return workloads, flops, hardware, batch


def mfu_section(figures: dict, workloads: dict, flops: dict, hardware: dict, batch_size: int, threads: int) -> dict:
    """The ``mfu`` section from the utilisation rounds' figures and the FLOP counts."""
    by_size = figures[f"peak_by_size_{threads}"]
    train, infer = flops["train"], flops["infer"]
    mfu = {
        **{name: figures[name] for name in workloads},
        "peak_flops_per_second": figures[f"peak_{threads}"],
        "peak_by_size": by_size,
        "peak_size": int(max(by_size.items(), key=lambda kv: kv[1])[0]),
        "train_step_ms": figures["train_ms"],
        "infer_batch_ms": figures["infer_ms"],
        "model_flops_per_window_train": train["model"] / batch_size,
        "model_flops_per_window_infer": infer["model"] / batch_size,
        "hardware_flops_per_window_train": hardware["model"] / batch_size,
        "matmul_share_of_flops": train["model"] / (train["model"] + train["elementwise"]),
        "elementwise_flops_per_window_train": train["elementwise"] / batch_size,
    }
    if "train_no_checkpoint" in workloads:
        mfu["train_no_checkpoint_step_ms"] = figures["train_no_checkpoint_ms"]
    if "train_2threads" in workloads:
        mfu.update(
            peak_flops_per_second_2threads=figures["peak_2"],
            peak_by_size_2threads=figures["peak_by_size_2"],
            train_step_ms_2threads=figures["train_2threads_ms"],
        )
    return mfu


# rounds, peak sizes, latency calls, breakdown steps, timed steps per training measurement
PLANS = {
    True: (3, (64, 128, 256, 512, 1024), 200, 10, 3),
    False: (9, (64, 128, 256, 512, 1024, 2048), 1000, 30, 5),
}


def measure_compute(
    out_dir: Path, *, quick: bool = True, device: torch.device | str | None = None, setting: Setting | None = None
) -> dict[str, Any]:
    """Measure MFU, single-window latency and the step breakdown; write sections ``mfu``,
    ``infer_latency`` and ``breakdown`` of ``out_dir/results.json`` and ``out_dir/breakdown.png``.

    Args:
        quick: fewer rounds, peak sizes up to 1024, fewer latency calls and breakdown steps (:data:`PLANS`).
        device: where to run (default: where training would run). On CUDA there is no 2-thread figure.
        setting: what to measure on (default: :class:`Setting`'s, the medium preset).
    """
    out_dir = Path(out_dir)
    setting = setting or Setting()
    device = torch.device(device) if device is not None else training_device("auto").torch_device
    rounds, sizes, calls, breakdown_steps, steps = PLANS[quick]
    with tempfile.TemporaryDirectory(prefix="tgatunet_compute_") as tmp, torch_threads(setting.threads):
        config, data, module, _ = prepare_setting(setting, Path(tmp), device)
        workloads, flops, hardware, batch = training_workloads(config, data, module, setting, steps)
        figures = utilisation_rounds(workloads, rounds, sizes, DTYPES[setting.dtype], device)
        bandwidth = copy_bandwidth(device, setting.threads)
        latency = single_window_latency(module, batch, calls, setting.threads)
        latency["compiled"] = compiled_window_latency(module, batch, calls, setting.threads)
        breakdown = measure_breakdown(config, data, breakdown_steps, module)
    described = setting.describe(config)
    mfu = mfu_section(figures, workloads, flops, hardware, config.training.batch_size, setting.threads)
    mfu.update(copy_bytes_per_second=bandwidth, rounds=rounds, setting=described, method=METHOD)
    write_section(out_dir, "mfu", mfu)
    write_section(out_dir, "infer_latency", {**latency, "setting": described, "method": METHOD["latency"]})
    write_section(out_dir, "breakdown", {**breakdown, "setting": described})
    plot_breakdown(breakdown, out_dir / "breakdown.png")
    return {"mfu": mfu, "infer_latency": latency, "breakdown": breakdown}


METHOD = {
    "step": "the real TGATUNetModule training step (hiding, graph, forward, masked reconstruction + classification "
    "loss, backward, clipping, optimiser step) run by Lightning (quiet_trainer.fit) on the training DataLoader; "
    "time = StepTimer's median step of one fit, after one warm-up step",
    "model_flops": "torch.utils.flop_counter.FlopCounterMode over a one-step fit (forward + backward; "
    "predict_windows for inference), counted with gradient checkpointing off (hardware_flops_per_window_train: "
    "with the recomputation)",
    "peak": "median FLOP/s of square float32 matrix products per size, the fastest size; same thread count, "
    "measured in the same rounds as the step",
    "mfu": "per round: model FLOPs / seconds / that round's peak; median over rounds",
    "latency": "module.predict_windows on one window, eval mode, each call timed on its own after a warm-up; "
    "compiled: the same with the model compiled as load_run(compile=True) does (torch.compile), "
    "compile_seconds = its first call",
    "matmul_share": "FlopCounterMode FLOPs / (those + element-wise estimate: 1 FLOP per output element of "
    "pointwise ops, per input element of reductions)",
    "copy_bandwidth": "float32 tensor.copy_ of a 256 KiB and a 64 MiB buffer, (bytes read + written) / seconds, "
    "median of 9 after a warm-up, the step's thread count",
}

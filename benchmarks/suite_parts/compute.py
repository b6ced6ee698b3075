"""How much of the machine the model's step uses: ``tgatunet bench compute --out DIR [--quick|--full]``.

**Setting** (:class:`Setting`, recorded with every figure): a hardware preset of
the performance guide (:data:`tgatunet.config.PRESETS`, ``medium`` by default:
batch 16, hidden 64, 2/2 GAT levels, one transformer layer, 2 heads, gradient
checkpointing on), window 128, 9 channels of synthetic data
(:mod:`tgatunet.data.synth`, 3 sources, each lacking some channels), float32,
one torch thread. The data go through the real pipeline (``prepare_data``,
``make_loader``: the training DataLoader over ``BatchedWindowDataset``) and the
model and optimiser are the real ones (``build_module``: ``build_model`` and
``configure_optimizers``).

**The training step** (:class:`TrainStep`) is what ``TGATUNetModule.training_step``
computes for one batch: the module's own ``inputs`` (random hiding) and ``losses``
(graph, forward, masked reconstruction plus classification loss), backward,
gradient-norm clipping (``grad_clip``, as Lightning clips) and the optimiser
step. Lightning's loop around it (hooks, logging) is not part of the step.

**Model FLOPs** are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
step (matrix products, attention, convolutions; the CPU attention kernel with
torch's own attention formula): forward + backward for training, the forward
for inference. With gradient checkpointing the backward pass recomputes blocks;
those FLOPs are counted apart (``hardware_flops_per_window_train``) and left out
of the model FLOPs, as model-FLOPs utilisation defines them: the model FLOPs are
counted on a twin module (same weights) that does not checkpoint. With
``graph_type: knn`` the knn graph's distance products are in the count too.
Element-wise and reduction work (no FLOPs to ``FlopCounterMode``) is estimated
at one FLOP per output element (per input element for reductions), only for
``matmul_share_of_flops``.

**Peak** (:func:`sustained_matmul_flops`): the median rate of square float32 matrix
products ``n x n`` for n = 64 and 128 (the model's width and window) up to 1024
(2048 with ``--full``), each size timed on its own; the peak is the fastest
size's rate. It is measured with the step's thread count, in the same rounds as
the step, so a utilisation is a ratio of rates measured at the same moment.

**Memory bandwidth** (:func:`copy_bandwidth`, ``mfu.copy_bytes_per_second``): the rate of a
tensor copy that stays in a core's cache and of one that streams from memory. An
element-wise pass over an activation that has left the cache runs at best at the second
rate: where the step's element-wise share is large, this, not the matmul peak, is the
limit it meets.

**MFU**: each round measures the peak with one thread, then the training step
(``train``), the twin's step without checkpointing (``train_no_checkpoint``, when
the preset checkpoints) and inference (``infer``: ``module(values, observed)``,
what prediction runs, on a batch of the preset's size, eval mode,
``torch.inference_mode``); then the peak and the training step with two threads
(``train_2threads``). ``mfu.X = model FLOPs / seconds / that round's peak``, the
median over rounds; each time is :func:`tgatunet.profiling.median_seconds` of 3
calls after one warm-up call.

**Latency** (``infer_latency``): ``module(values, observed)`` on one window (batch
1), one thread, eval mode, ``torch.inference_mode``, after a warm-up; each call
timed on its own; median and 95th percentile. Then the same with the model
compiled as ``predict.load_run(compile=True)`` runs it (``torch.compile``;
``infer_latency.compiled``, with the compile time): where one
window at a time is served, per-operation overhead is most of eager execution's
time, and compiled code fuses the element-wise work into a few loops.

**Breakdown** (:mod:`tgatunet.bench.breakdown`): where a step's time goes.
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
from torch.utils.data import DataLoader
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_backward_flop_count, sdpa_flop_count

from tgatunet.bench.breakdown import measure_breakdown, plot_breakdown
from tgatunet.bench.results import write_section
from tgatunet.bench.setting import write_setting_data
from tgatunet.bench.step import TrainStep, to_device
from tgatunet.config import PRESETS, Config, load_config
from tgatunet.errors import ConfigError
from tgatunet.model.compile import CompiledOrEager
from tgatunet.predict import pick_device
from tgatunet.profiling import median_seconds, torch_threads
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.run import build_module, load_data, make_loader

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
        raise ConfigError(f"bench compute: unknown preset '{setting.preset}'; choose one of {', '.join(PRESETS)}")
    fixed = sorted(FIXED_KEYS.keys() & setting.config.keys())
    if fixed:
        reasons = "; ".join(f"'{key}' is the benchmark's to set ({FIXED_KEYS[key]})" for key in fixed)
        raise ConfigError(f"bench compute: {reasons}")
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


class _ElementwiseFlops(TorchDispatchMode):
    """Estimated FLOPs of the ops ``FlopCounterMode`` does not count: one per output element of a
    pointwise op, one per input element of a reduction."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._overloadpacket not in flop_registry and func._overloadpacket not in _CPU_ATTENTION:
            if torch.Tag.pointwise in func.tags:
                self.flops += sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
            elif torch.Tag.reduction in func.tags:
                self.flops += sum(t.numel() for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor))
        return out


# FlopCounterMode knows the attention kernels of CUDA; the CPU one gets torch's own attention formulas.
_CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *args, out_shape=None, **kwargs: (
        sdpa_flop_count(q, k, v)
    ),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, q, k, v)
    ),
}


def count_flops(fn: Callable[[], Any]) -> dict[str, int]:
    """FLOPs of one ``fn()``: ``model`` (``FlopCounterMode``'s count) and ``elementwise`` (estimated)."""
    elementwise = _ElementwiseFlops()
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter, elementwise:
        fn()
    return {"model": int(counter.get_total_flops()), "elementwise": int(elementwise.flops)}


def sustained_matmul_flops(
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    threads: int = 1,
    sizes: tuple[int, ...] = (64, 128, 256, 512, 1024),
    repeats: int = 5,
) -> dict[str, Any]:
    """Sustained FLOP/s of square ``n x n`` matrix products with ``threads`` torch threads.

    Returns:
        ``peak_flops_per_second`` (the fastest size's median rate), ``peak_size`` (that ``n``) and
        ``by_size`` (``n -> median FLOP/s`` of ``repeats`` products after one warm-up product).
    """
    device = torch.device(device)
    by_size = {}
    with torch_threads(threads):
        for n in sizes:
            a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
            # Products of small matrices take microseconds: time a batch of them as one repeat.
            inner = max(1, 2**24 // n**3)

            def products() -> None:
                for _ in range(inner):
                    torch.mm(a, b)

            by_size[n] = 2 * n**3 * inner / median_seconds(products, repeats=repeats, warmup=1, device=device)
    best = max(by_size, key=by_size.get)
    return {"peak_flops_per_second": by_size[best], "peak_size": best, "by_size": by_size}


def copy_bandwidth(
    device: torch.device | str = "cpu",
    threads: int = 1,
    sizes_bytes: tuple[int, ...] = (2**18, 2**26),
    repeats: int = 9,
) -> dict[str, float]:
    """Sustained bytes/s of a float32 tensor copy (bytes read + bytes written) for each buffer size.

    A copy is the cheapest element-wise pass: it bounds what any pass over tensors of that size
    can reach. The default sizes are 256 KiB, which a core's cache holds (a ``[16, 128, 64]``
    fp32 activation of the medium preset is 512 KiB), and 64 MiB, which comes from memory.

    Returns:
        buffer size in bytes (as a string key) -> median bytes/s of ``repeats`` timed copies, each
        sweeping the buffer enough times to take a millisecond or more.
    """
    device = torch.device(device)
    rates = {}
    with torch_threads(threads):
        for size in sizes_bytes:
            src = torch.randn(size // 4, device=device)
            dst = torch.empty_like(src)
            sweeps = max(1, 2**22 // size)

            def copies() -> None:
                for _ in range(sweeps):
                    dst.copy_(src)

            rates[str(size)] = 2 * size * sweeps / median_seconds(copies, repeats=repeats, warmup=1, device=device)
    return rates


def inference_forward(module: TGATUNetModule, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """What prediction runs on ``batch`` (``module(values, observed)``: graph and model, nothing hidden)
    under ``torch.inference_mode``; the caller sets eval mode."""

    def forward() -> None:
        with torch.inference_mode():
            module(batch["values"], batch["observed"])

    return forward


def in_eval_mode(model: torch.nn.Module, fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` run with ``model`` in eval mode, training mode restored after."""

    def run() -> None:
        model.eval()
        try:
            fn()
        finally:
            model.train()

    return run


def _utilisation(flops: float, seconds: list[float], peaks: list[float]) -> float:
    """Median over rounds of ``flops / seconds / peak``, each round's step against its own peak."""
    return statistics.median([flops / t / p for t, p in zip(seconds, peaks)])


@dataclass(frozen=True)
class Workload:
    """Something timed in the utilisation rounds: ``run()`` does ``flops`` model FLOPs with ``threads`` threads."""

    run: Callable[[], None]
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
                        seconds[name].append(median_seconds(w.run, repeats=3, warmup=1, device=device))
    figures: dict[str, Any] = {f"peak_{n}": statistics.median(peaks[n]) for n in thread_counts}
    for n in thread_counts:
        figures[f"peak_by_size_{n}"] = {str(size): statistics.median(rates) for size, rates in by_size[n].items()}
    for name, w in workloads.items():
        figures[name] = _utilisation(w.flops, seconds[name], peaks[w.threads])
        figures[f"{name}_ms"] = 1e3 * statistics.median(seconds[name])
    return figures


def single_window_latency(
    module: TGATUNetModule, batch: dict[str, torch.Tensor], calls: int, threads: int, device: torch.device
) -> dict[str, Any]:
    """Milliseconds of the eval-mode forward of one window (the batch's first), call by call."""
    window = {key: batch[key][:1] for key in ("values", "observed")}
    forward = inference_forward(module, window)
    module.eval()
    with torch_threads(threads):
        median_seconds(forward, repeats=1, warmup=max(20, calls // 10), device=device)
        ms = sorted(1e3 * median_seconds(forward, repeats=1, warmup=0, device=device) for _ in range(calls))
    module.train()
    return {
        "latency_ms_p50": statistics.median(ms),
        "latency_ms_p95": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        "latency_ms_min": ms[0],
        "windows": calls,
        "batch_size": 1,
        "threads": threads,
    }


def compiled_window_latency(
    module: TGATUNetModule, batch: dict[str, torch.Tensor], calls: int, threads: int, device: torch.device
) -> dict[str, Any]:
    """:func:`single_window_latency` with the model compiled as ``load_run(compile=True)`` runs it
    (``torch.compile``); ``compile_seconds`` is the first call's time.

    Where ``torch.compile`` is not supported, the figures are None with ``reason``.
    """
    window = {key: batch[key][:1] for key in ("values", "observed")}
    before = module.compiled
    module.compiled = compiled = CompiledOrEager.for_inference(module.model, device)
    try:
        with torch_threads(threads):
            first_call = in_eval_mode(module, inference_forward(module, window))
            compile_seconds = median_seconds(first_call, repeats=1, warmup=0, device=device)
        if compiled.compiled is None:
            return {"latency_ms_p50": None, "latency_ms_p95": None, "reason": "torch.compile is not supported here"}
        return {**single_window_latency(module, batch, calls, threads, device), "compile_seconds": compile_seconds}
    finally:
        module.compiled = before


def without_checkpointing(module: TGATUNetModule, config: Config, data: Any) -> TGATUNetModule:
    """A twin of ``module`` (same weights) that does not checkpoint: its step runs the model FLOPs once each."""
    twin = build_module(config.with_keys(**{"use_gradient_checkpoint": False}), data)
    twin.load_state_dict(module.state_dict())
    return twin.to(module.device)


def prepare_setting(setting: Setting, folder: Path, device: torch.device) -> tuple[Config, Any, TGATUNetModule, DataLoader]:
    """The setting's config, prepared data, module (on ``device``) and training DataLoader."""
    config = synthetic_config(setting, folder, device)
    data = load_data(config)
    torch.manual_seed(config.training.seed)
    module = build_module(config, data).to(device)
    return config, data, module, make_loader(data, "train", config, shuffle=True)


def measure_compute(
    out_dir: Path,
    *,
    quick: bool = True,
    device: torch.device | str | None = None,
    setting: Setting | None = None,
) -> dict[str, Any]:
    """Measure MFU, single-window latency and the step breakdown; write sections ``mfu``,
    ``infer_latency`` and ``breakdown`` of ``out_dir/results.json`` and ``out_dir/breakdown.png``.

    Args:
        quick: 3 timing rounds, peak sizes up to 1024, 200 latency calls, 10 breakdown rounds
            (20-30 s on a 2-core CPU); else 9 rounds, up to 2048, 1000 calls, 30 rounds (about a minute).
        device: where to run (default: CUDA if there, else CPU). On CUDA there is no 2-thread figure.
        setting: what to measure on (default: :class:`Setting`'s, the medium preset).
    """
    out_dir = Path(out_dir)
    setting = setting or Setting()
    device = torch.device(device) if device is not None else pick_device()
    rounds, sizes, calls, breakdown_rounds = (
        (3, (64, 128, 256, 512, 1024), 200, 10) if quick else (9, (64, 128, 256, 512, 1024, 2048), 1000, 30)
    )
    with tempfile.TemporaryDirectory(prefix="tgatunet_compute_") as tmp, torch_threads(setting.threads):
        config, data, module, loader = prepare_setting(setting, Path(tmp), device)
        B = config.training.batch_size
        batch = to_device(next(iter(loader)), device)
        step = TrainStep(module, batch)
        plain = TrainStep(without_checkpointing(module, config, data), batch) if config.performance.use_gradient_checkpoint else step
        infer = in_eval_mode(module, inference_forward(module, batch))
        for _ in range(2):  # optimiser state exists, caches are warm
            step()
            plain()
        hardware = count_flops(step)
        train_flops = count_flops(plain)
        infer_flops = count_flops(infer)

        workloads = {
            "train": Workload(step, train_flops["model"], setting.threads),
            "infer": Workload(infer, infer_flops["model"], setting.threads),
        }
        if plain is not step:
            workloads["train_no_checkpoint"] = Workload(plain, train_flops["model"], setting.threads)
        if device.type == "cpu":
            workloads["train_2threads"] = Workload(step, train_flops["model"], 2)
        figures = utilisation_rounds(workloads, rounds, sizes, DTYPES[setting.dtype], device)
        bandwidth = copy_bandwidth(device, setting.threads)
        latency = single_window_latency(module, batch, calls, setting.threads, device)
        latency["compiled"] = compiled_window_latency(module, batch, calls, setting.threads, device)
        breakdown = measure_breakdown(step, loader, breakdown_rounds, device)

    described = setting.describe(config)
    mfu = {
        **{name: figures[name] for name in workloads},
        "peak_flops_per_second": figures[f"peak_{setting.threads}"],
        "peak_by_size": figures[f"peak_by_size_{setting.threads}"],
        "peak_size": int(max(figures[f"peak_by_size_{setting.threads}"].items(), key=lambda kv: kv[1])[0]),
        "train_step_ms": figures["train_ms"],
        "infer_batch_ms": figures["infer_ms"],
        "model_flops_per_window_train": train_flops["model"] / B,
        "model_flops_per_window_infer": infer_flops["model"] / B,
        "hardware_flops_per_window_train": hardware["model"] / B,
        "matmul_share_of_flops": train_flops["model"] / (train_flops["model"] + train_flops["elementwise"]),
        "elementwise_flops_per_window_train": train_flops["elementwise"] / B,
        "copy_bytes_per_second": bandwidth,
        "rounds": rounds,
        "setting": described,
        "method": METHOD,
    }
    if "train_no_checkpoint" in workloads:
        mfu["train_no_checkpoint_step_ms"] = figures["train_no_checkpoint_ms"]
    if "train_2threads" in workloads:
        mfu.update(
            peak_flops_per_second_2threads=figures["peak_2"],
            peak_by_size_2threads=figures["peak_by_size_2"],
            train_step_ms_2threads=figures["train_2threads_ms"],
        )
    write_section(out_dir, "mfu", mfu)
    write_section(out_dir, "infer_latency", {**latency, "setting": described, "method": METHOD["latency"]})
    write_section(out_dir, "breakdown", {**breakdown, "setting": described})
    plot_breakdown(breakdown, out_dir / "breakdown.png")
    return {"mfu": mfu, "infer_latency": latency, "breakdown": breakdown}


METHOD = {
    "step": "TGATUNetModule.inputs + losses (graph, forward, masked reconstruction + classification loss), backward, "
    "grad-norm clipping, optimiser step (configure_optimizers) on a batch of the training DataLoader",
    "model_flops": "torch.utils.flop_counter.FlopCounterMode over one step (forward + backward; forward only for "
    "inference), counted without gradient checkpointing's recomputation (hardware_flops_per_window_train "
    "includes it)",
    "peak": "median FLOP/s of square float32 matrix products per size, the fastest size; same thread count, "
    "measured in the same rounds as the step",
    "mfu": "per round: model FLOPs / seconds (tgatunet.profiling.median_seconds, 3 calls after 1 warm-up) / that "
    "round's peak; median over rounds",
    "latency": "module(values, observed) on one window, batch 1, eval mode, torch.inference_mode, each call timed "
    "on its own after a warm-up; compiled: the same with the model compiled as predict.load_run(compile=True) "
    "does (torch.compile), compile_seconds = its first call",
    "matmul_share": "FlopCounterMode FLOPs / (those + element-wise estimate: 1 FLOP per output element of "
    "pointwise ops, per input element of reductions)",
    "copy_bandwidth": "float32 tensor.copy_ of a 256 KiB and a 64 MiB buffer, (bytes read + written) / seconds, "
    "median of 9 after a warm-up, the step's thread count",
}

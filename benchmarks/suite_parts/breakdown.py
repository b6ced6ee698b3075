"""Where a training step's time goes, and what that says: the ``breakdown`` section of ``bench compute``.

A step of the real training loop is split into five parts, each timed on its own
(:func:`tgatunet.profiling.median_seconds`, one call, device synchronised) in
every round, in the order training runs them:

* ``data_loading``: fetching the next batch from the training DataLoader
  (``make_loader``: ``BatchedWindowDataset``, the config's ``num_workers``) and
  moving it to the device;
* ``graph_construction``: the batch's neighbour tables: the knn graph built
  from what the model sees (``graph_type: knn``; training never caches it), and
  the temporal tables of every level (LRU lookups);
* ``forward``: the random hiding and the module's ``losses`` (model forward and
  losses), less the graph construction it contains (the LRU lookups it makes
  itself, microseconds, stay in);
* ``backward``: ``loss.backward()``;
* ``optimizer``: gradient-norm clipping, the optimiser step, zeroing gradients.

Each part's figure is its median over the rounds; ``share`` is each median over
the sum of the medians.

When forward and backward dominate, what they spend their time on decides what
helps: ``op_time_share`` splits the self CPU time of three profiled steps
(``torch.profiler``) into matrix products (the model's FLOPs), other aten ops
(element-wise work, reductions, copies: memory traffic) and overhead
(shape-only ops, the autograd engine, Python). The verdict names the largest
part and what to do about it.
"""

from __future__ import annotations

import statistics
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first: no display on servers)
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from tgatunet.bench.step import TrainStep, endless, to_device  # noqa: E402
from tgatunet.graph.temporal import temporal_neighbors  # noqa: E402
from tgatunet.profiling import median_seconds  # noqa: E402

PARTS = ("data_loading", "graph_construction", "forward", "backward", "optimizer")
LABELS = {
    "data_loading": "data loading",
    "graph_construction": "graph construction",
    "forward": "forward",
    "backward": "backward",
    "optimizer": "optimizer",
}
ADVICE = {
    "data_loading": "raise num_workers (or read from a data store) so batches are prepared while the model computes",
    "graph_construction": "keep knn graphs out of the step: use_graph_cache with `tgatunet cache build`, "
    "or graph_type temporal",
    "optimizer": "the optimiser's per-parameter work outweighs the model's: use a fused optimiser",
}


METHOD = (
    "each round times, one call each (tgatunet.profiling.median_seconds): fetching the next batch from the "
    "training DataLoader and moving it to the device; the batch's neighbour tables (knn build, temporal LRU "
    "lookups); hiding + TGATUNetModule.losses less the graph time; loss.backward(); clipping + optimiser step + "
    "zero_grad. Per part the median over rounds; share = median / sum of medians. op_time_share: torch.profiler "
    "self CPU time of 3 steps by kind of operator (matrix products; other aten ops: element-wise, reductions, "
    "copies; overhead: shape-only ops, autograd engine, Python)"
)


def level_lengths(steps: int, levels: int) -> list[int]:
    """Window lengths of the U-Net's GAT levels: ``T``, then halved (rounded up) per level."""
    lengths = [steps]
    for _ in range(levels - 1):
        lengths.append((lengths[-1] + 1) // 2)
    return lengths


# Operator kinds in a torch.profiler table (self CPU time): matrix products do the model's FLOPs;
# shape-only ops move no data; every other aten op is element-wise work, reductions or copies;
# what is not an aten op (autograd engine nodes, Python functions, the optimiser's wrapper) is overhead.
MATMUL_OPS = {
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
}
SHAPE_OPS = {
    "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::_reshape_alias", "aten::slice", "aten::select",
    "aten::as_strided", "aten::unsqueeze", "aten::squeeze", "aten::transpose", "aten::t", "aten::permute",
    "aten::expand", "aten::detach", "aten::alias", "aten::split", "aten::split_with_sizes", "aten::unbind",
    "aten::narrow", "aten::unfold", "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::resize_",
    "aten::lift_fresh", "aten::view_as", "aten::contiguous", "aten::to", "aten::linear", "aten::matmul",
}  # fmt: skip


def op_time_shares(step: TrainStep, steps: int = 3) -> dict[str, float]:
    """Shares of a training step's self CPU time (torch.profiler, ``steps`` steps) by kind of operator:
    ``matrix_products``, ``elementwise`` (element-wise ops, reductions, copies) and ``overhead``
    (shape-only ops, autograd engine, Python)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    kinds = dict.fromkeys(("matrix_products", "elementwise", "overhead"), 0.0)
    for event in prof.key_averages():
        if event.key in MATMUL_OPS:
            kind = "matrix_products"
        elif event.key.startswith("aten::") and event.key not in SHAPE_OPS:
            kind = "elementwise"
        else:
            kind = "overhead"
        kinds[kind] += event.self_cpu_time_total
    total = sum(kinds.values())
    return {kind: t / total for kind, t in kinds.items()}


def verdict(share: dict[str, float], ops: dict[str, float] | None = None) -> str:
    """One sentence: the largest part of the step, its share, and what to do about it.

    ``ops``: :func:`op_time_shares`, which says what a compute-bound step spends its time on.
    """
    largest = max(share, key=share.get)
    if largest not in ("forward", "backward"):
        return f"{LABELS[largest]} takes {share[largest]:.0%} of each step: {ADVICE[largest]}"
    rest = ", ".join(f"{LABELS[p]} {share[p]:.0%}" for p in ("data_loading", "graph_construction", "optimizer"))
    text = (
        f"forward + backward take {share['forward'] + share['backward']:.0%} of each step (forward "
        f"{share['forward']:.0%}, backward {share['backward']:.0%}): the step is compute-bound, the rest is "
        f"small ({rest})"
    )
    if ops is None:
        return text
    if ops["matrix_products"] >= 0.5:
        return f"{text}; matrix products, the model's FLOPs, take {ops['matrix_products']:.0%} of the step's time"
    return (
        f"{text}; but matrix products, the model's FLOPs, take only {ops['matrix_products']:.0%} of its time: "
        f"element-wise work, reductions and copies take {ops['elementwise']:.0%} and per-operation overhead "
        f"(views, autograd, Python) {ops['overhead']:.0%}, so the step is bound by memory traffic and operation "
        "count at these sizes, not by arithmetic"
    )


def measure_breakdown(step: TrainStep, loader: DataLoader, rounds: int, device: torch.device) -> dict[str, Any]:
    """Time the parts of ``rounds`` training steps on the loader's batches (see the module docstring)."""
    module = step.module
    batches = endless(loader)
    lengths = level_lengths(module.config.data.window_size, module.config.model.encoder_layers)
    time_k = module.config.model.time_k

    def fetch() -> None:
        step.set_batch(to_device(next(batches), device))

    def graph() -> None:
        step.graph()
        for length in lengths:
            temporal_neighbors(length, time_k, str(device))

    def timed(fn) -> float:
        return median_seconds(fn, repeats=1, warmup=0, device=device)

    seconds: dict[str, list[float]] = {part: [] for part in PARTS}
    fetch()
    step()  # warm-up on the loader's batches
    for _ in range(rounds):
        seconds["data_loading"].append(timed(fetch))
        inputs_s = timed(step.inputs)
        graph_s = timed(graph)
        seconds["graph_construction"].append(graph_s)
        # losses() builds the graph itself: what it spent there is graph construction, not forward.
        seconds["forward"].append(inputs_s + max(timed(step.forward) - graph_s, 0.0))
        seconds["backward"].append(timed(step.backward))
        seconds["optimizer"].append(timed(step.optimize))
    median = {part: statistics.median(v) for part, v in seconds.items()}
    total = sum(median.values())
    share = {part: median[part] / total for part in PARTS}
    # CPU time says what the step computes; on a GPU it would only show the launches.
    ops = op_time_shares(step) if device.type == "cpu" else None
    return {
        "share": share,
        "ms": {part: 1e3 * median[part] for part in PARTS},
        "step_ms": 1e3 * total,
        "op_time_share": ops,
        "verdict": verdict(share, ops),
        "rounds": rounds,
        "num_workers": loader.num_workers,
        "method": METHOD,
    }


def plot_breakdown(results: dict[str, Any], path: Path) -> Path:
    """Stacked bars of the step's parts and, when measured, of its operator kinds; the verdict as title."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bars = [("step parts", {LABELS[p]: (results["share"][p], results["ms"][p]) for p in PARTS})]
    if results.get("op_time_share"):
        ops = results["op_time_share"]
        kinds = {"matrix products": "matrix_products", "element-wise, reductions, copies": "elementwise",
                 "overhead (views, autograd, Python)": "overhead"}  # fmt: skip
        bars.append(("operator kinds", {name: (ops[key], None) for name, key in kinds.items()}))  # profiled: no ms
    fig, ax = plt.subplots(figsize=(9, 2.2 + 0.9 * len(bars)))
    colours = iter(plt.get_cmap("tab10").colors)
    for y, (_, parts) in enumerate(reversed(bars)):
        left = 0.0
        for name, (share, ms) in parts.items():
            label = f"{name}: {share:.0%}" + (f" ({ms:.2f} ms)" if ms is not None else "")
            ax.barh(y, share, left=left, color=next(colours), label=label)
            left += share
    ax.set_xlim(0, 1)
    ax.set_yticks(range(len(bars)), [name for name, _ in reversed(bars)])
    ax.set_xlabel(f"share of a training step ({results['step_ms']:.1f} ms)")
    ax.set_title("\n".join(textwrap.wrap(results["verdict"], 120)), fontsize=8)
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.72, bottom=0.38)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

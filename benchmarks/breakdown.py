"""Where a training step's time goes, and what that says: the ``breakdown`` section of ``compute``.

The step is the real one, run by Lightning (:func:`benchmarks.training.step_timings`), and
:class:`~tgatunet.train.callbacks.StepTimer` splits each step into the phases Lightning's hooks
mark, in the order training runs them:

* ``data``: from the end of one step to the start of the next: fetching the batch from the
  training DataLoader (the config's ``num_workers``), moving it to the device, Lightning's loop;
* ``forward``: the random hiding, the graph (the knn graph built from what the model sees,
  with ``graph_type: knn``), the model's forward pass and the losses;
* ``backward``: the backward pass (with gradient checkpointing it recomputes the forward of
  each checkpointed block);
* ``optimizer``: gradient-norm clipping, the optimiser step, zeroing gradients, logging.

Each phase's figure is its median over the timed steps; ``share`` is each median over the sum of
the medians. The knn graph's build is timed on its own as well (``graph_ms_within_forward``: the
module's ``neighbors`` on one batch, 0 for the temporal graph, which needs no building).

When forward and backward dominate, what they spend their time on decides what helps:
``op_time_share`` splits the self CPU time of three profiled steps (``torch.profiler`` around the
same fit) into matrix products (the model's FLOPs), other aten ops (element-wise work,
reductions, copies: memory traffic) and overhead (shape-only ops, the autograd engine, Python).
The profiler's own step markers and the DataLoader's iterator (data loading, a phase above)
are left out. The verdict names the largest part and what to do about it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from benchmarks.training import device_of, profile_steps, step_timings
from tgatunet.config import Config
from tgatunet.profiling import median_seconds
from tgatunet.train.callbacks import StepTimer
from tgatunet.train.loaders import make_loader
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.run import Data

PARTS = StepTimer.PHASES
LABELS = {"data": "data loading", "forward": "forward", "backward": "backward", "optimizer": "optimizer"}
ADVICE = {
    "data": "raise num_workers (or read from a data store) so batches are prepared while the model computes",
    "optimizer": "the optimiser's per-parameter work outweighs the model's: raise batch_size",
}

METHOD = (
    "the real TGATUNetModule training step run by Lightning (quiet_trainer.fit), phases timed by "
    "tgatunet.train.callbacks.StepTimer through Lightning's hooks after 2 warm-up steps: data (end of one step to "
    "the start of the next: fetch, transfer, loop), forward (hiding, graph, forward, losses), backward, optimizer "
    "(clipping, optimiser step, zero_grad, logging). Per phase the median over steps; share = median / sum of "
    "medians. graph_ms_within_forward: module.neighbors on one batch (median of 5), part of forward. "
    "op_time_share: torch.profiler self CPU time of 3 steps of the same fit by kind of operator (matrix products; "
    "other aten ops: element-wise, reductions, copies; overhead: shape-only ops, autograd engine, Python), "
    "profiler step markers and the DataLoader iterator left out"
)

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
# Events that are not the step's computation: the profiler's step markers, the DataLoader's iterator.
NOT_COMPUTE = ("ProfilerStep", "enumerate(DataLoader)")


def op_kind(key: str) -> str | None:
    """The kind of a profiler event: matrix_products, elementwise, overhead; None for what is left out."""
    if key.startswith(NOT_COMPUTE):
        return None
    if key in MATMUL_OPS:
        return "matrix_products"
    if key.startswith("aten::") and key not in SHAPE_OPS:
        return "elementwise"
    return "overhead"


def op_time_shares(config: Config, data: Data, module: TGATUNetModule | None = None, steps: int = 3) -> dict[str, float]:
    """Shares of the training step's self CPU time (``steps`` profiled steps of a fit) by kind of operator."""
    kinds = dict.fromkeys(("matrix_products", "elementwise", "overhead"), 0.0)
    for event in profile_steps(config, data, steps, module).key_averages():
        kind = op_kind(event.key)
        if kind is not None:
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
    rest = ", ".join(f"{LABELS[p]} {share[p]:.0%}" for p in ("data", "optimizer"))
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


def graph_seconds(config: Config, data: Data, module: TGATUNetModule) -> float:
    """Seconds of the module's own graph for one training batch (0 for the temporal graph: nothing is built)."""
    if module.knn is None:
        return 0.0
    batch = next(iter(make_loader(data, "train", config, shuffle=True)))
    batch = {key: value.to(module.device) for key, value in batch.items()}
    module.train()
    visible, _ = module.inputs(batch)
    return median_seconds(lambda: module.neighbors(batch["values"], visible), repeats=5, device=module.device)


def measure_breakdown(config: Config, data: Data, steps: int, module: TGATUNetModule | None = None) -> dict[str, Any]:
    """Time the phases of ``steps`` training steps (see the module docstring)."""
    timings = step_timings(config, data, steps, skip=2, module=module)
    median = timings["phase_seconds"]
    total = sum(median.values())
    share = {part: median[part] / total for part in PARTS}
    # CPU time says what the step computes; on a GPU it would only show the launches.
    ops = op_time_shares(config, data, module) if device_of(config).type == "cpu" else None
    graph = graph_seconds(config, data, module) if module is not None else 0.0
    return {
        "share": share,
        "ms": {part: 1e3 * median[part] for part in PARTS},
        "step_ms": 1e3 * total,
        "graph_ms_within_forward": 1e3 * graph,
        "op_time_share": ops,
        "verdict": verdict(share, ops),
        "steps": timings["steps"],
        "num_workers": config.performance.num_workers,
        "graph_type": config.model.graph_type,
        "method": METHOD,
    }


def plot_breakdown(results: dict[str, Any], path: Path) -> Path:
    """Stacked bars of the step's phases and, when measured, of its operator kinds; the verdict as title."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bars = [("step phases", {LABELS[p]: (results["share"][p], results["ms"][p]) for p in PARTS})]
    if results.get("op_time_share"):
        ops = results["op_time_share"]
        kinds = {"matrix products": "matrix_products", "element-wise, reductions, copies": "elementwise",
                 "overhead (views, autograd, Python)": "overhead"}  # fmt: skip
        bars.append(("operator kinds", {name: (ops[key], None) for name, key in kinds.items()}))  # profiled: no ms
    fig = Figure(figsize=(9, 2.2 + 0.9 * len(bars)))
    ax = fig.subplots()
    colours = iter(matplotlib.colormaps["tab10"].colors)
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
    return path

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
the sum of the medians. The verdict names the largest part and what to do
about it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first: no display on servers)
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from tgatunet.graph.temporal import temporal_neighbors  # noqa: E402
from tgatunet.profiling import median_seconds  # noqa: E402

if TYPE_CHECKING:
    from tgatunet.bench.compute import TrainStep

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
    "zero_grad. Per part the median over rounds; share = median / sum of medians"
)


def _batches(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader


def level_lengths(steps: int, levels: int) -> list[int]:
    """Window lengths of the U-Net's GAT levels: ``T``, then halved (rounded up) per level."""
    lengths = [steps]
    for _ in range(levels - 1):
        lengths.append((lengths[-1] + 1) // 2)
    return lengths


def verdict(share: dict[str, float]) -> str:
    """One sentence: the largest part of the step, its share, and what to do about it."""
    largest = max(share, key=share.get)
    compute = share["forward"] + share["backward"]
    if largest in ("forward", "backward"):
        rest = ", ".join(f"{LABELS[p]} {share[p]:.0%}" for p in ("data_loading", "graph_construction", "optimizer"))
        return (
            f"forward + backward take {compute:.0%} of each step (forward {share['forward']:.0%}, backward "
            f"{share['backward']:.0%}): the step is compute-bound, the rest is small ({rest}); "
            "model-FLOPs utilisation says how well that compute uses the hardware"
        )
    return f"{LABELS[largest]} takes {share[largest]:.0%} of each step: {ADVICE[largest]}"


def measure_breakdown(step: TrainStep, loader: DataLoader, rounds: int, device: torch.device) -> dict[str, Any]:
    """Time the parts of ``rounds`` training steps on the loader's batches (see the module docstring)."""
    module = step.module
    batches = _batches(loader)
    lengths = level_lengths(module.config.window_size, module.config.encoder_layers)
    time_k = module.config.time_k

    def fetch() -> None:
        step.set_batch({k: v.to(device) for k, v in next(batches).items()})

    def graph() -> None:
        step.graph()
        for length in lengths:
            temporal_neighbors(length, time_k, str(device))

    def forward() -> None:
        step.hide()
        step.forward()

    def timed(fn) -> float:
        return median_seconds(fn, repeats=1, warmup=0, device=device)

    seconds: dict[str, list[float]] = {part: [] for part in PARTS}
    fetch()
    step()  # warm-up on the loader's batches
    for _ in range(rounds):
        seconds["data_loading"].append(timed(fetch))
        graph_s = timed(graph)
        seconds["graph_construction"].append(graph_s)
        # losses() builds the graph itself: what it spent there is graph construction, not forward.
        seconds["forward"].append(max(timed(forward) - graph_s, 0.0))
        seconds["backward"].append(timed(step.backward))
        seconds["optimizer"].append(timed(step.optimize))
    median = {part: sorted(v)[len(v) // 2] for part, v in seconds.items()}
    total = sum(median.values())
    share = {part: median[part] / total for part in PARTS}
    return {
        "share": share,
        "ms": {part: 1e3 * median[part] for part in PARTS},
        "step_ms": 1e3 * total,
        "verdict": verdict(share),
        "rounds": rounds,
        "num_workers": loader.num_workers,
        "method": METHOD,
    }


def plot_breakdown(results: dict[str, Any], path: Path) -> Path:
    """A stacked bar of the step's parts (share and milliseconds) with the verdict as title; saved to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 2.8))
    left = 0.0
    colours = plt.get_cmap("tab10").colors
    for part, colour in zip(PARTS, colours):
        share = results["share"][part]
        ax.barh(0, share, left=left, color=colour, label=f"{LABELS[part]}: {share:.0%} ({results['ms'][part]:.2f} ms)")
        left += share
    ax.set_xlim(0, 1)
    ax.set_yticks([])
    ax.set_xlabel(f"share of a training step ({results['step_ms']:.1f} ms)")
    ax.set_title("\n".join(textwrap.wrap(results["verdict"], 110)), fontsize=8)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

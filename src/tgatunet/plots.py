"""Plots a user looks at: loss curves, completed vs true signals, confusion matrix.

Figures are drawn on :class:`matplotlib.figure.Figure` objects and saved with their own canvas: no display is needed and
matplotlib's global backend and pyplot state are left as the user has them (a notebook keeps its inline plots).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def _save(fig: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def plot_loss_curves(metrics_csv: Path, out: Path) -> Path | None:
    """Loss, completion MAE (the validation one selects the run; its best check marked) and accuracy per epoch,
    from Lightning's CSV log."""
    if not metrics_csv.is_file():
        return None
    frame = pd.read_csv(metrics_csv)
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    panels = [("loss", "total loss"), ("mae", "completion MAE of hidden values"), ("acc", "window accuracy")]
    for ax, (metric, title) in zip(axes, panels):
        for stage, style in [("train", "-"), ("val", "--")]:
            column = f"{stage}/{metric}"
            if column in frame:
                series = frame[["epoch", column]].dropna().groupby("epoch")[column].last()
                ax.plot(series.index, series.values, style, label=stage)
                if stage == "val" and metric == "mae" and len(series):
                    ax.plot(series.idxmin(), series.min(), "o", color="tab:red", label=f"best {series.min():.4f}")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_completions(true: np.ndarray, model: np.ndarray, ridge: np.ndarray, channels: list[str], titles: list[str], out: Path) -> Path:
    """Completed vs true signals: ``true/model/ridge [W, T, K]`` for W windows and K channels."""
    n_win, _, n_ch = true.shape
    fig = Figure(figsize=(3.2 * n_ch, 2.2 * n_win))
    axes = fig.subplots(n_win, n_ch, squeeze=False, sharex=True)
    for w in range(n_win):
        for k in range(n_ch):
            ax = axes[w, k]
            ax.plot(true[w, :, k], color="black", lw=1.4, label="true")
            ax.plot(model[w, :, k], color="tab:red", lw=1.1, label="T-GAT-UNet")
            ax.plot(ridge[w, :, k], color="tab:blue", lw=0.9, ls=":", label="ridge")
            if w == 0:
                ax.set_title(channels[k])
            if k == 0:
                ax.set_ylabel(titles[w], fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("hidden channels completed on test windows (normalised units)")
    return _save(fig, out)


def plot_intervals(true: np.ndarray, completed: np.ndarray, lower: np.ndarray, upper: np.ndarray, channels: list[str],
                   coverage: float, out: Path) -> Path:
    """Completed values with their interval band against the truth: ``[T, K]`` each for K hidden channels of a recording."""
    inside = (true >= lower) & (true <= upper)
    fig = Figure(figsize=(10, 1.9 * len(channels)))
    axes = fig.subplots(len(channels), 1, squeeze=False, sharex=True)[:, 0]
    t = np.arange(len(true))
    for k, ax in enumerate(axes):
        ax.fill_between(t, lower[:, k], upper[:, k], color="tab:red", alpha=0.2, lw=0, label=f"{coverage:.0%} interval")
        ax.plot(t, completed[:, k], color="tab:red", lw=1.0, label="T-GAT-UNet")
        ax.plot(t, true[:, k], color="black", lw=1.0, label="true")
        ax.set_ylabel(channels[k])
        ax.set_title(f"{channels[k]}: truth inside the interval at {inside[:, k].mean():.0%} of steps", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("step")
    fig.suptitle("hidden channels completed on a test recording, with their intervals (normalised units)")
    return _save(fig, out)


def plot_confusion(matrix: np.ndarray, class_names: list[str], out: Path) -> Path:
    """Confusion matrix (rows: true class, columns: predicted)."""
    fig = Figure(figsize=(1.2 + 0.9 * len(class_names), 1.0 + 0.8 * len(class_names)))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            colour = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=colour)
    ax.set_title("test windows")
    return _save(fig, out)

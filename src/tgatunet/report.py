"""Printing results as tables on the terminal (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def print_completion(completion: dict[str, Any]) -> None:
    if "model" not in completion:
        console.print(f"[yellow]completion:[/] {completion.get('note', 'not evaluated')}")
        return
    for sc in completion["scenarios"]:
        console.print(
            f"completion: hid {', '.join(sc['hidden'])} in {sc['windows']} test windows of "
            f"'{sc['source']}' (as {', '.join(sc['needed_by'])} lacks them)"
        )
    table = Table(title=f"Completion on test blocks ({completion['units']})")
    table.add_column("channel")
    for method in ("model", "ridge", "mean_fill"):
        table.add_column(f"{method} MAE", justify="right")
    table.add_column("model RMSE", justify="right")
    table.add_column("ridge RMSE", justify="right")
    table.add_column("model r", justify="right")
    table.add_column("ridge r", justify="right")
    rows = list(completion["model"]["per_channel"]) + ["mean"]
    for channel in rows:
        def get(method: str, key: str) -> float:
            block = completion[method]
            return block[key] if channel == "mean" else block["per_channel"][channel][key]

        table.add_row(
            channel,
            *(f"{get(m, 'mae'):.3f}" for m in ("model", "ridge", "mean_fill")),
            f"{get('model', 'rmse'):.3f}",
            f"{get('ridge', 'rmse'):.3f}",
            f"{get('model', 'pearson'):.3f}",
            f"{get('ridge', 'pearson'):.3f}",
            style="bold" if channel == "mean" else None,
        )
    console.print(table)


def print_classification(classification: dict[str, Any]) -> None:
    if "accuracy" not in classification:
        console.print(f"[yellow]classification:[/] {classification.get('note', 'not evaluated')}")
        return
    names = classification["class_names"]
    table = Table(title=f"Confusion matrix, {classification['windows']} test windows (rows: true)")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for name, row in zip(names, classification["confusion_matrix"]):
        table.add_row(name, *(str(v) for v in row))
    console.print(table)
    per_source = ", ".join(f"{k} {v:.3f}" for k, v in classification["per_source_accuracy"].items())
    console.print(
        f"classification: accuracy [bold]{classification['accuracy']:.3f}[/], "
        f"macro-F1 {classification['macro_f1']:.3f}, per source: {per_source}, "
        f"per block (majority vote) {classification['block_vote_accuracy']:.3f}"
    )


def print_train(train: dict[str, Any]) -> None:
    console.print(
        f"training: {train['epochs_completed']} epochs, {train['windows_per_second']:.0f} windows/s, "
        f"best val loss {train['best_val_loss']:.4f}, {train['parameters']:,} parameters on {train['device']}"
    )


def print_need_update(ablation: dict[str, Any]) -> None:
    table = Table(title="Dynamic need update, ablation (same config, seed and budget; test blocks)")
    table.add_column("")
    for column in ("completion MAE", "accuracy", "macro-F1", "epochs", "best val loss"):
        table.add_column(column, justify="right")
    for name in ("with", "without"):
        f = ablation[name]
        table.add_row(
            name,
            f"{f['completion_mae']:.4f}",
            f"{f['accuracy']:.3f}",
            f"{f['macro_f1']:.3f}",
            str(f["epochs_completed"]),
            f"{f['best_val_loss']:.4f}",
        )
    console.print(table)
    said = {"with": "with the update", "without": "without the update", "tie": "a tie"}
    better = ablation["better"]
    console.print(
        f"lower completion MAE: [bold]{said[better['completion_mae']]}[/]; "
        f"higher accuracy: [bold]{said[better['accuracy']]}[/]"
    )


def print_leakage_guard(guard: dict[str, Any]) -> None:
    if guard["held"]:
        console.print("leakage guard: validation and test inputs unchanged by training ([green]held[/])")
    else:
        console.print("[bold red]leakage guard: validation or test inputs changed during training[/]")


def print_metrics(metrics: dict[str, Any]) -> None:
    if "train" in metrics:
        print_train(metrics["train"])
    if "leakage_guard" in metrics:
        print_leakage_guard(metrics["leakage_guard"])
    if "completion" in metrics:
        print_completion(metrics["completion"])
    if "classification" in metrics:
        print_classification(metrics["classification"])
    if "need_update" in metrics:
        print_need_update(metrics["need_update"])

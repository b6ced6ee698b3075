"""The terminal: logging set up on the console, errors without tracebacks, results as tables (rich)."""

from __future__ import annotations

from typing import Any

import logging
import warnings

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from tgatunet.errors import TgatunetError

console = Console()


def setup_logging(verbose: bool) -> None:
    """tgatunet's messages (and, with ``verbose``, Lightning's) on the console, once however often it is called."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "tgatunet", False)]:
        root.removeHandler(handler)
    handler = RichHandler(console=console, show_path=False, show_time=False)
    handler.tgatunet = True
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("tgatunet").setLevel(logging.INFO)
    # Lightning's advice about worker counts and loggers is noise for a 1-process CPU run; epoch figures are logged per
    # epoch, so fewer steps than the logging interval loses nothing.
    for message in (".*does not have many workers.*", ".*isinstance\\(treespec, LeafSpec\\).*", ".*Checkpoint directory .* exists and is not empty.*",
                    ".*deterministic.*", ".*validation_step.* but have no .val_dataloader.*", ".*smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.distributed"):  # the latter: one line per DDP rank
        logging.getLogger(name).setLevel(logging.WARNING)


def fail(err: TgatunetError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
    raise typer.Exit(code=2)


METHODS = ("model", "mean_fill", "linear", "locf", "ridge", "saits_default", "saits_task")
PATTERN_TEXT = {"need": "whole channels another source lacks", "gaps": "contiguous drop-outs in observed channels",
                "points": "single observed values"}


def _table(title: str, columns: list[str]) -> Table:
    """A table of figures: the first column (what a row is) left-aligned, the others right-aligned."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if i else "left")
    return table


def _pattern_table(title: str, rows: dict[str, dict[str, str]], best: dict[str, str]) -> Table:
    methods = [m for m in METHODS if any(m in r for r in rows.values())]
    table = _table(title, ["pattern", *methods])
    for pattern, cells in rows.items():
        table.add_row(pattern, *(f"[bold]{cells[m]}[/]" if best.get(pattern) == m else cells.get(m, "-") for m in methods))
    return table


def print_completion(completion: dict[str, Any]) -> None:
    patterns = [p for p in PATTERN_TEXT if p in completion]
    if not patterns:
        console.print(f"[yellow]completion:[/] {completion.get('note', 'not evaluated')}")
        return
    for sc in completion.get("scenarios", []):
        console.print(f"need: hid {', '.join(sc['hidden'])} in the test recordings of '{sc['source']}' "
                      f"(as {', '.join(sc['needed_by'])} lacks them)")
    rows = {p: {m: f"{v['mae']:.3f}" for m, v in completion[p].items()} for p in patterns}
    best = {p: min(completion[p], key=lambda m: completion[p][m]["mae"]) for p in patterns}
    hidden = ", ".join(f"{p} {completion['hidden_values'][p]} ({PATTERN_TEXT[p]})" for p in patterns)
    console.print(_pattern_table(f"Completion MAE on test recordings ({completion['units']})", rows, best))
    console.print(f"hidden values: {hidden}")
    for name, t in completion.get("baseline_training", {}).items():
        console.print(f"{name}: trained {t['epochs']} epochs in {t['seconds']:.0f} s, best epoch {t['best_epoch']} "
                      f"(validation MAE {t['best_val_mae']:.4f}; ended by {t['stopped_by'].replace('_', ' ')})")
    peers = completion.get("strongest_peer", {})
    if peers:
        console.print("model vs the better SAITS per pattern: " + ", ".join(
            f"{p} {v['model_ratio']:.3f}x of {v['method']}" for p, v in peers.items()) + " (below 1: the model is ahead)")
    if "need" in completion:
        need = completion["need"]
        table = _table("need pattern, per channel", ["channel", *(f"{m} MAE" for m in need), "model r"])
        for channel in need["model"]["per_channel"]:
            table.add_row(channel, *(f"{need[m]['per_channel'][channel]['mae']:.3f}" for m in need),
                          f"{need['model']['per_channel'][channel]['pearson']:.3f}")
        console.print(table)
    print_intervals(completion.get("intervals", {}), lambda v: f"{v:.3f}")


def print_intervals(intervals: dict[str, Any], cell) -> None:
    """Per pattern: the model's intervals and the reference's (coverage, width, interval score), and the score ratio."""
    if not intervals:
        return
    nominal = next(iter(intervals.values())).get("nominal")
    table = _table(f"Completion intervals on test recordings{f' at {nominal:.0%}' if nominal else ''} (score: interval score; "
                   "ratio: score / ref. score; ref.: ridge ± its validation errors' quantile)",
                   ["pattern", "coverage", "width", "score", "ref. cov.", "ref. width", "ref. score", "ratio"])
    for pattern, i in intervals.items():
        table.add_row(pattern, *(cell(i[who][key]) for who in ("model", "reference") for key in ("coverage", "width", "interval_score")),
                      cell(i["score_ratio"]))
    console.print(table)


def print_calibration(calibration: dict[str, Any]) -> None:
    """The verdict on each completed channel, from the validation recordings (``calibration.json``): the need pattern's
    rows and every channel no better than its mean (the rest counted)."""
    every = calibration.get("channels", [])
    rows = [r for r in every if r["pattern"] == "need" or r["verdict"] == "no better than the mean"]
    if not every:
        return
    table = _table("Completed channels on validation recordings (normalised units)",
                   ["channel", "pattern", "MAE", "mean fill MAE", "r", "coverage", "better than the mean"])
    for r in rows:
        style = "yellow" if r["verdict"] == "no better than the mean" else None
        table.add_row(r["channel"], r["pattern"], f"{r['mae']:.3f}", f"{r['mean_fill_mae']:.3f}", f"{r['pearson']:.3f}",
                      f"{r['coverage']:.3f}", "no" if style else "yes", style=style)
    console.print(table)
    if len(every) > len(rows):
        console.print(f"and {len(every) - len(rows)} more channel and pattern pairs better than the mean (run.channel_report(): all)")


def print_seeds(seeds: dict[str, Any]) -> None:
    """``tgatunet evaluate --seeds N``: every completion MAE and the accuracy as mean ± standard deviation."""
    completion = {p: v for p, v in seeds["completion"].items() if p != "intervals"}
    rows = {p: {m: f"{v['mae']['mean']:.3f} ± {v['mae']['std']:.3f}" for m, v in completion[p].items()} for p in completion}
    best = {p: min(completion[p], key=lambda m: completion[p][m]["mae"]["mean"]) for p in completion}
    console.print(_pattern_table(f"Completion MAE over seeds {seeds['seeds']} (mean ± std)", rows, best))
    print_intervals(seeds["completion"].get("intervals", {}), lambda v: f"{v['mean']:.3f} ± {v['std']:.3f}")
    figures = ", ".join(f"{k} {v['mean']:.3f} ± {v['std']:.3f}" for k, v in seeds["classification"].items())
    console.print(f"classification over seeds: {figures}")


def print_classification(classification: dict[str, Any]) -> None:
    if "accuracy" not in classification:
        console.print(f"[yellow]classification:[/] {classification.get('note', 'not evaluated')}")
        return
    names = classification["class_names"]
    table = _table(f"Confusion matrix, {classification['windows']} test windows (rows: true)", ["", *names])
    for name, row in zip(names, classification["confusion_matrix"]):
        table.add_row(name, *(str(v) for v in row))
    console.print(table)
    per_source = ", ".join(f"{k} {v:.3f}" for k, v in classification["per_source_accuracy"].items())
    console.print(f"classification: accuracy [bold]{classification['accuracy']:.3f}[/], macro-F1 {classification['macro_f1']:.3f}, "
                  f"per source: {per_source}, per block (majority vote) {classification['block_vote_accuracy']:.3f}")
    if "ece" in classification:
        console.print(f"probabilities: calibration error (ECE) {classification['ece']:.3f} with temperature "
                      f"{classification['temperature']:.2f} fitted on validation ({classification['ece_unscaled']:.3f} without)")


def print_train(train: dict[str, Any]) -> None:
    best = train["best_val_mae"]
    if "batch_search" in train:
        search = train["batch_search"]
        tried = ", ".join(f"{p['batch_size']}: {p['windows_per_second']:.0f}/s" for p in search["curve"])
        console.print(f"batch_size auto: {search['batch_size']} (lr {search['lr']:.3g}; windows/s at {tried})")
    console.print(f"training: {train['epochs_completed']} epochs ({train['steps']} steps), {train['windows_per_second']:.0f} windows/s, "
                  f"best validation completion MAE {'-' if best is None else f'{best:.4f}'}, {train['parameters']:,} parameters "
                  f"on {train['device']}")
    if "too_early" in train:
        console.print(f"[yellow]stopped too early:[/] {escape(train['too_early'])}", soft_wrap=True)


def print_need_update(ablation: dict[str, Any]) -> None:
    table = _table("Dynamic need update, ablation (same config, seed and budget; test blocks)",
                   ["", "completion MAE", "accuracy", "macro-F1", "epochs", "best val MAE"])
    for name in ("with", "without"):
        f = ablation[name]
        table.add_row(name, f"{f['completion_mae']:.4f}", f"{f['accuracy']:.3f}", f"{f['macro_f1']:.3f}", str(f["epochs_completed"]),
                      f"{f['best_val_mae']:.4f}")
    console.print(table)
    said = {"with": "with the update", "without": "without the update", "tie": "a tie"}
    better = ablation["better"]
    console.print(f"lower completion MAE: [bold]{said[better['completion_mae']]}[/]; higher accuracy: [bold]{said[better['accuracy']]}[/]")


def print_leakage_guard(guard: dict[str, Any]) -> None:
    if guard["held"]:
        console.print("leakage guard: validation and test inputs unchanged by training ([green]held[/])")
    else:
        console.print("[bold red]leakage guard: validation or test inputs changed during training[/]")


MEMORY_TEXT = {"peak_rss_gb": "peak RSS {:.2f} GB", "peak_system_memory_percent": "system memory peak {:.0f}%",
               "cuda_peak_allocated_gb": "CUDA peak {:.2f} GB allocated", "mean_gpu_utilization_percent": "GPU busy {:.0f}%"}


def print_memory(memory: dict[str, Any]) -> None:
    parts = [text.format(memory[key]) for key, text in MEMORY_TEXT.items() if key in memory]
    optimizer = memory.get("optimizer", {})
    if optimizer.get("enabled") and optimizer.get("plan"):
        plan = optimizer["plan"]
        used = ", ".join(f"{k} windows x {v} steps" for k, v in optimizer["steps_by_micro_batch_size"].items())
        parts.append(f"memory optimizer: batch {plan['batch_size']} in micro-batches ({used}), {len(optimizer['changes'])} change(s)")
    if parts:
        console.print("memory: " + ", ".join(parts))


def print_hardware(hardware: Any, auto: tuple[str, float, str]) -> None:
    """The machine's devices and the preset ``hardware_profile: auto`` picks."""
    table = Table(title=f"Hardware ({hardware.cpu_cores} CPU cores)")
    for column in ("device", "name", "total GB", "available GB"):
        table.add_column(column, justify="right" if "GB" in column else "left")
    for device in [hardware.ram, *hardware.gpus]:
        label = "cpu" if device.kind == "cpu" else f"{device.kind}:{device.index}"
        available = "-" if device.available_bytes is None else f"{device.available_bytes / 2**30:.1f}"
        table.add_row(label, device.name, f"{device.total_bytes / 2**30:.1f}", available)
    if hardware.mps:
        table.add_row("mps", "Apple MPS (shares the RAM)", "", "")
    console.print(table)
    preset, memory_gb, by = auto
    console.print(f"hardware_profile: auto -> [bold]{preset}[/] (by {memory_gb:.1f} GB: {by})")


def print_memory_plan(plan: dict[str, Any]) -> None:
    """The memory optimizer's choice for a config (``tgatunet hardware --config``)."""
    console.print(f"memory optimizer on {plan['device']}: budget {plan['budget_gb']:.2f} GB ({plan['budget_from']}), "
                  f"target {100 * plan['target_fraction']:.0f}% = {plan['limit_gb']:.2f} GB; measured peak = "
                  f"{plan['fixed_gb']:.3f} GB + {plan['per_window_mb']:.2f} MB per window; batch_size {plan['batch_size']} "
                  f"-> micro-batches of [bold]{plan['micro_batch_size']}[/] windows "
                  f"(predicted peak {plan['predicted_peak_gb']:.3f} GB; up to {plan['largest_fitting_micro_batch']} would fit)")


def print_metrics(metrics: dict[str, Any]) -> None:
    printers = {"train": print_train, "calibration": print_calibration, "leakage_guard": print_leakage_guard, "memory": print_memory,
                "completion": print_completion,
                "classification": print_classification, "need_update": print_need_update, "seeds": print_seeds}
    for section, printer in printers.items():
        if section in metrics:
            printer(metrics[section])


def print_bench(report: dict[str, Any]) -> None:
    """``tgatunet bench``'s figures, the settings it tried, and what it recommends."""
    train, infer = report["train"], report["infer"]
    console.print(f"training on {report['device']}: [bold]{train['windows_per_second']:.0f}[/] windows/s, "
                  f"{1e3 * train['step']['step_seconds']:.1f} ms/step, peak memory {train['peak_memory_gb']:.3f} GB "
                  f"(limit {report['memory_limit_gb']:.1f} GB); inference {infer['windows_per_second']:.0f} windows/s, "
                  f"one window {infer['latency_ms_p50']:.2f} ms")
    console.print(f"step: {report['verdict']}")
    table = _table("One change at a time (same data, same steps)", ["change", "windows/s", "speed", "peak GB"])
    for v in report["variants"]:
        change = ", ".join(f"{k}: {val}" for k, val in v["keys"].items())
        if "error" in v:
            table.add_row(change, "-", "-", "-", style="dim")
            continue
        speed = v["windows_per_second"] / train["windows_per_second"]
        table.add_row(change, f"{v['windows_per_second']:.0f}", f"{speed:.2f}x", f"{v['peak_memory_gb']:.3f}")
    console.print(table)
    recommended = ", ".join(f"{k}: {v}" for k, v in report["recommended"].items()) or "nothing: keep the config"
    console.print(f"recommended: [bold]{recommended}[/]")
    for note in report["notes"].values():
        console.print(f"  note: {note}")
    if report["processes"].get("recommend_devices"):
        console.print(f"  devices: {report['processes']['recommend_devices']} ({report['processes'].get('basis', '')})")


def print_applied(applied: Any) -> None:
    """One line per table completed and classified (``tgatunet predict``, ``tgatunet complete``)."""
    filled = ", ".join(f"{k} {v}" for k, v in applied.filled.items() if v) or "nothing"
    console.print(f"{applied.name}: {applied.rows} rows, {applied.windows} windows in {applied.seconds:.1f} s; filled {filled} "
                  f"-> [bold]{applied.outputs['completed']}[/] (+ _windows, _blocks)")

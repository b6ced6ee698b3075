"""The study's figures on the terminal (rich), one printer per section."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from tgatunet.report import console

from benchmarks.guide_report import COLUMNS, guide_comparison, guide_summary, headline_figures


def print_suite_summary(results: dict[str, Any]) -> None:
    """The suite's headline figures and the guide's promises, met or not."""
    figures = Table(title="Benchmark: headline figures")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for name, value, _ in headline_figures(results):
        figures.add_row(name, value)
    console.print(figures)
    details = Table(title="Figures behind the guide's promises")
    for column in ("figure", "promised", "measured", "verdict"):
        details.add_column(column, justify="left" if column in ("figure", "verdict") else "right")
    for row in guide_comparison(results):
        if row["key"] != "-":
            details.add_row(row["key"], row["promised"], row["measured"], row["verdict"])
    console.print(details)
    guide = Table(title="The performance guide's promises (details in report.md)")
    for column in ("optimisation", *COLUMNS):
        guide.add_column(column)
    for row in guide_summary(results):
        guide.add_row(row["optimisation"], *(row[c] for c in COLUMNS))
    console.print(guide)
    for name, reason in results.get("suite", {}).get("skipped", {}).items():
        console.print(f"[yellow]section {name} not run:[/] {escape(reason)}")


def print_memory_bench(results: dict[str, Any]) -> None:
    table = Table(title="Memory optimizer: one training step, peak tensor memory")
    for column in ("budget GB", "target GB", "micro-batch", "peak GB", "saving vs off"):
        table.add_column(column, justify="right")
    for row in results["budgets"]:
        table.add_row(
            f"{row['budget_gb']:g}",
            f"{row['target_fraction'] * row['budget_gb']:.2f}",
            str(row["chosen_batch_size"]),
            f"{row['peak_gb']:.3f}",
            f"{row['saving_vs_off']:.1%}",
        )
    off = results["off"]
    table.add_row("off", "", str(off["batch_size"]), f"{off['peak_gb']:.3f}", "", style="bold")
    console.print(table)
    saving = results["saving_vs_off"]
    console.print(f"saving_vs_off: {saving:.1%}" if saving is not None else "saving_vs_off: none")
    console.print(results["saving_vs_off_compares"])
    path = results["data_path"]
    console.print(
        f"data path: a batch of {path['batch_size']} windows in {path['batched_ms']:.2f} ms gathered vs "
        f"{path['per_window_ms']:.2f} ms window by window ({path['speedup']:.0f}x)"
    )


def print_graph_bench(results: dict[str, Any], config_name: str) -> None:
    predict = results["predict"]
    console.print(
        f"temporal, window 128, time_k 1: one vectorised table for a batch of {results['settings']['temporal_batch']} "
        f"{results['temporal_speedup_vectorised_vs_naive']:.0f}x faster than per-window Python loops\n"
        f"knn, window 128: disk cache read-back {results['knn_speedup_disk_cache_vs_rebuild']:.1f}x faster than a "
        f"rebuild\nprediction over the {predict['windows']} windows of {config_name} with a knn graph: warm cache "
        f"{results['predict_speedup_cache_on_vs_off']:.2f}x the speed of no cache"
    )


def print_model_bench(results: dict[str, Any], presets: tuple[str, ...]) -> None:
    for preset in presets:
        r = results[preset]
        console.print(
            f"{preset}: lite {r['lite_param_reduction']:.0%} fewer parameters, {r['lite_step_speedup']:.2f}x step speed, "
            f"{r['lite_peak_memory_reduction']:.0%} less peak memory; checkpointing {r['checkpoint_memory_reduction']:.0%} "
            f"less memory at {r['checkpoint_step_time_ratio']:.2f}x step time (selective: "
            f"{r['selective_checkpoint_memory_reduction']:.0%} at {r['selective_checkpoint_step_time_ratio']:.2f}x); "
            f"bf16 {r['bf16_step_speedup']:.2f}x speed, "
            f"{r['bf16_memory_reduction']:.0%} less memory ({results['device']})"
        )
    console.print(f"lite / standard completion MAE after {results['epochs']} epochs: {results['lite_mae_ratio']:.3f}")


def print_compute_bench(results: dict[str, Any]) -> None:
    mfu, latency, breakdown = results["mfu"], results["infer_latency"], results["breakdown"]
    s = mfu["setting"]
    cached, streamed = (mfu["copy_bytes_per_second"][key] for key in sorted(mfu["copy_bytes_per_second"], key=int))
    console.print(
        f"{s['preset']} preset, window {s['window_size']}, {s['channels']} channels, batch {s['batch_size']}, "
        f"{s['dtype']}, {s['threads']} thread(s); peak {mfu['peak_flops_per_second'] / 1e9:.1f} GFLOP/s "
        f"(n={mfu['peak_size']} matrix products); copies {cached / 1e9:.1f} GB/s in cache, "
        f"{streamed / 1e9:.1f} GB/s from memory"
    )
    line = f"MFU: training [bold]{mfu['train']:.3f}[/] ({mfu['train_step_ms']:.1f} ms/step)"
    if "train_2threads" in mfu:
        line += f", training with 2 threads [bold]{mfu['train_2threads']:.3f}[/]"
    console.print(f"{line}, inference [bold]{mfu['infer']:.3f}[/]")
    line = f"single-window latency: p50 [bold]{latency['latency_ms_p50']:.3f}[/] ms, p95 {latency['latency_ms_p95']:.3f} ms"
    compiled = latency["compiled"]
    if compiled["latency_ms_p50"] is not None:
        line += (
            f"; compiled p50 [bold]{compiled['latency_ms_p50']:.3f}[/] ms, p95 {compiled['latency_ms_p95']:.3f} ms "
            f"({compiled['compile_seconds']:.0f} s to compile)"
        )
    console.print(line)
    console.print(f"breakdown: {breakdown['verdict']}")


def print_scale_bench(values: dict[str, Any], targets: dict[str, str]) -> None:
    console.print(f"peak RSS from the store (MiB): {values['peak_rss_mib_from_store']}")
    console.print(f"peak RSS in memory (MiB):      {values['peak_rss_mib_in_memory']}")
    for key, target in targets.items():
        console.print(f"scale.{key} = [bold]{values[key]}[/] (target {target})")

"""The ``tgatunet`` command line."""

from __future__ import annotations

import logging
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.logging import RichHandler
from rich.markup import escape

from tgatunet.config import PRESETS, config_template, load_config
from tgatunet.errors import ConfigError, TgatunetError
from tgatunet.report import console, print_metrics

app = typer.Typer(
    help="Temporal Graph Attention U-Net: complete missing modalities and classify multimodal sensor windows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Write or check a config file.", no_args_is_help=True)
app.add_typer(config_app, name="config")
data_app = typer.Typer(help="Make or convert datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(
    help="Measure what each optimisation buys; figures go to OUT/results.json. Without a subcommand: the whole "
    "suite (same as python performance_test.py)."
)
app.add_typer(bench_app, name="bench")
cache_app = typer.Typer(help="The knn graph cache: what it holds, build it ahead of training, clear it.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    logging.getLogger("tgatunet").setLevel(logging.INFO)
    # Lightning's advice about worker counts and loggers is noise for a 1-process CPU run.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.distributed").setLevel(logging.WARNING)  # one line per DDP rank


def config_overrides(items: list[str]) -> dict[str, object]:
    """``["key=value", ...]`` -> ``{key: value}``, each value read as YAML (``4`` an int, ``false`` a bool)."""
    keys: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}': write KEY=VALUE, e.g. --set ff_multiplier=4")
        try:
            keys[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set '{item}': the value is not valid YAML ({err.problem}); quote strings") from None
    return keys


def _fail(err: TgatunetError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
    raise typer.Exit(code=2)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Lightning's own messages too.")) -> None:
    setup_logging(verbose)


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config file."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run in the run directory first."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Overrides the config's run_dir."),
) -> None:
    """Train a T-GAT-UNet; writes checkpoints, logs and metrics to the run directory."""
    from lightning.pytorch.utilities import rank_zero_only

    from tgatunet.train.run import train as train_run

    try:
        run = train_run(config, resume=resume, overwrite=overwrite, run_dir=run_dir)
    except TgatunetError as err:
        _fail(err)
    if rank_zero_only.rank != 0:  # the other DDP processes ran this command too
        return
    print_metrics(run.read_metrics())
    console.print(f"run directory: [bold]{run.root}[/]  (next: tgatunet evaluate --run {run.root})")


class Ablation(str, Enum):
    need_update = "need-update"


COMPILE_HELP = (
    "Run the model through torch.compile (default: as the run's config says): seconds to compile per input "
    "shape, then faster on many windows."
)


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory of a trained model."),
    ablation: Optional[Ablation] = typer.Option(
        None,
        "--ablation",
        help="need-update: also train the same config with dynamic_need_update flipped (in RUN/ablation/) "
        "and compare both runs.",
    ),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP),
) -> None:
    """Score completion (vs mean fill and ridge baselines) and classification on the test blocks."""
    from tgatunet.evaluate import evaluate_run

    try:
        metrics = evaluate_run(run, compile=compile)
        if ablation is Ablation.need_update:
            from tgatunet.ablation import need_update_ablation

            metrics["need_update"] = need_update_ablation(run)
    except TgatunetError as err:
        _fail(err)
    print_metrics(metrics)
    console.print(f"written: {run / 'metrics.json'}, plots in {run / 'plots'}")


@app.command()
def complete(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory of a trained model."),
    source: Optional[str] = typer.Option(None, "--source", "-s", help="Complete only this source."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default RUN/completed)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP),
) -> None:
    """Write completed copies of the sources: missing 'need' values filled, flagged, inputs untouched."""
    from tgatunet.complete import complete_run

    try:
        written = complete_run(run, source=source, output=output, compile=compile)
    except TgatunetError as err:
        _fail(err)
    for item in written:
        filled = ", ".join(f"{k} {v}" for k, v in item.filled.items())
        console.print(f"{item.name}: {item.rows} rows, filled {filled} -> [bold]{item.output}[/]")


@app.command()
def hardware(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="Also measure this config's training step and show the batch choice."
    ),
) -> None:
    """Show the devices and memory, the preset hardware_profile: auto picks, and the optimizer's batch choice."""
    from tgatunet.hardware import auto_profile, detect_hardware
    from tgatunet.report import print_hardware, print_memory_plan

    try:
        cfg = load_config(config) if config else None
        accelerator, budget = (cfg.accelerator, cfg.memory_budget_gb) if cfg else ("auto", None)
        print_hardware(detect_hardware(), auto_profile(accelerator, budget))
        if cfg:
            from tgatunet.train.memory_optimizer import plan_for_config

            print_memory_plan(plan_for_config(cfg).summary())
    except TgatunetError as err:
        _fail(err)


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    quick: bool = typer.Option(
        True, "--quick/--full", help="--quick (default): about 5 minutes on a 2-core CPU; --full: more rounds and "
        "bigger sizes, for real hardware."
    ),
    out: Path = typer.Option(
        Path("bench_results"), "--out", "-o", help="Folder of results.json, report.md and the plots (replaced by each run)."
    ),
    config: Path = typer.Option(
        Path("configs/basicmotions.yaml"), "--config", "-c", help="Config of the graph and model benchmarks' trainings."
    ),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads for torch while the suite runs."),
) -> None:
    """The whole suite: every section, results.json, report.md (the guide's promises met or not) and the plots."""
    if ctx.invoked_subcommand is not None:
        return
    import dataclasses

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tgatunet.bench.suite import FULL, QUICK, run_suite
    from tgatunet.report import print_suite_summary

    settings = dataclasses.replace(QUICK if quick else FULL, threads=threads)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    try:
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("benchmark suite", total=len(settings.sections))

            def on_section(name: str, state: str) -> None:
                if state == "start":
                    progress.update(task, description=f"section [bold]{name}[/]")
                else:
                    progress.advance(task)
                    progress.console.print(f"{name}: {escape(state)}")

            results = run_suite(out, settings, config_path=config, on_section=on_section)
    except TgatunetError as err:
        _fail(err)
    print_suite_summary(results)
    console.print(f"written: {out / 'results.json'}, {out / 'report.md'}, plots: {len(results['suite']['plots'])}")


@bench_app.command("memory")
def bench_memory(
    out: Path = typer.Option(Path("bench_results"), "--out", "-o", help="Folder of results.json."),
) -> None:
    """Memory optimizer: peak memory at 1, 2 and 4 GB budgets and the saving vs no optimizer (a few minutes)."""
    from tgatunet.bench.memory import run_memory_benchmark
    from tgatunet.report import print_memory_bench

    print_memory_bench(run_memory_benchmark(out))
    console.print(f"written: {out / 'results.json'}")


@bench_app.command("graph")
def bench_graph(
    out: Path = typer.Option(Path("bench_results"), "--out", "-o", help="Folder of results.json and graph_benchmark.png."),
    config: Path = typer.Option(
        Path("configs/basicmotions.yaml"), "--config", "-c", help="Config of the epoch timing (run with graph_type knn)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Fewer windows, rounds and repeats (a few minutes less)."),
) -> None:
    """Graph construction and the graph cache: per-window times, cache speed-ups, one epoch cache on vs off."""
    from tgatunet.bench.graph import run_graph_benchmark

    try:
        results = run_graph_benchmark(out, config_path=config, quick=quick)
    except TgatunetError as err:
        _fail(err)
    console.print(
        f"temporal, window 128, time_k 1: LRU hit {results['speedup_cache_vs_naive']:.0f}x faster than naive loops\n"
        f"knn, window 128: disk cache {results['knn_speedup_disk_cache_vs_rebuild']:.1f}x faster than a rebuild\n"
        f"one epoch on {config.name} with a knn graph: cache on {results['epoch_speedup_cache_on_vs_off']:.2f}x "
        "the speed of cache off"
    )
    console.print(f"written: {out / 'results.json'}, {out / 'graph_benchmark.png'}")


@bench_app.command("model")
def bench_model(
    out: Path = typer.Option(Path("bench_results"), "--out", "-o", help="Folder of results.json."),
    config: Path = typer.Option(
        Path("configs/basicmotions.yaml"), "--config", "-c", help="Config of the two trainings behind lite_mae_ratio."
    ),
    quick: bool = typer.Option(False, "--quick", help="5 timing rounds instead of 15, 4 training epochs instead of 20."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="CPU threads for torch (default: torch's choice); recorded in the results."
    ),
) -> None:
    """Lite vs standard model, gradient checkpointing, bf16/fp16: parameters, step time, peak memory, MAE."""
    from tgatunet.bench.model import PRESET_NAMES, run_model_benchmark

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        results = run_model_benchmark(out, config_path=config, rounds=5 if quick else 15, epochs=4 if quick else 20)
    except TgatunetError as err:
        _fail(err)
    for preset in PRESET_NAMES:
        r = results[preset]
        console.print(
            f"{preset}: lite {r['lite_param_reduction']:.0%} fewer parameters, {r['lite_step_speedup']:.2f}x step speed, "
            f"{r['lite_peak_memory_reduction']:.0%} less peak memory; checkpointing {r['checkpoint_memory_reduction']:.0%} "
            f"less memory at {r['checkpoint_step_time_ratio']:.2f}x step time; bf16 {r['bf16_step_speedup']:.2f}x speed, "
            f"{r['bf16_memory_reduction']:.0%} less memory ({results['device']})"
        )
    console.print(f"lite / standard completion MAE after {results['epochs']} epochs: {results['lite_mae_ratio']:.3f}")
    console.print(f"written: {out / 'results.json'}")


@config_app.command("template")
def config_template_cmd(
    preset: Optional[str] = typer.Option(None, "--preset", help=f"Hardware preset: {', '.join(PRESETS)}."),
) -> None:
    """Print a complete, commented config."""
    if preset is not None and preset not in PRESETS:
        console.print(f"[bold red]error:[/] unknown preset '{preset}'; choose one of {', '.join(PRESETS)}.")
        raise typer.Exit(code=2)
    sys.stdout.write(config_template(preset))


@config_app.command("validate")
def config_validate(file: Path = typer.Argument(..., help="Config file to check.")) -> None:
    """Check a config file: keys, types, ranges, and that its source files and columns exist."""
    from tgatunet.data.prepared import prepare_data

    try:
        cfg = load_config(file)
        data = prepare_data(cfg)
    except TgatunetError as err:
        _fail(err)
    windows = ", ".join(f"{k} {len(v)}" for k, v in data.windows.items())
    console.print(
        f"[green]ok[/]: {len(cfg.sources)} source(s), channels {data.channels}, "
        f"classes {data.class_names}, windows: {windows}"
    )


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the source files and config.yaml."),
    sources: int = typer.Option(3, help="Number of source files."),
    channels: int = typer.Option(9, help="Modality channels in total."),
    missing: int = typer.Option(2, help="Channels each source but the first lacks (its 'need')."),
    blocks: int = typer.Option(20, help="Recordings per source."),
    length: int = typer.Option(400, help="Rows per recording."),
    classes: int = typer.Option(3, help="Number of classes."),
    file_format: str = typer.Option("csv", "--format", help="csv or parquet."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Write a synthetic multi-source dataset (coupled channels, signal-dependent labels) and its config."""
    from tgatunet.data.synth import SynthSpec, write_synthetic

    try:
        spec = SynthSpec(sources, channels, missing, blocks, length, classes, file_format=file_format, seed=seed)
    except ValueError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    path = write_synthetic(spec, out)
    console.print(f"wrote {sources} source(s) and [bold]{path}[/]; train with: tgatunet train --config {path}")


def _cache_location(config: Optional[Path], directory: Optional[Path]) -> Path:
    """The cache folder named by --dir, or the one of --config's run."""
    from tgatunet.graph.cache import cache_dir

    if (config is None) == (directory is None):
        raise TgatunetError("name the cache with exactly one of --config FILE (its run's cache) or --dir DIR.")
    if directory is not None:
        return directory
    cfg = load_config(config)
    return cache_dir(cfg, cfg.resolved_run_dir(config.stem))


_CACHE_CONFIG = typer.Option(None, "--config", "-c", help="Config file: the cache of its run.")
_CACHE_DIR = typer.Option(None, "--dir", "-d", help="Cache folder.")


@cache_app.command("info")
def cache_info(config: Optional[Path] = _CACHE_CONFIG, directory: Optional[Path] = _CACHE_DIR) -> None:
    """Location, entries, size and the hit rate of the last run that used the cache."""
    from tgatunet.graph.cache import cache_summary

    try:
        summary = cache_summary(_cache_location(config, directory))
    except TgatunetError as err:
        _fail(err)
    console.print(f"location: [bold]{summary['location']}[/]{'' if summary['exists'] else '  (not created yet)'}")
    console.print(f"entries: {summary['entries']}, {summary['bytes'] / 2**20:.2f} MiB")
    last = summary["last_run"]
    if last is None:
        console.print("last run: none recorded")
    else:
        console.print(
            f"last run ({last['by']}, {last['finished']}): hit rate {last['hit_rate']:.1%} of {last['lookups']} lookups "
            f"(memory {last['memory_hits']}, disk {last['disk_hits']}, built {last['built']}, "
            f"damaged and rebuilt {last['corrupt_rebuilt']}, evicted {last['evicted']})"
        )


@cache_app.command("clear")
def cache_clear(config: Optional[Path] = _CACHE_CONFIG, directory: Optional[Path] = _CACHE_DIR) -> None:
    """Delete every cached graph (they are rebuilt when needed)."""
    from tgatunet.graph.cache import clear_cache

    try:
        location = _cache_location(config, directory)
    except TgatunetError as err:
        _fail(err)
    entries, size = clear_cache(location)
    console.print(f"removed {entries} entries ({size / 2**20:.2f} MiB) from {location}")


@cache_app.command("build")
def cache_build(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config file (graph_type: knn)."),
    workers: int = typer.Option(2, "--workers", "-w", min=0, help="Worker processes; 0 builds in this process."),
) -> None:
    """Build the knn graphs of every window of the config's data before training, in parallel."""
    from rich.progress import Progress

    from tgatunet.graph.precompute import precompute_graphs

    try:
        cfg = load_config(config)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("building graphs", total=None)
            report = precompute_graphs(
                cfg,
                cfg.resolved_run_dir(config.stem),
                workers,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except TgatunetError as err:
        _fail(err)
    console.print(
        f"{report.windows} windows: built {report.built}, already cached {report.already_cached} "
        f"in {report.seconds:.1f} s -> [bold]{report.directory}[/]"
    )


@data_app.command("prepare")
def data_prepare(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config naming the sources."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Store folder; default: the config's data_store."),
    force: bool = typer.Option(False, "--force", help="Rebuild even an up-to-date store."),
) -> None:
    """Convert the sources once into an on-disk store that training reads lazily (config key data_store)."""
    from tgatunet.data.store import build_store

    try:
        cfg = load_config(config)
        target = out or cfg.data_store_path()
        if target is None:
            raise ConfigError(f"{config}: give --out DIR, or set data_store in the config.")
        store, built = build_store(cfg, target, force=force)
    except TgatunetError as err:
        _fail(err)
    rows = sum(s.rows for s in store.sources)
    size = sum(a.path.stat().st_size for s in store.sources for a in s.arrays.values())
    state = "wrote" if built else "up to date:"
    console.print(
        f"{state} [bold]{store.root}[/]: {len(store.sources)} source(s), {rows} rows, "
        f"{len(store.channels)} channels, {size / 2**20:.1f} MiB"
    )
    if cfg.data_store_path() is None or cfg.data_store_path().resolve() != store.root.resolve():
        console.print(f"train from it: set 'data_store: {store.root.resolve()}' in {config}")


@bench_app.command("compute")
def bench_compute(
    out: Path = typer.Option(Path("bench_results"), "--out", "-o", help="Folder of results.json and breakdown.png."),
    quick: bool = typer.Option(
        True, "--quick/--full", help="3 timing rounds (under a minute on 2 CPU cores) or 9, peak sizes up to 2048."
    ),
    preset: str = typer.Option("medium", "--preset", help=f"Guide preset of model and batch: {', '.join(PRESETS)}."),
    window: int = typer.Option(128, "--window", min=4, help="window_size of the synthetic data."),
    channels: int = typer.Option(9, "--channels", min=2, help="Channels of the synthetic data."),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch threads of the step and the latency (2 is measured too)."),
    set_keys: Optional[list[str]] = typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help="A config key over the preset's (YAML value; repeatable), e.g. --set ff_multiplier=4 --set graph_type=knn.",
    ),
) -> None:
    """Model-FLOPs utilisation of training and inference, single-window latency, where a step's time goes."""
    from tgatunet.bench.compute import Setting, measure_compute

    try:
        setting = Setting(
            preset=preset, window_size=window, channels=channels, threads=threads, config=config_overrides(set_keys or [])
        )
        results = measure_compute(out, quick=quick, setting=setting)
    except TgatunetError as err:
        _fail(err)
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
    console.print(f"written: {out / 'results.json'} (mfu, infer_latency, breakdown), {out / 'breakdown.png'}")


@bench_app.command("scale")
def bench_scale(
    out: Path = typer.Option(..., "--out", "-o", help="Folder of results.json (section 'scale')."),
    base_blocks: int = typer.Option(4, help="Recordings per source at 1x (3 sources, 2000 rows and 32 channels each)."),
    steps: int = typer.Option(20, help="Timed training steps from each source for the throughput ratio."),
) -> None:
    """Peak RSS of an epoch from the out-of-core store at 1x-8x a base size, and its throughput vs in memory."""
    from tgatunet.bench.scale import TARGETS, run_scale_benchmark

    values = run_scale_benchmark(out, base_blocks=base_blocks, steps=steps)
    console.print(f"peak RSS from the store (MiB): {values['peak_rss_mib_from_store']}")
    console.print(f"peak RSS in memory (MiB):      {values['peak_rss_mib_in_memory']}")
    for key, target in TARGETS.items():
        console.print(f"scale.{key} = [bold]{values[key]}[/] (target {target})")
    console.print(f"written: {out / 'results.json'} ({values['seconds']} s)")

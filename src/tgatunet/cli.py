"""The ``tgatunet`` command line."""

from __future__ import annotations

import logging
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
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
cache_app = typer.Typer(help="The knn graph cache: what it holds, build it ahead of evaluation, clear it.", no_args_is_help=True)
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
    warnings.filterwarnings("ignore", message=".*validation_step.* but have no .val_dataloader.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.distributed").setLevel(logging.WARNING)  # one line per DDP rank


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
    from tgatunet.apply.evaluate import evaluate_run

    try:
        metrics = evaluate_run(run, compile=compile)
        if ablation is Ablation.need_update:
            from tgatunet.apply.ablation import need_update_ablation

            metrics["need_update"] = need_update_ablation(run)
    except TgatunetError as err:
        _fail(err)
    print_metrics(metrics)
    console.print(f"written: {run / 'metrics.json'}, plots in {run / 'plots'}")


class Fill(str, Enum):
    all = "all"
    need = "need"


class Format(str, Enum):
    csv = "csv"
    parquet = "parquet"


FILL_HELP = "all: fill sensor drop-outs and absent channels; need: only the channels the file lacks."


def _rows_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                    TimeElapsedColumn(), console=console, transient=True)


def _print_applied(written) -> None:
    from tgatunet.report import print_applied

    for item in written:
        print_applied(item)


@app.command()
def complete(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory of a trained model."),
    source: Optional[str] = typer.Option(None, "--source", "-s", help="Complete only this source."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default RUN/completed)."),
    fill: Fill = typer.Option(Fill.all, "--fill", help=FILL_HELP),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP),
) -> None:
    """Completed copies of the run's sources, with class predictions per window, row and block; inputs untouched."""
    from tgatunet.apply.complete import complete_run

    try:
        with _rows_progress() as progress:
            task = progress.add_task("completing", total=None)
            written = complete_run(run, source=source, output=output, fill=fill.value, compile=compile,
                                   on_rows=lambda n: progress.advance(task, n))
    except TgatunetError as err:
        _fail(err)
    _print_applied(written)


@app.command()
def predict(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory of a trained model."),
    inputs: list[Path] = typer.Option(..., "--input", "-i", help="CSV or Parquet recording(s); repeat for several."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default: each input's folder)."),
    block_col: Optional[str] = typer.Option(None, "--block-col", help="Column naming recordings (default: the run's, if present)."),
    fmt: Optional[Format] = typer.Option(None, "--format", help="Output format (default: the input's)."),
    fill: Fill = typer.Option(Fill.all, "--fill", help=FILL_HELP),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP),
) -> None:
    """Apply a trained run to new recordings: completed copies and class predictions per window, row and block."""
    from tgatunet.apply.complete import predict_files
    from tgatunet.data.tables import TableReader

    try:
        with _rows_progress() as progress:
            task = progress.add_task("predicting", total=sum(TableReader(p).rows for p in inputs))
            written = predict_files(run, inputs, output, block_col, fmt.value if fmt else None, fill.value, compile,
                                    on_rows=lambda n: progress.advance(task, n))
    except TgatunetError as err:
        _fail(err)
    _print_applied(written)


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
        accelerator, budget = (cfg.performance.accelerator, cfg.performance.memory_budget_gb) if cfg else ("auto", None)
        print_hardware(detect_hardware(), auto_profile(accelerator, budget))
        if cfg:
            from tgatunet.train.run import plan_for_config

            print_memory_plan(plan_for_config(cfg).summary())
    except TgatunetError as err:
        _fail(err)


@app.command()
def bench(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config file: its data, model and machine settings."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder of bench.json and recommended.yaml (default RUN_DIR/bench)."),
    steps: int = typer.Option(12, "--steps", min=4, help="Training steps timed per setting."),
) -> None:
    """Measure your config on this machine: speed, memory, where a step's time goes, and the settings to change."""
    from tgatunet.bench import run_bench
    from tgatunet.report import print_bench

    try:
        target = out or load_config(config).resolved_run_dir(config.stem) / "bench"
        with console.status("bench") as status:
            report = run_bench(config, target, steps, on_progress=lambda what: status.update(f"bench: measuring {what}"))
    except TgatunetError as err:
        _fail(err)
    print_bench(report.to_dict())
    console.print(f"written: {target / 'bench.json'}, {target / 'recommended.yaml'}")


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
    """Check a config file as training would before it starts: keys, files, columns, values, splits, labels."""
    from tgatunet.train.prepare import check_trainable, load_data

    try:
        cfg = load_config(file)
        data = load_data(cfg)
        check_trainable(data)
    except TgatunetError as err:
        _fail(err)
    windows = ", ".join(f"{k} {len(v)}" for k, v in data.windows.items())
    console.print(
        f"[green]ok[/]: {len(cfg.data.sources)} source(s), channels {data.channels}, "
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
            f"(disk {last['disk_hits']}, built {last['built']}, "
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
    """Build the knn graphs of every window of the config's data, for evaluation and completion, in parallel."""
    from rich.progress import Progress

    from tgatunet.apply.predict import build_graph_cache

    try:
        cfg = load_config(config)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("building graphs", total=None)
            report = build_graph_cache(
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

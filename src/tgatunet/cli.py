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

from tgatunet.config import PRESETS, config_template, load_config
from tgatunet.errors import TgatunetError
from tgatunet.report import console, print_metrics

app = typer.Typer(
    help="Temporal Graph Attention U-Net: complete missing modalities and classify multimodal sensor windows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Write or check a config file.", no_args_is_help=True)
app.add_typer(config_app, name="config")
bench_app = typer.Typer(help="Measure what each optimisation buys; figures go to OUT/results.json.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _setup_logging(verbose: bool) -> None:
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


def _fail(err: TgatunetError) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Lightning's own messages too.")) -> None:
    _setup_logging(verbose)


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config file."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run in the run directory first."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Overrides the config's run_dir."),
) -> None:
    """Train a T-GAT-UNet; writes checkpoints, logs and metrics to the run directory."""
    from tgatunet.train.run import train as train_run

    try:
        run = train_run(config, resume=resume, overwrite=overwrite, run_dir=run_dir)
    except TgatunetError as err:
        _fail(err)
    print_metrics(run.read_metrics())
    console.print(f"run directory: [bold]{run.root}[/]  (next: tgatunet evaluate --run {run.root})")


class Ablation(str, Enum):
    need_update = "need-update"


@app.command()
def evaluate(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory of a trained model."),
    ablation: Optional[Ablation] = typer.Option(
        None,
        "--ablation",
        help="need-update: also train the same config with dynamic_need_update flipped (in RUN/ablation/) "
        "and compare both runs.",
    ),
) -> None:
    """Score completion (vs mean fill and ridge baselines) and classification on the test blocks."""
    from tgatunet.evaluate import evaluate_run

    try:
        metrics = evaluate_run(run)
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
) -> None:
    """Write completed copies of the sources: missing 'need' values filled, flagged, inputs untouched."""
    from tgatunet.complete import complete_run

    try:
        written = complete_run(run, source=source, output=output)
    except TgatunetError as err:
        _fail(err)
    for item in written:
        filled = ", ".join(f"{k} {v}" for k, v in item.filled.items())
        console.print(f"{item.name}: {item.rows} rows, filled {filled} -> [bold]{item.output}[/]")


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

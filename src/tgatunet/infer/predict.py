"""A trained run applied to files: its own sources (``tgatunet complete``) and new recordings (``tgatunet predict``).

Each file is streamed through the model (:mod:`tgatunet.infer.outputs`), filling drop-outs and absent channels
(``fill="all"``) or only the channels the file lacks (``fill="need"``). Outputs are checked and locked before any
work: none may land on an input or a source, nor be written twice, nor by two processes at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from tgatunet.config import Config
from tgatunet.data.sources import source_path, source_timing
from tgatunet.data.tables import TableReader, table_format
from tgatunet.data.timeline import Timing
from tgatunet.errors import RunError
from tgatunet.files import output_lock
from tgatunet.infer.outputs import OUTPUTS, Applied, apply_file, asked_coverage
from tgatunet.infer.rundir import RunDir
from tgatunet.infer.trained import load_trained


def given_timing(timing: Timing, config: Config, columns: list[str], grid_hz: float | None) -> Timing:
    """A new table's time column, rate and gap limit: as given; where no time column is given, the run's ``time_col``
    if the table has that column and the run has a grid (as its sources were read); the run's ``max_gap_s`` where none
    is given."""
    time_col = timing.time_col
    if time_col is None and grid_hz is not None and config.data.time_col in columns:
        time_col = config.data.time_col
    return Timing(time_col, timing.rate_hz, timing.max_gap_s if timing.max_gap_s is not None else config.data.max_gap_s)


def output_paths(out_dir: Path, name: str, fmt: str) -> dict[str, Path]:
    return {o: out_dir / f"{name}_{o}.{fmt}" for o in OUTPUTS}


def check_outputs(planned: dict[Path, dict[str, Path]], protected: list[Path]) -> None:
    """Before any work: no output may replace an input or a source, nor be written for two inputs."""
    taken = {p.resolve() for p in protected}
    claimed: dict[Path, Path] = {}
    for source, outputs in planned.items():
        for path in outputs.values():
            if path.resolve() in taken:
                raise RunError(f"output '{path}' would overwrite an input file; choose another --output folder.")
            if path.is_dir():
                raise RunError(f"output '{path}' is a folder; move it away or choose another --output folder.")
            if path.resolve() in claimed:
                raise RunError(f"inputs '{claimed[path.resolve()]}' and '{source}' would both be written to '{path}'; "
                               "apply them in separate calls with different --output folders, or rename one.")
            claimed[path.resolve()] = source


def _apply_each(model, jobs: list[tuple[Path, dict[str, Path], dict]]) -> list[Applied]:
    """Each input file into its outputs, holding the locks of all of them from the start: a second process writing
    any of the same outputs is refused before this one writes anything."""
    with contextlib.ExitStack() as locks:
        for _, outputs, _ in jobs:
            locks.enter_context(output_lock(outputs["completed"]))
        return [apply_file(model, path, outputs["completed"].parent, **options) for path, outputs, options in jobs]


def complete_run(run_dir: str | Path, source: str | None = None, output: str | Path | None = None, fill: str = "all",
                 compile: bool | None = None, on_rows: Callable[[int], None] | None = None, interval: bool | float = False) -> list[Applied]:
    """Complete and classify each source (or ``source``) of a trained run into ``output`` (default RUN/completed).

    ``compile``: run the model through ``torch.compile`` (None: as the run's config says). ``interval``: write each
    filled cell's interval (True: at the run's ``interval_coverage``; a number: at that coverage).
    """
    run = RunDir(Path(run_dir))
    run.require_trained()
    config = run.read_config()
    names = [s.name for s in config.data.sources]
    if source is not None and source not in names:
        raise RunError(f"unknown source '{source}'; the run's sources are {names}.")
    out_dir = Path(output).expanduser() if output else run.root / "completed"
    inputs = {s.name: source_path(config, s) for s in config.data.sources}
    chosen = [s for s in config.data.sources if source is None or s.name == source]
    planned = {inputs[s.name]: output_paths(out_dir, s.name, table_format(inputs[s.name])) for s in chosen}
    check_outputs(planned, list(inputs.values()))
    grid_hz = run.read_data()[2].get("sample_rate_hz")
    jobs = [(inputs[s.name], planned[inputs[s.name]],
             {"name": s.name, "block_col": s.block_col or config.data.block_col, "fill": fill,
              "need": s.need if fill == "need" else None, "on_rows": on_rows, "timing": source_timing(config, s), "grid_hz": grid_hz,
              "interval": asked_coverage(interval, config.evaluation.interval_coverage)}) for s in chosen]
    written = _apply_each(load_trained(run, compile=compile).windowed(), jobs)
    run.note_written(*(p for w in written for p in w.outputs.values()))
    return written


def predict_files(run_dir: str | Path, inputs: list[Path], output: str | Path | None = None, block_col: str | None = None,
                  fmt: str | None = None, fill: str = "all", compile: bool | None = None,
                  on_rows: Callable[[int], None] | None = None, interval: bool | float = False,
                  timing: Timing | None = None) -> list[Applied]:
    """Complete and classify files that need not be in the run's config; outputs go to ``output``
    (default: each input's folder). ``block_col``: default the run's, where the file has that column; ``interval``
    as for :func:`complete_run`; ``timing``: the files' time column and/or rate (default: the run's ``time_col``,
    where the file has that column; without either, rows are the run's steps)."""
    run = RunDir(Path(run_dir))
    run.require_trained()
    config = run.read_config()
    paths = [Path(p).expanduser() for p in inputs]
    planned = {p: output_paths(Path(output).expanduser() if output else p.parent, p.stem, fmt or table_format(p)) for p in paths}
    if len(planned) < len(paths):
        raise RunError(f"an input is given twice: {[str(p) for p in paths]}.")
    check_outputs(planned, [*paths, *(source_path(config, s) for s in config.data.sources)])
    grid_hz = run.read_data()[2].get("sample_rate_hz")
    jobs = []
    for path in paths:
        columns = TableReader(path).columns
        column = block_col
        if column is None and config.data.block_col:
            column = config.data.block_col if config.data.block_col in columns else None
        timed = given_timing(timing or Timing(), config, columns, grid_hz)
        jobs.append((path, planned[path], {"block_col": column, "fill": fill, "fmt": fmt, "on_rows": on_rows, "timing": timed,
                                           "grid_hz": grid_hz, "interval": asked_coverage(interval, config.evaluation.interval_coverage)}))
    return _apply_each(load_trained(run, compile=compile).windowed(), jobs)

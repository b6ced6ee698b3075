"""A trained run applied to files: its own sources (``tgatunet complete``) and new recordings (``tgatunet predict``).

Each file is read as it is and streamed through the model (:mod:`tgatunet.apply.outputs`):
sensor drop-outs and absent channels filled (``fill="all"``), or only the channels
the file lacks (``fill="need"``: a source's ``need`` channels; for a new recording the
run channels it has no column for, or none observed); every other cell as read;
class predictions per window, row and block. Input files are never written: no
output may land on a source of the run or on another input.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tgatunet.apply.outputs import OUTPUTS, Applied, apply_file
from tgatunet.apply.predict import load_model
from tgatunet.data.tables import TableReader, table_format
from tgatunet.data.sources import source_path
from tgatunet.errors import RunError
from tgatunet.train.rundir import RunDir

def refuse_overwriting(outputs: list[Path], inputs: list[Path]) -> None:
    """A clear error if an output would replace one of ``inputs``."""
    taken = {p.resolve() for p in inputs}
    for path in outputs:
        if path.resolve() in taken:
            raise RunError(f"output '{path}' would overwrite an input file; choose another --output folder.")


def complete_run(
    run_dir: str | Path,
    source: str | None = None,
    output: str | Path | None = None,
    fill: str = "all",
    compile: bool | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> list[Applied]:
    """Complete and classify each source (or ``source``) of a trained run into ``output`` (default RUN/completed).

    ``compile``: run the model through ``torch.compile`` (None: as the run's config says).
    """
    run = RunDir(Path(run_dir))
    model = load_model(run, compile=compile)
    config = run.read_config()
    names = [s.name for s in config.data.sources]
    if source is not None and source not in names:
        raise RunError(f"unknown source '{source}'; the run's sources are {names}.")
    out_dir = Path(output) if output else run.root / "completed"
    inputs = [source_path(config, s) for s in config.data.sources]
    written = []
    for src, path in zip(config.data.sources, inputs):
        if source is not None and src.name != source:
            continue
        refuse_overwriting([out_dir / f"{src.name}_{o}.{table_format(path)}" for o in OUTPUTS], inputs)
        result = apply_file(
            model, path, out_dir, name=src.name, block_col=src.block_col or config.data.block_col, fill=fill,
            need=src.need if fill == "need" else None, on_rows=on_rows,
        )
        written.append(result)
    return written


def predict_files(
    run_dir: str | Path,
    inputs: list[Path],
    output: str | Path | None = None,
    block_col: str | None = None,
    fmt: str | None = None,
    fill: str = "all",
    compile: bool | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> list[Applied]:
    """Complete and classify files that need not be in the run's config; outputs go to ``output``
    (default: each input's folder). ``block_col``: default the run's, where the file has that column."""
    run = RunDir(Path(run_dir))
    model = load_model(run, compile=compile)
    config = run.read_config()
    protected = [*map(Path, inputs), *(source_path(config, s) for s in config.data.sources)]
    written = []
    for path in map(Path, inputs):
        out_dir = Path(output) if output else path.parent
        suffix = fmt or table_format(path)
        refuse_overwriting([out_dir / f"{path.stem}_{o}.{suffix}" for o in OUTPUTS], protected)
        column = block_col
        if column is None and config.data.block_col:
            column = config.data.block_col if config.data.block_col in TableReader(path).columns else None
        written.append(apply_file(model, path, out_dir, block_col=column, fill=fill, fmt=fmt, on_rows=on_rows))
    return written

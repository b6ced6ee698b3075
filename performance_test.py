"""The project's own performance study: ``python performance_test.py [--quick | --full] [--out DIR]``.

Runs every section of ``benchmarks/`` and writes ``DIR/results.json``, ``DIR/report.md`` and the
plots; its subcommands (``graph``, ``model``, ``memory``, ``compute``, ``scale``) run one section
each. ``python performance_test.py --config FILE [--out DIR] [--steps N]`` diagnoses your own
config on this machine instead (the same as ``tgatunet bench --config FILE``). It works from any
working directory: the ``benchmarks`` package is found next to this file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.cli import main  # noqa: E402  (the path first: benchmarks/ lives next to this file)

if __name__ == "__main__":
    main()

"""The benchmark suite: ``python performance_test.py [--quick | --full] [--out DIR]``.

The same command as ``tgatunet bench``: without a subcommand it runs every benchmark section and
writes ``DIR/results.json``, ``DIR/report.md`` and the plots; ``--quick`` (the default) takes about
5 minutes on a 2-core CPU, ``--full`` is for real hardware. Its subcommands (``graph``, ``model``,
``memory``, ``compute``, ``scale``) run one benchmark each.
"""

import sys

from typer.main import get_command

from tgatunet.cli import bench_app, setup_logging

if __name__ == "__main__":
    setup_logging(verbose=False)
    get_command(bench_app)(sys.argv[1:], prog_name="performance_test.py")

"""``python -m tgatunet``: the command line, for launchers that start a module (``torchrun -m tgatunet``)."""

from tgatunet.cli import app

app(prog_name="tgatunet")

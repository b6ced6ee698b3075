"""User-facing errors.

Anything a user can fix (a config key, a file, a column) raises a subclass of
:class:`TgatunetError` with a message that names the thing and says what to do.
The CLI prints these messages without a traceback.
"""

import reprlib


class TgatunetError(Exception):
    """Base class of errors caused by user input, with a message meant for that user."""


class ConfigError(TgatunetError):
    """The configuration file is invalid."""


class DataError(TgatunetError):
    """A data source (file, column, value) cannot be used as configured."""


class RunError(TgatunetError):
    """A run directory is missing, incomplete, or would be overwritten."""


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 160
_REPR.maxlevel = 3


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)`` in at most ``limit`` characters.

    A message quotes what the user wrote; a huge cell or a YAML alias bomb (a list
    nesting itself a billion times) must neither flood the terminal nor take forever
    to format, so nesting and length are cut (``...``).
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

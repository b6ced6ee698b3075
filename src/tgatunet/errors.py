"""User-facing errors.

Anything a user can fix (a config key, a file, a column) raises a subclass of
:class:`TgatunetError` with a message that names the thing and says what to do.
The CLI prints these messages without a traceback.
"""


class TgatunetError(Exception):
    """Base class of errors caused by user input, with a message meant for that user."""


class ConfigError(TgatunetError):
    """The configuration file is invalid."""


class DataError(TgatunetError):
    """A data source (file, column, value) cannot be used as configured."""


class RunError(TgatunetError):
    """A run directory is missing, incomplete, or would be overwritten."""

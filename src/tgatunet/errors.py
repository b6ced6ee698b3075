"""User-facing errors.

Anything a user can fix (a config key, a file, a column) raises a subclass of :class:`TgatunetError` with a message that
names the thing and says what to do. The CLI prints these messages without a traceback.
"""

import errno
import reprlib


class TgatunetError(Exception):
    """Base class of errors caused by user input, with a message meant for that user."""


class ConfigError(TgatunetError):
    """The configuration file is invalid."""


class DataError(TgatunetError):
    """A data source (file, column, value) cannot be used as configured."""


class RunError(TgatunetError):
    """A run directory is missing, incomplete, or would be overwritten."""


class TrainingInterrupted(RunError):
    """Training was stopped (Ctrl+C); the message says where it can continue from."""


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 160
_REPR.maxlevel = 3


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)`` in at most ``limit`` characters.

    A message quotes what the user wrote; a huge cell or a YAML alias bomb (a list nesting itself a billion times) must
    neither flood the terminal nor take forever to format, so nesting and length are cut (``...``).
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free space there, or write to another folder",
    errno.EDQUOT: "the disk quota is used up: free space there, or write to another folder",
    errno.EROFS: "the folder is on a read-only file system: write to another folder",
    errno.EACCES: "permission denied: write to a folder you own, or change its permissions",
    errno.EPERM: "the operation is not permitted there: write to a folder you own",
    errno.ENOENT: "it does not exist (or was removed meanwhile): check the path",
    errno.EISDIR: "it is a folder where a file was expected: give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
}


def os_error_message(err: OSError) -> str:
    """What an operating-system fault (full disk, read-only folder, missing file) means for the user, naming the path."""
    name = err.filename2 or err.filename  # a rename names its target second
    where = f" '{name}'" if name else ""
    advice = _OS_ADVICE.get(err.errno, "check the path and that the disk is available")
    return f"cannot use{where}: {err.strerror or err} ({advice}). No file was left half written."

"""Files written whole or not at all, outputs held by one process at a time, and content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

from tgatunet.errors import RunError

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 22
# Files are made with the permissions the user's umask gives (mkstemp alone would give 0600).
_UMASK = os.umask(0o022)
os.umask(_UMASK)
T = TypeVar("T")


class AtomicFile:
    """A file written under a temporary name beside ``path`` and renamed over it by :meth:`commit`.

    A reader sees the old file or the new one, never half of one, even after a crash. The temporary name is unique
    (``mkstemp``), so two processes writing the same path never mix their bytes: each commit puts one whole file in
    place. Write to :attr:`handle`. ``sync=False`` skips the fsync, for files whose loss costs nothing (a cache entry).
    As a context manager it commits when the block succeeds and aborts when it raises.
    """

    def __init__(self, path: Path | str, sync: bool = True) -> None:
        self.path, self.sync = Path(path), sync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.tmp = Path(tmp)
        self.handle: IO[bytes] = os.fdopen(fd, "wb")
        os.chmod(tmp, 0o666 & ~_UMASK)

    def commit(self) -> None:
        """Flush the data to disk and put the file in place (deleting the temporary file if that fails)."""
        try:
            self.handle.flush()
            if self.sync:
                os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop what was written; ``path`` stays as it was."""
        self.handle.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.commit() if kind is None else self.abort()


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], None], sync: bool = True) -> None:
    """Call ``write`` on the handle of an :class:`AtomicFile` of ``path`` and commit it."""
    with AtomicFile(path, sync) as file:
        write(file.handle)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def replace_dir(out: Path, build: Callable[[Path], T]) -> T:
    """Call ``build`` on a new, empty folder beside ``out``, then swap it in place of ``out``.

    An interrupted build leaves ``out`` as it was; the folder's temporary name is unique to
    the call, so builds by two processes never write into one folder. Returns what ``build`` returns.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        result = build(building)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(building, out)
            shutil.rmtree(old)
        else:
            os.replace(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return result


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _holder(lock: Path) -> dict | None:
    """The ``pid`` and ``host`` written in ``lock``; None when the lock is gone.

    Its creator writes them right after creating it: an empty lock is read again for up to a second.
    Content that is not a holder reads as an unknown holder (pid None), which is never taken over.
    """
    for _ in range(100):
        try:
            text = lock.read_bytes()
        except FileNotFoundError:
            return None
        if text:
            break
        time.sleep(0.01)
    with contextlib.suppress(ValueError):  # JSON or UTF-8
        holder = json.loads(text)
        if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
            return {"pid": holder["pid"], "host": str(holder.get("host"))}
    return {"pid": None, "host": None}


def _dead_here(holder: dict) -> bool:
    """Whether the holder was a process of this machine that no longer runs."""
    if holder["pid"] is None or holder["host"] != socket.gethostname():
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # runs, as another user
        pass
    return False


def _take_over(lock: Path, holder: dict) -> None:
    """Delete the lock a dead process left, unless another process took it over meanwhile."""
    aside = lock.with_name(f"{lock.name}.{os.getpid()}.stale")
    try:
        os.replace(lock, aside)  # atomic: of processes taking over together, one moves the dead lock
    except FileNotFoundError:
        return
    if _holder(aside) == holder:
        log.warning("taking over '%s' from process %s, which no longer runs.", lock, holder["pid"])
        aside.unlink()
    else:  # a live lock created after the dead one was read: put it back
        os.replace(aside, lock)


def _busy(path: Path, lock: Path, holder: dict) -> RunError:
    pid = holder["pid"] if holder["pid"] is not None else "unknown"
    host = "" if holder["host"] in (None, socket.gethostname()) else f" on {holder['host']}"
    return RunError(f"another tgatunet process (pid {pid}{host}) is writing '{path}'; wait for it to finish, "
                    f"or delete '{lock}' if no such process runs.")


@contextlib.contextmanager
def output_lock(path: Path | str, lock: Path | str | None = None) -> Iterator[Path]:
    """Hold ``path`` (a file or folder to write) for this process while the block runs; yields the lock file's path.

    The lock file ``lock`` (default ``PATH.lock``) is created exclusively (``O_CREAT | O_EXCL``) with this
    process's pid and host: a second process wanting the same output gets a :class:`RunError` at once, naming
    the holder. A lock left by a dead process of this machine is taken over; the lock is deleted at the end.
    """
    path = Path(path)
    lock = Path(lock) if lock is not None else path.with_name(f"{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a dead holder's lock is taken over, then tried again
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and not _dead_here(holder):
                raise _busy(path, lock, holder) from None
            if holder is not None:
                _take_over(lock, holder)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(_owner()))
        break
    else:
        raise _busy(path, lock, _holder(lock) or {"pid": None, "host": None})
    try:
        yield lock
    finally:
        if _holder(lock) == _owner():  # not a forked child's exit, nor a lock another process took
            lock.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's content, read in chunks (memory stays flat however big the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

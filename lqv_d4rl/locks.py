"""One writer per dataset folder: a lock file that names its holder and cannot go stale.

Every verb that writes a dataset folder (``generate``, ``import-npz``, ``download``, ``rerender``)
holds the folder's lock while it works::

    from lqv_d4rl.locks import dataset_lock

    with dataset_lock(folder, "download"):
        ...  # nobody else writes ``folder`` meanwhile

A second writer is refused at once with :class:`DatasetLockedError`, whose message names the
holder (command, pid, host, start time) and the lock file.

How it works. The lock file is ``<parent>/.<name>.lock``, next to the folder rather than inside it,
because writers replace or delete the folder itself. The holder keeps an exclusive ``flock`` on the
file and writes its pid, host and command into it. The kernel releases a ``flock`` when its process
dies, however it dies, so a lock left behind by a killed run is stale by construction: the next
writer gets the ``flock`` at once, logs who left it, and takes over. On release the file is deleted
(while still locked; a writer that opened the old file notices that the path now names another file
or none, and tries again), and so is a folder that was made only to hold it: a clean exit leaves
nothing behind.

Locks are re-entrant within a thread (a verb holding a folder may call another that locks it
too). On a file system without lock support (some network mounts) a warning says that the run goes
on without one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .errors import LQVError

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_HOLDER_READ_ATTEMPTS = 20  # the holder writes its record right after taking the flock

_held: dict[tuple, "_Lock"] = {}  # (lock path, thread) -> the lock this thread holds
_held_guard = threading.Lock()


class DatasetLockedError(LQVError, RuntimeError):
    """Another run is writing the dataset folder (the message names it and the lock file)."""


def lock_path(folder) -> Path:
    """The lock file of dataset folder ``folder``: ``<parent>/.<name>.lock``."""
    folder = Path(folder).expanduser().absolute()
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


@contextmanager
def dataset_lock(folder, action: str):
    """Hold the lock of dataset folder ``folder`` for the block; ``action`` (e.g. ``"download"``)
    is what the holder record says this run is doing.

    Raises :class:`DatasetLockedError` at once, naming the holder, when another process (or
    another thread) holds it. Re-entrant within a thread. Creates the parent folder if needed
    (not ``folder`` itself).
    """
    path = lock_path(folder)
    key = (path, threading.get_ident())
    with _held_guard:
        reentered = key in _held
    if reentered:
        yield path
        return
    lock = _acquire(path, action)
    with _held_guard:
        _held[key] = lock
    try:
        yield path
    finally:
        with _held_guard:
            del _held[key]
        _release(path, lock)


@contextmanager
def dataset_locks(folders, action: str):
    """Hold the locks of several folders (all or none: a refusal releases those already taken)."""
    with ExitStack() as stack:
        for folder in folders:
            stack.enter_context(dataset_lock(folder, action))
        yield


class _Lock:
    """A lock this thread holds: the flocked file (None where the file system has no locks)
    and the folders made for it (removed on release if still empty)."""

    def __init__(self, fd, made_folders):
        self.fd = fd
        self.made_folders = made_folders


def _acquire(path: Path, action: str) -> _Lock:
    made = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()]
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # another run's release removed the empty folder just now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            _remove_empty(made)
            raise DatasetLockedError(_locked_message(path, action)) from None
        except OSError as err:
            os.close(fd)
            if err.errno not in _UNSUPPORTED:
                raise
            warnings.warn(f"the file system of {path.parent} does not support file locks; "
                          f"{action} runs without the dataset lock", stacklevel=4)
            return _Lock(None, made)
        if _is_current_file(fd, path):
            break
        os.close(fd)  # a holder released (and deleted) it between our open and flock: again
    _report_stale(path, fd)
    _write_record(fd, action)
    return _Lock(fd, made)


def _release(path: Path, lock: _Lock) -> None:
    if lock.fd is not None:
        try:
            if _is_current_file(lock.fd, path):
                os.unlink(path)  # still locked: nobody can take it between unlink and close
        finally:
            os.close(lock.fd)
    _remove_empty(lock.made_folders)


def _remove_empty(folders) -> None:
    """Remove the folders made for a lock, innermost first, as far as they are empty (so that a
    run refused early leaves no folder behind)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty: the run wrote something there, or someone else did


def _is_current_file(fd: int, path: Path) -> bool:
    """True when ``path`` still names the file open as ``fd``."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _report_stale(path: Path, fd: int) -> None:
    """Log the record a dead holder left in the file we just locked (a killed run)."""
    record = _parse(os.pread(fd, 1 << 16, 0))
    if record is not None:
        logger.warning("%s was left by %s, which is no longer running; taking it over",
                       path, _describe(record))


def _write_record(fd: int, action: str) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "action": action,
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "",
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)


def _read_record(path: Path) -> dict | None:
    try:
        return _parse(path.read_bytes())
    except OSError:
        return None


def _parse(data: bytes) -> dict | None:
    try:
        record = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _locked_message(path: Path, action: str) -> str:
    record = None
    for _ in range(_HOLDER_READ_ATTEMPTS):
        record = _read_record(path)
        if record is not None:
            break
        time.sleep(0.01)
    holder = _describe(record) if record is not None else "another process"
    folder = path.parent / path.name[1:-len(LOCK_SUFFIX)]
    return (f"cannot {action} {folder}: {holder} is writing it. Wait for that run to finish (or "
            f"stop it) and try again; its lock {path} goes away by itself when it ends.")


def _describe(record: dict) -> str:
    """E.g. ``generate ('lqv-d4rl generate walker_walk', pid 123 on host h, since 2024-05-01
    10:00:00)``."""
    return (f"{record.get('action', 'a run')} ({record.get('command', '?')!r}, pid "
            f"{record.get('pid', '?')} on host {record.get('host', '?')}, "
            f"since {record.get('started', '?')})")

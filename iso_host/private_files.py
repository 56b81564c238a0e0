"""Files that hold the ledger, card data or keys: created 0600, in directories created 0700.

Explicit modes at creation, whatever the process's umask: the ledger and its lock, backups, traces, terminal state
files and the PAN hash key file. A file or directory that already exists keeps its mode (an operator may have
chosen a group on purpose); ``loose_mode`` tells the caller whether to warn about it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Final

PRIVATE_FILE_MODE: Final = 0o600
PRIVATE_DIR_MODE: Final = 0o700


def private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700; directories already there are left as they are."""
    missing: list[Path] = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process: its mode stands
            directory.mkdir(mode=PRIVATE_DIR_MODE)
            os.chmod(directory, PRIVATE_DIR_MODE)  # mkdir's mode passes through the umask


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """``os.open`` that creates the file 0600; a regular file this truncates becomes 0600 too.

    Returns the file descriptor; a device or a pipe (``/dev/null``, a FIFO) keeps its mode. The directory must
    exist (``private_dir`` makes one).
    """
    descriptor = os.open(path, flags, PRIVATE_FILE_MODE)
    if flags & os.O_TRUNC and stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
    return descriptor


def create_private(path: Path) -> None:
    """Make ``path`` an empty 0600 file if it does not exist (a new SQLite ledger, before SQLite opens it)."""
    os.close(open_private(path, os.O_WRONLY | os.O_CREAT))


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (a 0600 temporary file beside it, then renamed into place); its
    directory is made 0700 when missing."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(open_private(temporary), "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def loose_mode(path: Path) -> int | None:
    """The permission bits of ``path`` when its group or others may read or write it, else None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None

"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Each write goes to a unique temporary file in the target's folder (so concurrent writers never
share a temporary), is flushed and fsynced, renamed over the target, and the folder is fsynced so
the rename itself survives a crash. A failed write leaves the previous file untouched.
"""

from __future__ import annotations

import errno
import os
import tempfile
import uuid
from pathlib import Path
from typing import IO, Callable

from lra_base.errors import StorageError


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(f)` on a binary file that replaces `path` only once it is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems cannot fsync a folder
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def check_writable(folder: str | Path, what: str, fix: str) -> Path:
    """Raise StorageError (naming `what`, the folder and `fix`) unless files can be created in
    `folder`, before any work that would be lost if writing failed at the end. A folder that does
    not exist yet is judged by its nearest existing ancestor; nothing is created or left behind."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(probe))
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        where = "" if probe == folder else f" ({probe}: {exc.strerror or exc})"
        reason = "" if where else f": {exc.strerror or exc}"
        raise StorageError(f"cannot write {what} to {folder}{reason}{where}; {fix}") from None
    return folder

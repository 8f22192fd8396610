"""The one helper for writing files atomically (mask files, exports, the store's snapshot).

``atomic_write(path, data)`` guarantees that a reader sees either the old file or the whole new one,
never a mix, and that the new file survives a power cut once the call returns:

1. the bytes go to a new temporary file ``.<name>.<random>.tmp`` in the same folder, created with
   ``os.open(..., 0o666)`` so the kernel applies the process umask (the file gets ``0o666 & ~umask``,
   as a plain ``open()`` would give, not ``mkstemp``'s ``0600``);
2. the temporary file is fsynced and closed;
3. ``os.replace`` renames it over ``path`` (atomic on POSIX and Windows);
4. the folder is fsynced so that the rename itself is durable (``fsync_dir``).

If any of steps 1-3 fails, the temporary file is removed, ``path`` still holds its old bytes (or
still does not exist) and the ``OSError`` propagates. A failure in step 4 (the rename has happened)
is logged as a warning and not raised: the new file is in place and readable, only its durability
over a power cut is not confirmed, and raising would tell the caller "nothing changed", which is
false.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir"]

log = logging.getLogger(__name__)

# fsync on a folder is not supported everywhere (some network and FUSE file systems); these errnos
# mean "not supported", not "the data is lost".
_UNSUPPORTED = {errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EISDIR, errno.EACCES, errno.EPERM}


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entry table so that a create/rename in it survives a power cut.

    POSIX only (a no-op elsewhere). Raises ``OSError`` when the folder's fsync fails for a reason
    other than "not supported by this file system" (which is ignored).
    """
    if os.name != "posix":
        return
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` (bytes) to ``path`` so that readers see either the old file or the whole new one.

    Missing parent folders are created. The new file gets the permissions ``0o666 & ~umask``. On
    any error before the rename the temporary file is removed, the old file (if any) is untouched
    and the ``OSError`` propagates. See the module docstring for the steps.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        fsync_dir(target.parent)
    except OSError as exc:
        log.warning("%s was written, but fsync of its folder failed (%s); it may not survive a power cut", target, exc)

"""Read a scanned file again at parse time, and only if it is still the file the scan read.

The filesystem connector walks without following links and records each file's
identity (:class:`~connectors.models.FileIdentity`: device, inode, size, mtime).
The parse stage runs later in the run and opens ``local_path`` again. Opening it
by path would follow a link swapped in since: the file itself replaced by a link
to ``hr/salaries.xlsx``, or a folder above it replaced by a link to another
folder, and that content would be indexed under the scanned path's ACL.

So every re-open here is ``O_NOFOLLOW`` (a link in the final component fails),
and the descriptor's ``fstat`` must match the recorded identity (a swapped parent
folder leads to another inode, or to none). Anything else fails the document
with reason class ``changed_during_sync``; nothing is read from the other file.
The parser then reads a private copy made from that same descriptor
(:func:`private_copy`), under the original file name, which parsers and failure
messages use.

Usage::

    with private_copy(doc.local_path, doc.identity, max_bytes=limits.max_bytes) as path:
        parse_file(path, ...)
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from connectors.models import FileIdentity
from pipelines.errors import ChangedDuringSyncError, ParseError, TooLargeError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# O_NONBLOCK: a FIFO swapped in for the file must not hang the parse.
_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_LINK_ERRNOS = frozenset({errno.ELOOP, getattr(errno, "EMLINK", errno.ELOOP)})
_CHUNK = 1024 * 1024


def open_checked(path: Path, identity: FileIdentity | None) -> int:
    """A read-only descriptor of ``path``, opened without following a final link.

    With ``identity`` the file must still be that one (device, inode, size, mtime).

    :raises ChangedDuringSyncError: a link, not a regular file, gone, or another file.
    :raises ParseError: unreadable for another reason (reason class ``unreadable``).
    """
    name = path.name
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS:
            raise ChangedDuringSyncError(
                f"{name!r} became a symbolic link after the scan; it was not read",
                path=str(path),
            ) from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ChangedDuringSyncError(
                f"{name!r} is no longer where the scan found it", path=str(path)
            ) from exc
        raise ParseError(
            f"cannot read {name!r}: {exc.strerror or exc}",
            path=str(path),
            reason_class="unreadable",
        ) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ChangedDuringSyncError(
                f"{name!r} is no longer a regular file; it was not read", path=str(path)
            )
        if identity is not None:
            _check_identity(path, identity, FileIdentity.of(st))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_identity(path: Path, recorded: FileIdentity, now: FileIdentity) -> None:
    if (now.dev, now.ino) != (recorded.dev, recorded.ino):
        raise ChangedDuringSyncError(
            f"{path.name!r} is not the file the scan read (replaced, or a folder above it "
            "swapped for a link); it was not read",
            path=str(path),
        )
    if (now.size, now.mtime_ns) != (recorded.size, recorded.mtime_ns):
        raise ChangedDuringSyncError(
            f"{path.name!r} was modified after the scan (size or modification time changed); "
            "the next sync picks up the new version",
            path=str(path),
        )


def read_checked(path: Path, identity: FileIdentity | None) -> bytes:
    """The bytes of ``path`` read through :func:`open_checked`."""
    fd = open_checked(path, identity)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


@contextlib.contextmanager
def private_copy(
    path: Path, identity: FileIdentity | None, *, max_bytes: int | None = None
) -> Iterator[Path]:
    """A private copy of ``path`` (same file name) read through :func:`open_checked`.

    The copy lives in a fresh temporary folder, removed on exit.

    :param max_bytes: a file larger than this is refused (``too_large``) before copying.
    :raises ParseError: ``changed_during_sync``, ``too_large`` or ``unreadable``.
    """
    folder = tempfile.mkdtemp(prefix="trove-parse-")
    try:
        with os.fdopen(open_checked(path, identity), "rb") as src:
            size = os.fstat(src.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise TooLargeError(
                    f"{path.name!r} is {size:,} bytes, over the limit of {max_bytes:,} "
                    "(limits.max_bytes)",
                    path=str(path),
                )
            copy = Path(folder) / path.name
            with open(copy, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)

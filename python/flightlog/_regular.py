"""Open nothing that is not a regular file.

A FIFO, socket or device in a run folder (``mkfifo fda_run_x/telemetry.parquet``,
a FIFO ``manifest.toml``) blocks forever in ``open()`` or ``read()``, and DuckDB or
the Rust reader would block on it too. Every reader of a root therefore asks this
module first:

- :func:`problem` looks with ``lstat`` (a symbolic link is reported, not followed,
  unless ``follow_links``) and says why a path must not be read, or ``None``;
- :func:`read_bytes` opens with ``O_NONBLOCK`` (and ``O_NOFOLLOW`` unless
  ``follow_links``), then checks the open file with ``fstat``: a path swapped for
  a FIFO between the look and the open is still refused, never waited on.

Both raise or return :class:`NotRegularFileError` (an ``OSError``), so callers that
already handle unreadable files report it as skipped with its reason.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["NotRegularFileError", "check", "problem", "read_bytes", "regular_only"]

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)

#: The reason given for a symbolic link that is not followed.
LINK_REASON = "a symbolic link: not followed (it may point outside the root or at another run)"


class NotRegularFileError(OSError):
    """A path that is not a regular file (FIFO, socket, device, folder) or is a symbolic link
    that is not followed: it is not opened, so that nothing blocks on it."""


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def problem(path: str | os.PathLike[str], *, follow_links: bool = False) -> str | None:
    """Why ``path`` must not be read (a symbolic link, a FIFO, ...), or ``None`` for a
    regular file. ``FileNotFoundError`` when it does not exist."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        if not follow_links:
            return LINK_REASON
        st = os.stat(path)
    if stat.S_ISREG(st.st_mode):
        return None
    return f"{_kind(st.st_mode)}, not a regular file: not opened (reading it could block forever)"


def check(path: str | os.PathLike[str], *, follow_links: bool = False) -> None:
    """Raise :class:`NotRegularFileError` naming ``path`` unless it is a regular file."""
    reason = problem(path, follow_links=follow_links)
    if reason is not None:
        raise NotRegularFileError(errno.EINVAL, reason, os.fspath(path))


def read_bytes(path: str | os.PathLike[str], *, follow_links: bool = True) -> bytes:
    """The content of the regular file ``path``, never blocking on a FIFO or device.

    Raises:
        NotRegularFileError: ``path`` is not a regular file (or, without ``follow_links``,
            is a symbolic link).
        FileNotFoundError: it does not exist.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_links:
            raise NotRegularFileError(errno.ELOOP, LINK_REASON, os.fspath(path)) from None
        if e.errno == errno.ENXIO:  # a FIFO without writer, opened write-only elsewhere; or a socket
            raise NotRegularFileError(
                errno.ENXIO, "not a regular file: not opened (reading it could block forever)", os.fspath(path)
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(
                errno.EINVAL,
                f"{_kind(st.st_mode)}, not a regular file: not opened (reading it could block forever)",
                os.fspath(path),
            )
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def regular_only(paths: list[os.PathLike[str] | str], *, follow_links: bool = False) -> list[tuple[str, str]]:
    """The ``(path, reason)`` of those ``paths`` that must not be read (missing ones are left out)."""
    out = []
    for p in paths:
        try:
            reason = problem(p, follow_links=follow_links)
        except FileNotFoundError:
            continue
        if reason is not None:
            out.append((os.fspath(p), reason))
    return out

"""The writer lock of an embedded catalog: ``<db>.lock``, held with ``fcntl.flock``.

Not :func:`flightlog.runs.ids.file_lock`: that one blocks for ever or tries once, while a
writer here gives up after ``timeout`` seconds with :class:`~flightlog.CatalogLockedError`
naming the process that holds the lock (its pid and host are written into the file)."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .._errors import CatalogLockedError
from .sql import _sleep_backoff

try:  # POSIX only; elsewhere DuckDB's own file lock (with retries) is the only guard.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def writer_lock(lock_path: Path, timeout: float | None) -> Iterator[None]:
    """Holds ``lock_path`` exclusively (one writer process or thread at a time), waiting up to
    ``timeout`` seconds (``None``: for ever) before raising :class:`~flightlog.CatalogLockedError`."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            deadline = None if timeout is None else time.monotonic() + timeout
            for attempt in itertools.count():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not _sleep_backoff(attempt, deadline):
                        holder = ""
                        with contextlib.suppress(OSError, UnicodeDecodeError):
                            holder = os.pread(fd, 200, 0).decode().strip()
                        raise CatalogLockedError(
                            f"another writer holds {lock_path}"
                            + (f" (pid/host {holder})" if holder else "")
                            + f"; gave up after {timeout} s"
                        ) from None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)

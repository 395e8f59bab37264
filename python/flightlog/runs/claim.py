"""A run's one-writer claim, taken by recovery (see :mod:`flightlog.runs.recover`).

A recorder holds an exclusive ``flock`` on its run's lock file (``.flightlog.lock`` in
a run folder, ``.part-<run_id>-flightlog.lock`` beside a dev/tuner run's parts) until
it closes or its process dies. :func:`take_claim` takes the same lock without waiting:
the protocol of ``flightlog-core``'s ``claim.rs`` (lock, check that the path still
names the locked file, write ``pid= host= since=``; to let go, unlink while holding,
then unlock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from .._errors import FlightlogError
from .._regular import LINK_REASON, NotRegularFileError
from .layout import part_lock_name
from .manifest import utc_now_iso
from .status import process_alive

__all__ = ["Busy", "part_lock_path", "take_claim"]

# Who holds a claim another process has, and whether that one is a recover.
Busy = tuple[str, bool]


def part_lock_path(parts_dir: Path, run_id: str) -> Path:
    """The claim file of a dev/tuner run's parts (``claim.rs``'s ``lock_path``)."""
    return parts_dir / part_lock_name(run_id)


def _fields(text: str) -> dict[str, str]:
    """The ``key=value`` words of a lock file's text."""
    return dict(w.split("=", 1) for w in text.split() if "=" in w)


def _holder(text: str) -> tuple[str, bool]:
    """(who holds a claim, whether it is a recover) from a lock file's text."""
    kv = _fields(text)
    if "pid" not in kv:
        return "another writer (taking the claim right now)", False
    who = f"process {kv['pid']} on host {kv.get('host', '?')} since {kv.get('since', '?')}"
    return who, kv.get("role") == "recover"


def _holder_text(fd: int) -> str:
    """The text of a lock file whose claim another process holds. Its holder writes it
    right after taking the lock, so a file that is still empty, or still names its last
    holder (a process of this host that is gone: the file a killed writer left, just
    locked by whoever takes the claim now), is read again briefly: a recover that has
    just taken the claim is then not mistaken for a live writer."""
    text = ""
    for _ in range(100):
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        kv = _fields(text)
        stale = (
            "pid" in kv
            and kv["pid"].isdigit()
            and process_alive({"host": kv.get("host"), "pid": int(kv["pid"])}) is False
        )
        if text and not stale:
            break
        time.sleep(0.002)
    return text


@contextlib.contextmanager
def take_claim(lock_path: Path) -> Iterator[Busy | None]:
    """Take a run's one-writer claim without waiting (see the module doc).

    Yields None when the claim is ours (held until the block ends, then the lock
    file is removed), else ``(holder, is_recover)``: touch nothing then. On a
    filesystem without ``flock`` it yields None without a lock."""
    fd: int | None = None
    busy: tuple[str, bool] | None = None
    for _ in range(100):
        # Read-only, as the recorder holds it (a descriptor open for writing
        # would make a read-only remount fail); flock needs no write access.
        # O_NONBLOCK: a FIFO planted as the lock file must be refused, not waited on;
        # O_NOFOLLOW: a symbolic link is refused, never followed out of the folder.
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise NotRegularFileError(e.errno, f"the lock file is {LINK_REASON}", str(lock_path)) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotRegularFileError(errno.EINVAL, "the lock file is not a regular file: remove it", str(lock_path))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = _holder(_holder_text(fd))
            os.close(fd)
            fd = None
            break
        except OSError as e:
            os.close(fd)
            fd = None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                break  # no locks here: proceed on the other evidence alone
            raise
        st = os.fstat(fd)
        try:
            now = os.stat(lock_path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            break
        os.close(fd)  # removed by its previous holder meanwhile: start over
        fd = None
    else:
        raise FlightlogError(f"{lock_path}: the claim changed hands 100 times while taking it; try again")
    if busy is not None:
        yield busy
        return
    if fd is None:
        yield None
        return
    try:
        with contextlib.suppress(OSError):
            wfd = os.open(lock_path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                text = f"pid={os.getpid()} host={socket.gethostname()} since={utc_now_iso()} role=recover\n"
                os.write(wfd, text.encode())
            finally:
                os.close(wfd)
        yield None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

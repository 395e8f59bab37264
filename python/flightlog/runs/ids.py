"""The root folder and run ids.

- The root is the ``base_path`` argument, else ``$FLIGHTLOG_ROOT``, else
  ``./telematry_cfs`` (the CFS name, spelling included). It is created if missing;
  a root that cannot be written raises ``PermissionError`` before any other work.
- A run id is the UTC start time ``YYYYMMDD_HHMMSS``. A run claims it with one
  atomic create (``mkdir`` of the run folder, or an exclusive create of a
  dev/tuner run's manifest); when the name is taken, the id gets ``_2``, ``_3``,
  ... Processes sharing a root therefore never collide and never fail because of
  one another, however many start in the same second.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .._names import validate_name
from .layout import DEFAULT_RUN_PREFIX as _DEFAULT_RUN_PREFIX
from .layout import FLOWS_DIR, RUNS_DIR, compacted_name, parts_dir_name

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_ROOT",
    "DEFAULT_RUN_PREFIX",
    "ROOT_ENV",
    "claim",
    "claim_run_dir",
    "file_lock",
    "flow_dir",
    "flow_paths",
    "new_run_id",
    "resolve_root",
]

#: Environment variable naming the root when no ``base_path`` is given.
ROOT_ENV = "FLIGHTLOG_ROOT"
#: Root used when neither ``base_path`` nor ``$FLIGHTLOG_ROOT`` is set (relative to the current folder).
DEFAULT_ROOT = "telematry_cfs"
#: Prefix of run folders.
DEFAULT_RUN_PREFIX = _DEFAULT_RUN_PREFIX


def resolve_root(base_path: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """The root folder: ``base_path``, else ``$FLIGHTLOG_ROOT``, else ``./telematry_cfs``.

    With ``create`` (default) the folder is created if missing and checked to be
    writable.

    Raises:
        NotADirectoryError: the root exists and is not a folder.
        PermissionError: the root cannot be created or written.
    """
    if base_path is None:
        base_path = os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    root = Path(os.fspath(base_path)).expanduser()
    if not create:
        return root
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"flightlog root {str(root)!r} exists and is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise PermissionError(
            e.errno,
            f"cannot create the flightlog root {str(root)!r} ({e.strerror}); pass base_path= or set ${ROOT_ENV}",
        ) from None
    except FileExistsError:
        raise NotADirectoryError(f"flightlog root {str(root)!r} exists and is not a folder") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(
            errno.EACCES, f"the flightlog root {str(root)!r} is not writable; pass base_path= or set ${ROOT_ENV}"
        )
    return root


def new_run_id(now: float | None = None) -> str:
    """A run id for ``now`` (default: the current time): UTC ``YYYYMMDD_HHMMSS``."""
    return time.strftime("%Y%m%d_%H%M%S", time.gmtime(time.time() if now is None else now))


# Highest suffix this process has claimed per (folder, base id): a process that
# starts hundreds of runs in one second probes from there instead of from _2.
_last_suffix: dict[tuple[str, str], int] = {}
_last_lock = threading.Lock()


def claim(
    folder: str | os.PathLike[str],
    make: Callable[[str], None],
    run_id: str | None = None,
    *,
    max_tries: int = 100_000,
) -> str:
    """Claim a run id in ``folder``: call ``make(candidate)`` for ``run_id`` (default
    :func:`new_run_id`), then ``run_id_2``, ``run_id_3``, ... until it does not raise
    ``FileExistsError``; return the id that was claimed.

    ``make`` must create something atomically and fail with ``FileExistsError``
    when it exists (``os.mkdir``, an ``O_EXCL`` create, a hard link).
    """
    base = validate_name("run_id", new_run_id() if run_id is None else run_id)
    key = (os.fspath(folder), base)
    with _last_lock:
        start = _last_suffix.get(key, 1)
    candidates = [base] if start <= 1 else []
    n = max(start, 1)
    for _ in range(max_tries):
        if not candidates:
            n += 1
            candidates.append(f"{base}_{n}")
        cand = candidates.pop()
        validate_name("run_id", cand)
        try:
            make(cand)
        except FileExistsError:
            continue
        with _last_lock:
            if n > _last_suffix.get(key, 1):
                _last_suffix[key] = n
            if len(_last_suffix) > 1024:
                _last_suffix.clear()
        return cand
    raise FileExistsError(f"could not claim a run id {base!r} in {os.fspath(folder)!r} after {max_tries} tries")


def claim_run_dir(
    root: str | os.PathLike[str], prefix: str = DEFAULT_RUN_PREFIX, run_id: str | None = None
) -> tuple[str, Path]:
    """Claim a run folder ``root/{prefix}{run_id}`` with an atomic ``mkdir``.

    ``run_id`` defaults to the UTC start time; a taken id gets ``_2``, ``_3``, ...
    Returns ``(run_id, path)``.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> a, _ = claim_run_dir(root, run_id="20250101_000000")
    >>> b, path = claim_run_dir(root, run_id="20250101_000000")
    >>> a, b, path.name
    ('20250101_000000', '20250101_000000_2', 'fda_run_20250101_000000_2')
    """
    validate_name("run_prefix", prefix)
    root_p = Path(root)

    def make(cand: str) -> None:
        os.mkdir(root_p / (prefix + cand))

    rid = claim(root_p / prefix, make, run_id)
    return rid, root_p / (prefix + rid)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); yield whether
    it is held (always ``True`` when ``blocking``). The kernel releases it when the
    process dies, so it is never left behind. Without ``fcntl`` (Windows) it
    yields ``True`` without locking.
    """
    if fcntl is None:  # pragma: no cover
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def flow_dir(root: str | os.PathLike[str], flow_name: str) -> Path:
    """``<root>/flows/<flow_name>`` (the name is validated)."""
    return Path(root) / FLOWS_DIR / validate_name("flow_name", flow_name)


def flow_paths(root: str | os.PathLike[str], flow_name: str, which: str) -> dict[str, Path]:
    """Folders and files of a flow's append mode ``which`` (``"dev"`` or ``"tuner"``):
    ``flow``, ``runs``, ``telemetry`` (parts), ``events`` (parts), ``compacted_telemetry``,
    ``compacted_events``."""
    if which not in ("dev", "tuner"):
        raise ValueError(f"which must be 'dev' or 'tuner', got {which!r}")
    fd = flow_dir(root, flow_name)
    return {
        "flow": fd,
        "runs": fd / RUNS_DIR,
        "telemetry": fd / parts_dir_name(which, "telemetry"),
        "events": fd / parts_dir_name(which, "events"),
        "compacted_telemetry": fd / compacted_name(which, "telemetry"),
        "compacted_events": fd / compacted_name(which, "events"),
    }

"""Crash recovery: finalising the runs that died.

A run is dead when its status by evidence (:mod:`flightlog.runs.status`) says so.
:func:`recover` finalises such runs (and runs whose close failed and left
segments): it merges segments, removes temp files, and rewrites the manifest
with what was recovered. It never touches a live run
and is idempotent.

The one-writer claim: a recorder holds an exclusive ``flock`` on its run's lock
file (``.flightlog.lock`` in a run folder, ``.part-<run_id>-flightlog.lock``
beside a dev/tuner run's parts) until it closes or its process dies. Before it
changes a run, :func:`recover` takes the same lock without waiting: a run whose
lock is held has a live writer on this host (reported in ``live``, untouched)
or is being recovered by another ``recover`` (skipped: that one reports it).
The protocol is the one of ``flightlog-core``'s ``claim.rs``: lock, check that
the path still names the locked file, write ``pid= host= since=``; to let go,
unlink while holding, then unlock.

Compaction (:func:`flightlog.runs.compact.compact`) removes the leftovers recovery finds too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .._errors import FlightlogError
from .._regular import LINK_REASON, NotRegularFileError
from .compact import _listed, _remove_listed_leftovers, _sweep_compaction_temps
from .ids import ROOT_ENV, file_lock, resolve_root
from .layout import (
    DEFAULT_RUN_PREFIX,
    EVENTS_FILE,
    FLOWS_DIR,
    MANIFEST_NAME,
    RUN_LOCK_NAME,
    RUNS_DIR,
    SEGMENTS_DIR,
    SPOOL_DIR_NAME,
    TELEMETRY_FILE,
    compacted_name,
    part_lock_name,
    part_temp_prefix,
    parts_dir_name,
)
from .manifest import fsync_dir, read_manifest, utc_now_iso, write_manifest
from .status import (
    _TEMP_MARKER,
    DEFAULT_STALE_AFTER,
    _core,
    _newest,
    _run_files_for_evidence,
    _scandir,
    crashed_manifest,
    part_pattern,
    run_status,
)

__all__ = ["RecoverReport", "recover"]

_RUN_LOCK_NAME = RUN_LOCK_NAME
# A recorder's spool (rows not yet in a segment, in files that outlive the
# process): beside its claim file, named after it.
_RUN_SPOOL_NAME = SPOOL_DIR_NAME


def _part_lock_path(parts_dir: Path, run_id: str) -> Path:
    """The claim file of a dev/tuner run's parts (``claim.rs``'s ``lock_path``)."""
    return parts_dir / part_lock_name(run_id)


def _holder(text: str) -> tuple[str, bool]:
    """(who holds a claim, whether it is a recover) from a lock file's text."""
    kv = dict(w.split("=", 1) for w in text.split() if "=" in w)
    if "pid" not in kv:
        return "another writer (taking the claim right now)", False
    who = f"process {kv['pid']} on host {kv.get('host', '?')} since {kv.get('since', '?')}"
    return who, kv.get("role") == "recover"


def _holder_text(fd: int) -> str:
    """The text of a lock file whose claim another process holds. Its holder writes it
    right after taking the lock: an empty file is read again briefly, so that a recover
    that has just taken the claim is not mistaken for a live writer."""
    text = b""
    for _ in range(100):
        text = os.pread(fd, 4096, 0)
        if text:
            break
        time.sleep(0.002)
    return text.decode("utf-8", "replace")


@contextlib.contextmanager
def _claim(lock_path: Path) -> Iterator[tuple[str, bool] | None]:
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


# --------------------------------------------------------------------------- report


@dataclasses.dataclass
class RecoverReport:
    """What :func:`recover` did.

    ``recovered``: one dict per run finalised (``run_id``, ``flow_name``, ``mode``,
    ``path``, ``previous_status``, ``status``, ``telemetry_rows``, ``event_rows``,
    ``segments_merged``, ``temp_files_removed``, ``leftover_segments_removed``).
    ``live``: paths of running runs left alone. ``leftover_parts_removed``: parts
    already held by a compacted file. ``temp_files_removed``: temp files of
    compactions that died. ``errors``: ``{"path", "error"}`` per run
    that could not be handled (the others still are).
    """

    root: str
    recovered: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    live: list[str] = dataclasses.field(default_factory=list)
    leftover_parts_removed: int = 0
    temp_files_removed: int = 0
    errors: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _repr_html_(self) -> str:
        from .._html import grid

        cols = ["run_id", "flow_name", "mode", "previous_status", "status", "telemetry_rows", "event_rows"]
        rows = [[r.get(c, "") for c in cols] for r in self.recovered]
        return grid(cols, rows, title=str(self))

    def __str__(self) -> str:
        return (
            f"recovered {len(self.recovered)} run(s), {len(self.live)} live, "
            f"{self.leftover_parts_removed} leftover part(s) removed, {len(self.errors)} error(s)"
        )


def _iso(ts: float | None) -> str:
    if ts is None:
        return utc_now_iso()
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _file_entry(path: Path, base: Path, kind: str) -> dict[str, Any]:
    _regular_files_only(path, ())  # never block on a FIFO part
    return {
        "path": os.path.relpath(path, base),
        "kind": kind,
        "rows": int(_core().parquet_rows(str(path))),
        "bytes": path.stat().st_size,
    }


# --------------------------------------------------------------------------- recover


def _recover_run_folder(run_dir: Path, stale_after: float, report: RecoverReport) -> None:
    # Decide without the claim first (most folders are finished: taking the
    # claim would create and remove a lock file in each), then again under it:
    # another recover may have finalised the run meanwhile.
    if not _recover_run_folder_plan(run_dir, stale_after, report, dry=True):
        return
    with _claim(run_dir / _RUN_LOCK_NAME) as busy:
        if busy is not None:
            _holder_text, is_recover = busy
            if not is_recover:  # a live writer on this host; another recover reports the run itself
                report.live.append(str(run_dir))
            return
        _recover_run_folder_plan(run_dir, stale_after, report, dry=False)


def _recover_run_folder_plan(run_dir: Path, stale_after: float, report: RecoverReport, *, dry: bool) -> bool:
    """Whether the folder needs recovering; unless ``dry``, recover it (claim held)."""
    mpath = run_dir / MANIFEST_NAME
    try:
        manifest = read_manifest(mpath)
    except FileNotFoundError:
        manifest = None
    # A spool with a recorder's folder in it may hold rows; an empty one (a close
    # killed while removing it) holds nothing and is no reason to recover again.
    has_segments = (run_dir / SEGMENTS_DIR).is_dir() or any(e.is_dir() for e in _scandir(run_dir / _RUN_SPOOL_NAME))
    if manifest is None:
        # Claimed, but the process died before its manifest was published (or
        # not a flightlog run at all): only act on an old folder with segments
        # (or a spool: rows recorded before the first flush).
        newest = _newest([run_dir, *(Path(e.path) for e in _scandir(run_dir / SEGMENTS_DIR))])
        if not has_segments or newest is None or time.time() - newest <= stale_after:
            return False
        name = run_dir.name
        run_id = name[len(DEFAULT_RUN_PREFIX) :] if name.startswith(DEFAULT_RUN_PREFIX) else name
        manifest = {"run_id": run_id, "mode": "run", "status": "running"}
        previous = "unknown"
        status = "crashed"
    else:
        previous = str(manifest.get("status", "unknown"))
        status = run_status(manifest, run_dir, stale_after=stale_after)
        if status == "running":
            if dry:
                report.live.append(str(run_dir))
            return False
        needs_work = has_segments or any(_TEMP_MARKER in e.name and e.name.startswith(".") for e in _scandir(run_dir))
        if previous != "running" and not needs_work:
            return False  # finished, failed or already recovered
        newest = _newest(_run_files_for_evidence(manifest, run_dir))
    if dry:
        return True
    _regular_files_only(run_dir)  # a FIFO would block the merge (NotRegularFileError is reported)
    rep = dict(_core().recover_run_dir(str(run_dir)))
    m = dict(manifest)
    files = [
        _file_entry(run_dir / name, run_dir, kind)
        for name, kind in ((TELEMETRY_FILE, "telemetry"), (EVENTS_FILE, "events"))
        if (run_dir / name).exists()
    ]
    if previous in ("running", "unknown"):
        m = crashed_manifest(
            manifest,
            finished_at=_iso(newest),
            telemetry_rows=int(rep.get("telemetry_rows", 0)),
            event_rows=int(rep.get("event_rows", 0)),
        )
    m["files"] = files
    m["recovery"] = {"recovered_at": utc_now_iso(), **{k: int(v) for k, v in rep.items()}}
    write_manifest(mpath, m)
    report.recovered.append(
        {
            "run_id": str(m.get("run_id", run_dir.name)),
            "flow_name": m.get("flow_name"),
            "mode": "run",
            "path": str(run_dir),
            "previous_status": previous,
            "status": m["status"],
            **{k: int(v) for k, v in rep.items()},
        }
    )
    return True


def _regular_files_only(where: Path, names: tuple[str, ...] = (TELEMETRY_FILE, EVENTS_FILE)) -> None:
    """Raises NotRegularFileError (an OSError, reported per run) for a FIFO, device or link
    among the files recovery would open: ``where`` itself when no ``names``, else those in it."""
    from .._regular import check

    paths = [where / n for n in names] + [Path(e) for e in _scandir(where / SEGMENTS_DIR)] if names else [where]
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            check(p)


def _recover_append_run(mfile: Path, stale_after: float, report: RecoverReport) -> None:
    manifest = read_manifest(mfile)
    previous = str(manifest.get("status", "unknown"))
    if previous != "running":
        return
    if run_status(manifest, mfile, stale_after=stale_after) == "running":
        report.live.append(str(mfile))
        return
    parts_dir = mfile.parent.parent / parts_dir_name(str(manifest.get("mode", "dev")), "telemetry")
    run_id = str(manifest.get("run_id", mfile.stem))
    if not parts_dir.is_dir():
        _recover_append_run_claimed(mfile, stale_after, report)
        return
    with _claim(_part_lock_path(parts_dir, run_id)) as busy:
        if busy is not None:
            if not busy[1]:
                report.live.append(str(mfile))
            return
        # Again under the claim: another recover may have finished it meanwhile.
        manifest = read_manifest(mfile)
        if str(manifest.get("status", "unknown")) != "running":
            return
        # Rows and events the dead recorder had not yet written: one last part each.
        mode = str(manifest.get("mode", "dev"))
        _core().salvage_parts(str(parts_dir), str(parts_dir.parent / parts_dir_name(mode, "events")), run_id)
        _recover_append_run_claimed(mfile, stale_after, report)


def _recover_append_run_claimed(mfile: Path, stale_after: float, report: RecoverReport) -> None:
    manifest = read_manifest(mfile)
    previous = str(manifest.get("status", "unknown"))
    flow = mfile.parent.parent
    mode = str(manifest.get("mode", "dev"))
    run_id = str(manifest.get("run_id", mfile.stem))
    pat = part_pattern(run_id)
    newest = _newest(_run_files_for_evidence(manifest, mfile))
    temp_removed = 0
    files: list[dict[str, Any]] = []
    rows = {"telemetry": 0, "events": 0}
    for kind in ("telemetry", "events"):
        d = flow / parts_dir_name(mode, kind)
        removed_here = 0
        for e in _scandir(d):
            if e.name.startswith(part_temp_prefix(run_id)) and _TEMP_MARKER in e.name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
                    removed_here += 1
        if removed_here:
            fsync_dir(d)
        temp_removed += removed_here
        for e in sorted(_scandir(d), key=lambda e: e.name):
            if pat.match(e.name):
                entry = _file_entry(Path(e.path), mfile.parent, kind)
                files.append(entry)
                rows[kind] += entry["rows"]
        # Parts of this run already merged by compact().
        compacted = flow / compacted_name(mode, kind)
        for name, n in _listed(compacted):
            if pat.match(name) and not (d / name).exists() and n is not None:
                rows[kind] += int(n)
    m = crashed_manifest(
        manifest, finished_at=_iso(newest), telemetry_rows=rows["telemetry"], event_rows=rows["events"]
    )
    m["files"] = files
    m["recovery"] = {"recovered_at": utc_now_iso(), "temp_files_removed": temp_removed}
    write_manifest(mfile, m)
    report.recovered.append(
        {
            "run_id": run_id,
            "flow_name": m.get("flow_name"),
            "mode": mode,
            "path": str(mfile),
            "previous_status": previous,
            "status": "crashed",
            "telemetry_rows": rows["telemetry"],
            "event_rows": rows["events"],
            "segments_merged": 0,
            "temp_files_removed": temp_removed,
            "leftover_segments_removed": 0,
        }
    )


_FLOW_SUBDIRS = (RUNS_DIR, *(parts_dir_name(m, k) for m in ("dev", "tuner") for k in ("telemetry", "events")))


def _symlinked(path: Path, children: tuple[str, ...]) -> Path | None:
    """``path`` or the first of its ``children`` that is a symbolic link, else None.

    Recovery writes, renames and deletes files: through a link it could do so
    outside the root (or merge another run's segments into this one), so links
    are never followed.
    """
    for p in (path, *(path / c for c in children)):
        if p.is_symlink():
            return p
    return None


def _link_message(link: Path) -> str:
    return (
        f"{link} is a symbolic link (to {os.readlink(link)!r}); recover never follows links, so that it cannot "
        "write or delete outside the root: move the run into the root instead"
    )


def _is_output_file(path: Any) -> bool:
    from .._recorder import is_output_file

    return is_output_file(path)


def _recover_output_file(file: Path) -> RecoverReport:
    """``recover("x.parquet")``: finalise a killed output-file recording (``FlightRecorder("x.parquet")``)."""
    report = RecoverReport(root=str(file))
    done = _core().recover_output_file(file)
    if done is None:
        report.live.append(str(file))
    elif done["segments_merged"] or done["temp_files_removed"] or done["leftover_segments_removed"]:
        report.recovered.append({"path": str(file), "previous_status": "running", "status": "recovered", **done})
    return report


def recover(
    base_path: str | os.PathLike[str] | None = None,
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
    storage_options: Mapping[str, Any] | None = None,
) -> RecoverReport:
    """Finalise every crashed run under the root; return a :class:`RecoverReport`.

    Run folders: segments are merged into ``telemetry.parquet``/``events.parquet``,
    temp files removed, and the manifest says ``crashed`` with the recovered
    counts and files (a run whose ``close()`` failed keeps ``failed`` and gets its
    files). Dev/tuner runs: their parts are already final; stray temp files are
    removed and the per-run manifest is marked ``crashed``. Parts that a
    compacted file already holds are deleted. Live runs are never touched;
    running it twice changes nothing the second time.

    ``base_path`` may be an output file (a path ending in ``.parquet`` given to
    :class:`FlightRecorder`): its segments are merged into that file, and a
    killed ``overwrite=True`` recording replaces it, as its close would have.

    ``base_path`` may be an object-store root (``s3://bucket/prefix``, settings
    from ``AWS_*`` and ``storage_options``): runs of other hosts count as alive
    until nothing of theirs was written for ``stale_after`` seconds.
    """
    from .._s3 import is_object_url

    url = base_path if base_path is not None else os.environ.get(ROOT_ENV)
    if is_object_url(url):
        from .s3tree import ObjectTree, recover_tree

        tree = ObjectTree(str(url), storage_options)
        report = RecoverReport(root=tree.url())
        recover_tree(tree, stale_after, report)
        return report
    if storage_options is not None:
        raise ValueError(f"storage_options is only for object-store roots (s3://...), not {base_path!r}")
    if url is not None and _is_output_file(url):
        return _recover_output_file(Path(os.fspath(url)))
    root = resolve_root(base_path, create=False)
    report = RecoverReport(root=str(root))
    if not root.is_dir():
        return report
    for e in sorted(_scandir(root), key=lambda e: e.name):
        if e.name.startswith(".") or e.name == FLOWS_DIR or not e.is_dir():
            continue
        link = _symlinked(Path(e.path), (SEGMENTS_DIR,))
        if link is not None:
            if (Path(e.path) / MANIFEST_NAME).exists() or (Path(e.path) / SEGMENTS_DIR).exists():
                report.errors.append({"path": e.path, "error": _link_message(link)})
            continue
        try:
            _recover_run_folder(Path(e.path), stale_after, report)
        except (OSError, FlightlogError, ValueError) as err:
            report.errors.append({"path": e.path, "error": f"{type(err).__name__}: {err}"})
    flows_link = _symlinked(root / FLOWS_DIR, ())
    for flow in [] if flows_link else sorted(_scandir(root / FLOWS_DIR), key=lambda e: e.name):
        if not flow.is_dir() or flow.name.startswith("."):
            continue
        fpath = Path(flow.path)
        link = _symlinked(fpath, _FLOW_SUBDIRS)
        if link is not None:
            report.errors.append({"path": flow.path, "error": _link_message(link)})
            continue
        for mf in sorted(_scandir(fpath / RUNS_DIR), key=lambda e: e.name):
            if mf.name.startswith(".") or not mf.name.endswith(".toml"):
                continue
            try:
                _recover_append_run(Path(mf.path), stale_after, report)
            except (OSError, FlightlogError, ValueError) as err:
                report.errors.append({"path": mf.path, "error": f"{type(err).__name__}: {err}"})
        with file_lock(fpath / ".compact.lock", blocking=False) as locked:
            if not locked:
                # A compaction (or another recover) is on this flow: it removes
                # the leftovers itself; racing it would delete under it.
                continue
            for which in ("dev", "tuner"):
                report.temp_files_removed += _sweep_compaction_temps(fpath, which)
            for which in ("dev", "tuner"):
                for kind in ("telemetry", "events"):
                    try:
                        report.leftover_parts_removed += _remove_listed_leftovers(
                            fpath / parts_dir_name(which, kind), fpath / compacted_name(which, kind)
                        )
                    except (OSError, FlightlogError, ValueError) as err:
                        report.errors.append(
                            {"path": str(fpath / compacted_name(which, kind)), "error": f"{type(err).__name__}: {err}"}
                        )
    return report

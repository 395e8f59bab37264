"""Evidence-based run status, crash recovery and compaction of append-mode parts.

Status by evidence (:func:`run_status`): a manifest that says ``running`` is
believed only while its process can be alive:

- same host (and same boot): the pid must exist, not be a zombie, and (Linux)
  have the start time recorded in the manifest, so a reused pid does not keep a
  dead run "running";
- another host: some file of the run (manifest, segment, part, temp file) must
  have changed within ``stale_after`` seconds.

Otherwise the run is ``crashed``. :func:`recover` finalises such runs (and runs
whose close failed and left segments): it merges segments, removes temp files,
and rewrites the manifest with what was recovered. It never touches a live run
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

:func:`compact` merges a flow's published parts into one file. Crash safety: the
merged file is published atomically and lists the parts it holds
(``flightlog.segments``); parts are deleted only after it is durable, and a part
still present that the merged file lists is a leftover, deleted by the next
``compact`` or ``recover`` (readers must skip such parts). Parts published while
compaction runs are not in its snapshot and are kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import fcntl
import json
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from ._errors import FlightlogError
from ._manifest import (
    MANIFEST_NAME,
    boot_id,
    fsync_dir,
    process_start_ticks,
    read_manifest,
    utc_now_iso,
    write_manifest,
)
from ._names import validate_name
from ._regular import LINK_REASON, NotRegularFileError, problem
from ._runs import DEFAULT_RUN_PREFIX, ROOT_ENV, file_lock, flow_paths, resolve_root

__all__ = [
    "DEFAULT_STALE_AFTER",
    "RecoverReport",
    "compact",
    "part_pattern",
    "process_alive",
    "recover",
    "run_status",
]

#: Seconds without any new file after which a ``running`` run of another host counts as crashed.
DEFAULT_STALE_AFTER = 600.0

_TEMP_MARKER = ".tmp-"
_PART_RE = re.compile(r"^part-(?P<run_id>.+)-(?P<seq>\d{6,})\.parquet$")
_SEGMENTS_KEY = "flightlog.segments"
_SEGMENT_ROWS_KEY = "flightlog.segment_rows"
_RUN_LOCK_NAME = ".flightlog.lock"
# A recorder's spool (rows not yet in a segment, in files that outlive the
# process): beside its claim file, named after it.
_RUN_SPOOL_NAME = ".flightlog.spool"


def _part_lock_path(parts_dir: Path, run_id: str) -> Path:
    """The claim file of a dev/tuner run's parts (``claim.rs``'s ``lock_path``)."""
    return parts_dir / f".part-{run_id}-flightlog.lock"


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


def part_pattern(run_id: str) -> re.Pattern[str]:
    """Regex matching the published part files of ``run_id`` (``part-<run_id>-NNNNNN.parquet``)."""
    return re.compile(rf"^part-{re.escape(run_id)}-\d{{6,}}\.parquet$")


def _core() -> Any:
    from . import _core

    return _core


def _kv(path: Path) -> dict[str, str]:
    return dict(_core().parquet_kv(str(path)))


# --------------------------------------------------------------------------- evidence


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] in (b"Z", b"X")
    except (OSError, ValueError):
        return False


def process_alive(prov: Mapping[str, Any]) -> bool | None:
    """Whether the process described by a manifest's ``provenance`` is alive:
    ``True``/``False`` on the same host, ``None`` when this host cannot tell
    (another host, no pid)."""
    host, pid = prov.get("host"), prov.get("pid")
    if host != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if os.name == "nt":
        # os.kill(pid, 0) is TerminateProcess on Windows: never probe there.
        # Unknown, so the status rests on the files' age (docs/PLATFORMS.md).
        return None
    recorded_boot, this_boot = prov.get("boot_id"), boot_id()
    if recorded_boot and this_boot and recorded_boot != this_boot:
        return False  # the host rebooted since
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else
        except OSError:
            return None
        if _zombie(pid):
            return False
    ticks = prov.get("pid_start_ticks")
    if isinstance(ticks, int):
        current = process_start_ticks(pid)
        if current is not None and current != ticks:
            return False  # the pid was reused
    return True


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _newest(paths: list[Path]) -> float | None:
    times = [t for t in map(_mtime, paths) if t is not None]
    return max(times) if times else None


def _scandir(d: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(d) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _run_files_for_evidence(manifest: Mapping[str, Any], where: Path) -> list[Path]:
    mode = manifest.get("mode", "run")
    if mode == "run":
        files = [where, where / MANIFEST_NAME, where / "segments"]
        files += [Path(e.path) for e in _scandir(where / "segments")]
        return files
    flow, manifest_file = _flow_locations(manifest, where)
    run_id = str(manifest.get("run_id", ""))
    pat = part_pattern(run_id)
    files = [manifest_file]
    for sub in (f"{mode}_telemetry", f"{mode}_events"):
        for e in _scandir(flow / sub):
            name = e.name
            if pat.match(name) or (name.startswith(f".part-{run_id}-") and _TEMP_MARKER in name):
                files.append(Path(e.path))
    return files


def _flow_locations(manifest: Mapping[str, Any], where: Path) -> tuple[Path, Path]:
    """(flow folder, per-run manifest file) of a dev/tuner run given either."""
    if where.suffix == ".toml" or where.is_file():
        return where.parent.parent, where
    return where, where / "runs" / f"{manifest.get('run_id')}.toml"


def run_status(
    manifest: Mapping[str, Any],
    run_dir: str | os.PathLike[str],
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
    now: float | None = None,
) -> str:
    """The status of a run by evidence: the manifest's ``status``, except that
    ``running`` becomes ``crashed`` when its process is gone (see the module doc).

    ``run_dir`` is the run folder (mode ``"run"``), or for dev/tuner runs the
    per-run manifest file ``flows/<flow>/runs/<run_id>.toml`` or the flow folder.
    A manifest without a status reads as ``"unknown"``.
    """
    return status_by_evidence(
        manifest, lambda: _newest(_run_files_for_evidence(manifest, Path(run_dir))), stale_after=stale_after, now=now
    )


def status_by_evidence(
    manifest: Mapping[str, Any],
    newest: Callable[[], float | None],
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
    now: float | None = None,
) -> str:
    """:func:`run_status` for any storage: ``newest()`` gives the time (seconds since
    the epoch) of the run's newest file or object, or ``None`` if it has none; it is
    only asked when the process cannot be (another host, no pid)."""
    status = manifest.get("status")
    if status != "running":
        return str(status) if status else "unknown"
    prov = manifest.get("provenance") or {}
    alive = process_alive(prov) if isinstance(prov, Mapping) else None
    if alive is not None:
        return "running" if alive else "crashed"
    t = newest()
    if t is None:
        return "crashed"
    return "crashed" if (time.time() if now is None else now) - t > stale_after else "running"


def crashed_manifest(
    manifest: Mapping[str, Any], *, finished_at: str, telemetry_rows: int, event_rows: int
) -> dict[str, Any]:
    """The manifest of a run found dead: ``crashed``, when it last wrote, what was recovered."""
    m = dict(manifest)
    m["status"] = "crashed"
    m["finished_at"] = finished_at
    m.setdefault("error_message", _died_message(manifest))
    counts = dict(m.get("counts") or {})
    counts["rows_written"] = telemetry_rows
    counts["events"] = event_rows
    m["counts"] = counts
    return m


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
        from ._html import grid

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


def _died_message(manifest: Mapping[str, Any]) -> str:
    prov = manifest.get("provenance") or {}
    who = f"process {prov.get('pid', '?')} on {prov.get('host', '?')}"
    return f"{who} ended without closing the run; finalised by flightlog.recover"


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
    has_segments = (run_dir / "segments").is_dir() or any(e.is_dir() for e in _scandir(run_dir / _RUN_SPOOL_NAME))
    if manifest is None:
        # Claimed, but the process died before its manifest was published (or
        # not a flightlog run at all): only act on an old folder with segments
        # (or a spool: rows recorded before the first flush).
        newest = _newest([run_dir, *(Path(e.path) for e in _scandir(run_dir / "segments"))])
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
        for name, kind in (("telemetry.parquet", "telemetry"), ("events.parquet", "events"))
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


def _regular_files_only(where: Path, names: tuple[str, ...] = ("telemetry.parquet", "events.parquet")) -> None:
    """Raises NotRegularFileError (an OSError, reported per run) for a FIFO, device or link
    among the files recovery would open: ``where`` itself when no ``names``, else those in it."""
    from ._regular import check

    paths = [where / n for n in names] + [Path(e) for e in _scandir(where / "segments")] if names else [where]
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            check(p)


def _listed(compacted: Path) -> list[tuple[str, int | None]]:
    """(name, rows) of the parts a compacted file lists."""
    if not compacted.exists():
        return []
    kv = _kv(compacted)
    names = json.loads(kv.get(_SEGMENTS_KEY, "[]"))
    rows = json.loads(kv.get(_SEGMENT_ROWS_KEY, "null")) or [None] * len(names)
    return list(zip(names, rows, strict=False))


def _remove_listed_leftovers(parts_dir: Path, compacted: Path) -> int:
    """Delete parts that ``compacted`` already holds (a compaction died before
    deleting them). A part is deleted only if it is older than the compacted file
    and has the row count listed for it: a part that merely has a listed name
    (a run id reused after its runs/ manifest was removed) is kept."""
    listed = _listed(compacted)
    if not listed:
        return 0
    compacted_mtime = compacted.stat().st_mtime_ns
    removed = 0
    for name, rows in listed:
        if not _PART_RE.match(name):
            continue  # e.g. the previous compacted file itself
        part = parts_dir / name
        try:
            if part.stat().st_mtime_ns > compacted_mtime:
                continue
            if rows is not None and int(_core().parquet_rows(str(part))) != int(rows):
                continue
            os.unlink(part)
            removed += 1
        except FileNotFoundError:
            continue
    if removed:
        fsync_dir(parts_dir)
    return removed


def _recover_append_run(mfile: Path, stale_after: float, report: RecoverReport) -> None:
    manifest = read_manifest(mfile)
    previous = str(manifest.get("status", "unknown"))
    if previous != "running":
        return
    if run_status(manifest, mfile, stale_after=stale_after) == "running":
        report.live.append(str(mfile))
        return
    parts_dir = mfile.parent.parent / f"{manifest.get('mode', 'dev')}_telemetry"
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
        _core().salvage_parts(str(parts_dir), str(parts_dir.parent / f"{mode}_events"), run_id)
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
        d = flow / f"{mode}_{kind}"
        removed_here = 0
        for e in _scandir(d):
            if e.name.startswith(f".part-{run_id}-") and _TEMP_MARKER in e.name:
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
        compacted = flow / f"{mode}_{kind}.parquet"
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


_FLOW_SUBDIRS = ("runs", "dev_telemetry", "dev_events", "tuner_telemetry", "tuner_events")


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
    from ._recorder import is_output_file

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
    from ._s3 import is_object_url

    url = base_path if base_path is not None else os.environ.get(ROOT_ENV)
    if is_object_url(url):
        from ._objtree import ObjectTree, recover_tree

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
        if e.name.startswith(".") or e.name == "flows" or not e.is_dir():
            continue
        link = _symlinked(Path(e.path), ("segments",))
        if link is not None:
            if (Path(e.path) / MANIFEST_NAME).exists() or (Path(e.path) / "segments").exists():
                report.errors.append({"path": e.path, "error": _link_message(link)})
            continue
        try:
            _recover_run_folder(Path(e.path), stale_after, report)
        except (OSError, FlightlogError, ValueError) as err:
            report.errors.append({"path": e.path, "error": f"{type(err).__name__}: {err}"})
    flows_link = _symlinked(root / "flows", ())
    for flow in [] if flows_link else sorted(_scandir(root / "flows"), key=lambda e: e.name):
        if not flow.is_dir() or flow.name.startswith("."):
            continue
        fpath = Path(flow.path)
        link = _symlinked(fpath, _FLOW_SUBDIRS)
        if link is not None:
            report.errors.append({"path": flow.path, "error": _link_message(link)})
            continue
        for mf in sorted(_scandir(fpath / "runs"), key=lambda e: e.name):
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
                            fpath / f"{which}_{kind}", fpath / f"{which}_{kind}.parquet"
                        )
                    except (OSError, FlightlogError, ValueError) as err:
                        report.errors.append(
                            {"path": str(fpath / f"{which}_{kind}.parquet"), "error": f"{type(err).__name__}: {err}"}
                        )
    return report


# --------------------------------------------------------------------------- compact


def _schema_json(kv: Mapping[str, str]) -> Any:
    text = kv.get("flightlog.schema")
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _running_run_ids(runs_dir: Path) -> set[str]:
    """Run ids of the flow's dev/tuner runs still running by evidence: their
    recorders still own their parts and merge nothing, but must not see them vanish."""
    running = set()
    for e in _scandir(runs_dir):
        if not e.name.endswith(".toml") or e.name.startswith("."):
            continue
        try:
            manifest = read_manifest(e.path)
        except Exception:
            continue
        if run_status(manifest, e.path) == "running":
            running.add(str(manifest.get("run_id", e.name[: -len(".toml")])))
    return running


def _compact_kind(parts_dir: Path, out: Path, running: Collection[str] = ()) -> dict[str, Any]:
    result: dict[str, Any] = {"path": str(out), "parts_merged": 0, "rows": 0, "bytes": 0, "leftovers_removed": 0}
    result["leftovers_removed"] = _remove_listed_leftovers(parts_dir, out)
    skipped: list[dict[str, str]] = []
    parts = []
    for e in _scandir(parts_dir):
        m = _PART_RE.match(e.name)
        if m is None:
            continue
        try:
            # A symbolic link (perhaps to another run's file: its rows would be merged
            # and counted twice) or a FIFO is reported, never merged or opened.
            why = problem(e.path)
        except FileNotFoundError:
            continue
        if why is not None:
            skipped.append({"path": e.path, "reason": why})
            continue
        if m.group("run_id") in running:
            skipped.append({"path": e.path, "reason": "its run is still running; compact again after it ends"})
            continue
        parts.append(Path(e.path))
    parts.sort()
    if parts:
        reference = _schema_json(_kv(out)) if out.exists() else _schema_json(_kv(parts[0]))
        chosen = []
        for p in parts:
            if _schema_json(_kv(p)) == reference:
                chosen.append(p)
            else:
                skipped.append({"path": str(p), "reason": "its schema differs from the compacted file's"})
        if chosen:
            inputs = ([out] if out.exists() else []) + chosen
            merged = dict(_core().merge_parquet(str(out), [str(p) for p in inputs]))
            # The merged file is durable and lists `chosen`: only now delete them.
            for p in chosen:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            fsync_dir(parts_dir)
            result.update(parts_merged=len(chosen), rows=int(merged["rows"]), bytes=int(merged["bytes"]))
    if not result["parts_merged"] and out.exists():
        result.update(rows=int(_core().parquet_rows(str(out))), bytes=out.stat().st_size)
    result["skipped"] = skipped
    return result


def _sweep_compaction_temps(flow: Path, which: str) -> int:
    """Remove temp files of a compaction that died (call with the compact lock held)."""
    removed = 0
    for e in _scandir(flow):
        if e.name.startswith((f".{which}_telemetry.parquet{_TEMP_MARKER}", f".{which}_events.parquet{_TEMP_MARKER}")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)
                removed += 1
    if removed:
        fsync_dir(flow)
    return removed


def compact(base_path: str | os.PathLike[str] | None, flow_name: str, which: str = "dev") -> dict[str, Any]:
    """Merge a flow's published ``which`` parts (``"dev"`` or ``"tuner"``) into
    ``flows/<flow>/<which>_telemetry.parquet`` (and events into
    ``<which>_events.parquet``), together with what an earlier compaction merged.

    Returns ``{"flow_name", "which", "telemetry": {...}, "events": {...}}``, each
    with ``path``, ``parts_merged``, ``rows`` (in the compacted file), ``bytes``,
    ``leftovers_removed`` and ``skipped`` (parts whose schema differs, with the
    reason; they stay as they are). One compaction per flow at a time (file
    lock); see the module doc for crash safety.
    """
    validate_name("flow_name", flow_name)
    from ._s3 import is_object_url

    if is_object_url(base_path if base_path is not None else os.environ.get(ROOT_ENV)):
        # Object stores cannot replace a compacted file in place (publishing is
        # create-only), and DuckDB/DuckLake read the parts where they are.
        raise ValueError(
            "compact works on local roots; on an object store the parts stay as they are "
            "(consolidate them with DuckDBManager, which reads them in place)"
        )
    if which not in ("dev", "tuner"):
        raise ValueError(f"which must be 'dev' or 'tuner', got {which!r}")
    root = resolve_root(base_path, create=False)
    paths = flow_paths(root, flow_name, which)
    if not paths["flow"].is_dir():
        raise FileNotFoundError(f"no flow {flow_name!r} under {root} ({paths['flow']} does not exist)")
    report: dict[str, Any] = {"flow_name": flow_name, "which": which}
    with file_lock(paths["flow"] / ".compact.lock"):
        report["temp_files_removed"] = _sweep_compaction_temps(paths["flow"], which)
        running = _running_run_ids(paths["runs"])
        for kind in ("telemetry", "events"):
            report[kind] = _compact_kind(paths[kind], paths[f"compacted_{kind}"], running)
    return report

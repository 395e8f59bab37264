"""Crash recovery: finalising the runs that died.

A run is dead when its status by evidence (:mod:`flightlog.runs.status`) says so.
:func:`recover` finalises such runs (and runs whose close failed and left
segments): it merges segments, removes temp files, and rewrites the manifest
with what was recovered. It never touches a live run
and is idempotent.

One procedure for every kind of root: it asks the root's
:class:`~flightlog.runs.tree.RootTree` (local folder or ``s3://``) for what differs.

The one-writer claim (:mod:`flightlog.runs.claim`): before it changes a local run,
recovery takes the lock its recorder holds, without waiting: a run whose lock is
held has a live writer on this host (reported in ``live``, untouched) or is being
recovered by another ``recover`` (skipped: that one reports it). An object store
has no locks: the recovered manifest is put conditionally on the version read, and
a run that changed it meanwhile (it was alive after all) keeps its own (``live``).

Compaction (:func:`flightlog.runs.compact.compact`) removes the leftovers recovery finds too.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import posixpath
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ConflictError, FlightlogError
from .ids import ROOT_ENV, resolve_root
from .layout import (
    DEFAULT_RUN_PREFIX,
    EVENTS_FILE,
    FLOWS_DIR,
    MANIFEST_NAME,
    RUN_LOCK_NAME,
    SEGMENTS_DIR,
    SPOOL_DIR_NAME,
    TELEMETRY_FILE,
    part_pattern,
    parts_dir_name,
)
from .manifest import boot_id, utc_now_iso
from .status import DEFAULT_STALE_AFTER, _core, crashed_manifest, process_alive, status_by_evidence
from .tree import FLOWS_RECORDING_PROBLEM, LocalRootTree, RootTree

if TYPE_CHECKING:
    from .s3tree import ObjectTree

__all__ = ["RecoverReport", "recover", "recover_tree"]


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


# --------------------------------------------------------------------------- recover


def recover_tree(tree: RootTree, stale_after: float, report: RecoverReport) -> None:
    """Finalise the dead runs of ``tree`` into ``report`` (see :func:`recover`).

    On an object store, incomplete multipart uploads a crash left are invisible; a
    bucket lifecycle rule (AbortIncompleteMultipartUpload) reclaims them."""
    with tree.snapshot():
        for folder, problem in tree.recovery_folders():
            if problem is not None:
                report.errors.append({"path": tree.url(folder), "error": problem})
                continue
            try:
                _recover_run_folder(tree, folder, stale_after, report)
            except (OSError, FlightlogError, ValueError) as err:
                report.errors.append({"path": tree.url(folder), "error": f"{type(err).__name__}: {err}"})
        for flow, problem, manifests in tree.recovery_flows():
            if problem is not None:
                report.errors.append({"path": tree.url(f"{FLOWS_DIR}/{flow}"), "error": problem})
                continue
            for mrel in manifests:
                try:
                    _recover_append_run(tree, flow, mrel, stale_after, report)
                except (OSError, FlightlogError, ValueError) as err:
                    report.errors.append({"path": tree.url(mrel), "error": f"{type(err).__name__}: {err}"})
            temps, leftovers, errors = tree.sweep_flow(flow)
            report.temp_files_removed += temps
            report.leftover_parts_removed += leftovers
            report.errors.extend(errors)


def _status(tree: RootTree, manifest: Mapping[str, Any], where_rel: str, stale_after: float) -> str:
    """The run's status by evidence: its process on this host, else its newest file."""
    return status_by_evidence(manifest, lambda: tree.newest_time(manifest, where_rel), stale_after=stale_after)


def _publish(tree: RootTree, rel: str, manifest: dict[str, Any], e_tag: str | None, existed: bool) -> bool:
    """Writes the recovered manifest; False if the run changed it meanwhile (it was
    alive after all and closed): then the run's own manifest stands."""
    try:
        if existed:
            tree.update_manifest(rel, manifest, e_tag)
        else:
            tree.create_manifest(rel, manifest)
    except (ConflictError, FileExistsError):
        return False
    return True


#: Why a recording in a hidden folder (or under a hidden prefix) is left alone.
HIDDEN_RECORDING_PROBLEM = (
    "holds a recording, but a hidden folder is never a run folder (a `.NAME.parquet.flightlog` folder "
    "belongs to the output file NAME.parquet: recover that file); once its recorder is closed or gone, "
    "rename it, then recover it"
)


def _recovered_meanwhile(tree: RootTree, folder: str) -> bool:
    """Whether another recover finalised the run while this one worked on it (its
    manifest now has a ``recovery`` record): on an object store nothing keeps two
    recovers off one run (no claims), and the one that loses has nothing to say."""
    try:
        read = tree.read_manifest(f"{folder}/{MANIFEST_NAME}")
    except (OSError, FlightlogError, ValueError):
        return False
    return read is not None and "recovery" in read[0] and read[0].get("status") != "running"


def _recover_run_folder(tree: RootTree, folder: str, stale_after: float, report: RecoverReport) -> None:
    # Decide without the claim first (most folders are finished: taking the
    # claim would create and remove a lock file in each), then again under it:
    # another recover may have finalised the run meanwhile.
    if not _recover_run_folder_plan(tree, folder, stale_after, report, dry=True):
        return
    with tree.claim_run(folder) as busy:
        if busy is not None:
            _holder, is_recover = busy
            if not is_recover:  # a live writer on this host; another recover reports the run itself
                report.live.append(tree.url(folder))
            return
        try:
            _recover_run_folder_plan(tree, folder, stale_after, report, dry=False)
        except (OSError, FlightlogError, ValueError):
            if not _recovered_meanwhile(tree, folder):
                raise


def _spool_writers_alive(tree: RootTree, folder: str) -> bool | None:
    """Whether the recorders whose spools a folder without a manifest holds (a bare
    recorder's folder: no manifest's pid to ask) are alive, by each spool's own record
    of its writer (``meta.json``: pid and boot id, written by the recorder itself).

    ``False`` when every spool was written in this boot by a process that is gone (its
    run need not wait ``stale_after``); ``True`` when one of them is alive (or its pid
    was reused: then the files' age decides, and the claim has the last word); ``None``
    when this host cannot tell (no spool, an unreadable one, another boot or host)."""
    writers = tree.spool_writers(folder)
    this_boot = boot_id()
    if not writers or this_boot is None or any(w.boot_id != this_boot for w in writers):
        return None
    host = socket.gethostname()
    alive = [process_alive({"host": host, "pid": w.pid, "boot_id": w.boot_id}) for w in writers]
    if any(a is None for a in alive):
        return None
    return any(alive)


def _recover_run_folder_plan(
    tree: RootTree, folder: str, stale_after: float, report: RecoverReport, *, dry: bool
) -> bool:
    """Whether the folder needs recovering; unless ``dry``, recover it (claim held)."""
    import time

    mrel = f"{folder}/{MANIFEST_NAME}"
    read = tree.read_manifest(mrel)
    has_segments, has_temps = tree.folder_leftovers(folder)
    e_tag: str | None = None
    if read is None:
        # Claimed, but the process died before its manifest was published (or
        # not a flightlog run at all): only act on an old folder with segments
        # (or a spool: rows recorded before the first flush).
        manifest: dict[str, Any] = {"mode": "run", "status": "running"}
        newest = tree.newest_time(manifest, folder)
        if not has_segments or newest is None:
            return False
        alive = _spool_writers_alive(tree, folder)
        if alive and tree.kind != "local":
            # No claim on an object store to tell a live writer from a reused pid: a
            # spool of this boot whose writer lives is a live run, whatever its age.
            report.live.append(tree.url(folder))
            return False
        if alive is not False and time.time() - newest <= stale_after:
            if alive is None:
                return False  # nothing tells whether its writer lives: the files' age decides
            if not dry:
                # The claim was free, yet a process of this boot with the writer's pid
                # lives: its pid was reused, or the claim file was replaced under a live
                # writer. Left alone (live) until its files are stale.
                report.live.append(tree.url(folder))
                return False
            # To the claim: held by the writer, it is live; by another recover, that one
            # reports the run (a recover's own salvage spool names this process meanwhile).
        run_id = folder[len(DEFAULT_RUN_PREFIX) :] if folder.startswith(DEFAULT_RUN_PREFIX) else folder
        manifest = {"run_id": run_id, "mode": "run", "status": "running"}
        previous = "unknown"
    else:
        manifest, e_tag = read
        previous = str(manifest.get("status", "unknown"))
        if _status(tree, manifest, folder, stale_after) == "running":
            if dry:
                report.live.append(tree.url(folder))
            return False
        if previous != "running" and not (has_segments or has_temps):
            return False  # finished, failed or already recovered
        newest = tree.newest_time(manifest, folder)
    if dry:
        return True
    rep = tree.merge_run_folder(folder)
    files = []
    for name, kind in ((TELEMETRY_FILE, "telemetry"), (EVENTS_FILE, "events")):
        st = tree.stat(f"{folder}/{name}")
        if st is not None:
            files.append({"path": name, "kind": kind, "rows": tree.parquet_rows(f"{folder}/{name}"), "bytes": st.size})
    m = dict(manifest)
    if previous in ("running", "unknown"):
        m = crashed_manifest(
            manifest,
            finished_at=_iso(newest),
            telemetry_rows=int(rep.get("telemetry_rows", 0)),
            event_rows=int(rep.get("event_rows", 0)),
        )
    m["files"] = files
    m["recovery"] = {"recovered_at": utc_now_iso(), **rep}
    if not _publish(tree, mrel, m, e_tag, read is not None):
        if not _recovered_meanwhile(tree, folder):
            report.live.append(tree.url(folder))
        return True
    report.recovered.append(
        {
            "run_id": str(m.get("run_id", folder)),
            "flow_name": m.get("flow_name"),
            "mode": "run",
            "path": tree.url(folder),
            "previous_status": previous,
            "status": m["status"],
            **rep,
        }
    )
    return True


def _recover_append_run(tree: RootTree, flow: str, mrel: str, stale_after: float, report: RecoverReport) -> None:
    read = tree.read_manifest(mrel)
    if read is None or str(read[0].get("status", "unknown")) != "running":
        return
    manifest = read[0]
    if _status(tree, manifest, mrel, stale_after) == "running":
        report.live.append(tree.url(mrel))
        return
    mode = str(manifest.get("mode", "dev"))
    run_id = str(manifest.get("run_id", posixpath.basename(mrel)[: -len(".toml")]))
    with tree.claim_parts(flow, mode, run_id) as busy:
        if busy is not None:
            if not busy[1]:
                report.live.append(tree.url(mrel))
            return
        # Again under the claim: another recover may have finished it meanwhile.
        read = tree.read_manifest(mrel)
        if read is None or str(read[0].get("status", "unknown")) != "running":
            return
        # Rows and events the dead recorder had not yet written: one last part each.
        tree.salvage_parts(flow, mode, run_id)
        _recover_append_run_claimed(tree, flow, mrel, read, stale_after, report)


def _recover_append_run_claimed(
    tree: RootTree,
    flow: str,
    mrel: str,
    read: tuple[dict[str, Any], str | None],
    stale_after: float,
    report: RecoverReport,
) -> None:
    manifest, e_tag = read
    previous = str(manifest.get("status", "unknown"))
    mode = str(manifest.get("mode", "dev"))
    run_id = str(manifest.get("run_id", posixpath.basename(mrel)[: -len(".toml")]))
    pat = part_pattern(run_id)
    newest = tree.newest_time(manifest, mrel)
    temp_removed = tree.remove_part_temps(flow, mode, run_id)
    files: list[dict[str, Any]] = []
    rows = {"telemetry": 0, "events": 0}
    for kind in ("telemetry", "events"):
        for rel, st in tree.list_parts(flow, mode, kind, run_id):
            n = tree.parquet_rows(rel)
            # Relative to the manifest (flows/<flow>/runs/): ../<mode>_<kind>/<part>.
            files.append(
                {
                    "path": f"../{parts_dir_name(mode, kind)}/{posixpath.basename(rel)}",
                    "kind": kind,
                    "rows": n,
                    "bytes": st.size,
                }
            )
            rows[kind] += n
        # Parts of this run already merged by compact().
        parts = f"{FLOWS_DIR}/{flow}/{parts_dir_name(mode, kind)}"
        for name, listed_rows in tree.compacted_parts(flow, mode, kind):
            if pat.match(name) and listed_rows is not None and tree.stat(f"{parts}/{name}") is None:
                rows[kind] += int(listed_rows)
    m = crashed_manifest(
        manifest, finished_at=_iso(newest), telemetry_rows=rows["telemetry"], event_rows=rows["events"]
    )
    m["files"] = files
    m["recovery"] = {"recovered_at": utc_now_iso(), "temp_files_removed": temp_removed}
    if not _publish(tree, mrel, m, e_tag, True):
        report.live.append(tree.url(mrel))
        return
    report.recovered.append(
        {
            "run_id": run_id,
            "flow_name": m.get("flow_name", flow),
            "mode": mode,
            "path": tree.url(mrel),
            "previous_status": previous,
            "status": "crashed",
            "telemetry_rows": rows["telemetry"],
            "event_rows": rows["events"],
            "segments_merged": 0,
            "temp_files_removed": temp_removed,
            "leftover_segments_removed": 0,
        }
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

    ``base_path`` may be one run folder (a folder given to :class:`FlightRecorder`,
    or a run's folder under a root): that run alone is recovered. A folder a
    ``FlightRecorder`` wrote has no manifest; its spool names the writer (pid and
    boot), so once that process of this host is gone the run is recovered at once,
    without waiting ``stale_after``, and while it lives the run is reported live.

    ``base_path`` may be an object-store root (``s3://bucket/prefix``, settings
    from ``AWS_*`` and ``storage_options``): runs of other hosts count as alive
    until nothing of theirs was written for ``stale_after`` seconds. It may also be
    one run's prefix under such a root (``s3://bucket/prefix/<run folder>``): that run
    alone is recovered.
    """
    from .._s3 import is_object_url

    url = base_path if base_path is not None else os.environ.get(ROOT_ENV)
    if is_object_url(url):
        from .s3tree import ObjectTree

        tree = ObjectTree(str(url), storage_options)
        report = RecoverReport(root=tree.url())
        if base_path is None or not _recover_given_object_run(tree, stale_after, report):
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
    if base_path is not None and _recover_given_run_folder(root, stale_after, report):
        return report
    recover_tree(LocalRootTree(root), stale_after, report)
    return report


def _recover_given_run_folder(given: Path, stale_after: float, report: RecoverReport) -> bool:
    """Recovers ``given`` as one run when it is a run folder itself rather than a root of
    runs: a recorder's claim file, spool or segments are in it (what a
    :class:`~flightlog.FlightRecorder` given a folder leaves), or a run's manifest (one
    with a ``run_id``: a flow's folder is not a run). False when it is not one."""
    folder = Path(os.path.abspath(given))  # `..` and `.` resolved by name, links not followed
    if folder.name in ("", ".", ".."):
        return False
    tree = LocalRootTree(folder.parent)
    if not _is_run_folder(tree, folder.name):
        return False
    listed = dict(tree.recovery_folders())
    if folder.name not in listed:
        unlisted = HIDDEN_RECORDING_PROBLEM if folder.name.startswith(".") else FLOWS_RECORDING_PROBLEM
        report.errors.append({"path": tree.url(folder.name), "error": unlisted})
        return True
    problem = listed[folder.name]
    if problem is not None:
        report.errors.append({"path": tree.url(folder.name), "error": problem})
        return True
    try:
        _recover_run_folder(tree, folder.name, stale_after, report)
    except (OSError, FlightlogError, ValueError) as err:
        report.errors.append({"path": tree.url(folder.name), "error": f"{type(err).__name__}: {err}"})
    return True


def _recover_given_object_run(given: ObjectTree, stale_after: float, report: RecoverReport) -> bool:
    """Recovers the prefix ``given`` as one run when it is a run's rather than a root of
    runs: its manifest (one with a ``run_id``: a flow's prefix is not a run) or segments
    are there, or a dead recorder of this host spooled rows for it. False when it is not
    one (then it is read as a root)."""
    from .._s3 import ObjectLocation
    from .s3tree import ObjectTree

    location = given.location
    parent_prefix, _, name = location.prefix.rpartition("/")
    if not name:
        return False
    parent = ObjectTree(ObjectLocation(location.bucket, parent_prefix).url(), given.storage_options)
    try:
        read = parent.read_manifest(f"{name}/{MANIFEST_NAME}")
    except (OSError, FlightlogError, ValueError):
        read = ({"run_id": name}, None)  # unreadable: the recovery itself reports it
    is_run = (read is not None and "run_id" in read[0]) or parent.folder_leftovers(name)[0]
    if not is_run:
        return False
    if name.startswith("."):
        report.errors.append({"path": parent.url(name), "error": HIDDEN_RECORDING_PROBLEM})
        return True
    try:
        _recover_run_folder(parent, name, stale_after, report)
    except (OSError, FlightlogError, ValueError) as err:
        report.errors.append({"path": parent.url(name), "error": f"{type(err).__name__}: {err}"})
    return True


def _is_run_folder(tree: LocalRootTree, name: str) -> bool:
    folder = tree.path(name)
    if any(os.path.lexists(folder / n) for n in (RUN_LOCK_NAME, SPOOL_DIR_NAME, SEGMENTS_DIR)):
        return True
    try:
        read = tree.read_manifest(f"{name}/{MANIFEST_NAME}")
    except (OSError, FlightlogError, ValueError):
        return True  # a run's manifest that cannot be read: reported by the recovery itself
    return read is not None and "run_id" in read[0]

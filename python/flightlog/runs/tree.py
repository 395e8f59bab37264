"""A run root, local or on an object store, behind one protocol: :class:`RootTree`.

Everything that walks or changes a root asks its tree (:func:`flightlog.runs.roots.open_tree`):

- :meth:`RootTree.list_runs` - every possible run (run folders and dev/tuner
  manifests), the one walk of a root;
- :meth:`RootTree.read_bytes` / :meth:`RootTree.stat` - a file's content and size/time;
- :meth:`RootTree.newest_time` - when a run last wrote anything (the evidence a
  ``running`` run of another host is judged by);
- :meth:`RootTree.claim_run_id` - a fresh run id, claimed together with its
  ``running`` manifest (a run folder and a dev/tuner run of one flow never share an id);
- :meth:`RootTree.read_manifest`, :meth:`RootTree.create_manifest` (create-only) and
  :meth:`RootTree.update_manifest` (conditional on the version read: its ETag on S3,
  its inode, time and size locally, under a lock of its folder).

Paths are ``/``-joined and relative to the root (``rel``), the same on both
kinds: the layout below an object-store root is the local one, key for path.
:class:`LocalRootTree` is here; the S3 implementation is
:class:`flightlog.runs.s3tree.ObjectTree`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import stat as _stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .. import _regular
from .._errors import ConflictError
from .._regular import NotRegularFileError
from .claim import Busy
from .layout import (
    FLOWS_DIR,
    MANIFEST_NAME,
    RUN_LOCK_NAME,
    RUN_MANIFEST_SUFFIX,
    RUNS_DIR,
    SEGMENTS_DIR,
    SPOOL_DIR_NAME,
    SPOOL_META_NAME,
    compacted_name,
    part_pattern,
    part_temp_prefix,
    parts_dir_name,
)
from .status import _TEMP_MARKER, _core, _scandir

__all__ = [
    "Claim",
    "FileStat",
    "LocalRootTree",
    "ManifestChange",
    "RootTree",
    "RunEntry",
    "SpoolWriter",
    "manifest_rels",
]

#: How :meth:`RootTree.modify_manifest` changes a manifest: the current one (None if
#: absent) to the new one, or None to leave it as it is.
ManifestChange = Callable[[dict[str, Any] | None], dict[str, Any] | None]


@dataclasses.dataclass(frozen=True)
class SpoolWriter:
    """The recorder a spool names (its ``meta.json``): its pid, and the boot it ran in."""

    pid: int
    boot_id: str | None


@dataclasses.dataclass(frozen=True)
class FileStat:
    """Size in bytes and modification time (seconds since the epoch) of a file or object."""

    size: int
    mtime: float


@dataclasses.dataclass(frozen=True)
class RunEntry:
    """A possible run: where its manifest is, and what locates the run (its folder
    for mode ``"run"``, else the manifest ``flows/<flow>/runs/<run_id>.toml`` itself)."""

    manifest_rel: str
    where_rel: str
    is_folder: bool


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claimed run: its id, its manifest and the manifest's version (ETag).

    ``unsynced``: local paths the claim placed without waiting for the disk (see
    ``claim_run_id``'s ``durable``), which the run's recorder must make durable before
    its first file (``FlightRecorder(_sync_first=...)``); empty when the claim is durable.
    """

    run_id: str
    manifest_rel: str
    e_tag: str | None
    unsynced: tuple[str, ...] = ()


@runtime_checkable
class RootTree(Protocol):
    """A run root (see the module doc). ``kind`` is ``"local"`` or ``"s3"``."""

    kind: str

    def url(self, rel: str = "") -> str:
        """The path or ``s3://`` URL of ``rel`` (the root itself for ``""``)."""
        ...

    def list_runs(self) -> list[RunEntry]:
        """Every run folder and dev/tuner manifest under the root (not read)."""
        ...

    def read_bytes(self, rel: str) -> bytes:
        """The content of a file; ``FileNotFoundError`` if there is none."""
        ...

    def stat(self, rel: str) -> FileStat | None:
        """Size and time of a file, or ``None`` if there is none."""
        ...

    def newest_time(self, manifest: Mapping[str, Any], where_rel: str) -> float | None:
        """Time of the newest file of the run (manifest, segments, parts, temp files), or None."""
        ...

    def read_manifest(self, rel: str) -> tuple[dict[str, Any], str | None] | None:
        """``(manifest, e_tag)``, or ``None`` if there is none. ``ManifestError`` if unreadable."""
        ...

    def create_manifest(self, rel: str, data: Mapping[str, Any]) -> str | None:
        """Publish a new manifest; ``FileExistsError`` if ``rel`` exists. Returns its ETag."""
        ...

    def update_manifest(self, rel: str, data: Mapping[str, Any], e_tag: str | None) -> str | None:
        """Replace the manifest if it still is version ``e_tag`` (``ConflictError`` otherwise;
        ``None``: unconditionally). Returns the new ETag."""
        ...

    def delete(self, rel: str) -> None:
        """Remove a file (a missing one is no error)."""
        ...

    def claim_run_id(
        self,
        mode: str,
        flow_name: str,
        run_prefix: str,
        run_id: str | None,
        manifest: dict[str, Any],
        *,
        durable: bool = True,
    ) -> Claim:
        """Claim ``run_id`` (default: the time now), else ``run_id_2``, ... with ``manifest``
        (its ``run_id`` is set) as the run's first manifest. ``durable=False`` lets a
        tree skip the fsyncs of a run folder's first manifest and hand them over in
        ``Claim.unsynced`` (a run whose recorder starts now: its first file carries them,
        in the same wait as its own); a tree whose writes are durable anyway ignores it."""
        ...

    # -- what a run's manager (flightlog.runs.manager) needs -----------------------------

    def where(self, rel: str = "") -> Any:
        """What a recorder and the user are given for ``rel``: a ``Path`` locally, the
        ``s3://`` URL on an object store."""
        ...

    def make_folders(self, rels: list[str]) -> None:
        """Create the folders ``rels`` (and their parents); implied by keys on a store."""
        ...

    def recorder_options(self) -> dict[str, Any]:
        """What :class:`~flightlog.FlightRecorder` needs besides a location."""
        ...

    def relative_to_manifest(self, manifest_rel: str, file: str) -> str:
        """``file`` (as a recorder names it: a path, or an object key) relative to the
        folder of the manifest ``manifest_rel``."""
        ...

    def replace_manifest(
        self, rel: str, data: Mapping[str, Any], e_tag: str | None, *, after: str | None = None
    ) -> None:
        """Publish the final manifest of a run this process owns. Only ``recover``
        rewrites a running run's manifest, and only once it judged the run dead: this
        process is alive and closing, so what it knows wins over such a rewrite.
        ``after``: a local folder whose fsync must complete before the manifest can be
        durable (the recorder's close left it: ``FlightRecorder._close_deferring_folder_sync``)."""
        ...

    def modify_manifest(self, rel: str, change: ManifestChange, *, blocking: bool = True) -> dict[str, Any] | None:
        """Read, ``change`` (``None``: leave it), write, with no concurrent change lost
        (a file lock locally; conditional puts, retried, on a store). Returns what is
        stored afterwards; None when not ``blocking`` and another process holds the lock."""
        ...

    def cheap_version(self, rel: str) -> str | None:
        """The version of ``rel`` when it can be known without a request (a local
        ``stat``), else None: lets a caller skip re-reading an unchanged manifest."""
        ...

    def unclaim(self, manifest_rel: str, folder_rel: str | None) -> None:
        """Undo a claim whose recorder could not start: its manifest, and its run
        folder (``folder_rel``; None for a dev/tuner run). Errors are ignored."""
        ...

    # -- what recovery (flightlog.runs.recover) needs ------------------------------------

    def snapshot(self) -> AbstractContextManager[None]:
        """Within the block, listings may be answered from one listing of the root
        (one request on an object store instead of one per run)."""
        ...

    def recovery_folders(self) -> list[tuple[str, str | None]]:
        """``(folder, problem)`` for every possible run folder, sorted; ``problem``: why
        it must not be touched (a symbolic link), or None."""
        ...

    def recovery_flows(self) -> list[tuple[str, str | None, list[str]]]:
        """``(flow, problem, manifest_rels)`` for every flow folder, sorted: its dev/tuner
        run manifests, or the reason (a symbolic link) it must not be touched."""
        ...

    def folder_leftovers(self, folder: str) -> tuple[bool, bool]:
        """``(has_segments, has_temp_files)`` of a run folder: whether a close is owed."""
        ...

    def claim_run(self, folder: str) -> AbstractContextManager[Busy | None]:
        """The run folder's one-writer claim (:func:`~.claim.take_claim`): None when it is
        ours for the block, else who holds it. No locks on an object store: always None."""
        ...

    def spool_writers(self, folder: str) -> list[SpoolWriter] | None:
        """The processes whose spools a run folder holds (each spool's ``meta.json``: the
        recorder's pid and boot id, alive or not): ``[]`` when it holds none, ``None``
        when one cannot be read. On an object store: the spools on this host (a local
        folder) of recordings into the run; recorders of other hosts spool on their own."""
        ...

    def claim_parts(self, flow: str, mode: str, run_id: str) -> AbstractContextManager[Busy | None]:
        """The one-writer claim of a dev/tuner run's parts (as :meth:`claim_run`)."""
        ...

    def merge_run_folder(self, folder: str) -> dict[str, int]:
        """Finalise a dead run's folder through the core (``_core.recover_run_dir``):
        merge its segments, sweep its temp files. Returns the core's counts."""
        ...

    def salvage_parts(self, flow: str, mode: str, run_id: str) -> None:
        """Publish what a dead dev/tuner recorder had not yet written as one last part
        each (``_core.salvage_parts``)."""
        ...

    def remove_part_temps(self, flow: str, mode: str, run_id: str) -> int:
        """Remove a dead dev/tuner run's temp files; how many."""
        ...

    def list_parts(self, flow: str, mode: str, kind: str, run_id: str) -> list[tuple[str, FileStat]]:
        """``(rel, stat)`` of a dev/tuner run's published parts of ``kind``, by name."""
        ...

    def compacted_parts(self, flow: str, mode: str, kind: str) -> list[tuple[str, int | None]]:
        """``(part name, rows)`` that the flow's compacted file of ``kind`` lists."""
        ...

    def parquet_rows(self, rel: str) -> int:
        """Rows of a Parquet file, from its footer (a FIFO or link is refused, never opened)."""
        ...

    def sweep_flow(self, flow: str) -> tuple[int, int, list[dict[str, str]]]:
        """``(temp_files_removed, leftover_parts_removed, errors)``: what a compaction
        that died left in ``flow``; nothing while a compaction holds the flow."""
        ...


def manifest_rels(mode: str, flow_name: str, run_prefix: str) -> tuple[str, str]:
    """``(mine, theirs)``: templates (``{}`` for the id) of the manifest a run of ``mode``
    claims, and of the manifest of the other kind that would take the same id."""
    folder = f"{run_prefix}{{}}/{MANIFEST_NAME}"
    appended = f"{FLOWS_DIR}/{flow_name}/{RUNS_DIR}/{{}}.toml"
    return (folder, appended) if mode == "run" else (appended, folder)


# --------------------------------------------------------------------------- local


def _signature(st: os.stat_result) -> str:
    # A manifest is replaced by a rename (a new inode) or rewritten whole: inode, time
    # and size together name one version.
    return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"


class LocalRootTree:
    """A root folder on the local file system."""

    kind = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalRootTree({os.fspath(self.root)!r})"

    def path(self, rel: str = "") -> Path:
        return self.root / rel if rel else self.root

    def url(self, rel: str = "") -> str:
        return os.fspath(self.path(rel))

    def list_runs(self) -> list[RunEntry]:
        # Strings, not Paths: a root of 100,000 runs is listed in a fraction of a second.
        found: list[RunEntry] = []
        top = os.fspath(self.root)
        try:
            with os.scandir(top) as it:
                for e in it:
                    if not e.name.startswith(".") and e.name != FLOWS_DIR and e.is_dir():
                        found.append(RunEntry(f"{e.name}/{MANIFEST_NAME}", e.name, True))
        except (FileNotFoundError, NotADirectoryError):
            return found
        flows = os.path.join(top, FLOWS_DIR)
        if os.path.isdir(flows):
            with os.scandir(flows) as it:
                flow_dirs = list(it)
            for f in flow_dirs:
                runs_dir = os.path.join(f.path, RUNS_DIR)
                if f.is_dir() and os.path.isdir(runs_dir):
                    with os.scandir(runs_dir) as it:
                        for m in it:
                            if m.name.endswith(RUN_MANIFEST_SUFFIX) and not m.name.startswith("."):
                                rel = f"{FLOWS_DIR}/{f.name}/{RUNS_DIR}/{m.name}"
                                found.append(RunEntry(rel, rel, False))
        return found

    def read_bytes(self, rel: str) -> bytes:
        from .._regular import read_bytes

        return read_bytes(self.path(rel))

    def stat(self, rel: str) -> FileStat | None:
        try:
            st = os.stat(self.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileStat(st.st_size, st.st_mtime)

    def newest_time(self, manifest: Mapping[str, Any], where_rel: str) -> float | None:
        from .status import _newest, _run_files_for_evidence

        return _newest(_run_files_for_evidence(manifest, self.path(where_rel)))

    def _read_versioned(self, rel: str) -> tuple[bytes, str] | None:
        path = self.path(rel)
        try:
            # O_NONBLOCK: a FIFO planted as a manifest is refused, never waited on.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            st = os.fstat(fd)
            if not _stat.S_ISREG(st.st_mode):
                # The words of _regular.read_bytes, which manifests were read with before.
                reason = (
                    f"{_regular._kind(st.st_mode)}, not a regular file: not opened (reading it could block forever)"
                )
                raise NotRegularFileError(errno.EINVAL, reason, os.fspath(path))
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks), _signature(st)

    def read_manifest(self, rel: str) -> tuple[dict[str, Any], str | None] | None:
        from .manifest import parse_manifest

        got = self._read_versioned(rel)
        if got is None:
            return None
        raw, e_tag = got
        return parse_manifest(raw, self.url(rel)), e_tag

    def _version(self, rel: str) -> str | None:
        try:
            return _signature(os.stat(self.path(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    @contextlib.contextmanager
    def _folder_locked(self, rel: str) -> Iterator[None]:
        """An exclusive ``flock`` of the manifest's folder (its own file is replaced by
        renames, so it cannot carry the lock): conditional updates through trees are serial."""
        fd = os.open(self.path(rel).parent, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def create_manifest(self, rel: str, data: Mapping[str, Any]) -> str | None:
        from .manifest import create_manifest

        # Folders are implied by keys on an object store: made as needed here.
        self.path(rel).parent.mkdir(parents=True, exist_ok=True)
        create_manifest(self.path(rel), data)
        return self._version(rel)

    def update_manifest(self, rel: str, data: Mapping[str, Any], e_tag: str | None) -> str | None:
        from .manifest import write_manifest

        if e_tag is None:
            self.path(rel).parent.mkdir(parents=True, exist_ok=True)
            write_manifest(self.path(rel), data)
            return self._version(rel)
        with self._folder_locked(rel):
            now = self._version(rel)
            if now != e_tag:
                what = "is gone" if now is None else "changed"
                raise ConflictError(f"{self.url(rel)} {what} since it was read (version {e_tag}); read it again")
            write_manifest(self.path(rel), data)
            return self._version(rel)

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(rel))

    def claim_run_id(
        self,
        mode: str,
        flow_name: str,
        run_prefix: str,
        run_id: str | None,
        manifest: dict[str, Any],
        *,
        durable: bool = True,
    ) -> Claim:
        from .ids import claim
        from .manifest import create_manifest, write_manifest

        mine, theirs = manifest_rels(mode, flow_name, run_prefix)
        unsynced: tuple[str, ...] = ()
        if mode == "run":

            def make(cand: str) -> None:
                folder = self.path(run_prefix + cand)
                os.mkdir(folder)
                if os.path.exists(self.path(theirs.format(cand))):
                    os.rmdir(folder)
                    raise FileExistsError(errno.EEXIST, "run id taken by a dev/tuner run of this flow", cand)

            rid = claim(self.path(run_prefix), make, run_id)
            manifest["run_id"] = rid
            folder = self.path(run_prefix + rid)
            try:
                target = write_manifest(self.path(mine.format(rid)), manifest, durable=durable)
            except BaseException:
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
                raise
            if not durable:
                # The manifest's data and name, and the run folder's own name in the root.
                unsynced = (str(target), str(folder), str(folder.parent))
        else:
            runs_dir = self.path(mine).parent
            runs_dir.mkdir(parents=True, exist_ok=True)

            def make(cand: str) -> None:
                manifest["run_id"] = cand
                mpath = create_manifest(self.path(mine.format(cand)), manifest)
                if os.path.exists(self.path(run_prefix + cand)):
                    mpath.unlink()
                    raise FileExistsError(errno.EEXIST, "run id taken by a run folder", cand)

            rid = claim(runs_dir, make, run_id)
        rel = mine.format(rid)
        return Claim(rid, rel, self._version(rel), unsynced)

    # -- a run's manager ----------------------------------------------------------------

    def where(self, rel: str = "") -> Path:
        return self.path(rel)

    def make_folders(self, rels: list[str]) -> None:
        for rel in rels:
            self.path(rel).mkdir(parents=True, exist_ok=True)

    def recorder_options(self) -> dict[str, Any]:
        return {}

    def relative_to_manifest(self, manifest_rel: str, file: str) -> str:
        folder = str(self.path(manifest_rel).parent)
        name = file[len(folder) + 1 :]
        if file.startswith(folder + os.sep) and os.sep not in name and name not in ("", ".", ".."):
            return name  # a file of the manifest's own folder: relpath's answer, without its cost
        return os.path.relpath(file, folder)

    def replace_manifest(
        self, rel: str, data: Mapping[str, Any], e_tag: str | None, *, after: str | None = None
    ) -> None:
        from .manifest import write_manifest

        # The run's claim lock keeps recover away from a live run here: no version check.
        write_manifest(self.path(rel), data, after=after)

    def modify_manifest(self, rel: str, change: ManifestChange, *, blocking: bool = True) -> dict[str, Any] | None:
        from .ids import file_lock
        from .manifest import ManifestError, read_manifest, write_manifest

        path = self.path(rel)

        def current() -> dict[str, Any] | None:
            try:
                return read_manifest(path)
            except (FileNotFoundError, ManifestError):
                return None  # an unreadable manifest is replaced

        m = current()
        if change(None if m is None else dict(m)) is None:
            return m  # nothing to change: no lock taken
        path.parent.mkdir(parents=True, exist_ok=True)  # as a key on a store implies it
        with file_lock(path.parent / ".manifest.lock", blocking=blocking) as held:
            if not held:
                return None
            m = current()
            new = change(None if m is None else dict(m))
            if new is None:
                return m
            write_manifest(path, new)
            return new

    def cheap_version(self, rel: str) -> str | None:
        return self._version(rel)

    def unclaim(self, manifest_rel: str, folder_rel: str | None) -> None:
        import shutil

        if folder_rel is not None:
            shutil.rmtree(self.path(folder_rel), ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(self.path(manifest_rel))

    # -- recovery ---------------------------------------------------------------------
    # Recovery writes, renames and deletes files: through a symbolic link it could do so
    # outside the root (or merge another run's segments into this one), so links are
    # never followed, and a FIFO is never opened (it would block the merge).

    def snapshot(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def _flows_is_a_recording(self) -> bool:
        """Whether the root's ``flows`` folder is a recorder's own folder (its claim file
        or spool at the top, which a root's flows never has): ``FlightRecorder(root /
        "flows")``. It is then neither read as the flows nor recovered, but reported."""
        flows = self.path(FLOWS_DIR)
        return any(os.path.lexists(flows / n) for n in (RUN_LOCK_NAME, SPOOL_DIR_NAME))

    def recovery_folders(self) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        if self._flows_is_a_recording():
            out.append((FLOWS_DIR, FLOWS_RECORDING_PROBLEM))
        for e in sorted(_scandir(self.root), key=lambda e: e.name):
            if e.name.startswith(".") or e.name == FLOWS_DIR or not e.is_dir():
                continue
            # The spool too: recovery salvages and removes it.
            link = _symlinked(Path(e.path), (SEGMENTS_DIR, SPOOL_DIR_NAME))
            if link is None:
                out.append((e.name, None))
            elif any(os.path.lexists(Path(e.path) / n) for n in (MANIFEST_NAME, SEGMENTS_DIR, SPOOL_DIR_NAME)):
                out.append((e.name, _link_message(link)))
        return out

    def recovery_flows(self) -> list[tuple[str, str | None, list[str]]]:
        if _symlinked(self.path(FLOWS_DIR), ()) is not None or self._flows_is_a_recording():
            return []
        out: list[tuple[str, str | None, list[str]]] = []
        for flow in sorted(_scandir(self.path(FLOWS_DIR)), key=lambda e: e.name):
            if not flow.is_dir() or flow.name.startswith("."):
                continue
            link = _symlinked(Path(flow.path), _FLOW_SUBDIRS)
            if link is not None:
                out.append((flow.name, _link_message(link), []))
                continue
            if any(os.path.lexists(Path(flow.path) / n) for n in (RUN_LOCK_NAME, SPOOL_DIR_NAME)):
                # `FlightRecorder(root / "flows" / name)`: not a flow (a flow's own locks are
                # named apart), and sweeping it as one would write into the recording.
                out.append((flow.name, FLOWS_RECORDING_PROBLEM, []))
                continue
            runs = f"{FLOWS_DIR}/{flow.name}/{RUNS_DIR}"
            rels = [
                f"{runs}/{m.name}"
                for m in sorted(_scandir(self.path(runs)), key=lambda e: e.name)
                if not m.name.startswith(".") and m.name.endswith(RUN_MANIFEST_SUFFIX)
            ]
            out.append((flow.name, None, rels))
        return out

    def folder_leftovers(self, folder: str) -> tuple[bool, bool]:
        run_dir = self.path(folder)
        # A spool with a recorder's folder in it may hold rows; an empty one (a close
        # killed while removing it) holds nothing and is no reason to recover again.
        has_segments = (run_dir / SEGMENTS_DIR).is_dir() or any(e.is_dir() for e in _scandir(run_dir / SPOOL_DIR_NAME))
        has_temps = any(_TEMP_MARKER in e.name and e.name.startswith(".") for e in _scandir(run_dir))
        return has_segments, has_temps

    def claim_run(self, folder: str) -> AbstractContextManager[Busy | None]:
        from .claim import take_claim

        return take_claim(self.path(folder) / RUN_LOCK_NAME)

    def spool_writers(self, folder: str) -> list[SpoolWriter] | None:
        writers: list[SpoolWriter] = []
        for spool in _scandir(self.path(folder) / SPOOL_DIR_NAME):
            if not spool.is_dir(follow_symlinks=False):
                continue
            try:
                meta = json.loads(_regular.read_bytes(Path(spool.path) / SPOOL_META_NAME, follow_links=False))
                writers.append(SpoolWriter(pid=int(meta["pid"]), boot_id=meta.get("boot_id")))
            except FileNotFoundError:
                continue  # a spool being made or removed: no writer to ask
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return writers

    def _parts_dir(self, flow: str, mode: str, kind: str) -> Path:
        return self.path(f"{FLOWS_DIR}/{flow}/{parts_dir_name(mode, kind)}")

    def claim_parts(self, flow: str, mode: str, run_id: str) -> AbstractContextManager[Busy | None]:
        from .claim import part_lock_path, take_claim

        parts_dir = self._parts_dir(flow, mode, "telemetry")
        if not parts_dir.is_dir():
            return contextlib.nullcontext()  # no parts yet: no lock file to take
        return take_claim(part_lock_path(parts_dir, run_id))

    def merge_run_folder(self, folder: str) -> dict[str, int]:
        run_dir = self.path(folder)
        _regular_files_only(run_dir)  # a FIFO would block the merge (NotRegularFileError is reported)
        return {k: int(v) for k, v in dict(_core().recover_run_dir(str(run_dir))).items()}

    def salvage_parts(self, flow: str, mode: str, run_id: str) -> None:
        parts_dir = self._parts_dir(flow, mode, "telemetry")
        if parts_dir.is_dir():
            _core().salvage_parts(str(parts_dir), str(self._parts_dir(flow, mode, "events")), run_id)

    def remove_part_temps(self, flow: str, mode: str, run_id: str) -> int:
        from .manifest import fsync_dir

        removed = 0
        for kind in ("telemetry", "events"):
            d = self._parts_dir(flow, mode, kind)
            removed_here = 0
            for e in _scandir(d):
                if e.name.startswith(part_temp_prefix(run_id)) and _TEMP_MARKER in e.name:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(e.path)
                        removed_here += 1
            if removed_here:
                fsync_dir(d)
            removed += removed_here
        return removed

    def list_parts(self, flow: str, mode: str, kind: str, run_id: str) -> list[tuple[str, FileStat]]:
        pat = part_pattern(run_id)
        base = f"{FLOWS_DIR}/{flow}/{parts_dir_name(mode, kind)}"
        out: list[tuple[str, FileStat]] = []
        for e in sorted(_scandir(self.path(base)), key=lambda e: e.name):
            if pat.match(e.name):
                st = self.stat(f"{base}/{e.name}")
                if st is not None:
                    out.append((f"{base}/{e.name}", st))
        return out

    def compacted_parts(self, flow: str, mode: str, kind: str) -> list[tuple[str, int | None]]:
        from .compact import _listed

        return _listed(self.path(f"{FLOWS_DIR}/{flow}/{compacted_name(mode, kind)}"))

    def parquet_rows(self, rel: str) -> int:
        from .._regular import check

        check(self.path(rel))  # never block on a FIFO part
        return int(_core().parquet_rows(str(self.path(rel))))

    def sweep_flow(self, flow: str) -> tuple[int, int, list[dict[str, str]]]:
        from .._errors import FlightlogError
        from .compact import _remove_listed_leftovers, _sweep_compaction_temps
        from .ids import file_lock

        fpath = self.path(f"{FLOWS_DIR}/{flow}")
        temps = leftovers = 0
        errors: list[dict[str, str]] = []
        with file_lock(fpath / ".compact.lock", blocking=False) as locked:
            if not locked:
                # A compaction (or another recover) is on this flow: it removes the
                # leftovers itself; racing it would delete under it.
                return 0, 0, []
            for which in ("dev", "tuner"):
                temps += _sweep_compaction_temps(fpath, which)
            for which in ("dev", "tuner"):
                for kind in ("telemetry", "events"):
                    try:
                        leftovers += _remove_listed_leftovers(
                            fpath / parts_dir_name(which, kind), fpath / compacted_name(which, kind)
                        )
                    except (OSError, FlightlogError, ValueError) as err:
                        errors.append(
                            {"path": str(fpath / compacted_name(which, kind)), "error": f"{type(err).__name__}: {err}"}
                        )
        return temps, leftovers, errors


_FLOW_SUBDIRS = (RUNS_DIR, *(parts_dir_name(m, k) for m in ("dev", "tuner") for k in ("telemetry", "events")))


def _symlinked(path: Path, children: tuple[str, ...]) -> Path | None:
    """``path`` or the first of its ``children`` that is a symbolic link, else None."""
    for p in (path, *(path / c for c in children)):
        if p.is_symlink():
            return p
    return None


#: Why a root's ``flows`` folder that a recorder wrote into is left alone.
FLOWS_RECORDING_PROBLEM = (
    f"holds a recording, but a folder named {FLOWS_DIR!r} (or a flow's folder in it) is a root's flows, "
    "never a run folder: once its recorder is closed or gone, rename it out of the flows, then recover it"
)


def _link_message(link: Path) -> str:
    return (
        f"{link} is a symbolic link (to {os.readlink(link)!r}); recover never follows links, so that it cannot "
        "write or delete outside the root: move the run into the root instead"
    )


def _regular_files_only(run_dir: Path) -> None:
    """Raises NotRegularFileError (an OSError, reported per run) for a FIFO, device or link
    among the files a merge would open."""
    from .._regular import check
    from .layout import EVENTS_FILE, TELEMETRY_FILE

    paths = [run_dir / TELEMETRY_FILE, run_dir / EVENTS_FILE] + [Path(e) for e in _scandir(run_dir / SEGMENTS_DIR)]
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            check(p)

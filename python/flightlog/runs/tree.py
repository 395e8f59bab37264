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
import os
import stat as _stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .._errors import ConflictError
from .._regular import NotRegularFileError
from .layout import FLOWS_DIR, MANIFEST_NAME, RUNS_DIR

__all__ = ["Claim", "FileStat", "LocalRootTree", "RootTree", "RunEntry", "manifest_rels"]


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
    """A claimed run: its id, its manifest and the manifest's version (ETag)."""

    run_id: str
    manifest_rel: str
    e_tag: str | None


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
        self, mode: str, flow_name: str, run_prefix: str, run_id: str | None, manifest: dict[str, Any]
    ) -> Claim:
        """Claim ``run_id`` (default: the time now), else ``run_id_2``, ... with ``manifest``
        (its ``run_id`` is set) as the run's first manifest."""
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
                            if m.name.endswith(".toml") and not m.name.startswith("."):
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
                raise NotRegularFileError(errno.EINVAL, "not a regular file", os.fspath(path))
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
        self, mode: str, flow_name: str, run_prefix: str, run_id: str | None, manifest: dict[str, Any]
    ) -> Claim:
        from .ids import claim
        from .manifest import create_manifest, write_manifest

        mine, theirs = manifest_rels(mode, flow_name, run_prefix)
        if mode == "run":

            def make(cand: str) -> None:
                folder = self.path(run_prefix + cand)
                os.mkdir(folder)
                if os.path.exists(self.path(theirs.format(cand))):
                    os.rmdir(folder)
                    raise FileExistsError(errno.EEXIST, "run id taken by a dev/tuner run of this flow", cand)

            rid = claim(self.path(run_prefix), make, run_id)
            manifest["run_id"] = rid
            try:
                write_manifest(self.path(mine.format(rid)), manifest)
            except BaseException:
                import shutil

                shutil.rmtree(self.path(run_prefix + rid), ignore_errors=True)
                raise
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
        return Claim(rid, rel, self._version(rel))

"""Where a root's files are: the local file system, or an object store read through DuckDB.

:class:`~flightlog.DuckDBManager` walks a root (list run folders, read manifests,
stat files, read Parquet footers and rows). It does so through a *tree*:

``LocalTree``
    the local file system, exactly as before (``os.scandir``, ``stat``, paths
    are :class:`pathlib.Path`).
``HttpfsTree``
    an ``s3://bucket/prefix`` root. Everything goes through DuckDB's ``httpfs``
    extension (loaded offline from the ``duckdb-extension-httpfs`` wheel) with a
    secret built from :func:`flightlog._s3.storage_options`: one listing
    (``read_blob('<root>/**')``, which gives sizes and modification times from
    the LIST responses without a request per object) is taken as a snapshot,
    objects are read with ``read_blob`` and Parquet with ``read_parquet`` /
    ``parquet_kv_metadata`` on ``s3://`` URLs. Paths are :class:`ObjectPath`,
    a small stand-in for the part of :class:`pathlib.Path` the catalog uses,
    whose ``str()`` is the object's URL (what DuckDB reads).

The layout below an object-store root is the local one, key for path.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from .._s3 import ObjectLocation, duckdb_secret_sql, load_extensions
from .layout import RUNS_DIR

__all__ = ["Entry", "LocalTree", "ObjectPath", "ObjectStat", "HttpfsTree", "TreePath", "duckdb_connect"]

#: Settings of every in-memory DuckDB connection that reads an object store: the
#: extensions are loaded by path from their wheels, never downloaded.
OFFLINE_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def duckdb_connect(database: str = ":memory:", *, offline: bool = False) -> Any:
    """A DuckDB connection (``offline``: no extension auto-install/auto-load)."""
    import duckdb

    if offline:
        return duckdb.connect(database, config=dict(OFFLINE_CONFIG))
    return duckdb.connect(database)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One folder entry: the same shape for both trees."""

    name: str
    path: TreePath
    is_dir: bool
    is_file: bool
    is_symlink: bool = False


# --------------------------------------------------------------------------- local


class LocalTree:
    """The local file system (the embedded default)."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def refresh(self) -> None:
        """Nothing to do: the file system is always current."""

    def close(self) -> None:
        """Nothing to release."""

    def scandir(self, folder: TreePath) -> list[Entry]:
        """Entries of ``folder`` sorted by name ([] when it is missing or not a folder)."""
        try:
            with os.scandir(_local(folder)) as it:
                raw = list(it)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for e in sorted(raw, key=lambda e: e.name):
            try:
                is_dir, is_file, is_link = e.is_dir(), e.is_file(), e.is_symlink()
            except OSError:
                continue
            out.append(Entry(e.name, Path(e.path), is_dir, is_file, is_link))
        return out

    def read_bytes(self, path: TreePath) -> bytes:
        """The content of a regular file; a link, FIFO or device raises ``NotRegularFileError``."""
        from .._regular import read_bytes

        return read_bytes(_local(path), follow_links=False)

    def unreadable(self, path: TreePath) -> str | None:
        """Why ``path`` must not be opened (a symbolic link, a FIFO, a device ...), else None
        (also None when it is missing: the caller's own check says so)."""
        from .._regular import problem

        try:
            return problem(_local(path))
        except FileNotFoundError:
            return None

    def restat(self, path: TreePath) -> os.stat_result:
        """A fresh ``stat`` (the file system has no snapshot)."""
        return _local(path).stat()

    def connect(self, private: bool = False) -> Any:
        """An in-memory DuckDB connection that can read the tree's files (close it after use)."""
        return duckdb_connect()

    def prepare(self, con: Any) -> None:
        """Make ``con`` able to read the tree's files (nothing to do locally)."""

    def evidence_status(self, manifest: Mapping[str, Any], where: TreePath) -> str:
        from .status import run_status

        return run_status(manifest, _local(where))


# --------------------------------------------------------------------------- object store


def _seconds(mtime: Any) -> float:
    """A modification time in whole seconds: listings may carry milliseconds where
    HEAD responses (HTTP dates) do not, and the two are compared."""
    return float(int(mtime or 0))


@dataclasses.dataclass(frozen=True)
class ObjectStat:
    """``stat`` of an object: size and last-modified time (second resolution on S3)."""

    st_size: int
    st_mtime: float

    @property
    def st_mtime_ns(self) -> int:
        return round(self.st_mtime * 1e9)


class ObjectPath:
    """A key below an object-store root, with the part of the :class:`pathlib.Path`
    interface the catalog uses. ``str()`` is the ``s3://`` URL.

    Existence, folders and sizes come from the tree's listing snapshot
    (:meth:`HttpfsTree.refresh`); folders are key prefixes.
    """

    __slots__ = ("rel", "tree")

    def __init__(self, tree: HttpfsTree, rel: str) -> None:
        self.tree = tree
        self.rel = rel.strip("/")

    # --- path algebra
    def __truediv__(self, name: str | os.PathLike[str]) -> ObjectPath:
        parts = [p for p in os.fspath(name).split("/") if p and p != "."]
        if ".." in parts:
            raise ValueError(f"'..' is not allowed in object keys: {name!r}")
        return ObjectPath(self.tree, "/".join([self.rel, *parts]) if self.rel else "/".join(parts))

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1] if self.rel else ""

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.tree, self.rel.rsplit("/", 1)[0] if "/" in self.rel else "")

    def relative_to(self, other: ObjectPath) -> PurePosixPath:
        if not isinstance(other, ObjectPath) or other.tree is not self.tree:
            raise ValueError(f"{self} is not below {other}")
        if not other.rel:
            return PurePosixPath(self.rel)
        if self.rel == other.rel:
            return PurePosixPath(".")
        if self.rel.startswith(other.rel + "/"):
            return PurePosixPath(self.rel[len(other.rel) + 1 :])
        raise ValueError(f"{self} is not below {other}")

    def as_posix(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return self.tree.loc.url(self.rel) if self.rel else self.tree.loc.url()

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.tree is self.tree and other.rel == self.rel

    def __hash__(self) -> int:
        return hash(self.rel)

    def __lt__(self, other: ObjectPath) -> bool:
        return self.rel < other.rel

    # --- queries on the snapshot
    def exists(self) -> bool:
        return self.tree.has_object(self.rel) or self.tree.has_folder(self.rel)

    def is_dir(self) -> bool:
        return self.tree.has_folder(self.rel)

    def is_file(self) -> bool:
        return self.tree.has_object(self.rel)

    def is_symlink(self) -> bool:
        return False

    def stat(self) -> ObjectStat:
        return self.tree.stat(self)

    def iterdir(self) -> Iterator[ObjectPath]:
        for e in self.tree.scandir(self):
            yield _object(e.path)

    def read_bytes(self) -> bytes:
        return self.tree.read_bytes(self)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)


#: A path below a root: a local :class:`~pathlib.Path` or an :class:`ObjectPath`. The
#: manager's code is the same for both; each tree narrows the paths it is given to its own
#: kind (:func:`_local`, :func:`_object`), the one place where the two meet.
TreePath = Path | ObjectPath


def _local(path: TreePath) -> Path:
    """``path`` as a local path (a :class:`LocalTree` is never given an object key)."""
    if isinstance(path, ObjectPath):
        raise TypeError(f"an object-store path given to the local tree: {path}")
    return path


def _object(path: TreePath) -> ObjectPath:
    """``path`` as an object key (an :class:`HttpfsTree` is never given a local path)."""
    if not isinstance(path, ObjectPath):
        raise TypeError(f"a local path given to the object-store tree: {path}")
    return path


class HttpfsTree:
    """An ``s3://bucket/prefix`` root read through DuckDB ``httpfs``.

    ``options`` are :func:`flightlog._s3.storage_options` output (``AWS_*``
    environment plus overrides.
    """

    kind = "object"

    def __init__(self, loc: ObjectLocation, options: Mapping[str, str]) -> None:
        self.loc = loc
        self.options = dict(options)
        self.root = ObjectPath(self, "")
        self._lock = threading.Lock()
        self._base: Any = None
        self._base_pid = 0
        self._objects: dict[str, ObjectStat] | None = None
        self._folders: dict[str, dict[str, bool]] = {}

    # --- connections
    def prepare(self, con: Any) -> None:
        """Loads ``httpfs`` (offline, from its wheel) into ``con`` and creates the S3 secret."""
        load_extensions(con, "httpfs")
        con.execute(duckdb_secret_sql(self.options))

    def connect(self, private: bool = False) -> Any:
        """A connection that reads the store (close it after use).

        By default a cursor on one in-memory database kept by the tree, whose
        extension and secret are set up once (loading ``httpfs`` costs ~0.1 s);
        ``private=True`` for a database of its own (results that outlive the call)."""
        if private:
            return self._new_base()
        with self._lock:
            if self._base is None or self._base_pid != os.getpid():  # DuckDB does not survive fork()
                self._base, self._base_pid = self._new_base(), os.getpid()
            return self._base.cursor()

    def close(self) -> None:
        """Closes the shared scratch session (a later call opens a new one)."""
        with self._lock:
            base, self._base = self._base, None
        if base is not None:
            base.close()

    def _new_base(self) -> Any:
        con = duckdb_connect(offline=True)
        try:
            self.prepare(con)
        except BaseException:
            con.close()
            raise
        return con

    # --- the listing snapshot
    def refresh(self) -> None:
        """Lists every object under the root once (sizes and times from the LIST pages)."""
        con = self.connect()
        try:
            rows = con.execute(
                "SELECT filename, size, epoch(last_modified) FROM read_blob(?)", [self._glob_all()]
            ).fetchall()
        finally:
            con.close()
        objects: dict[str, ObjectStat] = {}
        folders: dict[str, dict[str, bool]] = {"": {}}
        base = self.loc.url() + "/"
        for url, size, mtime in rows:
            if not url.startswith(base):
                continue
            rel = url[len(base) :]
            if not rel or rel.endswith("/"):
                continue  # a folder marker object
            objects[rel] = ObjectStat(int(size or 0), _seconds(mtime))
            parts = rel.split("/")
            for i in range(len(parts)):
                parent = "/".join(parts[:i])
                folders.setdefault(parent, {})
                is_dir = i < len(parts) - 1
                folders[parent][parts[i]] = folders[parent].get(parts[i], False) or is_dir
        self._objects, self._folders = objects, folders

    def unreadable(self, path: TreePath) -> str | None:
        """Objects are always plain objects: nothing to refuse."""
        _object(path)
        return None

    def _glob_all(self) -> str:
        return self.loc.url() + "/**"

    def _snapshot(self) -> dict[str, ObjectStat]:
        if self._objects is None:
            self.refresh()
        assert self._objects is not None
        return self._objects

    def has_object(self, rel: str) -> bool:
        return rel in self._snapshot()

    def has_folder(self, rel: str) -> bool:
        self._snapshot()
        return rel == "" or rel in self._folders

    def objects_below(self, rel: str) -> list[tuple[str, ObjectStat]]:
        prefix = rel.strip("/") + "/" if rel.strip("/") else ""
        return [(k, v) for k, v in self._snapshot().items() if k.startswith(prefix)]

    def scandir(self, folder: TreePath) -> list[Entry]:
        folder = _object(folder)
        self._snapshot()
        children = self._folders.get(folder.rel, {})
        out = []
        for name in sorted(children):
            path = folder / name
            is_dir = children[name]
            out.append(Entry(name, path, is_dir, path.rel in self._snapshot()))
        return out

    def stat(self, path: TreePath) -> ObjectStat:
        st = self._snapshot().get(_object(path).rel)
        if st is None:
            raise FileNotFoundError(f"no object {path}")
        return st

    # --- reads (always fresh)
    def read_bytes(self, path: TreePath) -> bytes:
        import duckdb

        path = _object(path)
        con = self.connect()
        try:
            row = con.execute("SELECT content FROM read_blob(?)", [str(path)]).fetchone()
        except duckdb.Error as e:
            if "404" in str(e) or "No files found" in str(e):
                raise FileNotFoundError(f"no object {path}") from None
            raise OSError(f"cannot read {path}: {e}") from e
        finally:
            con.close()
        if row is None:
            raise FileNotFoundError(f"no object {path}")
        return bytes(row[0])

    def restat(self, path: TreePath) -> ObjectStat:
        """The object's size and time now (a HEAD request), not from the snapshot."""
        import duckdb

        path = _object(path)
        con = self.connect()
        try:
            row = con.execute("SELECT size, epoch(last_modified) FROM read_blob(?)", [str(path)]).fetchone()
        except duckdb.Error as e:
            raise FileNotFoundError(f"no object {path}: {e}") from None
        finally:
            con.close()
        if row is None:
            raise FileNotFoundError(f"no object {path}")
        return ObjectStat(int(row[0] or 0), _seconds(row[1]))

    # --- run status by evidence
    def evidence_status(self, manifest: Mapping[str, Any], where: TreePath) -> str:
        """:func:`flightlog.runs.recover.run_status` for object stores: a ``running`` run
        whose process is gone (same host) or whose newest object is older than
        ``stale_after`` is ``crashed``."""
        from .status import status_by_evidence

        obj = _object(where)
        return status_by_evidence(manifest, lambda: self._newest_of_run(manifest, obj))

    def _newest_of_run(self, manifest: Mapping[str, Any], where: ObjectPath) -> float | None:
        """The newest object of the run in the snapshot (what ``ObjectTree.newest_time`` finds)."""
        from .s3tree import newest_ms_of_run

        if manifest.get("mode", "run") != "run" and where.suffix != ".toml":  # the flow folder
            where = where / RUNS_DIR / f"{manifest.get('run_id', '')}.toml"
        base = where if manifest.get("mode", "run") == "run" else where.parent.parent
        objects = [{"rel": k, "last_modified_ms": st.st_mtime * 1e3} for k, st in self.objects_below(base.rel)]
        ms = newest_ms_of_run(manifest, where.rel, objects)
        return None if ms is None else ms / 1e3

"""Which DuckDB wrote ``duckdb.db``: the ``.version`` sidecar, the file header, and
what to do with a file this DuckDB cannot read."""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from .. import _core
from .._errors import CatalogError, CatalogUnavailableError
from .sql import _duckdb, _is_lock_conflict
from .values import _utc_now_text

#: Beside ``duckdb.db``: which DuckDB last wrote it, as TOML a person (or a script
#: without DuckDB) can read. The same keys are in the table ``_flightlog.catalog_writer``.
VERSION_SUFFIX = ".version"
_HEADER_MAGIC = b"DUCK"


class CatalogUnreadable(CatalogUnavailableError, CatalogError):
    """``duckdb.db`` exists but this DuckDB cannot open it: another DuckDB line wrote it
    (DuckDB reads older storage versions, never newer ones), or it is not a DuckDB
    file. Derived data: :meth:`DuckDBManager.consolidate` rebuilds it from the run tree.

    ``what`` is the one-sentence cause; ``written_by`` the DuckDB version that wrote
    the file when known (from its header, else from the ``.version`` sidecar)."""

    def __init__(self, message: str, what: str, written_by: str | None, rebuildable: bool = True) -> None:
        super().__init__(message)
        self.what = what
        self.written_by = written_by
        #: False for a non-empty file that is not a DuckDB database: maybe another
        #: program's file at ``db_path``, so flightlog does not move it.
        self.rebuildable = rebuildable


def _file_header(path: Path) -> tuple[int | None, str | None]:
    """``(storage version number, DuckDB version)`` from a DuckDB file's main header, read
    without DuckDB: 8 bytes checksum, ``DUCK``, the storage version (uint64 LE), four
    uint64 flags, then the writing library's version (``v1.5.5``, 32 bytes). ``(None,
    None)`` when the file does not start like a DuckDB database.

    Never call this in a process that may hold a DuckDB connection to ``path``: DuckDB
    locks the file with POSIX ``fcntl`` locks, and closing *any* descriptor of a file
    drops every such lock the process holds on it. A writer that read its own header
    let readers in while it wrote (they saw a half-checkpointed file: a row count going
    back). Only the error path of a failed open (:func:`_unreadable`) and tools that
    hold no connection read it."""
    try:
        with open(path, "rb") as f:
            head = f.read(84)
    except OSError:
        return None, None
    if len(head) < 20 or head[8:12] != _HEADER_MAGIC:
        return None, None
    storage = int.from_bytes(head[12:20], "little")
    library = head[52:84].split(b"\0", 1)[0].decode("ascii", "replace").strip()
    return storage, (library.removeprefix("v") or None)


def read_catalog_version(db_path: str | os.PathLike[str]) -> dict[str, Any]:
    """What is known about the DuckDB that wrote ``db_path``, without opening it with DuckDB:
    the ``<db>.version`` sidecar's keys (``duckdb_version``, ``storage_version``,
    ``flightlog_version``, ``written_at``), and ``header_duckdb_version`` /
    ``header_storage_number`` from the file's own header. Missing parts are left out.

    Reading the header opens the file: a process that holds a DuckDB connection to
    ``db_path`` at that moment loses DuckDB's lock on it (POSIX ``fcntl`` locks end
    when the process closes any descriptor of the file). Call it from a process
    that has no connection to the catalog open (a tool, a check after close)."""
    path = Path(os.fspath(db_path))
    info = _read_sidecar(path)
    storage, library = _file_header(path)
    if storage is not None:
        info["header_storage_number"] = storage
    if library is not None:
        info["header_duckdb_version"] = library
    return info


def _read_sidecar(db_path: Path) -> dict[str, Any]:
    """The ``<db>.version`` sidecar's keys; empty when it is missing or unreadable."""
    with contextlib.suppress(OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return tomllib.loads(Path(str(db_path) + VERSION_SUFFIX).read_text("utf-8"))
    return {}


def _flightlog_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flightlog")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "unknown"


def _record_writer(con: Any, db_path: Path | None) -> None:
    """Records this DuckDB's version in ``_flightlog.catalog_writer`` of ``con``'s
    database and, for ``db_path``, in the ``<db>.version`` sidecar (written atomically).
    Cheap when nothing changed: the sidecar already names this DuckDB and flightlog."""
    duckdb = _duckdb()
    mine = {"duckdb_version": duckdb.__version__, "flightlog_version": _flightlog_version()}
    sidecar = Path(str(db_path) + VERSION_SUFFIX) if db_path is not None else None
    if db_path is not None:
        # The sidecar only, never the file's header: ``con`` holds DuckDB's lock on
        # ``db_path`` and reading the file would drop it (see :func:`_file_header`).
        known = _read_sidecar(db_path)
        if all(known.get(k) == v for k, v in mine.items()):
            return
    storage = ""
    with contextlib.suppress(Exception):  # tags (a MAP) name the storage version since DuckDB 1.2
        tags = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
        storage = str(dict(tags[0] or {}).get("storage_version") or "")
    info = {**mine, "storage_version": storage, "written_at": _utc_now_text()}
    con.execute("CREATE SCHEMA IF NOT EXISTS _flightlog")
    con.execute("CREATE TABLE IF NOT EXISTS _flightlog.catalog_writer (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.executemany("INSERT OR REPLACE INTO _flightlog.catalog_writer VALUES (?, ?)", list(info.items()))
    if sidecar is None:
        return
    text = "# The DuckDB that last wrote the flightlog catalog beside this file (written by flightlog).\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in info.items()
    )
    with contextlib.suppress(OSError):  # a note for people: never fail a consolidation over it
        _core.publish_bytes(sidecar, text.encode("utf-8"))


def _unreadable(path: Path, exc: BaseException) -> CatalogUnreadable | None:
    """The :class:`CatalogUnreadable` for DuckDB's error ``exc`` on opening ``path``, or
    ``None`` when ``exc`` is something else (a lock conflict, a missing folder, ...)."""
    duckdb = _duckdb()
    if _is_lock_conflict(exc) or not path.is_file():
        return None
    text = str(exc)
    storage, library = _file_header(path)
    info = read_catalog_version(path)
    written_by = library or info.get("duckdb_version") or None
    mine = duckdb.__version__
    said = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if storage is None:
        kept = f"{path.name}.unreadable.bak"
        try:
            empty = path.stat().st_size == 0
        except OSError:
            empty = False
        if not empty:
            what = f"{path} is not a DuckDB database file (DuckDB {mine} cannot read it)"
            message = (
                f"{what}. flightlog does not move a file it may not have written: if it is the catalog, move it "
                "aside (it holds nothing the run folders do not) and `flightlog consolidate` "
                f"(DuckDBManager.consolidate()) rebuilds it from the run tree. DuckDB said: {said}"
            )
            return CatalogUnreadable(message, what, None, rebuildable=False)
        what = f"{path} is empty, not a DuckDB database (a process killed while creating it leaves that)"
    else:
        other_line = written_by is not None and written_by != mine
        version_error = "version number" in text or "not a valid DuckDB database" in text
        serialization = isinstance(exc, duckdb.SerializationException | duckdb.InternalException)
        if "Corrupt database file" in text:
            what = f"{path.name} is corrupt (DuckDB {mine} cannot read it; its header names DuckDB {written_by})"
        elif version_error or (other_line and serialization):
            by = f"DuckDB {written_by}" if written_by else "another DuckDB version"
            what = f"{path.name} was written by {by} (storage version {storage}); this environment has {mine}"
        else:
            return None
        kept = f"{path.name}.duckdb-{written_by or storage}.bak"
    message = (
        f"{what}. The catalog holds nothing the run folders do not: `flightlog consolidate` "
        f"(DuckDBManager.consolidate()) rebuilds it from the run tree and keeps the old file as {kept}. "
        f"DuckDB said: {said}"
    )
    return CatalogUnreadable(message, what, written_by if storage is not None else None)


def _set_aside(path: Path, written_by: str | None) -> Path:
    """Renames the unreadable ``path`` (with its ``.wal`` and ``.version``) to
    ``<name>.duckdb-<version>.bak`` (``<name>.unreadable.bak`` when it is not a DuckDB
    file), never over an earlier one; the caller holds the writer lock."""
    storage, _ = _file_header(path)
    stem = f"{path.name}.duckdb-{written_by or storage}.bak" if storage is not None else f"{path.name}.unreadable.bak"
    kept = path.parent / stem
    n = 1
    while kept.exists():
        kept = path.parent / f"{stem}.{n}"
        n += 1
    os.rename(path, kept)
    for suffix in (".wal", VERSION_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{kept}{suffix}")
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return kept

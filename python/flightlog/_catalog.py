"""The DuckDB catalog: :class:`DuckDBManager` consolidates every run under a root into
one ``duckdb.db`` and answers SQL across runs.

Tables (``duckdb.db`` beside the run folders unless ``db_path`` says otherwise):

``runs``
    one row per run, from its manifest: ids, mode, status (by evidence: a
    ``running`` manifest whose process is gone is ``crashed``), times (naive UTC
    ``TIMESTAMP``), counts, cost, sampling, ``params``/``tags``/``units`` as JSON
    text, provenance columns, and the run's ``path`` relative to the root.
``telemetry``, ``events``
    every ingested row, union by name over all files, plus ``run_id``,
    ``flow_name`` and ``schema_version`` (from the file's Parquet metadata).
``_ingested_files``
    bookkeeping: ``path`` (relative to the root), ``kind``, ``run_id``,
    ``flow_name``, ``rows``, ``size``, ``mtime``, ``ingested_at`` and ``source``
    (the compacted file the rows were read from, for parts that were compacted
    before they were ingested).
``_flightlog.run_listing``
    bookkeeping for listing runs without reading every manifest (``flightlog runs``,
    ``show``, ``compare``): one row per run whose manifest is terminal (finished,
    failed, crashed) when consolidated, with that manifest's ``mtime_ns``, size and inode,
    the fields a listing shows and the manifest as JSON. A run is listed from it
    only while its manifest file still has that ``mtime_ns``, size and inode (a run
    changed, recovered or deleted since is read from its files; running and new
    runs always are). Written with the run's ``runs`` row, in the same
    transaction; a catalog from before it gets it at its next consolidate.

Guarantees of :meth:`DuckDBManager.consolidate`:

- Only immutable files are read: ``telemetry.parquet``/``events.parquet`` of runs
  whose manifest says ``finished``, ``failed`` or ``crashed`` (recovered), published
  append-mode parts ``flows/<flow>/{dev,tuner}_{telemetry,events}/part-*.parquet``
  and compacted files ``flows/<flow>/{dev,tuner}_{telemetry,events}.parquet``.
- Nothing is ingested twice: a part is recorded in ``_ingested_files`` by its
  path, and a compacted file contributes only the row ranges
  (``flightlog.segments``/``flightlog.segment_rows``) of the parts not yet
  ingested; a part listed in a compacted file is never read by itself.
- Atomic per file: a file's rows and its ``_ingested_files`` row commit in the same
  transaction (many files share one statement and one transaction when they
  can); a crash leaves the database as it was before that transaction.
- Never fatal on bad input: a type conflict with the table, a column whose name
  differs from another only in case (DuckDB names are case-insensitive), an
  unreadable Parquet file or a malformed manifest is skipped and reported with its
  reason, and never blocks later files.
- Nothing is opened that is not a regular file: a FIFO, socket or device (which
  would block the read for ever, holding the writer lock) and a symbolic link to a
  file (which may point outside the root or at another run's file) are skipped
  with their reason (:mod:`flightlog._regular`).
- One folder per run: a run folder copied (``cp -r fda_run_a fda_run_a.bak``) is
  ingested once; the copy is reported as skipped, naming both folders. A run
  folder renamed after it was ingested keeps its rows: the bookkeeping
  (``_ingested_files``, ``runs.path``) follows the files, which are recognised by
  run id, kind and size.
- A run's ``telemetry.parquet`` whose row count differs from its manifest's
  ``counts.rows_written`` is skipped with both numbers (the file is not the one
  the manifest describes: swapped, truncated or another run's).
- ``prune=True`` removes a run's rows only when every file they were ingested from
  and its manifest are gone (never because one copy or the old name of a folder
  went), and runs before new files are read, so the report never counts rows that
  the same call deleted.
  A new column is added to the table (``ALTER TABLE ... ADD COLUMN``); rows of
  older files get ``NULL`` there.
- One writer at a time: writers serialise on ``<db>.lock`` (``fcntl.flock``) and
  raise :class:`~flightlog.CatalogLockedError` after ``timeout`` seconds. DuckDB
  itself allows one read-write process *or* many readers: a writer opens the
  database only to read its bookkeeping and to write, never while it scans files,
  and readers open it only for the length of one query, each retrying a lock
  conflict until ``timeout``.
- Across DuckDB versions: the DuckDB that last wrote ``duckdb.db`` is recorded in
  ``_flightlog.catalog_writer`` and in the ``duckdb.db.version`` sidecar (TOML, read
  without DuckDB). A file this DuckDB cannot read (created by a newer DuckDB line,
  corrupt, or empty) raises :class:`~flightlog.CatalogUnavailableError` saying which
  DuckDB wrote it and which this is; :meth:`DuckDBManager.consolidate` sets it aside as
  ``duckdb.db.duckdb-<version>.bak`` and rebuilds the catalog from the run tree. A
  non-empty file that is no DuckDB database is named and never moved.

Beyond one machine (``pip install 'flightlog[lake]'``, see docs/SCALE_OUT.md):

- The root may be ``s3://bucket/prefix`` (same layout, key for path). It is
  listed and read through DuckDB's ``httpfs`` (:mod:`flightlog.runs.views`); with the
  embedded catalog, ``db_path`` (a local file) is then required.
- ``catalog="ducklake:postgres:<dsn>"`` keeps the same tables in a DuckLake
  catalog on PostgreSQL, data files under ``data_path`` (default ``<root>/lake/``,
  local or ``s3://``). There is no writer lock: many consolidators on many hosts
  write at once. Exactly-once ingestion comes from DuckLake's own conflict
  detection: every transaction that records files in ``_ingested_files`` also
  replaces the single row of a *guard table* (``_flightlog.guard_NN``, chosen by
  a hash of each file's path). DuckLake refuses to commit a transaction that
  inserts into a table another transaction deleted from since it began, so of two
  transactions that both saw a file as new, the second to commit fails; it then
  starts again, reads ``_ingested_files`` in its new snapshot, and drops the files
  the first one took. ``runs`` rows are guarded the same way (``guard_runs``).
- Reads of a DuckLake catalog go through one in-memory DuckDB session per manager
  (and process), made at the first read: its extensions are loaded once, and a
  PostgreSQL catalog stays attached read-only (a DuckDB-file catalog is attached
  only while reads run: its file lock would keep writers out). Each read runs on
  a cursor of its own, in transactions of its own, so it reads the catalog's
  latest snapshot: what any process committed before it began. Writers
  (:meth:`DuckDBManager.consolidate`) open a session of their own, as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import functools
import itertools
import json
import math
import os
import random
import re
import socket
import stat
import threading
import time
import tomllib
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._errors import CatalogError, CatalogLockedError, CatalogUnavailableError
from .runs.manifest import fsync_dir
from .runs.views import HttpfsTree, LocalTree, ObjectPath, duckdb_connect

try:  # POSIX only; elsewhere DuckDB's own file lock (with retries) is the only guard.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["CatalogUnavailableError", "ConsolidationReport", "DuckDBManager", "Result"]

#: Manifest statuses whose files are final (``crashed`` is written by ``recover``).
FINAL_STATUSES = frozenset({"finished", "failed", "crashed"})
_STATUSES = FINAL_STATUSES | {"running"}
_MODES = ("run", "dev", "tuner")
_KINDS = ("telemetry", "events")
#: Columns the catalog sets on every telemetry/events row.
RESERVED_COLUMNS = ("run_id", "flow_name", "schema_version")

# Runs are read only where they are: a link could point outside the root, or at
# another run (whose rows would then be ingested twice).
_LINK_REASON = "a symbolic link: not followed (it may point outside the root or at another run)"
_CAT = "flightlog_catalog"  # alias of the attached database in reader sessions
_FILE_COL = "__flightlog_file"
_BATCH_FILES = 512
_BATCH_ROWS = 50_000_000
_PART_RE = re.compile(r"^part-(?P<run_id>.+)-(?P<seq>\d+)\.parquet$")

_INTS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER")
# file type -> table types it may be inserted into without loss of meaning
_WIDENS = {
    **{t: {"BIGINT", "DOUBLE", "HUGEINT"} for t in _INTS},
    "UBIGINT": {"HUGEINT", "DOUBLE"},
    "FLOAT": {"DOUBLE"},
}
# type a new table column gets for a file type (so later f32/f64/i64 files fit)
_NEW_COLUMN_TYPE = {**{t: "BIGINT" for t in _INTS}, "FLOAT": "DOUBLE"}

_RUNS_COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR",
    "flow_name": "VARCHAR",
    "mode": "VARCHAR",
    "trial_id": "VARCHAR",
    "status": "VARCHAR",
    "manifest_status": "VARCHAR",
    "created_at": "TIMESTAMP",
    "finished_at": "TIMESTAMP",
    "duration_s": "DOUBLE",
    "error_type": "VARCHAR",
    "error_message": "VARCHAR",
    "schema_version": "INTEGER",
    "rows_offered": "BIGINT",
    "rows_written": "BIGINT",
    "rows_sampled_out": "BIGINT",
    "rows_dropped": "BIGINT",
    "rows_over_budget": "BIGINT",
    "rows_lost": "BIGINT",
    "segments": "BIGINT",
    "events": "BIGINT",
    "flush_secs": "DOUBLE",
    "bytes_written": "BIGINT",
    "producer_stalls": "BIGINT",
    "sampling_keep_first": "BIGINT",
    "sampling_every": "BIGINT",
    "max_rows": "BIGINT",
    "params": "VARCHAR",
    "tags": "VARCHAR",
    "units": "VARCHAR",
    "host": "VARCHAR",
    "pid": "BIGINT",
    "user": "VARCHAR",
    "argv": "VARCHAR",
    "cwd": "VARCHAR",
    "python": "VARCHAR",
    "platform": "VARCHAR",
    "flightlog_version": "VARCHAR",
    "numpy_version": "VARCHAR",
    "git_commit": "VARCHAR",
    "git_dirty": "BOOLEAN",
    "path": "VARCHAR",
    "manifest_path": "VARCHAR",
    "manifest_mtime_ns": "BIGINT",
    "manifest_size": "BIGINT",
    "updated_at": "TIMESTAMP",
}
_INGESTED_COLUMNS: dict[str, str] = {
    "path": "VARCHAR",
    "kind": "VARCHAR",
    "run_id": "VARCHAR",
    "flow_name": "VARCHAR",
    "rows": "BIGINT",
    "size": "BIGINT",
    "mtime": "DOUBLE",
    "ingested_at": "TIMESTAMP",
    "source": "VARCHAR",
}
#: ``_flightlog.run_listing``: what listing a run needs (``flightlog runs``, :func:`flightlog.runs.discover.scan_runs`),
#: one row per consolidated run whose manifest is terminal and plain (see :func:`_listing_row`).
#: A run is listed from this row while its manifest's ``mtime_ns`` and size are still the
#: ones recorded here; otherwise its manifest is read again (status by evidence).
_LISTING = "_flightlog.run_listing"
_LISTING_COLUMNS: dict[str, str] = {
    "manifest_path": "VARCHAR",
    "manifest_mtime_ns": "BIGINT",
    "manifest_size": "BIGINT",
    "manifest_ino": "UBIGINT",
    "run_id": "VARCHAR",
    "flow_name": "VARCHAR",
    "mode": "VARCHAR",
    "status": "VARCHAR",
    "created_at": "VARCHAR",
    "finished_at": "VARCHAR",
    "rows_written": "BIGINT",
    "manifest": "VARCHAR",
}
_MAP_COLUMNS = {
    "file": "VARCHAR",
    "run_id": "VARCHAR",
    "flow_name": "VARCHAR",
    "schema_version": "INTEGER",
    "lo": "BIGINT",
    "hi": "BIGINT",
}
_PRUNE_COLUMNS = {"run_id": "VARCHAR", "flow_name": "VARCHAR"}


def _duckdb() -> Any:
    import duckdb

    return duckdb


# --------------------------------------------------------------------------- DuckLake catalogs


class _Rollback(Exception):
    """Raised inside a transaction body: roll back and return ``value``."""

    def __init__(self, value: Any) -> None:
        super().__init__("rollback")
        self.value = value


class _GuardRepaired(Exception):
    """A guard table was found empty and has been refilled: run the transaction again."""


#: Guard tables (see the module doc): files hash to one of these; ``runs`` rows use ``guard_runs``.
_GUARD_SCHEMA = "_flightlog"
_GUARD_SHARDS = 8
_GUARD_RUNS = "guard_runs"
_GUARDS = (_GUARD_RUNS, *(f"guard_{i:02d}" for i in range(_GUARD_SHARDS)))
#: How often one transaction is tried again when other writers keep committing first.
_LAKE_ATTEMPTS = 60
_LAKE_ALIAS = "flightlog_lake"
_INSTALL_HINT = "pip install 'flightlog[lake]'"


class _LakeReads:
    """The in-memory DuckDB instance a DuckLake manager reads through, kept between calls.

    Loading the extensions costs most of a fresh session (~0.3-1 s), so the instance
    is made once; every read takes a cursor of its own on it. The catalog is attached
    read-only as ``_CAT``: a PostgreSQL catalog stays attached (``keep``), a
    DuckDB-file catalog only while reads run (its read lock on the metadata file
    would keep writers in other processes out). The manager's lock guards
    ``attached`` and ``users``.
    """

    def __init__(self, con: Any, keep: bool) -> None:
        self.con = con
        self.pid = os.getpid()
        self.keep = keep
        self.attached = False
        self.users = 0

    def settle(self) -> None:
        """Detaches the catalog when no read runs and it is not to be kept. The instance
        is not closed: Results hold cursors on it, and it goes when the last of them does."""
        if self.users == 0 and self.attached and not self.keep:
            self.attached = False
            with contextlib.suppress(Exception):
                self.con.execute(f"DETACH {_CAT}")


def _guard_table(name: str) -> str:
    return f"{_GUARD_SCHEMA}.{name}"


def _shard(rel: str) -> str:
    """The guard table of a file recorded under ``rel`` in ``_ingested_files``."""
    return f"guard_{zlib.crc32(rel.encode('utf-8')) % _GUARD_SHARDS:02d}"


# DSN passwords are masked in messages and repr; the patterns live in _redact.py (shared with
# the manifest's provenance.argv).
from ._redact import dsn_passwords as _dsn_passwords  # noqa: E402
from ._redact import redact_dsn as _redact  # noqa: E402


@dataclasses.dataclass(frozen=True)
class _LakeSpec:
    """A parsed ``catalog=`` string."""

    text: str  # what ATTACH gets: ducklake:postgres:<dsn> or ducklake:<absolute path>
    kind: str  # "postgres" or "duckdb"
    target: str  # the DSN or the metadata file path

    @property
    def display(self) -> str:
        """The catalog string without its password (for messages and ``repr``)."""
        return _redact(self.text, _dsn_passwords(self.target))

    def redact(self, text: str) -> str:
        return _redact(text, _dsn_passwords(self.target))

    @property
    def extensions(self) -> tuple[str, ...]:
        return ("ducklake", "postgres_scanner") if self.kind == "postgres" else ("ducklake",)


def _parse_catalog(catalog: Any) -> _LakeSpec:
    """Parses ``catalog=``: ``ducklake:postgres:<libpq DSN or URI>`` or ``ducklake:<file>``
    (also ``ducklake:duckdb:<file>``). Raises ``ValueError`` naming what is wrong."""
    usage = (
        "catalog= must be 'ducklake:postgres:<dsn>' (e.g. 'ducklake:postgres:dbname=lake host=db.example "
        "user=flightlog') or 'ducklake:<path>.ducklake' (a DuckDB file, one writer at a time)"
    )
    if not isinstance(catalog, str | os.PathLike):
        raise ValueError(f"{usage}; got {type(catalog).__name__} {catalog!r}")
    text = os.fspath(catalog).strip()
    if not text.lower().startswith("ducklake:"):
        raise ValueError(f"{usage}; got {_redact(text)!r}")
    rest = text[len("ducklake:") :]
    scheme, sep, after = rest.partition(":")
    scheme_l = scheme.lower()
    if sep and scheme_l in ("postgres", "postgresql"):
        return _LakeSpec(f"ducklake:postgres:{after.strip()}", "postgres", after.strip())
    if sep and scheme_l in ("sqlite", "mysql"):
        raise ValueError(
            f"catalog {_redact(text)!r}: DuckLake on {scheme_l} is not supported by flightlog "
            f"({_INSTALL_HINT} carries the PostgreSQL and DuckDB-file catalogs); {usage}"
        )
    if sep and scheme_l == "duckdb":
        rest = after
    elif sep and len(scheme) > 1 and scheme.isalpha() and not after.startswith(("\\", "/")):
        raise ValueError(f"catalog {_redact(text)!r}: unknown DuckLake catalog type {scheme!r}; {usage}")
    path = rest.strip()
    if not path:
        raise ValueError(f"catalog {text!r} names no catalog; {usage}")
    if "://" in path:
        raise ValueError(f"catalog {_redact(text)!r}: a DuckDB-file catalog must be a local file; {usage}")
    abs_path = str(Path(path).expanduser().absolute())
    return _LakeSpec(f"ducklake:{abs_path}", "duckdb", abs_path)


#: Error texts that mean "another transaction committed a conflicting change first" (DuckLake;
#: matched case-insensitively), "the catalog database cannot be reached" (PostgreSQL) and
#: "another process/connection holds the file" (DuckDB).
_CONFLICT_MARKERS = ("conflict", "could not serialize", "failed to commit ducklake transaction")
_UNREACHABLE_MARKERS = (
    "Unable to connect to Postgres",
    "could not connect to server",
    "Connection refused",
    "connection to server",
    "server closed the connection",
    "timeout expired",
)
_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "Unique file handle conflict", "different configuration")


def _mentions(exc: BaseException, markers: Iterable[str], *, fold: bool = False) -> bool:
    """Whether the text of ``exc`` contains one of ``markers`` (``fold``: ignoring case)."""
    text = str(exc).lower() if fold else str(exc)
    return any(marker in text for marker in markers)


def _is_conflict(exc: BaseException) -> bool:
    """True for DuckLake's "another transaction committed a conflicting change first" errors."""
    return _mentions(exc, _CONFLICT_MARKERS, fold=True)


def _is_unreachable(exc: BaseException) -> bool:
    """True for "the PostgreSQL server of the catalog cannot be reached" errors."""
    return _mentions(exc, _UNREACHABLE_MARKERS)


def _is_lock_conflict(exc: BaseException) -> bool:
    """True for DuckDB's "another process/connection holds the file" errors."""
    return _mentions(exc, _LOCK_MARKERS)


# --------------------------------------------------------------------------- small helpers


def _ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    """A quoted SQL string literal (only for our own paths and constant JSON structures)."""
    return "'" + text.replace("'", "''") + "'"


def _rows_source(columns: Mapping[str, str]) -> str:
    """SQL producing rows with ``columns`` from one bound JSON text parameter (a list of objects)."""
    structure = _literal(json.dumps([dict(columns)]))
    return f"(SELECT unnest(from_json(?::JSON, {structure}), recursive := true))"


def _json_safe(value: Any) -> Any:
    """``value`` made JSON-serialisable: non-finite floats become strings, dates ISO text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    return value


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(_json_safe(value), default=str)


def _utc_text(value: Any) -> str | None:
    """An ISO 8601 string or TOML date-time as naive-UTC ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day).isoformat(sep=" ")
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _utc_now_text() -> str:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _rollback_quietly(con: Any) -> None:
    """Rolls back the open transaction, if any (a failed ROLLBACK must not hide the error being raised)."""
    with contextlib.suppress(Exception):
        con.execute("ROLLBACK")


def _sleep_backoff(attempt: int, deadline: float | None) -> bool:
    """Sleep before retry ``attempt``; False when the deadline has passed."""
    now = time.monotonic()
    if deadline is not None and now >= deadline:
        return False
    delay = min(0.005 * (2**attempt), 0.25)
    if deadline is not None:
        delay = min(delay, max(deadline - now, 0.0))
    time.sleep(delay)
    return True


# --------------------------------------------------------------------------- results


# --------------------------------------------------------------------------- the catalog file's DuckDB version

#: Beside ``duckdb.db``: which DuckDB last wrote it, as TOML a person (or a script
#: without DuckDB) can read. The same keys are in the table ``_flightlog.catalog_writer``.
VERSION_SUFFIX = ".version"
_HEADER_MAGIC = b"DUCK"


class _CatalogUnreadable(CatalogUnavailableError, CatalogError):
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
    None)`` when the file does not start like a DuckDB database."""
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
    ``header_storage_number`` from the file's own header. Missing parts are left out."""
    path = Path(os.fspath(db_path))
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        info.update(tomllib.loads(Path(str(path) + VERSION_SUFFIX).read_text("utf-8")))
    storage, library = _file_header(path)
    if storage is not None:
        info["header_storage_number"] = storage
    if library is not None:
        info["header_duckdb_version"] = library
    return info


def _flightlog_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flightlog")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "unknown"


def _quiet(con: Any) -> None:
    """No DuckDB progress bar on this connection: DuckDB prints it to stdout for queries
    over 2 s (a busy machine, a large batch), into the output of ``flightlog query
    --format csv`` or of a program that consolidates."""
    con.execute("SET enable_progress_bar = false")


def _record_writer(con: Any, db_path: Path | None) -> None:
    """Records this DuckDB's version in ``_flightlog.catalog_writer`` of ``con``'s
    database and, for ``db_path``, in the ``<db>.version`` sidecar (written atomically).
    Cheap when nothing changed: the sidecar already names this DuckDB and flightlog."""
    duckdb = _duckdb()
    mine = {"duckdb_version": duckdb.__version__, "flightlog_version": _flightlog_version()}
    sidecar = Path(str(db_path) + VERSION_SUFFIX) if db_path is not None else None
    if sidecar is not None:
        known = read_catalog_version(db_path)  # type: ignore[arg-type]
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
    tmp = sidecar.parent / f".{sidecar.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, sidecar)
    except OSError:  # a note for people: never fail a consolidation over it
        with contextlib.suppress(OSError):
            tmp.unlink()


def _unreadable(path: Path, exc: BaseException) -> _CatalogUnreadable | None:
    """The :class:`_CatalogUnreadable` for DuckDB's error ``exc`` on opening ``path``, or
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
            return _CatalogUnreadable(message, what, None, rebuildable=False)
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
    return _CatalogUnreadable(message, what, written_by if storage is not None else None)


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


class Result:
    """The materialised result of a catalog query.

    The rows live in a temporary table of the Result's own in-memory DuckDB
    connection (with a DuckLake catalog, a cursor on the manager's read session),
    so the catalog file is released as soon as the query has run (a reader never
    holds ``duckdb.db`` longer than one query), and the rows are freed when the
    Result (and its ``relation``) is garbage-collected. The usual DuckDB result
    methods work, on both the 1.5 and the 2.x line:

    >>> r = db.query("SELECT run_id, status FROM runs WHERE flow_name = ?", ["gd"])  # doctest: +SKIP
    >>> r.fetchall(); r.df(); r.arrow(); r.pl()                                     # doctest: +SKIP

    ``relation`` is the DuckDB relation over the rows, for further relational
    work (``r.relation.filter("E < 1").aggregate("min(E)")``).
    """

    def __init__(self, con: Any, table: str, names: Sequence[str] | None = None) -> None:
        self._con = con
        self._table = table
        self._rel = con.table(table)
        if names is not None and list(names) != list(self._rel.columns) and len(names) == len(self._rel.columns):
            # The table had to rename duplicate names (x, x_1): show the query's own names.
            select = ", ".join(f"{_ident(c)} AS {_ident(n)}" for c, n in zip(self._rel.columns, names, strict=True))
            self._rel = con.sql(f"SELECT {select} FROM {table}")

    @property
    def relation(self) -> Any:
        """The ``duckdb.DuckDBPyRelation`` over the rows (a temporary table of the Result's connection)."""
        return self._rel

    @property
    def columns(self) -> list[str]:
        """Column names, in order."""
        return list(self._rel.columns)

    @property
    def types(self) -> list[str]:
        """DuckDB type names of the columns."""
        return [str(t) for t in self._rel.types]

    def __len__(self) -> int:
        return int(self._rel.aggregate("count(*)").fetchall()[0][0])

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())

    def fetchall(self) -> list[tuple[Any, ...]]:
        """All rows as tuples."""
        return self._rel.fetchall()

    def fetchone(self) -> tuple[Any, ...] | None:
        """The first row, or ``None`` when there is none."""
        rows = self._rel.limit(1).fetchall()
        return rows[0] if rows else None

    def fetchnumpy(self) -> dict[str, Any]:
        """Columns as a dict of numpy arrays."""
        return self._rel.fetchnumpy()

    def df(self) -> Any:
        """A ``pandas.DataFrame`` (needs pandas)."""
        return self._rel.df()

    def arrow(self) -> Any:
        """A ``pyarrow.Table`` (needs pyarrow)."""
        rel = self._rel
        return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()

    def pl(self) -> Any:
        """A ``polars.DataFrame`` (needs polars)."""
        return self._rel.pl()

    def to_dicts(self) -> list[dict[str, Any]]:
        """All rows as dicts keyed by column name."""
        cols = self.columns
        return [dict(zip(cols, row, strict=True)) for row in self.fetchall()]

    def __repr__(self) -> str:
        return repr(self._rel)

    def _repr_html_(self) -> str:
        from ._html import grid

        return grid(self.columns, self._rel.limit(21).fetchall(), title=f"{len(self)} rows")


@dataclasses.dataclass
class ConsolidationReport:
    """What one :meth:`DuckDBManager.consolidate` did.

    ``files_added`` counts ``_ingested_files`` rows (a part read from a compacted
    file counts as one file); ``files_skipped`` lists ``(path, reason)`` of files
    and manifests left out (they are retried next time). ``rows_added`` is
    ``telemetry_rows_added + event_rows_added``.
    """

    files_added: int = 0
    rows_added: int = 0
    telemetry_rows_added: int = 0
    event_rows_added: int = 0
    runs_added: int = 0
    runs_updated: int = 0
    files_skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    runs_pruned: int = 0
    #: Set when ``duckdb.db`` could not be read by this DuckDB (another DuckDB line
    #: wrote it, or it is not a database) and was rebuilt from the run tree: what
    #: happened and where the old file was kept.
    rebuilt: str | None = None

    def __str__(self) -> str:
        text = (
            f"{self.files_added:,} files, {self.telemetry_rows_added:,} telemetry rows, "
            f"{self.event_rows_added:,} event rows, {self.runs_added:,} runs added, "
            f"{self.runs_updated} runs updated"
        )
        if self.runs_pruned:
            text += f", {self.runs_pruned} runs pruned"
        if self.files_skipped:
            text += f", {len(self.files_skipped)} skipped"
        return text + f" in {self.seconds:.2f} s"

    def _repr_html_(self) -> str:
        from ._html import grid, key_values

        items = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "files_skipped"]
        html = key_values("ConsolidationReport", items)
        if self.files_skipped:
            html += grid(["skipped file", "reason"], self.files_skipped, title="skipped")
        return html


# --------------------------------------------------------------------------- discovery records


@dataclasses.dataclass
class _Piece:
    """Rows [lo, hi) of a file recorded under ``rel`` in ``_ingested_files``."""

    rel: str
    run_id: str | None
    flow_name: str | None
    lo: int | None = None
    hi: int | None = None
    size: int | None = None
    mtime: float | None = None


@dataclasses.dataclass
class _Unit:
    """One Parquet file to read: whole (one piece) or row ranges of a compacted file."""

    kind: str
    file: Path
    rel: str
    pieces: list[_Piece]
    compacted: bool = False
    marker: str | None = None  # _ingested_files row recording that a compacted version is covered
    flow_name: str | None = None
    size: int = 0
    mtime: float = 0.0
    rows: int = 0
    schema_version: int | None = None
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    kv: dict[str, str] = dataclasses.field(default_factory=dict)
    expected_rows: int | None = None  # the manifest's rows_written (run-folder telemetry)


@dataclasses.dataclass
class _State:
    ingested: dict[str, tuple[int | None, float | None, str | None]]
    files_by_run: dict[tuple[str | None, str | None], list[str]]
    runs: dict[str, dict[str, Any]]
    columns: dict[str, dict[str, str]]
    #: run-folder files already ingested, by (kind, run_id, flow_name): their paths
    run_files: dict[tuple[str, str | None, str | None], list[str]] = dataclasses.field(default_factory=dict)
    #: manifest paths that have a ``_flightlog.run_listing`` row
    listed: set[str] = dataclasses.field(default_factory=set)
    _by_key: dict[tuple[str | None, str | None], list[str]] | None = None

    def runs_by_key(self) -> dict[tuple[str | None, str | None], list[str]]:
        """Manifest paths of ``runs`` by (run_id, flow_name), built once (a lookup per
        changed run, not a scan of every run: quadratic at 10,000 changed runs)."""
        if self._by_key is None:
            self._by_key = {}
            for mp, known in self.runs.items():
                self._by_key.setdefault((known["run_id"], known["flow_name"]), []).append(mp)
        return self._by_key


@dataclasses.dataclass
class _Plan:
    """What discovery decided besides the files to read."""

    #: (old path, new path, size, mtime): an ingested run-folder file whose folder was
    #: renamed (the old path is gone, the same run's file of the same size is at the new one)
    moved: list[tuple[str, str, int, float]] = dataclasses.field(default_factory=list)
    #: (run_id, flow_name) of runs whose every ingested file and manifest are gone (prune=True)
    gone: list[tuple[str | None, str | None]] = dataclasses.field(default_factory=list)
    #: manifest paths of ``runs`` rows whose files are gone, without their run being gone
    gone_manifests: list[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- the manager


def _catalog_io(method: Callable[..., Any]) -> Callable[..., Any]:
    """Public entry points: DuckDB's I/O errors (``duckdb.IOException``, including its
    ``HTTPException``: a wrong S3 secret, an unreadable ``duckdb.db``) become
    :class:`~flightlog.CatalogError`, message kept, the DuckDB error chained. Other
    DuckDB errors (bad SQL given to :meth:`DuckDBManager.query`) and flightlog's own
    and Python's documented errors pass through unchanged."""
    import functools

    @functools.wraps(method)
    def wrapper(self: DuckDBManager, *args: Any, **kwargs: Any) -> Any:
        import duckdb

        try:
            return method(self, *args, **kwargs)
        except duckdb.IOException as e:
            text = str(e).strip()
            if self._lake is not None:
                text = self._lake.redact(text)
            raise CatalogError(f"{text} (catalog: {self._where}; root: {self.root})") from e

    return wrapper


class DuckDBManager:
    """Consolidates the runs under a root into ``duckdb.db`` and queries them.

    >>> db = DuckDBManager("telematry_cfs")              # doctest: +SKIP
    >>> print(db.consolidate())                          # doctest: +SKIP
    >>> db.query("SELECT run_id, min(E) FROM telemetry GROUP BY run_id").df()   # doctest: +SKIP

    Beyond one machine (``pip install 'flightlog[lake]'``):

    >>> db = DuckDBManager("s3://telemetry/prod", db_path="prod.duckdb")           # doctest: +SKIP
    >>> db = DuckDBManager("s3://telemetry/prod",                                  # doctest: +SKIP
    ...                    catalog="ducklake:postgres:dbname=lake host=db user=flightlog")
    >>> DuckDBManager("s3://telemetry/prod", files_only=True).live("20251020_153045")  # doctest: +SKIP

    Args:
        base_path: the root (else ``$FLIGHTLOG_ROOT``, else ``./telematry_cfs``): a
            folder, or ``s3://bucket/prefix`` (read through DuckDB ``httpfs``).
        db_path: the database file (default ``<root>/duckdb.db``; required, and
            local, for an ``s3://`` root without ``catalog`` or ``files_only``).
        read_only: never write; :meth:`consolidate` raises ``PermissionError``.
        timeout: seconds to wait for another process's lock before raising
            :class:`~flightlog.CatalogLockedError` (``None``: wait forever).
        catalog: ``None`` for the embedded ``duckdb.db``; ``"ducklake:postgres:<dsn>"``
            for a DuckLake catalog on PostgreSQL that many processes on many hosts
            write at once; ``"ducklake:<path>.ducklake"`` for a DuckLake catalog in
            a DuckDB file (one writer at a time).
        data_path: where a DuckLake catalog keeps its Parquet files (default
            ``<root>/lake/``; a folder or ``s3://`` URL). Only with ``catalog``.
        storage_options: object-store settings overriding the ``AWS_*``
            environment (``aws_endpoint``, ``aws_access_key_id``, ``aws_region``,
            ...; see :func:`flightlog.runs.s3.storage_options`).
        files_only: no catalog at all: the manager reads the run files under the
            root and nothing else. :meth:`live` works, :meth:`exists` is False,
            :meth:`query`, :meth:`runs`, :meth:`telemetry`, :meth:`events` and
            :meth:`compare` raise ``FileNotFoundError`` and :meth:`consolidate`
            ``PermissionError``. For an ``s3://`` root whose catalog is elsewhere
            or not wanted (the CLI's ``show``/``tail``/``plot`` without ``--db``/``--catalog``).
            Excludes ``db_path``, ``catalog`` and ``data_path``; implies ``read_only``.

    Raises:
        ValueError: a bad ``catalog`` string, or options that do not fit together.
        ImportError: a DuckDB extension that ``s3://`` or ``catalog`` needs is not
            installed (raised at first use; ``pip install 'flightlog[lake]'``).

    With ``duckdb.db`` the manager holds no connection between calls (each read
    opens the file for one query). With a DuckLake catalog it keeps one in-memory
    DuckDB session for reads (extensions loaded, a PostgreSQL catalog attached), and
    every read takes a cursor of its own on it, so each read still sees every commit
    made before it began, by any process. Either way it is safe to share between
    threads; :meth:`close` (or the end of a ``with`` block) releases the session.
    """

    def __init__(
        self,
        base_path: str | os.PathLike[str] | None = None,
        db_path: str | os.PathLike[str] | None = None,
        read_only: bool = False,
        timeout: float | None = 30,
        *,
        catalog: str | None = None,
        data_path: str | os.PathLike[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        files_only: bool = False,
    ) -> None:
        from .runs.ids import DEFAULT_ROOT, ROOT_ENV, resolve_root
        from .runs.s3 import ObjectLocation, is_object_url
        from .runs.s3 import storage_options as _storage_options

        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0 or math.isnan(timeout)):
            raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
        raw_root = base_path if base_path is not None else (os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
        raw_root = os.fspath(raw_root)
        self.files_only = bool(files_only)
        if self.files_only and (db_path is not None or catalog is not None or data_path is not None):
            raise ValueError(
                "files_only=True reads the run files without a catalog: it excludes db_path=, catalog= and data_path="
            )
        self._lake: _LakeSpec | None = _parse_catalog(catalog) if catalog is not None else None
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise TypeError(f"storage_options must be a mapping, got {type(storage_options).__name__}")
        self._storage_overrides = dict(storage_options or {})
        self._tree: LocalTree | HttpfsTree
        self.root: Path | ObjectPath
        if is_object_url(raw_root):
            self._tree = HttpfsTree(ObjectLocation.parse(raw_root), _storage_options(self._storage_overrides))
            self.root = self._tree.root
        else:
            local_root = resolve_root(raw_root, create=False).absolute()
            self._tree = LocalTree(local_root)
            self.root = local_root
        if self._lake is not None:
            if db_path is not None:
                raise ValueError("db_path= and catalog= exclude each other: db_path is the embedded duckdb.db file")
            self.db_path: Path | None = None
            if data_path is None:
                self.data_path: str | None = str(self.root / "lake").rstrip("/") + "/"
            else:
                dp = os.fspath(data_path)
                self.data_path = (dp if is_object_url(dp) else str(Path(dp).expanduser().absolute())).rstrip("/") + "/"
            self._data_path_given = data_path is not None
        elif self.files_only:
            self.db_path = None
            self.data_path = None
            self._data_path_given = False
        else:
            if data_path is not None:
                raise ValueError(
                    "data_path= is where a DuckLake catalog keeps its files: it needs catalog='ducklake:...'"
                )
            if db_path is None and isinstance(self.root, ObjectPath):
                raise ValueError(
                    f"DuckDBManager({str(self.root)!r}) needs db_path= (a local duckdb.db file: DuckDB cannot "
                    "write its database file to an object store) or catalog='ducklake:postgres:<dsn>' "
                    "(or files_only=True to read the run files without a catalog)"
                )
            if db_path is not None and is_object_url(os.fspath(db_path)):
                raise ValueError(f"db_path= must be a local file, got {os.fspath(db_path)!r}")
            self.db_path = (
                Path(os.fspath(db_path)).expanduser() if db_path is not None else Path(self.root) / "duckdb.db"
            ).absolute()
            self.data_path = None
            self._data_path_given = False
        self.catalog: str | None = self._lake.display if self._lake is not None else None
        self.read_only = bool(read_only) or self.files_only
        self.timeout = timeout
        self._closed = False
        self._result_ids = itertools.count()
        self._lake_ready = False
        self._lake_lock = threading.Lock()
        self._lake_reads: _LakeReads | None = None

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        if self.files_only:
            return f"DuckDBManager({str(self.root)!r}, files_only=True)"
        if self._lake is not None:
            return f"DuckDBManager({str(self.root)!r}, catalog={self.catalog!r}, data_path={self.data_path!r}, {mode})"
        return f"DuckDBManager({str(self.root)!r}, db_path={str(self.db_path)!r}, {mode})"

    @property
    def _where(self) -> str:
        """The catalog, for messages."""
        if self.files_only:
            return "no catalog (files_only=True)"
        return self.catalog if self.catalog is not None else str(self.db_path)

    @property
    def location(self) -> str:
        """Where the catalog is, for messages: the ``db_path`` file, or the DuckLake
        catalog string with its password masked (``"no catalog (files_only=True)"``
        for a ``files_only`` manager)."""
        return self._where

    @_catalog_io
    def exists(self) -> bool:
        """Whether the catalog has been created (by :meth:`consolidate`): the ``db_path``
        file exists, or the DuckLake catalog holds flightlog's tables. Creates nothing.

        Raises:
            CatalogUnavailableError: the DuckLake catalog's database cannot be reached.
        """
        self._check_open()
        if self.files_only:
            return False
        if self._lake is None:
            return self._db_file.exists()
        if self._lake_ready:
            return True
        try:
            with self._lake_cursor() as cur:
                self._lake_ready = self._lake_has_tables(cur)
        except FileNotFoundError:  # no DuckLake catalog there yet
            return False
        return self._lake_ready

    @staticmethod
    def _lake_has_tables(mem: Any) -> bool:
        return bool(
            mem.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
                "AND table_name IN ('runs', 'telemetry', 'events', '_ingested_files')",
                [_CAT],
            ).fetchall()[0][0]
            >= 4
        )

    @property
    def _db_file(self) -> Path:
        assert self.db_path is not None
        return self.db_path

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Mark the manager closed and release what it keeps between calls; idempotent.

        The DuckLake read session lets go of the catalog (and its PostgreSQL
        connections); Results already returned stay readable. An ``s3://`` root's
        scratch DuckDB session (for listings and footers) is closed too."""
        with self._lake_lock:
            self._closed = True
            reads, self._lake_reads = self._lake_reads, None
            if reads is not None:
                reads.keep = False
                reads.settle()
        self._tree.close()

    def __enter__(self) -> DuckDBManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this DuckDBManager is closed")

    def _check_root(self) -> None:
        """A local root that does not exist is an error (a mistyped path), never created:
        only recorders create roots."""
        if isinstance(self.root, Path) and not self.root.is_dir():
            if self.root.exists():
                raise NotADirectoryError(errno.ENOTDIR, "the flightlog root is not a folder", str(self.root))
            raise FileNotFoundError(
                errno.ENOENT, "no flightlog root (a folder of runs) at this path; check the path", str(self.root)
            )

    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout

    # ------------------------------------------------------------------ locking and connections

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """Holds ``<db>.lock`` exclusively (one writer process or thread at a time).

        A DuckLake catalog has no such lock: its writers run at once (module doc)."""
        if self._lake is not None:
            yield
            return
        self._db_file.parent.mkdir(parents=True, exist_ok=True)
        lock_path = Path(str(self.db_path) + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                deadline = self._deadline()
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
                                + f"; gave up after {self.timeout} s"
                            ) from None
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _open_rw(self, rebuild: ConsolidationReport | None = None) -> Iterator[Any]:
        """A read-write connection, retrying while readers hold the file; closed on exit.

        ``duckdb.db`` that this DuckDB cannot read (written by another DuckDB line, or
        not a database) raises :class:`_CatalogUnreadable`; with ``rebuild`` (the
        caller holds the writer lock and is about to consolidate) the file is set
        aside as ``duckdb.db.duckdb-<version>.bak`` instead and an empty catalog is
        published in its place, which the consolidation fills from the run tree.

        For a DuckLake catalog: an in-memory session of its own (not the cached read
        session) with the catalog attached read-write as the default database."""
        if self._lake is not None:
            con = self._lake_instance()
            try:
                self._attach_lake(con, read_only=False, alias=_LAKE_ALIAS)
                con.execute(f"USE {_LAKE_ALIAS}")
                yield con
            finally:
                con.close()
            return
        duckdb = _duckdb()
        if not self._db_file.exists():
            self._create_db_file()
        try:
            con = self._retry_locked(lambda: self._connect_rw(duckdb), "by another process")
        except _CatalogUnreadable as e:
            if rebuild is None or not e.rebuildable:
                raise
            kept = _set_aside(self._db_file, e.written_by)
            rebuild.rebuilt = f"{e.what}; rebuilt it from the run tree (the old file is kept as {kept.name})"
            self._create_db_file()
            con = self._retry_locked(lambda: self._connect_rw(duckdb), "by another process")
        try:
            _quiet(con)
            _record_writer(con, self._db_file)
            self._tree.prepare(con)
            yield con
        finally:
            con.close()

    def _connect_rw(self, duckdb: Any) -> Any:
        try:
            return duckdb.connect(str(self.db_path))
        except duckdb.Error as e:
            unreadable = _unreadable(self._db_file, e)
            if unreadable is None:
                raise
            raise unreadable from e

    def _create_db_file(self) -> None:
        """Creates ``duckdb.db``, with its tables and no rows, atomically (the caller
        holds the writer lock).

        ``duckdb.connect`` on a new path writes the file's header in place, so a
        process killed at that moment would leave a file DuckDB refuses for good; and
        a file published before its tables exist would make readers fail on a missing
        ``runs`` table. The database and its tables are made under a temp name in the
        same folder, fsynced, and published with a hard link (which, unlike a rename,
        never replaces a file another program created meanwhile); the folder is fsynced
        so the name survives power loss."""
        duckdb = _duckdb()
        final = self._db_file
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            # Left by a process killed while creating it; we hold the writer lock.
            with contextlib.suppress(OSError):
                stale.unlink()
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            con = duckdb.connect(str(tmp))
            try:
                self._ensure_schema(con)
                _record_writer(con, None)
            finally:
                con.close()  # checkpoints: the tables are in the file itself, not a .wal
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, final)
            fsync_dir(final.parent)
        finally:
            for leftover in (tmp, Path(f"{tmp}.wal")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    def _retry_locked(self, open_: Callable[[], Any], by: str) -> Any:
        """``open_()``, tried again while DuckDB says another process holds ``duckdb.db``;
        :class:`~flightlog.CatalogLockedError` after ``timeout`` seconds."""
        duckdb = _duckdb()
        deadline = self._deadline()
        for attempt in itertools.count():
            try:
                return open_()
            except duckdb.Error as e:
                if not _is_lock_conflict(e):
                    raise
                if not _sleep_backoff(attempt, deadline):
                    raise CatalogLockedError(f"{self.db_path} stayed locked {by} for {self.timeout} s: {e}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _lake_instance(self) -> Any:
        """A new in-memory DuckDB instance that can open the DuckLake catalog: its
        extensions loaded offline, the S3 secret created (no catalog attached yet)."""
        from .runs.s3 import is_object_url, load_extensions

        assert self._lake is not None
        con = duckdb_connect(offline=True)
        try:
            needs_s3 = isinstance(self._tree, HttpfsTree) or is_object_url(self.data_path or "")
            load_extensions(con, *self._lake.extensions, *(("httpfs",) if needs_s3 else ()))
            if isinstance(self._tree, HttpfsTree):
                self._tree.prepare(con)
            elif needs_s3:
                from .runs.s3 import duckdb_secret_sql, storage_options

                con.execute(duckdb_secret_sql(storage_options(self._storage_overrides)))
        except BaseException:
            con.close()
            raise
        return con

    @contextlib.contextmanager
    def _lake_cursor(self) -> Iterator[Any]:
        """A cursor with the DuckLake catalog attached read-only as ``_CAT`` and selected.

        The cursor is new (DuckDB connections are not shared between threads); the
        instance under it is the manager's :class:`_LakeReads`, made once per process,
        so the extensions are loaded and the catalog attached once, not per call
        (module doc). Every statement on the cursor is its own transaction, which
        reads the catalog's latest snapshot: a read sees all that was committed
        before it began, by any process."""
        with self._lake_lock:
            self._check_open()
            reads = self._lake_reads
            if reads is None or reads.pid != os.getpid():  # DuckDB does not survive fork()
                assert self._lake is not None
                reads = self._lake_reads = _LakeReads(self._lake_instance(), keep=self._lake.kind == "postgres")
            if not reads.attached:
                self._attach_lake(reads.con, read_only=True, alias=_CAT)
                reads.attached = True
            reads.users += 1
            cur = reads.con.cursor()
        failed: BaseException | None = None
        try:
            cur.execute(f"USE {_CAT}")
            yield cur
            with contextlib.suppress(Exception):
                cur.execute("USE memory")  # a Result on the cursor outlives the attach
        except BaseException as e:
            failed = e
            with contextlib.suppress(Exception):
                cur.close()
            raise
        finally:
            with self._lake_lock:
                reads.users -= 1
                if failed is not None and _is_unreachable(failed):
                    # The server went away: the next read connects again.
                    reads.keep = False
                    if self._lake_reads is reads:
                        self._lake_reads = None
                reads.settle()

    def _attach_lake(self, con: Any, read_only: bool, alias: str) -> None:
        assert self._lake is not None
        duckdb = _duckdb()
        lake = self._lake
        options = [f"DATA_PATH {_literal(self.data_path or '')}"]
        if read_only:
            options.append("READ_ONLY")
            if lake.kind == "duckdb" and not os.path.exists(lake.target):
                raise FileNotFoundError(
                    f"no DuckLake catalog at {lake.display} yet; run DuckDBManager(..., catalog=...).consolidate() first"
                )
        deadline = self._deadline()
        for attempt in itertools.count():
            try:
                con.execute(f"ATTACH {_literal(lake.text)} AS {alias} ({', '.join(options)})")
                return
            except duckdb.Error as e:
                text = str(e)
                if "does not match existing data path" in text:
                    if not self._data_path_given:
                        # The catalog was created with another data path: it holds, not our default.
                        options = [o for o in options if not o.startswith("DATA_PATH")]
                        continue
                    raise ValueError(
                        f"data_path={self.data_path!r} differs from the data path the DuckLake catalog "
                        f"{lake.display} was created with: {lake.redact(text)}"
                    ) from None
                if lake.kind == "duckdb" and _is_lock_conflict(e):
                    if _sleep_backoff(attempt, deadline):
                        continue
                    raise CatalogLockedError(
                        f"the DuckLake catalog {lake.display} stayed locked by another process for {self.timeout} s"
                    ) from None
                if read_only and "creating a new DuckLake is explicitly disabled" in text:
                    raise FileNotFoundError(
                        f"no DuckLake catalog at {lake.display} yet; run DuckDBManager(..., catalog=...).consolidate() "
                        "first"
                    ) from None
                if "Failed to initialize DuckLake" in text and attempt < 20:
                    # Another process created the catalog's metadata tables at the same moment.
                    time.sleep(0.05 * (1 + random.random()) * min(attempt + 1, 5))
                    continue
                if lake.kind == "postgres" and _is_unreachable(e):
                    reason = lake.redact(text)
                    m = re.search(r'Unable to connect to Postgres at ".*?": (.*)', reason, re.DOTALL)
                    raise CatalogUnavailableError(
                        f"cannot reach the DuckLake catalog database {lake.display}: {_short(m.group(1) if m else reason)}"
                    ) from None
                raise type(e)(lake.redact(text)) from None

    def _transaction(self, what: str, body: Callable[[Any], Any], con: Any) -> Any:
        """Runs ``body(con)`` in one transaction and returns what it returns.

        ``body`` may raise :class:`_Rollback` to roll back and return its value. On a
        DuckLake catalog the transaction is run again while other writers commit a
        conflicting change first (up to ``_LAKE_ATTEMPTS`` times), and again after an
        emptied guard table was refilled (:class:`_GuardRepaired`); on ``duckdb.db`` it
        runs once (the writer lock excludes other writers)."""
        duckdb = _duckdb()
        for attempt in itertools.count():
            con.execute("BEGIN")
            try:
                result = body(con)
                con.execute("COMMIT")
                return result
            except _Rollback as r:
                con.execute("ROLLBACK")
                return r.value
            except _GuardRepaired:
                _rollback_quietly(con)
                self._refill_guards(con)
            except duckdb.Error as e:
                _rollback_quietly(con)
                if self._lake is None or not _is_conflict(e) or attempt + 1 >= _LAKE_ATTEMPTS:
                    raise
                time.sleep(min(0.01 * 1.5**attempt, 1.0) * (0.5 + random.random()))
            except BaseException:
                _rollback_quietly(con)
                raise
        raise AssertionError(f"unreachable ({what})")  # pragma: no cover

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Any]:
        """A connection with the catalog attached read-only as the default database.

        ``duckdb.db``: a private in-memory connection; the file is detached on exit
        (results stay in memory). DuckLake: a cursor on the manager's cached read
        session (:meth:`_lake_cursor`)."""
        if self.files_only:
            raise FileNotFoundError(
                f"DuckDBManager({str(self.root)!r}, files_only=True) has no catalog: it reads run files only "
                "(live()); query(), runs(), telemetry(), events() and compare() need db_path= or catalog="
            )
        if self._lake is not None:
            if not self.read_only and not self._lake_ready:
                with self._open_rw() as con:
                    self._ensure_schema(con)
            with self._lake_cursor() as cur:
                if not self._lake_ready:
                    if not self._lake_has_tables(cur):
                        raise FileNotFoundError(
                            f"no flightlog tables in the DuckLake catalog {self._where}; "
                            "run DuckDBManager(..., catalog=...).consolidate() first"
                        )
                    self._lake_ready = True
                yield cur
            return
        duckdb = _duckdb()
        if not self._db_file.exists():
            if self.read_only:
                raise FileNotFoundError(f"no catalog at {self.db_path}; run DuckDBManager(...).consolidate() first")
            self._check_root()
            with self._writer_lock(), self._open_rw() as con:
                self._ensure_schema(con)

        def attach() -> Any:
            mem = duckdb.connect(":memory:")
            try:
                _quiet(mem)
                mem.execute(f"ATTACH {_literal(str(self.db_path))} AS {_CAT} (READ_ONLY)")
            except duckdb.Error as e:
                mem.close()
                unreadable = _unreadable(self._db_file, e)
                if unreadable is None:
                    raise
                raise unreadable from e
            except BaseException:
                mem.close()
                raise
            return mem

        mem = self._retry_locked(attach, "by a writer")
        try:
            mem.execute(f"USE {_CAT}")
            yield mem
        finally:
            with contextlib.suppress(Exception):
                mem.execute("USE memory")
                mem.execute(f"DETACH {_CAT}")

    def _materialise(self, mem: Any, sql: str, params: Any = None, *, names: bool = False) -> Result:
        """Runs ``sql`` into a table of ``mem`` (the Result's own connection: the table is
        freed with it, when the Result is garbage-collected).

        With ``duckdb.db`` the table is in ``mem``'s own in-memory database, not in the
        catalog the query sees (``SHOW TABLES`` lists the catalog's tables only); a
        DuckLake read session is shared, so there it is a temporary table of the cursor.
        ``names``: keep the query's column names where the table had to rename
        duplicates (``SELECT 1 AS x, 2 AS x``)."""
        n = next(self._result_ids)
        table = f"temp.main._result_{n}" if self._lake is not None else f"memory.main._flightlog_result_{n}"
        create = "CREATE TEMP TABLE" if self._lake is not None else "CREATE TABLE"
        body = _strip_terminators(sql)
        columns = None
        if names:
            with contextlib.suppress(Exception):  # DESCRIBE takes queries, not SHOW/SUMMARIZE (no duplicates there)
                columns = [r[0] for r in mem.execute(f"DESCRIBE {body}\n", params).fetchall()]
        mem.execute(f"{create} {table.replace('temp.main.', '')} AS SELECT * FROM (\n{body}\n)", params)
        return Result(mem, table, columns)

    # ------------------------------------------------------------------ schema

    def _ensure_schema(self, con: Any) -> None:
        def cols(spec: Mapping[str, str]) -> str:
            return ", ".join(f"{_ident(k)} {v}" for k, v in spec.items())

        reserved = "run_id VARCHAR, flow_name VARCHAR, schema_version INTEGER"
        if self._lake is not None:
            # DuckLake has no PRIMARY KEY: exactly-once comes from the guard tables.

            def create(con: Any) -> None:
                con.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols(_RUNS_COLUMNS)})")
                con.execute(f"CREATE TABLE IF NOT EXISTS telemetry ({reserved})")
                con.execute(f"CREATE TABLE IF NOT EXISTS events ({reserved})")
                con.execute(f"CREATE TABLE IF NOT EXISTS _ingested_files ({cols(_INGESTED_COLUMNS)})")
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {_GUARD_SCHEMA}")
                con.execute(f"CREATE TABLE IF NOT EXISTS {_LISTING} ({cols(_LISTING_COLUMNS)})")
                for g in _GUARDS:
                    con.execute(f"CREATE TABLE IF NOT EXISTS {_guard_table(g)} (token VARCHAR, written_at TIMESTAMP)")
                    con.execute(
                        f"INSERT INTO {_guard_table(g)} SELECT 'created', now()::TIMESTAMP "
                        f"WHERE NOT EXISTS (SELECT 1 FROM {_guard_table(g)})"
                    )

            have = con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                "AND ((schema_name = 'main' AND table_name IN ('runs', 'telemetry', 'events', '_ingested_files')) "
                "OR (schema_name = ? AND (table_name LIKE 'guard_%' OR table_name = 'run_listing')))",
                [_GUARD_SCHEMA],
            ).fetchall()[0][0]
            if have < 5 + len(_GUARDS):
                self._transaction("create the catalog tables", create, con)
            self._lake_ready = True
            return
        ingested = cols(_INGESTED_COLUMNS).replace('"path" VARCHAR', '"path" VARCHAR PRIMARY KEY', 1)

        def create_embedded(con: Any) -> None:
            con.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols(_RUNS_COLUMNS)})")
            con.execute(f"CREATE TABLE IF NOT EXISTS telemetry ({reserved})")
            con.execute(f"CREATE TABLE IF NOT EXISTS events ({reserved})")
            con.execute(f"CREATE TABLE IF NOT EXISTS _ingested_files ({ingested})")
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {_GUARD_SCHEMA}")
            con.execute(f"CREATE TABLE IF NOT EXISTS {_LISTING} ({cols(_LISTING_COLUMNS)})")

        self._transaction("create the catalog tables", create_embedded, con)

    def _refill_guards(self, con: Any) -> None:
        """Gives every empty guard table a row again (its own transaction; a race adds two rows,
        which guards as well as one)."""

        def refill(con: Any) -> None:
            for g in _GUARDS:
                con.execute(
                    f"INSERT INTO {_guard_table(g)} SELECT 'refilled', now()::TIMESTAMP "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {_guard_table(g)})"
                )

        self._transaction("refill the guard tables", refill, con)

    def _guard(self, con: Any, guards: Iterable[str]) -> None:
        """Replaces the row of each guard table (inside the caller's transaction): of two
        transactions that do this to the same table, DuckLake commits only the first."""
        token = f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        for g in sorted(set(guards)):
            table = _guard_table(g)
            deleted = con.execute(f"DELETE FROM {table}").fetchall()[0][0]
            con.execute(f"INSERT INTO {table} VALUES (?, now()::TIMESTAMP)", [token])
            if not deleted:
                # An empty guard guards nothing (deleting no row is no change): it was
                # emptied by hand. The caller rolls back, refills it and starts again.
                raise _GuardRepaired(f"guard table {table} was empty")

    @staticmethod
    def _table_columns(con: Any, table: str) -> dict[str, str]:
        rows = con.execute(f"DESCRIBE {_ident(table)}").fetchall()
        return {r[0]: str(r[1]) for r in rows}

    def _load_state(self, con: Any) -> _State:
        ingested: dict[str, tuple[int | None, float | None, str | None]] = {}
        files_by_run: dict[tuple[str | None, str | None], list[str]] = {}
        run_files: dict[tuple[str, str | None, str | None], list[str]] = {}
        for path, kind, run_id, flow, size, mtime, source in con.execute(
            "SELECT path, kind, run_id, flow_name, size, mtime, source FROM _ingested_files"
        ).fetchall():
            ingested[path] = (size, mtime, source)
            files_by_run.setdefault((run_id, flow), []).append(source or path)
            if source is None and kind in _KINDS and not path.startswith("flows/"):
                run_files.setdefault((kind, run_id, flow), []).append(path)
        runs = {}
        for row in con.execute(
            "SELECT manifest_path, manifest_mtime_ns, manifest_size, status, manifest_status, run_id, flow_name, "
            "mode, path, rows_written FROM runs"
        ).fetchall():
            keys = ("manifest_mtime_ns", "manifest_size", "status", "manifest_status", "run_id", "flow_name", "mode")
            runs[row[0]] = dict(zip(keys, row[1:8], strict=True)) | {"path": row[8], "rows_written": row[9]}
        columns = {t: self._table_columns(con, t) for t in _KINDS}
        listed = {r[0] for r in con.execute(f"SELECT manifest_path FROM {_LISTING}").fetchall()}
        return _State(ingested, files_by_run, runs, columns, run_files, listed)

    # ------------------------------------------------------------------ consolidation

    @_catalog_io
    def consolidate(
        self, prune: bool = False, progress: Callable[[int, int], Any] | None = None
    ) -> ConsolidationReport:
        """Ingest every new immutable file under the root; update changed runs.

        Incremental and idempotent: a second call with nothing new adds nothing.
        ``prune=True`` also removes the rows (in every table) of runs whose every
        ingested file and manifest are gone (a renamed folder's files count at
        their new place; see the module doc).
        ``progress(done_files, total_files)`` is called as files are written.

        With a DuckLake catalog, any number of processes on any number of hosts
        may consolidate the same root at once: each file is ingested exactly once
        (module doc), each process reporting what it added itself.

        Raises:
            PermissionError: the manager is read-only.
            FileNotFoundError: the (local) root does not exist; nothing is created.
            CatalogLockedError: another writer held the catalog for ``timeout`` s.
            CatalogUnavailableError: the DuckLake catalog's database cannot be reached, or
                ``db_path`` is a non-empty file that is not a DuckDB database (left alone).
            ImportError: a DuckDB extension is missing (``pip install 'flightlog[lake]'``).

        A ``duckdb.db`` this DuckDB cannot read (another DuckDB line created it, or it is
        corrupt or empty) is kept as ``duckdb.db.duckdb-<version>.bak`` and rebuilt from
        the run tree; ``report.rebuilt`` says so.
        """
        self._check_open()
        if self.files_only:
            raise PermissionError(
                f"DuckDBManager({str(self.root)!r}, files_only=True) has no catalog to consolidate into; "
                "pass db_path= or catalog="
            )
        if self.read_only:
            raise PermissionError(f"DuckDBManager(read_only=True) cannot consolidate {self._where}")
        self._check_root()
        t0 = time.perf_counter()
        report = ConsolidationReport()
        if self._lake is not None:
            # No lock and no reason to let go of the session while the files are listed.
            with self._open_rw() as con:
                self._ensure_schema(con)
                state = self._load_state(con)
                run_rows, units, plan = self._discover(state, report, prune)
                self._write(con, run_rows, units, plan, state, report, progress)
            report.seconds = time.perf_counter() - t0
            return report
        with self._writer_lock():
            with self._open_rw(rebuild=report) as con:
                self._ensure_schema(con)
                state = self._load_state(con)
            run_rows, units, plan = self._discover(state, report, prune)
            with self._open_rw() as con:
                self._write(con, run_rows, units, plan, state, report, progress)
        report.seconds = time.perf_counter() - t0
        return report

    def _write(
        self,
        con: Any,
        run_rows: list[dict[str, Any]],
        units: list[_Unit],
        plan: _Plan,
        state: _State,
        report: ConsolidationReport,
        progress: Callable[[int, int], Any] | None,
    ) -> None:
        self._write_runs(con, run_rows, state, report)
        if plan.moved:
            self._move(con, plan.moved)
        # Prune before ingesting: the report never counts rows that the same call deletes.
        if plan.gone or plan.gone_manifests:
            self._prune(con, plan, report)
        self._write_units(con, units, state, report, progress)

    # --- discovery (no database held) ---------------------------------

    def _rel(self, path: Path) -> str:
        if type(path) is type(self.root) and isinstance(path, Path):
            # A string prefix, not relative_to(): 3 us a call, 7 calls a run.
            text, top = str(path), str(self.root)
            if text.startswith(top + "/") and "/.." not in text and "/./" not in text:
                return text[len(top) + 1 :]
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def _settled(self, folder: str, name: str, state: _State) -> tuple[str, str | None, str, int | None] | None:
        """A local run folder with nothing to do, known without building a path: its
        manifest unchanged since it was consolidated (mtime_ns, size; a terminal status,
        listed), and each of its data files ingested and unchanged (size, mtime). Returns
        its run info, as :meth:`_check_run` would; None means "look at it in full"
        (anything new, changed, missing or odd is handled and reported there)."""
        rel = f"{name}/manifest.toml"
        known = state.runs.get(rel)
        if known is None or known["status"] == "running" or rel not in state.listed:
            return None
        try:
            st = os.lstat(f"{folder}/manifest.toml")
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or (st.st_mtime_ns, st.st_size) != (
            known["manifest_mtime_ns"],
            known["manifest_size"],
        ):
            return None
        if known["manifest_status"] not in FINAL_STATUSES:
            return None
        for kind in _KINDS:
            done = state.ingested.get(f"{name}/{kind}.parquet")
            if done is None:
                return None
            try:
                fst = os.lstat(f"{folder}/{kind}.parquet")
            except OSError:
                return None
            size, mtime, _ = done
            if (
                not stat.S_ISREG(fst.st_mode)
                or size != fst.st_size
                or mtime is None
                or abs(mtime - fst.st_mtime) > 1e-6
            ):
                return None
        return known["run_id"], known["flow_name"], known["manifest_status"], known["rows_written"]

    def _discover(
        self, state: _State, report: ConsolidationReport, prune: bool
    ) -> tuple[list[dict[str, Any]], list[_Unit], _Plan]:
        run_rows: list[dict[str, Any]] = []
        units: list[_Unit] = []
        plan = _Plan()
        folders: list[tuple[Path, tuple[str, str | None, str, int | None], dict[str, Any] | None]] = []
        self._tree.refresh()  # an object store is listed once, here
        lake_dir = self._lake_data_folder()
        settled: set[int] = set()
        if self.root.is_dir() and isinstance(self._tree, LocalTree):
            # Local: one scandir; a folder with nothing new is recognised from two lstat calls
            # and the bookkeeping, without a Path (consolidate with nothing new, 100,000 runs).
            top = str(self.root)
            with os.scandir(top) as it:
                raw = sorted(it, key=lambda e: e.name)
            for e in raw:
                if e.name == "flows" or e.name.startswith("."):
                    continue
                try:
                    is_dir, is_link = e.is_dir(), e.is_symlink()
                except OSError:
                    continue
                if not is_dir:
                    continue
                if not is_link:
                    info = self._settled(e.path, e.name, state)
                    if info is not None:
                        settled.add(len(folders))
                        folders.append((e.path, info, None))  # a str: a Path only if it has a copy
                        continue
                path = Path(e.path)
                if path == lake_dir:
                    continue  # the DuckLake catalog's own data files
                if is_link:
                    if (path / "manifest.toml").exists():
                        report.files_skipped.append((e.name, _LINK_REASON))
                    continue
                found = self._run_folder_info(path, state, report, run_rows)
                if found is not None:
                    folders.append((path, *found))
        elif self.root.is_dir():
            for entry in self._tree.scandir(self.root):
                if entry.name == "flows" or entry.name.startswith(".") or not entry.is_dir:
                    continue
                if entry.path == lake_dir:
                    continue  # the DuckLake catalog's own data files
                if entry.is_symlink:
                    if (entry.path / "manifest.toml").exists():
                        report.files_skipped.append((entry.name, _LINK_REASON))
                    continue
                found = self._run_folder_info(entry.path, state, report, run_rows)
                if found is not None:
                    folders.append((entry.path, *found))
        if self.root.is_dir():
            keep = self._one_folder_per_run(folders, state, report, run_rows)
            for i in keep:
                if i not in settled:
                    folder, info, row = folders[i]
                    self._discover_run_folder(folder, info, row, state, report, units, plan)
            flows = self.root / "flows"
            if flows.is_symlink():
                report.files_skipped.append(("flows", _LINK_REASON))
            elif flows.is_dir():
                for entry in self._tree.scandir(flows):
                    if entry.is_dir and not entry.name.startswith("."):
                        if entry.is_symlink:
                            report.files_skipped.append((f"flows/{entry.name}", _LINK_REASON))
                            continue
                        self._discover_flow(entry.path, state, report, run_rows, units)
        self._read_metadata(units, report)
        if prune:
            self._gone_runs(state, plan, run_rows)
        return run_rows, [u for u in units if u.pieces or u.marker], plan

    def _lake_data_folder(self) -> Any:
        """The DuckLake data folder when it is a folder right below the root (else None)."""
        if self.data_path is None:
            return None
        top = self.data_path.rstrip("/")
        root = str(self.root).rstrip("/")
        if top.startswith(root + "/") and "/" not in top[len(root) + 1 :]:
            return self.root / top[len(root) + 1 :]
        return None

    def _parse_manifest(self, path: Any, report: ConsolidationReport) -> dict[str, Any] | None:
        """A manifest's content, or None (reported) when it is malformed."""
        rel = self._rel(path)
        try:
            raw = self._tree.read_bytes(path)
            data = tomllib.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            report.files_skipped.append((rel, f"malformed manifest: {e}"))
            return None
        problems = []
        if not isinstance(data.get("run_id"), str) or not data["run_id"]:
            problems.append("run_id missing or not a string")
        if data.get("status") not in _STATUSES:
            problems.append(f"status {data.get('status')!r} is not one of {sorted(_STATUSES)}")
        if data.get("mode", "run") not in _MODES:
            problems.append(f"mode {data.get('mode')!r} is not one of {list(_MODES)}")
        for table in ("params", "tags", "units", "provenance", "counts", "cost", "sampling"):
            if table in data and not isinstance(data[table], Mapping):
                problems.append(f"[{table}] is not a table")
        if problems:
            report.files_skipped.append((rel, "malformed manifest: " + "; ".join(problems)))
            return None
        return data

    def _run_row(
        self, data: Mapping[str, Any], status: str, path: Path, manifest: Path, st: os.stat_result
    ) -> dict[str, Any]:
        prov = data.get("provenance") or {}
        counts = data.get("counts") or {}
        cost = data.get("cost") or {}
        sampling = data.get("sampling") or {}
        created, finished = _utc_text(data.get("created_at")), _utc_text(data.get("finished_at"))
        duration = None
        if created and finished:
            duration = (_dt.datetime.fromisoformat(finished) - _dt.datetime.fromisoformat(created)).total_seconds()
        argv = prov.get("argv")
        return {
            "run_id": data["run_id"],
            "flow_name": _str(data.get("flow_name")),
            "mode": _str(data.get("mode", "run")),
            "trial_id": _str(data.get("trial_id")),
            "status": status,
            "manifest_status": data["status"],
            "created_at": created,
            "finished_at": finished,
            "duration_s": duration,
            "error_type": _str(data.get("error_type")),
            "error_message": _str(data.get("error_message")),
            "schema_version": _int(data.get("schema_version")),
            **{k: _int(counts.get(k)) for k in _RUNS_COLUMNS if k.startswith("rows_")},
            "segments": _int(counts.get("segments")),
            "events": _int(counts.get("events")),
            "flush_secs": _float(cost.get("flush_secs")),
            "bytes_written": _int(cost.get("bytes_written")),
            "producer_stalls": _int(cost.get("producer_stalls")),
            "sampling_keep_first": _int(sampling.get("keep_first")),
            "sampling_every": _int(sampling.get("every")),
            "max_rows": _int(sampling.get("max_rows")),
            "params": _json_text(data.get("params")),
            "tags": _json_text(data.get("tags")),
            "units": _json_text(data.get("units")),
            "host": _str(prov.get("host")),
            "pid": _int(prov.get("pid")),
            "user": _str(prov.get("user")),
            "argv": _json_text(argv) if isinstance(argv, list) else _str(argv),
            "cwd": _str(prov.get("cwd")),
            "python": _str(prov.get("python")),
            "platform": _str(prov.get("platform")),
            "flightlog_version": _str(prov.get("flightlog_version")),
            "numpy_version": _str(prov.get("numpy_version")),
            "git_commit": _str(prov.get("git_commit")),
            "git_dirty": prov.get("git_dirty") if isinstance(prov.get("git_dirty"), bool) else None,
            "path": self._rel(path),
            "manifest_path": self._rel(manifest),
            "manifest_mtime_ns": st.st_mtime_ns,
            "manifest_size": st.st_size,
            "updated_at": _utc_now_text(),
            "_listing": _listing_row(data, self._rel(manifest), st),
        }

    def _check_run(
        self,
        manifest: Path,
        run_path: Path,
        folder: Path | None,
        state: _State,
        report: ConsolidationReport,
        run_rows: list[dict[str, Any]],
    ) -> tuple[str, str | None, str, int | None] | None:
        """Reads a run's manifest if needed; queues its runs row when new or changed.

        Returns (run_id, flow_name, manifest status, rows_written) or None when it is
        missing/malformed.
        """
        rel = self._rel(manifest)
        reason = self._tree.unreadable(manifest)
        if reason is not None:  # a FIFO would block the read; a link may point at another run
            report.files_skipped.append((rel, f"manifest is {reason}"))
            return None
        try:
            st = manifest.stat()
        except FileNotFoundError:
            return None
        known = state.runs.get(rel)
        unchanged = (
            known is not None and known["manifest_mtime_ns"] == st.st_mtime_ns and known["manifest_size"] == st.st_size
        )
        # A catalog written before _flightlog.run_listing existed gets its listing rows once.
        backfill = unchanged and known["manifest_status"] in FINAL_STATUSES and rel not in state.listed
        if unchanged and known["status"] != "running" and not backfill:
            return known["run_id"], known["flow_name"], known["manifest_status"], known["rows_written"]
        data = self._parse_manifest(manifest, report)
        if data is None:
            return None
        status = self._tree.evidence_status(data, folder if folder is not None else manifest)
        if not unchanged or known["status"] != status:
            row = self._run_row(data, status, run_path, manifest, st)
            row["_new"] = known is None
            run_rows.append(row)
        elif backfill:
            row = self._run_row(data, status, run_path, manifest, st)
            if row["_listing"] is not None:
                row["_new"], row["_listing_only"] = False, True
                run_rows.append(row)
        counts = data.get("counts") or {}
        return data["run_id"], _str(data.get("flow_name")), data["status"], _int(counts.get("rows_written"))

    def _file_piece(
        self, path: Path, state: _State, report: ConsolidationReport, run_id: str | None, flow: str | None
    ) -> _Piece | None:
        """A whole-file piece for ``path`` if it is not ingested yet (None otherwise)."""
        rel = self._rel(path)
        reason = self._tree.unreadable(path)
        if reason is not None:  # DuckDB would block on a FIFO, or read another run through a link
            report.files_skipped.append((rel, reason))
            return None
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        known = state.ingested.get(rel)
        if known is not None:
            size, mtime, _ = known
            if size is not None and (size != st.st_size or (mtime is not None and abs(mtime - st.st_mtime) > 1e-6)):
                report.files_skipped.append(
                    (rel, "changed after it was ingested; remove the run and consolidate(prune=True) to reload it")
                )
            return None
        return _Piece(rel, run_id, flow, size=st.st_size, mtime=st.st_mtime)

    def _run_folder_info(
        self, folder: Path, state: _State, report: ConsolidationReport, run_rows: list[dict[str, Any]]
    ) -> tuple[tuple[str, str | None, str, int | None], dict[str, Any] | None] | None:
        """(run info, its queued runs row or None) of a run folder, or None when it has no
        usable manifest."""
        manifest = folder / "manifest.toml"
        if not manifest.exists() and not manifest.is_symlink():
            if (folder / "telemetry.parquet").exists():
                report.files_skipped.append((self._rel(folder), "run folder without manifest.toml"))
            return None
        queued = len(run_rows)
        info = self._check_run(manifest, folder, folder, state, report, run_rows)
        if info is None:
            return None
        return info, run_rows[-1] if len(run_rows) > queued else None

    def _one_folder_per_run(
        self,
        folders: list[tuple[Path, tuple[str, str | None, str, int | None], dict[str, Any] | None]],
        state: _State,
        report: ConsolidationReport,
        run_rows: list[dict[str, Any]],
    ) -> list[int]:
        """One folder per (run_id, flow_name): a run copied (``cp -r fda_run_a fda_run_a.bak``)
        or renamed is ingested once. The folder kept is the one the catalog already knows,
        else the one named after the run id, else the first by name; the others are
        reported as skipped, naming both folders."""
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i, (_, info, _) in enumerate(folders):
            groups.setdefault((info[0], info[1]), []).append(i)
        keep: list[int] = []
        for (run_id, flow), idx in groups.items():
            if len(idx) == 1:
                keep.append(idx[0])
                continue

            def rank(i: int, run_id: str = run_id) -> tuple[bool, bool, str]:
                folder = Path(folders[i][0])
                known = self._rel(folder / "manifest.toml") in state.runs
                canonical = folder.name in (f"fda_run_{run_id}", run_id)
                return (not known, not canonical, folder.name)

            idx.sort(key=rank)
            keep.append(idx[0])
            primary = self._rel(Path(folders[idx[0]][0]))
            for i in idx[1:]:
                folder, _, row = folders[i]
                if row is not None:
                    run_rows.remove(row)
                report.files_skipped.append(
                    (
                        self._rel(Path(folder)),
                        f"the same run {run_id!r} (flow {flow!r}) as {primary}: a copied or renamed run folder; "
                        f"its rows are ingested once, from {primary}",
                    )
                )
        return sorted(keep)

    def _discover_run_folder(
        self,
        folder: Path,
        info: tuple[str, str | None, str, int | None],
        row: dict[str, Any] | None,
        state: _State,
        report: ConsolidationReport,
        units: list[_Unit],
        plan: _Plan,
    ) -> None:
        run_id, flow, manifest_status, rows_written = info
        if row is not None:
            # A renamed folder's run replaces the runs row of its old place (gone).
            row["_replaces"] = [
                mp
                for mp in state.runs_by_key().get((run_id, flow), ())
                if mp != row["manifest_path"]
                and (known := state.runs[mp]) is not None
                and known.get("mode", "run") == "run"
                and not (self.root / mp).exists()
            ]
        if manifest_status not in FINAL_STATUSES:
            return  # not immutable yet: segments may still be merged
        for kind in _KINDS:
            path = folder / f"{kind}.parquet"
            rel = self._rel(path)
            if not path.exists() and not path.is_symlink():
                if rel not in state.ingested:
                    report.files_skipped.append((rel, f"missing in a {manifest_status} run"))
                continue
            if rel not in state.ingested and self._moved(path, rel, kind, run_id, flow, state, report, plan):
                continue
            piece = self._file_piece(path, state, report, run_id, flow)
            if piece is not None:
                unit = _Unit(kind, path, piece.rel, [piece], size=piece.size or 0, mtime=piece.mtime or 0.0)
                if kind == "telemetry":
                    unit.expected_rows = rows_written
                units.append(unit)

    def _moved(
        self,
        path: Path,
        rel: str,
        kind: str,
        run_id: str,
        flow: str | None,
        state: _State,
        report: ConsolidationReport,
        plan: _Plan,
    ) -> bool:
        """Whether the run's rows of ``kind`` are already ingested from another path (True:
        nothing to read). A file of the same size whose old path is gone is the same file
        moved with its folder: the bookkeeping follows it (``plan.moved``)."""
        others = [p for p in state.run_files.get((kind, run_id, flow), []) if p != rel]
        if not others:
            return False
        if self._tree.unreadable(path) is not None:
            return False  # _file_piece reports it
        still = [p for p in others if (self.root / p).exists()]
        if still:
            report.files_skipped.append(
                (rel, f"the same run {run_id!r} (flow {flow!r}) is already ingested from {still[0]}; not read twice")
            )
            return True
        st = path.stat()
        same = [p for p in others if state.ingested[p][0] == st.st_size]
        if len(same) == 1:
            plan.moved.append((same[0], rel, st.st_size, st.st_mtime))
            return True
        report.files_skipped.append(
            (
                rel,
                f"run {run_id!r} (flow {flow!r}) was ingested from {others[0]}, which is gone, and this file differs "
                "from it; consolidate(prune=True) removes the old rows, then this file is read",
            )
        )
        return True

    def _discover_flow(
        self,
        flow_dir: Path,
        state: _State,
        report: ConsolidationReport,
        run_rows: list[dict[str, Any]],
        units: list[_Unit],
    ) -> None:
        flow = flow_dir.name
        runs_dir = flow_dir / "runs"
        if runs_dir.is_dir():
            for entry in self._tree.scandir(runs_dir):
                if entry.name.endswith(".toml") and not entry.name.startswith(".") and entry.is_file:
                    self._check_run(entry.path, entry.path, None, state, report, run_rows)
        for mode in ("dev", "tuner"):
            for kind in _KINDS:
                parts_dir = flow_dir / f"{mode}_{kind}"
                # Parts first, then the compacted file: a part compacted (and
                # deleted) in between is then listed by the compacted file.
                parts = _list_parts(parts_dir)
                compacted = flow_dir / f"{mode}_{kind}.parquet"
                listed: set[str] = set()
                if compacted.exists():
                    unit = _Unit(kind, compacted, self._rel(compacted), [], compacted=True, flow_name=flow)
                    units.append(unit)
                    listed = self._plan_compacted(unit, parts_dir, flow, state, report)
                for name in parts:
                    if name in listed:
                        continue
                    m = _PART_RE.match(name)
                    run_id = m.group("run_id") if m else None
                    piece = self._file_piece(parts_dir / name, state, report, run_id, flow)
                    if piece is not None:
                        units.append(
                            _Unit(
                                kind, parts_dir / name, piece.rel, [piece], size=piece.size or 0, mtime=piece.mtime or 0
                            )
                        )

    def _plan_compacted(
        self, unit: _Unit, parts_dir: Path, flow: str, state: _State, report: ConsolidationReport
    ) -> set[str]:
        """Reads a compacted file's part list; fills ``unit.pieces`` with the parts not yet
        ingested. Returns the listed part names (all of them, ingested or not)."""
        reason = self._tree.unreadable(unit.file)
        if reason is not None:
            unit.pieces = []
            report.files_skipped.append((unit.rel, reason))
            return set()
        try:
            st = unit.file.stat()
            kv = _read_kv([unit.file], self._tree.connect)[str(unit.file)]
        except Exception as e:
            unit.pieces = []
            report.files_skipped.append((unit.rel, f"unreadable Parquet: {_short(e)}"))
            return set()
        unit.size, unit.mtime, unit.kv = st.st_size, st.st_mtime, kv
        try:
            names = json.loads(kv["flightlog.segments"])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("flightlog.segments is not a list of names")
        except (KeyError, ValueError) as e:
            report.files_skipped.append((unit.rel, f"compacted file without a valid flightlog.segments list: {e}"))
            return set()
        listed = set(names)
        try:
            rows = [int(r) for r in json.loads(kv["flightlog.segment_rows"])]
            if len(rows) != len(names) or min(rows, default=0) < 0:
                raise ValueError("flightlog.segment_rows does not match flightlog.segments")
        except (KeyError, ValueError, TypeError) as e:
            report.files_skipped.append((unit.rel, f"cannot split the compacted file into its parts: {_short(e)}"))
            return listed
        marker = _compacted_marker(unit.rel, sum(rows))
        if marker in state.ingested:
            return listed  # this very version was covered in full before
        pieces = []
        offset = 0
        for name, n in zip(names, rows, strict=True):
            m = _PART_RE.match(name)
            if m is None:
                # An earlier compacted file merged again (its own part list is not
                # carried over): its rows are covered only if we saw that version whole.
                if _compacted_marker(unit.rel, n) not in state.ingested:
                    report.files_skipped.append(
                        (
                            unit.rel,
                            f"it holds {n} rows of an earlier compaction ({name}) that this catalog never saw "
                            "whole, so they cannot be attributed to parts",
                        )
                    )
                    return listed
            elif self._rel(parts_dir / name) not in state.ingested:
                rel = self._rel(parts_dir / name)
                pieces.append(_Piece(rel, m.group("run_id"), flow, lo=offset, hi=offset + n, mtime=st.st_mtime))
            offset += n
        unit.pieces = pieces
        unit.marker = marker
        unit.rows = sum(rows)
        return listed

    def _read_metadata(self, units: list[_Unit], report: ConsolidationReport) -> None:
        """Fills rows, schema_version and columns of every unit (one batched pass, then
        file by file if that fails); unreadable files are reported and dropped."""
        todo = [u for u in units if u.pieces]
        if not todo:
            return
        bad: dict[int, str] = {}
        try:
            meta = _read_file_meta([u.file for u in todo], self._tree.connect)
        except Exception:
            meta = {}
            for u in todo:
                try:
                    meta.update(_read_file_meta([u.file], self._tree.connect))
                except Exception as e:
                    bad[id(u)] = f"unreadable Parquet: {_short(e)}"
        for u in todo:
            if id(u) in bad:
                report.files_skipped.append((u.rel, bad[id(u)]))
                u.pieces, u.marker = [], None
                continue
            rows, kv, columns = meta[str(u.file)]
            if u.compacted and rows != u.rows:
                report.files_skipped.append((u.rel, f"flightlog.segment_rows add up to {u.rows}, the file has {rows}"))
                u.pieces, u.marker = [], None
                continue
            if u.expected_rows is not None and u.expected_rows != rows:
                # The file is not the one the manifest describes (swapped, truncated or
                # another run's): reading it would give the run wrong rows.
                report.files_skipped.append(
                    (u.rel, f"the manifest says rows_written = {u.expected_rows}, the file has {rows} rows")
                )
                u.pieces, u.marker = [], None
                continue
            u.rows = rows
            u.kv = kv or u.kv
            u.columns = columns
            u.schema_version = _int(u.kv.get("schema_version"))
            if not u.compacted:
                u.pieces[0].lo, u.pieces[0].hi = None, None
            if not u.compacted and u.pieces and u.pieces[0].run_id is None:
                u.pieces[0].run_id = u.kv.get("flightlog.run_id")

    def _gone_runs(self, state: _State, plan: _Plan, run_rows: list[dict[str, Any]]) -> None:
        """Fills ``plan.gone``: runs whose every ingested file (a moved file counts at its new
        place) and every manifest are gone. Rows are pruned by the files that disappeared,
        never because one folder of a run went (a copy deleted, a folder renamed)."""
        moved = {old for old, _, _, _ in plan.moved}
        replaced = {mp for r in run_rows for mp in r.get("_replaces", ())}
        manifests: dict[tuple[str | None, str | None], list[str]] = {}
        for mp, info in state.runs.items():
            manifests.setdefault((info["run_id"], info["flow_name"]), []).append(mp)
        keys = set(manifests) | set(state.files_by_run)
        for key in sorted(keys, key=lambda k: (str(k[0]), str(k[1]))):
            files = state.files_by_run.get(key, [])
            if any(p in moved or (self.root / p).exists() for p in files):
                continue
            present = [mp for mp in manifests.get(key, []) if mp not in replaced and (self.root / mp).exists()]
            info = [state.runs[mp] for mp in manifests.get(key, [])]
            # A run folder's runs row goes with its folder; a dev/tuner run's when its
            # manifest and parts are gone.
            if not present and all(i["mode"] in ("dev", "tuner") or not (self.root / i["path"]).exists() for i in info):
                plan.gone.append(key)

    # --- writing (database held) ---------------------------------------

    def _write_runs(self, con: Any, run_rows: list[dict[str, Any]], state: _State, report: ConsolidationReport) -> None:
        if not run_rows:
            return
        source = _rows_source({"manifest_path": "VARCHAR"})

        def write(con: Any) -> tuple[set[str] | None, list[dict[str, Any]]]:
            rows = run_rows
            existing = None
            if self._lake is not None:
                # Two consolidators may add the same run: the guard makes the second one
                # start again and see the first one's row (replaced, not added twice;
                # left alone when it already says what we would write).
                self._guard(con, [_GUARD_RUNS])
                known = {
                    r[0]: tuple(r[1:])
                    for r in con.execute(
                        "SELECT manifest_path, manifest_mtime_ns, manifest_size, status FROM runs "
                        f"WHERE manifest_path IN (SELECT manifest_path FROM {source})",
                        [json.dumps([{"manifest_path": r["manifest_path"]} for r in rows])],
                    ).fetchall()
                }
                rows = [
                    r
                    for r in rows
                    if r.get("_listing_only")
                    or known.get(r["manifest_path"]) != (r["manifest_mtime_ns"], r["manifest_size"], r["status"])
                ]
                existing = set(known)
                if not rows:
                    raise _Rollback((existing, rows))
            old = [mp for r in rows for mp in r.get("_replaces", ())]
            paths = json.dumps([{"manifest_path": p} for p in [r["manifest_path"] for r in rows] + old])
            payload = json.dumps([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
            con.execute(f"DELETE FROM runs WHERE manifest_path IN (SELECT manifest_path FROM {source})", [paths])
            con.execute(f"INSERT INTO runs BY NAME SELECT * FROM {_rows_source(_RUNS_COLUMNS)}", [payload])
            # The listing rows change with their runs rows, in the same transaction.
            con.execute(f"DELETE FROM {_LISTING} WHERE manifest_path IN (SELECT manifest_path FROM {source})", [paths])
            listing = [r["_listing"] for r in rows if r.get("_listing") is not None]
            if listing:
                con.execute(
                    f"INSERT INTO {_LISTING} BY NAME SELECT * FROM {_rows_source(_LISTING_COLUMNS)}",
                    [json.dumps(listing)],
                )
            return existing, rows

        existing, run_rows = self._transaction("write the runs table", write, con)
        for r in run_rows:
            if r.get("_listing_only"):
                continue  # the same runs row, now with its listing row: not an update
            new = r["_new"] if existing is None else r["manifest_path"] not in existing
            new = new and not r.get("_replaces")  # a renamed folder's run is updated, not added
            if new:
                report.runs_added += 1
            else:
                report.runs_updated += 1

    def _plan_columns(
        self, units: list[_Unit], state: _State, report: ConsolidationReport
    ) -> dict[str, dict[str, str]]:
        """Checks every unit's columns against its table; returns the new columns per table."""
        new: dict[str, dict[str, str]] = {k: {} for k in _KINDS}
        for u in units:
            table = state.columns[u.kind]
            added = new[u.kind]
            # DuckDB identifiers are case-insensitive: E and e are one column to it, and
            # adding the second fails ("already exists") on every later consolidate.
            known = {n.lower(): n for n in (*table, *added, *RESERVED_COLUMNS, _FILE_COL)}
            clashes = _case_clashes(u.columns, known)
            if clashes:
                report.files_skipped.append((u.rel, "name conflict: " + "; ".join(clashes)))
                u.pieces, u.marker = [], None
                continue
            conflicts = []
            for name, ftype in u.columns.items():
                if name in RESERVED_COLUMNS or name == _FILE_COL:
                    continue
                ttype = table.get(name, added.get(name))
                if ttype is None:
                    continue
                if ftype != ttype and ttype not in _WIDENS.get(ftype, ()):
                    conflicts.append(f"column {name!r} is {ftype} in the file but {ttype} in table {u.kind}")
            if conflicts:
                report.files_skipped.append((u.rel, "type conflict: " + "; ".join(conflicts)))
                u.pieces, u.marker = [], None
                continue
            for name, ftype in u.columns.items():
                if name not in RESERVED_COLUMNS and name != _FILE_COL and name not in table and name not in added:
                    added[name] = _NEW_COLUMN_TYPE.get(ftype, ftype)
        return new

    def _add_columns(self, con: Any, units: list[_Unit], state: _State, report: ConsolidationReport) -> None:
        """Adds the columns the units bring to their tables (schema evolution)."""

        def add(con: Any) -> None:
            if self._lake is not None:  # another writer may have added columns since we looked
                state.columns.update({t: self._table_columns(con, t) for t in _KINDS})
            new = self._plan_columns([u for u in units if u.pieces or u.marker], state, report)
            for table, columns in new.items():
                for name, ctype in columns.items():
                    con.execute(f"ALTER TABLE {_ident(table)} ADD COLUMN {_ident(name)} {ctype}")
            if not any(new.values()):
                raise _Rollback(None)
            for table, columns in new.items():
                state.columns[table].update(columns)

        self._transaction("add columns", add, con)

    def _write_units(
        self,
        con: Any,
        units: list[_Unit],
        state: _State,
        report: ConsolidationReport,
        progress: Callable[[int, int], Any] | None,
    ) -> None:
        self._add_columns(con, units, state, report)
        units = [u for u in units if u.pieces or u.marker]
        total = sum(len(u.pieces) for u in units)
        done = 0
        if progress is not None:
            progress(0, total)
        batches = list(_lake_batches(units) if self._lake is not None else _batches(units))
        if self._lake is not None:
            # Consolidators on other hosts list the same files in the same order: each
            # starts at its own place, so that they mostly take different guard tables.
            turn = random.randrange(len(batches)) if batches else 0
            batches = batches[turn:] + batches[:turn]
        for batch in batches:
            n = sum(len(u.pieces) for u in batch)
            error = self._write_batch(con, batch, report)
            if error is not None and len(batch) > 1:  # isolate the bad file(s)
                for u in batch:
                    if u.pieces or u.marker:
                        error = self._write_batch(con, [u], report)
                        if error is not None:
                            report.files_skipped.append((u.rel, error))
            elif error is not None:
                report.files_skipped.append((batch[0].rel, error))
            done += n
            if progress is not None:
                progress(done, total)

    def _write_batch(self, con: Any, batch: list[_Unit], report: ConsolidationReport) -> str | None:
        """Inserts the rows of ``batch`` and their bookkeeping in one transaction.

        Returns None on success, else (after rolling back) the reason. With a
        DuckLake catalog, files another writer recorded first are dropped from the
        batch (read in the transaction's own snapshot, under the guards)."""

        def write(con: Any) -> tuple[int, int]:
            if self._lake is not None:
                self._guard(con, {g for u in batch for g in _unit_guards(u)})
                wanted = [p.rel for u in batch for p in u.pieces] + [u.marker for u in batch if u.marker]
                taken = {
                    r[0]
                    for r in con.execute(
                        "SELECT path FROM _ingested_files WHERE list_contains(?::VARCHAR[], path)", [wanted]
                    ).fetchall()
                }
                if taken:
                    for u in batch:
                        u.pieces = [p for p in u.pieces if p.rel not in taken]
                        if u.marker in taken:
                            u.marker = None
                    if not any(u.pieces or u.marker for u in batch):
                        raise _Rollback((0, {}))
            files_added, rows_added = 0, dict.fromkeys(_KINDS, 0)
            for kind in _KINDS:  # a DuckLake batch may hold both tables' files (one transaction)
                for part in _batches([u for u in batch if u.kind == kind and (u.pieces or u.marker)]):
                    f, r = self._insert_batch(con, part)
                    files_added, rows_added[kind] = files_added + f, rows_added[kind] + r
            return files_added, rows_added

        try:
            files_added, by_kind = self._transaction("ingest files", write, con)
        except Exception as e:
            if self._lake is not None and _is_conflict(e):
                return f"could not be committed: other writers kept committing first ({_short(e)}); retried next time"
            return f"could not be ingested: {_short(e)}"
        report.files_added += files_added
        report.rows_added += sum(by_kind.values())
        report.telemetry_rows_added += by_kind.get("telemetry", 0)
        report.event_rows_added += by_kind.get("events", 0)
        return None

    def _insert_batch(self, con: Any, batch: list[_Unit]) -> tuple[int, int]:
        """The statements of :meth:`_write_batch` (inside its transaction): (files, rows) added."""
        kind = batch[0].kind
        columns: dict[str, str] = {}
        for u in batch:
            for name in u.columns:
                if name not in RESERVED_COLUMNS and name != _FILE_COL:
                    columns.setdefault(name, u.columns[name])
        ranged = any(u.compacted for u in batch)
        mapping = []
        expected = 0
        for u in batch:
            for p in u.pieces:
                lo, hi = (p.lo, p.hi) if ranged and p.lo is not None else (0, u.rows)
                mapping.append(
                    {
                        "file": str(u.file),
                        "run_id": p.run_id,
                        "flow_name": p.flow_name,
                        "schema_version": u.schema_version,
                        "lo": lo,
                        "hi": hi,
                    }
                )
                expected += hi - lo
        has_cols = {c for u in batch for c in u.columns}
        run_expr = "coalesce(m.run_id, p.run_id)" if "run_id" in has_cols else "m.run_id"
        flow_expr = "coalesce(m.flow_name, p.flow_name)" if "flow_name" in has_cols else "m.flow_name"
        select = "".join(f"p.{_ident(c)}, " for c in columns)
        options = f"union_by_name = true, filename = {_literal(_FILE_COL)}"
        condition = f"p.{_ident(_FILE_COL)} = m.file"
        if ranged:
            options += ", file_row_number = true"
            condition += " AND p.file_row_number >= m.lo AND p.file_row_number < m.hi"
        sql = (
            f"INSERT INTO {_ident(kind)} BY NAME SELECT {select}"
            f"{run_expr} AS run_id, {flow_expr} AS flow_name, m.schema_version AS schema_version "
            f"FROM read_parquet(?, {options}) p JOIN {_rows_source(_MAP_COLUMNS)} m ON {condition}"
        )
        now = _utc_now_text()
        bookkeeping = [
            {
                "path": p.rel,
                "kind": kind,
                "run_id": p.run_id,
                "flow_name": p.flow_name,
                "rows": (p.hi - p.lo) if p.lo is not None else u.rows,
                "size": p.size,
                "mtime": p.mtime,
                "ingested_at": now,
                "source": u.rel if u.compacted else None,
            }
            for u in batch
            for p in u.pieces
        ]
        files_added = len(bookkeeping)
        bookkeeping += [
            {"path": u.marker, "kind": "compacted", "flow_name": u.flow_name, "rows": u.rows, "source": u.rel}
            | {"size": u.size, "mtime": u.mtime, "ingested_at": now}
            for u in batch
            if u.marker
        ]
        files = sorted({str(u.file) for u in batch if u.pieces})
        added = con.execute(sql, [files, json.dumps(mapping)]).fetchall()[0][0] if files else 0
        if added != expected:
            raise RuntimeError(f"read {added} rows where the footers promise {expected}")
        con.execute(
            f"INSERT INTO _ingested_files BY NAME SELECT * FROM {_rows_source(_INGESTED_COLUMNS)}",
            [json.dumps(bookkeeping)],
        )
        for u in batch:  # a file replaced while we read it must not be recorded
            st = self._tree.restat(u.file)
            if st.st_size != u.size or abs(st.st_mtime - u.mtime) > 1e-6:
                raise RuntimeError("the file changed while it was being read")
        return files_added, int(added)

    def _prune(self, con: Any, plan: _Plan, report: ConsolidationReport) -> None:
        payload = json.dumps([{"run_id": r, "flow_name": f} for r, f in plan.gone])
        source = _rows_source(_PRUNE_COLUMNS)
        match = "t.run_id IS NOT DISTINCT FROM g.run_id AND t.flow_name IS NOT DISTINCT FROM g.flow_name"

        def delete(con: Any) -> None:
            if self._lake is not None:
                self._guard(con, [_GUARD_RUNS])
            for table in ("telemetry", "events", "_ingested_files", "runs", _LISTING):
                con.execute(f"DELETE FROM {table} t USING {source} g WHERE {match}", [payload])

        self._transaction("prune", delete, con)
        report.runs_pruned += len(plan.gone)

    def _move(self, con: Any, moved: list[tuple[str, str, int, float]]) -> None:
        """Points the bookkeeping of files whose run folder was renamed at their new paths."""
        spec = {"old": "VARCHAR", "new": "VARCHAR", "size": "BIGINT", "mtime": "DOUBLE"}
        payload = json.dumps([{"old": o, "new": n, "size": s, "mtime": m} for o, n, s, m in moved])

        def move(con: Any) -> None:
            if self._lake is not None:
                self._guard(con, {_shard(p) for o, n, _, _ in moved for p in (o, n)})
            # Insert the new rows, then delete the old (no UPDATE of the key column).
            con.execute(
                "INSERT INTO _ingested_files BY NAME SELECT f.* EXCLUDE (path, size, mtime), m.new AS path, "
                f"m.size AS size, m.mtime AS mtime FROM _ingested_files f JOIN {_rows_source(spec)} m "
                "ON f.path = m.old",
                [payload],
            )
            con.execute(f"DELETE FROM _ingested_files WHERE path IN (SELECT old FROM {_rows_source(spec)})", [payload])

        self._transaction("follow renamed run folders", move, con)

    # ------------------------------------------------------------------ queries

    @_catalog_io
    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Result:
        """Run one read-only SQL query over the catalog and return its rows as a :class:`Result`
        (``.df()``, ``.arrow()``, ``.pl()``, ``.fetchall()``, ``.fetchone()``, ``.relation``).

        ``params`` are always bound (``?``/``$1`` positional, ``$name`` with a dict),
        never formatted into the SQL. Any statement that yields rows works
        (``SELECT``, ``WITH``, ``DESCRIBE``, ``SUMMARIZE``, ``SHOW TABLES``, ...).
        The result is materialised in memory, so the catalog file is released
        before this returns.

        Raises:
            CatalogLockedError: a writer held the catalog for ``timeout`` s.
            duckdb.Error: the SQL is invalid, is more than one statement, or is a
                statement that yields no rows (``COPY``, ``ATTACH``, ``INSTALL``, ...:
                the in-memory session would otherwise run it, e.g. write a file).
        """
        self._check_open()
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a str, got {type(sql).__name__}")
        body = _check_one_select(sql)
        with self._reader() as mem:
            return self._materialise(mem, body, params, names=True)

    @_catalog_io
    def runs(self, flow_name: str | None = None, status: str | Iterable[str] | None = None) -> Result:
        """The ``runs`` table (optionally one flow's, and/or with the given status(es)),
        oldest first.

        Rows are the catalog's, as of the last :meth:`consolidate`, except ``status``
        of runs it holds as ``running``: that is decided again by evidence (their
        manifest is read now), so a run that died since shows as ``crashed`` (and one
        that finished as ``finished``). Runs the catalog holds as finished, failed or
        crashed are not read again; runs started since are not in the table until the
        next consolidate."""
        statuses = [status] if isinstance(status, str) else (list(status) if status is not None else None)
        sql = (
            "SELECT * FROM runs WHERE (?::VARCHAR IS NULL OR flow_name = ?::VARCHAR) "
            "AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], status) OR status = 'running') "
            "ORDER BY created_at NULLS LAST, run_id"
        )
        result = self.query(sql, [flow_name, flow_name, statuses, statuses])
        con, table = result._con, result._table
        for manifest_path, path, mode in con.execute(
            f"SELECT manifest_path, path, mode FROM {table} WHERE status = 'running'"
        ).fetchall():
            now = self._status_now(manifest_path, path, mode)
            if now is not None and now != "running":
                con.execute(f"UPDATE {table} SET status = ? WHERE manifest_path = ?", [now, manifest_path])
        if statuses is not None:
            con.execute(f"DELETE FROM {table} WHERE NOT list_contains(?::VARCHAR[], status)", [statuses])
        return result

    def _status_now(self, manifest_path: str | None, path: str | None, mode: str | None) -> str | None:
        """A consolidated run's status by evidence now (None when its manifest cannot be read)."""
        if not manifest_path:
            return None
        manifest = self.root / manifest_path
        try:
            data = tomllib.loads(self._tree.read_bytes(manifest).decode("utf-8"))
            where = self.root / path if (mode or "run") == "run" and path else manifest
            return self._tree.evidence_status(data, where)
        except (OSError, ValueError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None

    def _listing(self, *, manifests: bool = False) -> dict[str, tuple[Any, ...]] | None:
        """The ``_flightlog.run_listing`` rows by manifest path (relative to the root):
        ``(mtime_ns, size, run_id, flow_name, mode, status, created_at, finished_at,
        rows_written, inode, outcome[, manifest JSON])``; None when there is no catalog, or it has no
        such table (written by an older flightlog, until the next consolidate)."""
        self._check_open()
        if self.files_only or not self.exists():
            return None
        with self._reader() as mem:
            try:
                rows = mem.execute(
                    "SELECT manifest_path, manifest_mtime_ns, manifest_size, run_id, flow_name, mode, status, "
                    "created_at, finished_at, rows_written, manifest_ino, json_extract_string(manifest, '$.outcome')"
                    f"{', manifest' if manifests else ''} FROM {_LISTING}"
                ).fetchall()
            except (_duckdb().CatalogException, _duckdb().BinderException):
                return None  # no listing table (or an older one): every run is read from its files
        return {r[0]: r[1:] for r in rows}

    def _rows_of(self, table: str, where: str, params: list[Any], columns: Sequence[str] | None, order: str) -> Result:
        self._check_open()
        with self._reader() as mem:
            available = self._table_columns(mem, table)
            if columns is None:
                select = "*"
            else:
                columns = [columns] if isinstance(columns, str) else list(columns)
                unknown = [c for c in columns if c not in available]
                if unknown:
                    raise ValueError(f"no column(s) {unknown} in {table}; it has {list(available)}")
                select = ", ".join(_ident(c) for c in columns)
            keys = [k for k in ("run_id", *order.split(",")) if k and k in available]
            order_by = f" ORDER BY {', '.join(_ident(k) for k in keys)}" if keys else ""
            return self._materialise(mem, f"SELECT {select} FROM {table} WHERE {where}{order_by}", params)

    @_catalog_io
    def telemetry(self, run_ids: str | Iterable[str] | None = None, columns: Sequence[str] | None = None) -> Result:
        """Consolidated telemetry rows (of the given run(s)), ordered by run and ``iter``;
        ``columns`` picks columns (names are checked against the table)."""
        ids = _id_list(run_ids)
        where = "(?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], run_id))"
        return self._rows_of("telemetry", where, [ids, ids], columns, "iter,t_wall_ms")

    @_catalog_io
    def events(self, run_ids: str | Iterable[str] | None = None, names: str | Iterable[str] | None = None) -> Result:
        """Consolidated events (of the given run(s), with the given name(s)), in time order."""
        ids = _id_list(run_ids)
        events = _id_list(names)
        where = (
            "(?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], run_id)) "
            "AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], event))"
        )
        return self._rows_of("events", where, [ids, ids, events, events], None, "t_wall_ms")

    @_catalog_io
    def compare(self, run_ids: str | Iterable[str], metric: str = "E") -> Result:
        """Per-run summary of ``metric``, one row per run in the order given.

        Columns: ``run_id``, ``flow_name``, ``status``, ``rows``, ``first``,
        ``last`` (value at the lowest/highest ``iter``), ``min``,
        ``argmin_iter`` (the lowest ``iter`` where ``min`` is reached),
        ``iterations`` (``max(iter) - min(iter) + 1``, which counts sampled-out
        rows too), ``wall_s`` (span of ``t_wall_ms`` in seconds), ``rows_per_s``,
        then ``delta_<column>`` = this run minus the first run for ``first``,
        ``last``, ``min``, ``argmin_iter``, ``iterations``, ``wall_s`` and
        ``rows_per_s``. A run without rows has ``rows = 0`` and nulls.
        Null values of ``metric`` are ignored.

        Raises:
            ValueError: no run ids, or ``metric`` is not a numeric telemetry column.
        """
        self._check_open()
        ids = _id_list(run_ids)
        if not ids:
            raise ValueError("compare() needs at least one run id")
        with self._reader() as mem:
            available = self._table_columns(mem, "telemetry")
            if metric not in available:
                raise ValueError(f"no telemetry column {metric!r}; columns: {list(available)}")
            if metric in RESERVED_COLUMNS:
                raise ValueError(f"telemetry column {metric!r} is reserved (set by the catalog), not a metric")
            if not _is_numeric(available[metric]):
                raise ValueError(f"telemetry column {metric!r} is {available[metric]}, not numeric")
            if "iter" in available:
                key = _ident("iter")
            elif "t_wall_ms" in available:
                key = _ident("t_wall_ms")
            else:
                raise ValueError("telemetry has neither an 'iter' nor a 't_wall_ms' column to order rows by")
            wall = _ident("t_wall_ms") if "t_wall_ms" in available else "NULL::DOUBLE"
            iterations = "max(k) - min(k) + 1" if "iter" in available else "count(*)"
            deltas = ("first", "last", "min", "argmin_iter", "iterations", "wall_s", "rows_per_s")
            sql = f"""
            WITH ids AS (SELECT unnest(?::VARCHAR[]) AS run_id, unnest(?::BIGINT[]) AS ord),
            t AS (SELECT run_id, {key} AS k, {_ident(metric)}::DOUBLE AS v, {wall}::DOUBLE AS w
                  FROM telemetry WHERE list_contains(?::VARCHAR[], run_id)),
            s AS (SELECT run_id, count(*) AS rows,
                         arg_min(v, k) FILTER (WHERE v IS NOT NULL) AS first,
                         arg_max(v, k) FILTER (WHERE v IS NOT NULL) AS last,
                         min(v) AS min,
                         arg_min(k, (v, k)) FILTER (WHERE v IS NOT NULL) AS argmin_iter,
                         {iterations} AS iterations,
                         (max(w) - min(w)) / 1000.0 AS wall_s
                  FROM t GROUP BY run_id),
            r AS (SELECT run_id, any_value(flow_name) AS flow_name, any_value(status) AS status
                  FROM runs GROUP BY run_id),
            j AS (SELECT ids.ord, ids.run_id, r.flow_name, r.status, coalesce(s.rows, 0) AS rows,
                         s.first, s.last, s.min, s.argmin_iter, s.iterations, s.wall_s,
                         CASE WHEN s.wall_s > 0 THEN s.rows / s.wall_s END AS rows_per_s
                  FROM ids LEFT JOIN s USING (run_id) LEFT JOIN r USING (run_id))
            SELECT j.* EXCLUDE (ord), {", ".join(f"j.{c} - ref.{c} AS delta_{c}" for c in deltas)}
            FROM j CROSS JOIN (SELECT * FROM j WHERE ord = 0) ref ORDER BY j.ord
            """
            return self._materialise(mem, sql, [ids, list(range(len(ids))), ids])

    # ------------------------------------------------------------------ live

    @_catalog_io
    def live(self, run_id: str, kind: str = "telemetry") -> Result:
        """What a run has made durable so far, read straight from its files (not the catalog).

        For a run folder: ``telemetry.parquet`` (if present) minus the segments it
        lists, plus ``segments/telemetry-*.parquet``; for a dev/tuner run: its parts,
        and its rows in the compacted file. The file list is taken so that a merge
        or compaction happening at the same moment is never counted twice (a file
        that vanishes mid-read makes the read start again). ``kind="events"``
        reads the events instead. Works for finished runs too.

        Raises:
            ValueError: no run ``run_id`` under the root, or a bad ``kind``.
        """
        self._check_open()
        if kind not in _KINDS:
            raise ValueError(f"kind must be 'telemetry' or 'events', got {kind!r}")
        duckdb = _duckdb()
        self._tree.refresh()
        where = self._locate(run_id)
        deadline = time.monotonic() + max(self.timeout or 0, 5.0)
        for attempt in itertools.count():
            if attempt:
                self._tree.refresh()
            mem = self._tree.connect(private=True)
            try:
                files = self._live_files(where, run_id, kind)
                if not files:
                    mem.execute("CREATE TABLE memory.main.live AS SELECT NULL::VARCHAR AS run_id WHERE false")
                    return Result(mem, "memory.main.live")
                mapping = json.dumps(
                    [{"file": str(f), "lo": lo, "hi": hi, "ord": i} for i, (f, lo, hi) in enumerate(files)]
                )
                spec = {"file": "VARCHAR", "lo": "BIGINT", "hi": "BIGINT", "ord": "BIGINT"}
                mem.execute(
                    f"CREATE TABLE memory.main.live AS SELECT p.* EXCLUDE ({_FILE_COL}, file_row_number) "
                    f"FROM read_parquet(?, union_by_name = true, filename = {_literal(_FILE_COL)}, "
                    f"file_row_number = true) p JOIN {_rows_source(spec)} m ON p.{_FILE_COL} = m.file "
                    "AND (m.lo IS NULL OR (p.file_row_number >= m.lo AND p.file_row_number < m.hi)) "
                    "ORDER BY m.ord, p.file_row_number",
                    [sorted({str(f) for f, _, _ in files}), mapping],
                )
                return Result(mem, "memory.main.live")
            except (duckdb.Error, OSError, KeyError) as e:
                # A file merged or compacted away between listing and reading: list again.
                mem.close()
                if not _sleep_backoff(attempt, deadline):
                    raise ValueError(f"could not read the durable files of run {run_id!r}: {_short(e)}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _locate(self, run_id: str) -> tuple[str, Path, Mapping[str, Any] | None]:
        """("folder", run folder, manifest) or ("parts", flow folder, manifest) of a run."""
        from ._names import validate_name

        validate_name("run_id", run_id)
        candidates = [self.root / f"fda_run_{run_id}", self.root / run_id]
        if self.root.is_dir():
            candidates += sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.endswith(run_id))
        for folder in candidates:
            manifest = folder / "manifest.toml"
            if not manifest.is_file():
                continue
            with contextlib.suppress(OSError, ValueError, tomllib.TOMLDecodeError):
                data = tomllib.loads(self._tree.read_bytes(manifest).decode("utf-8"))
                if data.get("run_id") == run_id:
                    return "folder", folder, data
        flows = self.root / "flows"
        if flows.is_dir():
            for flow_dir in sorted(p for p in flows.iterdir() if p.is_dir()):
                manifest = flow_dir / "runs" / f"{run_id}.toml"
                if manifest.exists():
                    data = None
                    with contextlib.suppress(OSError, ValueError, tomllib.TOMLDecodeError):
                        data = tomllib.loads(self._tree.read_bytes(manifest).decode("utf-8"))
                    return "parts", flow_dir, data
            for flow_dir in sorted(p for p in flows.iterdir() if p.is_dir()):
                for mode in ("dev", "tuner"):
                    if any(_part_run(n) == run_id for n in _list_parts(flow_dir / f"{mode}_telemetry")):
                        return "parts", flow_dir, None
        raise ValueError(f"no run {run_id!r} under {self.root}")

    def _live_files(
        self, where: tuple[str, Path, Mapping[str, Any] | None], run_id: str, kind: str
    ) -> list[tuple[Path, int | None, int | None]]:
        how, base, manifest = where
        if how == "folder":
            seg_dir = base / "segments"
            segments = [n for n in _list_dir(seg_dir) if n.startswith(f"{kind}-") and n.endswith(".parquet")]
            final = base / f"{kind}.parquet"
            files: list[tuple[Path, int | None, int | None]] = []
            listed: set[str] = set()
            if final.exists() and self._tree.unreadable(final) is None:
                kv = _read_kv([final], self._tree.connect)[str(final)]
                listed = set(json.loads(kv.get("flightlog.segments", "[]")))
                files.append((final, None, None))
            files += [(seg_dir / n, None, None) for n in segments if n not in listed]
            return self._readable(files)
        modes = [manifest["mode"]] if manifest and manifest.get("mode") in ("dev", "tuner") else ["dev", "tuner"]
        files = []
        for mode in modes:
            parts_dir = base / f"{mode}_{kind}"
            parts = [n for n in _list_parts(parts_dir) if _part_run(n) == run_id]
            compacted = base / f"{mode}_{kind}.parquet"
            listed = set()
            if compacted.exists() and self._tree.unreadable(compacted) is None:
                kv = _read_kv([compacted], self._tree.connect)[str(compacted)]
                names = json.loads(kv.get("flightlog.segments", "[]"))
                rows = json.loads(kv.get("flightlog.segment_rows", "null"))
                listed = set(names)
                if any(_part_run(n) == run_id for n in names):
                    if not isinstance(rows, list) or len(rows) != len(names):
                        raise ValueError(f"{compacted} lacks flightlog.segment_rows; cannot split it into parts")
                    offset = 0
                    for name, n in zip(names, rows, strict=True):
                        if _part_run(name) == run_id:
                            files.append((compacted, offset, offset + int(n)))
                        offset += int(n)
            files += [(parts_dir / n, None, None) for n in parts if n not in listed]
        return self._readable(files)

    def _readable(self, files: list[tuple[Path, int | None, int | None]]) -> list[tuple[Path, int | None, int | None]]:
        """``files`` without those that must not be opened (FIFOs, devices, links): DuckDB
        would block on a FIFO, and a link may bring in another run's rows."""
        return [f for f in files if self._tree.unreadable(f[0]) is None]


# --------------------------------------------------------------------------- module helpers


def _check_one_select(sql: str) -> str:
    """Refuse anything but one read-only statement that yields rows; return its text.

    DuckDB's own parser decides (``duckdb.extract_statements``): exactly one statement
    of type ``SELECT`` (which covers ``WITH``, ``FROM``, ``VALUES``, ``SHOW``,
    ``DESCRIBE``, ``SUMMARIZE`` and table PRAGMAs such as ``table_info``, which
    the parser turns into a ``SELECT``), or one ``PIVOT``, which the parser expands into
    ``CREATE TYPE`` statements for its enum plus a ``SELECT``, none with text of its own.
    Every other type (``INSERT``, ``COPY``, ``ATTACH``, ``SET``, ``CALL``, setting
    PRAGMAs, ...) is refused before anything runs; the catalog is also attached
    read-only. The text returned is the statement (a table ``PRAGMA`` rewritten as its
    ``SELECT``), without a trailing ``;`` and comment.
    """
    duckdb = _duckdb()
    extract = getattr(duckdb, "extract_statements", None)
    if extract is None:  # pragma: no cover - very old DuckDB
        return sql
    statements = extract(sql)  # a ParserException (duckdb.Error) for invalid SQL

    def kind(st: Any) -> str:
        return getattr(st.type, "name", str(st.type)).rsplit(".", 1)[-1]

    pivot = (
        len(statements) > 1
        and all(not st.query.strip() for st in statements)
        and kind(statements[-1]) == "SELECT"
        and all(kind(st) == "CREATE" for st in statements[:-1])
    )
    if pivot or (len(statements) == 1 and kind(statements[0]) == "MULTI" and _PIVOT_RE.match(statements[0].query)):
        # DuckDB 2 keeps a PIVOT as one MULTI statement (its CREATE TYPEs plus the SELECT).
        return _strip_terminators(sql)
    if len(statements) != 1:
        raise duckdb.InvalidInputException(
            f"query() runs exactly one SQL statement, got {len(statements)}; run them one by one"
        )
    if kind(statements[0]) == "PRAGMA" and (as_select := _table_pragma(statements[0].query)) is not None:
        # DuckDB 2 no longer rewrites a table PRAGMA into its SELECT in the parser (1.x did).
        rewritten = extract(as_select)
        if len(rewritten) == 1 and kind(rewritten[0]) == "SELECT":
            return _strip_terminators(rewritten[0].query or as_select)
    if kind(statements[0]) != "SELECT":
        raise duckdb.InvalidInputException(
            "query() runs one read-only statement that yields rows (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, "
            f"SUMMARIZE, PIVOT, table PRAGMAs); got a {kind(statements[0])} statement"
        )
    return _strip_terminators(statements[0].query or sql)


_PIVOT_RE = re.compile(r"^\s*(pivot|unpivot)\b", re.IGNORECASE)
_PRAGMA_RE = re.compile(r"^\s*pragma\s+([A-Za-z_][A-Za-z0-9_]*)\s*(\(.*\))?\s*;?\s*$", re.IGNORECASE | re.DOTALL)


def _table_pragma(text: str) -> str | None:
    """``PRAGMA name[(args)]`` as ``SELECT * FROM pragma_name(args)`` when DuckDB has that
    table function (``table_info``, ``storage_info``, ``version``, ...), else ``None``:
    a setting PRAGMA (``enable_profiling``, ``threads = 1``) has none and stays refused."""
    m = _PRAGMA_RE.match(text)
    if m is None or f"pragma_{m.group(1).lower()}" not in _pragma_table_functions():
        return None
    return f"SELECT * FROM pragma_{m.group(1).lower()}{m.group(2) or '()'}"


@functools.cache
def _pragma_table_functions() -> frozenset[str]:
    con = _duckdb().connect(":memory:")
    try:
        rows = con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE function_type = 'table' AND function_name LIKE 'pragma\\_%' ESCAPE '\\'"
        ).fetchall()
    finally:
        con.close()
    return frozenset(r[0] for r in rows)


def _strip_terminators(sql: str) -> str:
    """``sql`` without trailing ``;`` and what follows them when that is only comments and
    blanks (DuckDB's parser finds no statement in it), so that it can be a subquery."""
    extract = _duckdb().extract_statements
    text = sql.rstrip()
    cut = text.rfind(";")
    while cut >= 0:
        try:
            empty = not extract(text[cut + 1 :])
        except Exception:  # e.g. the ';' is inside a string or a comment
            empty = False
        if not empty:
            break
        text = text[:cut].rstrip()
        cut = text.rfind(";")
    return text


def _case_clashes(columns: Iterable[str], known: Mapping[str, str]) -> list[str]:
    """Columns of a file whose names equal another column's but for case (``known``: the
    table's columns by lower-case name), also two such columns within the file."""
    out = []
    mine: dict[str, str] = {}
    for name in columns:
        low = name.lower()
        other = mine.get(low) or known.get(low)
        if other is not None and other != name:
            out.append(
                f"column {name!r} differs from column {other!r} only in case (DuckDB names are case-insensitive); "
                "rename one of them"
            )
        mine.setdefault(low, name)
    return out


def _compacted_marker(rel: str, rows: int) -> str:
    """The ``_ingested_files`` path recording that the version of compacted file ``rel``
    with ``rows`` rows is covered (compaction only appends, so rows identify a version)."""
    return f"{rel}#rows={rows}"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _id_list(values: str | Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return [values]
    out = list(values)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"expected str ids, got {type(v).__name__} {v!r}")
    return out


def _is_numeric(duck_type: str) -> bool:
    t = duck_type.upper()
    return t in _INTS or t in ("UBIGINT", "HUGEINT", "FLOAT", "DOUBLE", "REAL") or t.startswith("DECIMAL")


def _list_dir(folder: Path | ObjectPath) -> list[str]:
    if isinstance(folder, ObjectPath):
        return [e.name for e in folder.tree.scandir(folder)]
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _list_parts(folder: Path | ObjectPath) -> list[str]:
    """Published part files in ``folder`` (temp files start with a dot and never match)."""
    return [n for n in _list_dir(folder) if n.startswith("part-") and n.endswith(".parquet")]


def _part_run(name: str) -> str | None:
    m = _PART_RE.match(name)
    return m.group("run_id") if m else None


_KV_KEYS = ("schema_version", "flightlog.segments", "flightlog.segment_rows", "flightlog.run_id")


def _read_kv(files: Sequence[Any], connect: Callable[[], Any] = duckdb_connect) -> dict[str, dict[str, str]]:
    """The flightlog key-value metadata of Parquet files (in-memory DuckDB from ``connect``; no catalog)."""
    con = connect()
    try:
        names = [str(f) for f in files]
        out: dict[str, dict[str, str]] = {n: {} for n in names}
        keys = ", ".join(f"{_literal(k)}::BLOB" for k in _KV_KEYS)
        for fname, key, value in con.execute(
            f"SELECT file_name, decode(key), decode(value) FROM parquet_kv_metadata(?) WHERE key IN ({keys})",
            [names],
        ).fetchall():
            out.setdefault(fname, {})[key] = value
        return out
    finally:
        con.close()


def _read_file_meta(
    files: Sequence[Any], connect: Callable[[], Any] = duckdb_connect
) -> dict[str, tuple[int, dict[str, str], dict[str, str]]]:
    """(rows, flightlog KV, {column: DuckDB type}) of Parquet files, from their footers."""
    names = [str(f) for f in files]
    kv = _read_kv(files, connect)
    con = connect()
    try:
        rows = dict(con.execute("SELECT file_name, num_rows FROM parquet_file_metadata(?)", [names]).fetchall())
        schema: dict[str, list[tuple[str, str | None, int | None]]] = {n: [] for n in names}
        for fname, col, dtype, children in con.execute(
            "SELECT file_name, name, duckdb_type, num_children FROM parquet_schema(?)", [names]
        ).fetchall():
            schema.setdefault(fname, []).append((col, dtype, children))
        out = {}
        for n in names:
            elements = schema.get(n, [])
            if n not in rows or not elements:
                raise ValueError(f"{n}: no Parquet footer")
            nested = any((c or 0) > 0 for _, _, c in elements[1:])
            if nested or any(t is None for _, t, _ in elements[1:]):
                described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [n]).fetchall()
                columns = {r[0]: str(r[1]) for r in described}
            else:
                columns = {c: str(t) for c, t, _ in elements[1:]}
            out[n] = (int(rows[n]), kv.get(n, {}), columns)
        return out
    finally:
        con.close()


def _unit_guards(u: _Unit) -> set[str]:
    """The guard tables a transaction recording ``u`` must replace (module doc)."""
    return {_shard(p.rel) for p in u.pieces} | ({_shard(u.marker)} if u.marker else set())


def _refuse(value: Any) -> Any:
    raise TypeError(f"not JSON: {type(value).__name__}")


def _manifest_json(data: Mapping[str, Any]) -> str | None:
    """A manifest as JSON text, or None when a value would not come back as it was (a
    TOML date or time: such a manifest is never listed from the catalog). Parsed TOML
    holds only str keys, lists and dicts, so every other value round-trips."""
    try:
        return json.dumps(data, ensure_ascii=False, default=_refuse)
    except (TypeError, ValueError):
        return None


def _listing_row(data: Mapping[str, Any], manifest_rel: str, st: Any) -> dict[str, Any] | None:
    """The ``_flightlog.run_listing`` row of a consolidated run, or None when its manifest must be
    read each time it is listed: not terminal yet (its status is a matter of evidence),
    or not plain (a field the listing uses has an odd type, or a TOML date/time)."""
    if data.get("status") not in FINAL_STATUSES:
        return None
    light = {k: data.get(k) for k in ("flow_name", "mode", "created_at", "finished_at")}
    if any(v is not None and not isinstance(v, str) for v in light.values()):
        return None
    rows = (data.get("counts") or {}).get("rows_written")
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or abs(rows) >= 2**63):
        return None
    text = _manifest_json(data)
    if text is None:
        return None
    return {
        "manifest_path": manifest_rel,
        "manifest_mtime_ns": st.st_mtime_ns,
        "manifest_size": st.st_size,
        # flightlog writes manifests by rename: a new inode even where mtime is coarse
        "manifest_ino": getattr(st, "st_ino", None),
        "run_id": data["run_id"],
        "status": data["status"],
        **light,
        "rows_written": rows,
        "manifest": text,
    }


def _chunks(units: list[_Unit]) -> Iterator[list[_Unit]]:
    batch: list[_Unit] = []
    rows = 0
    for u in units:
        if batch and (len(batch) >= _BATCH_FILES or rows + u.rows > _BATCH_ROWS):
            yield batch
            batch, rows = [], 0
        batch.append(u)
        rows += u.rows
    if batch:
        yield batch


def _batches(units: list[_Unit]) -> Iterator[list[_Unit]]:
    """Groups whole-file units of the same table into batches; compacted files go alone."""
    for kind in _KINDS:
        whole = []
        for u in units:
            if u.kind != kind:
                continue
            if u.compacted:
                yield [u]
            else:
                whole.append(u)
        yield from _chunks(whole)


def _lake_batches(units: list[_Unit]) -> Iterator[list[_Unit]]:
    """Batches for a DuckLake catalog: one per guard table, both tables' files together
    (one transaction each), so that concurrent consolidators mostly touch different
    guards; compacted files go alone."""
    groups: dict[str, list[_Unit]] = {}
    for u in units:
        if u.compacted:
            yield [u]
        else:
            groups.setdefault(",".join(sorted(_unit_guards(u))), []).append(u)
    for key in sorted(groups):
        yield from _chunks(groups[key])

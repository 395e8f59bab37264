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
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

from ..runs.views import HttpfsTree, LocalTree, ObjectPath
from .backend import CatalogBackend
from .base import _catalog_io
from .ducklake import LakeCatalog
from .embedded import EmbeddedCatalog
from .files import FilesCatalog
from .ingest import _Discovery, _Plan, _State, _Unit
from .lake import _parse_catalog
from .live import _Live
from .queries import _Queries
from .report import ConsolidationReport
from .schema import _LISTING, FINAL_STATUSES
from .sql import _duckdb, _ident, _literal, table_columns
from .write import _Writer


class DuckDBManager(_Discovery, _Writer, _Queries, _Live):
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
            ...; see :func:`flightlog._s3.storage_options`).
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
        from .._s3 import ObjectLocation, is_object_url
        from .._s3 import storage_options as _storage_options
        from ..runs.ids import DEFAULT_ROOT, ROOT_ENV, resolve_root

        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0 or math.isnan(timeout)):
            raise ValueError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
        raw_root = base_path if base_path is not None else (os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
        raw_root = os.fspath(raw_root)
        self.files_only = bool(files_only)
        if self.files_only and (db_path is not None or catalog is not None or data_path is not None):
            raise ValueError(
                "files_only=True reads the run files without a catalog: it excludes db_path=, catalog= and data_path="
            )
        lake = _parse_catalog(catalog) if catalog is not None else None
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
        # The one place that asks which kind of catalog this is.
        self._backend: CatalogBackend
        if lake is not None:
            self._backend = LakeCatalog(self, lake, db_path, data_path)
        elif self.files_only:
            self._backend = FilesCatalog(self)
        else:
            self._backend = EmbeddedCatalog(self, db_path, data_path)
        self.db_path: Path | None = self._backend.db_path
        self.data_path: str | None = self._backend.data_path
        self.catalog: str | None = self._backend.catalog
        self.read_only = bool(read_only) or self.files_only
        self.timeout = timeout
        self._closed = False

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
        self._backend.refuse_writes()
        self._check_root()
        t0 = time.perf_counter()
        report = ConsolidationReport()

        def discover(state: _State) -> tuple[list[dict[str, Any]], list[_Unit], _Plan]:
            return self._discover(state, report, prune)

        def write(con: Any, state: _State, found: tuple[list[dict[str, Any]], list[_Unit], _Plan]) -> None:
            run_rows, units, plan = found
            self._write(con, run_rows, units, plan, state, report, progress)

        def load(con: Any) -> _State:
            # Pruning compares every known run with the root: the whole bookkeeping.
            return self._load_state(con, quick=not prune)

        self._backend.consolidate(report, load, discover, write)
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

    def _listing(self, *, manifests: bool = False) -> dict[str, tuple[Any, ...]] | None:
        """The ``_flightlog.run_listing`` rows by manifest path (relative to the root):
        ``(mtime_ns, size, run_id, flow_name, mode, status, created_at, finished_at,
        rows_written, inode, outcome[, manifest JSON])``; None when there is no catalog, or it has no
        such table (written by an older flightlog, until the next consolidate)."""
        self._check_open()
        if not self.exists():
            return None
        with self._backend.reader() as mem:
            try:
                rows = mem.execute(
                    "SELECT manifest_path, manifest_mtime_ns, manifest_size, run_id, flow_name, mode, status, "
                    "created_at, finished_at, rows_written, manifest_ino, outcome"
                    f"{', manifest' if manifests else ''} FROM {_LISTING}"
                ).fetchall()
            except (_duckdb().CatalogException, _duckdb().BinderException):
                return None  # no listing table (or an older one): every run is read from its files
        return {r[0]: r[1:] for r in rows}

    def _listing_of(
        self, scan: Any, *, manifests: bool = False, metric: str | None = None
    ) -> list[tuple[Any, ...]] | None:
        """The runs of a scan (``flightlog._core.list_run_manifests``' Arrow columns: each
        manifest under the root with its ``lstat`` signature) joined with their
        ``_flightlog.run_listing`` rows, in DuckDB (a root of 100,000 runs costs no
        Python work per listed run beyond its result row).

        One tuple per scanned manifest: ``(manifest_rel, is_folder, run_id, flow_name,
        mode, status, created_at, finished_at, rows_written, outcome[, manifest JSON]
        [, final, min])``. ``run_id`` is None where the listing does not answer (no
        row, not terminal, or the file is no longer the one consolidated: other
        ``mtime_ns``, size or inode, or not a regular file): that manifest must be read.
        Listed runs come first, ordered by ``created_at`` then ``run_id`` (as
        :func:`~flightlog.runs.discover.scan_runs` orders); the rest follow unordered.
        With ``metric`` (a telemetry column; with ``iter``, else both None),
        ``final``/``min`` are that column's last non-null value by ``iter`` and its
        minimum over each listed run's rows (matched by run id).
        None when there is no catalog or no listing table."""
        self._check_open()
        if not self.exists():
            return None
        terminal = ", ".join(_literal(s) for s in sorted(FINAL_STATUSES))
        with self._backend.reader() as mem:
            try:
                # The stream capsule itself, not the object: DuckDB then scans it without
                # importing pyarrow (0.5 s) even where pyarrow is installed. Read once, into
                # a temporary table (a capsule is a one-time stream).
                mem.register("_flightlog_scan_stream", scan.__arrow_c_stream__())
                mem.execute("CREATE TEMP TABLE _flightlog_scan AS SELECT * FROM _flightlog_scan_stream")
                mem.unregister("_flightlog_scan_stream")
                extra = ", m.manifest" if manifests else ""
                agg_join = ""
                if metric is not None:
                    extra += ", a.final, a.low"
                    try:
                        columns = table_columns(mem, "telemetry")
                    except _duckdb().CatalogException:
                        columns = {}  # a catalog of runs without rows yet
                    if metric in columns and "iter" in columns:
                        q = _ident(metric)
                        # One GROUP BY without parameters (a bound list of ids makes DuckDB's Python
                        # binding import pandas; comparing each row with 100,000 ids takes seconds).
                        agg = (
                            f"SELECT run_id, arg_max({q}, iter) FILTER (WHERE {q} IS NOT NULL) AS final, "
                            f"min({q}) AS low FROM telemetry GROUP BY run_id"
                        )
                    else:
                        agg = "SELECT NULL::VARCHAR AS run_id, NULL AS final, NULL AS low WHERE false"
                    agg_join = f" LEFT JOIN ({agg}) a ON a.run_id = m.listed_id"
                # Equality joins only, the checks in a CASE: a join condition with OR (or
                # one on a computed flag) makes DuckDB join nested-loop (a minute at 100,000).
                return mem.execute(  # type: ignore[no-any-return]
                    "WITH m AS (SELECT s.manifest_rel, s.is_folder, l.*, CASE WHEN (s.is_regular "
                    "AND l.manifest_mtime_ns = s.mtime_ns AND l.manifest_size = s.size AND "
                    f"coalesce(l.manifest_ino = s.ino, true) AND l.status IN ({terminal})) IS TRUE "
                    f"THEN l.run_id END AS listed_id FROM _flightlog_scan s LEFT JOIN {_LISTING} l "
                    "ON l.manifest_path = s.manifest_rel) "
                    "SELECT m.manifest_rel, m.is_folder, m.listed_id, m.flow_name, m.mode, m.status, "
                    "m.created_at, m.finished_at, m.rows_written, "
                    f"m.outcome{extra} FROM m{agg_join} "
                    "ORDER BY m.listed_id IS NULL, coalesce(m.created_at, ''), m.listed_id, m.manifest_rel"
                ).fetchall()
            except (_duckdb().CatalogException, _duckdb().BinderException):
                return None  # no listing table (or an older one): every run is read from its files

    # ------------------------------------------------------------------ what it is, lifecycle

    def __repr__(self) -> str:
        return self._backend.describe("read-only" if self.read_only else "read-write")

    @property
    def _where(self) -> str:
        """The catalog, for messages."""
        return self._backend.where

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
        return self._backend.exists()

    def close(self) -> None:
        """Mark the manager closed and release what it keeps between calls; idempotent.

        The DuckLake read session lets go of the catalog (and its PostgreSQL
        connections); Results already returned stay readable. An ``s3://`` root's
        scratch DuckDB session (for listings and footers) is closed too."""
        self._closed = True
        self._backend.close()
        self._tree.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _lake_reads(self) -> Any:
        """The DuckLake read session kept between calls (None for other catalogs)."""
        return self._backend.reads

    def _open_rw(self) -> contextlib.AbstractContextManager[Any]:
        """A read-write session on the catalog (closed on exit)."""
        return self._backend.open_rw()

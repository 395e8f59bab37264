"""Locking, connections, transactions and the catalog schema."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import random
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self

from .._errors import CatalogLockedError, CatalogUnavailableError
from .._manifest import fsync_dir
from .._tree import HttpfsTree, duckdb_connect
from .base import _catalog_io, _ManagerBase
from .ingest import _State
from .lake import _LAKE_ALIAS, _LAKE_ATTEMPTS, _guard_table, _LakeReads
from .report import ConsolidationReport, Result
from .schema import _CAT, _GUARD_SCHEMA, _GUARDS, _INGESTED_COLUMNS, _KINDS, _LISTING, _LISTING_COLUMNS, _RUNS_COLUMNS
from .sql import (
    _duckdb,
    _GuardRepaired,
    _ident,
    _is_conflict,
    _is_lock_conflict,
    _is_unreachable,
    _literal,
    _quiet,
    _Rollback,
    _rollback_quietly,
    _short,
    _sleep_backoff,
    _strip_terminators,
)
from .version import CatalogUnreadable, _record_writer, _set_aside, _unreadable

try:  # POSIX only; elsewhere DuckDB's own file lock (with retries) is the only guard.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class _Sessions(_ManagerBase):
    """Connections to the catalog."""

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

    def __enter__(self) -> Self:
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
        not a database) raises :class:`CatalogUnreadable`; with ``rebuild`` (the
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
        except CatalogUnreadable as e:
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
        from .._s3 import is_object_url, load_extensions

        assert self._lake is not None
        con = duckdb_connect(offline=True)
        try:
            needs_s3 = isinstance(self._tree, HttpfsTree) or is_object_url(self.data_path or "")
            load_extensions(con, *self._lake.extensions, *(("httpfs",) if needs_s3 else ()))
            if isinstance(self._tree, HttpfsTree):
                self._tree.prepare(con)
            elif needs_s3:
                from .._s3 import duckdb_secret_sql, storage_options

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

"""A DuckLake catalog (``catalog="ducklake:postgres:<dsn>"`` or ``"ducklake:<file>"``): many
writers at once, exactly-once ingestion through guard tables (see :mod:`.manager`), reads
through one cached in-memory session per manager and process."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import CatalogLockedError, CatalogUnavailableError
from ..runs.views import HttpfsTree, duckdb_connect
from .backend import CatalogBackend, state_columns
from .lake import _LAKE_ALIAS, _guard_table, _LakeReads, _LakeSpec
from .report import ConsolidationReport
from .schema import _CAT, _GUARD_SCHEMA, _GUARDS
from .sql import (
    _duckdb,
    _GuardRepaired,
    _is_lock_conflict,
    _is_unreachable,
    _literal,
    _Rollback,
    _short,
    _sleep_backoff,
)

if TYPE_CHECKING:
    from .ingest import _State, _Unit
    from .manager import DuckDBManager


class LakeCatalog(CatalogBackend):
    """The tables in a DuckLake catalog, their data files under ``data_path``."""

    result_table = "temp.main._result_{n}"
    result_create = "CREATE TEMP TABLE"
    retries_conflicts = True

    def __init__(self, owner: DuckDBManager, spec: _LakeSpec, db_path: Any, data_path: Any) -> None:
        from .._s3 import is_object_url

        super().__init__(owner)
        if db_path is not None:
            raise ValueError("db_path= and catalog= exclude each other: db_path is the embedded duckdb.db file")
        self.spec = spec
        if data_path is None:
            self.data_path = str(owner.root / "lake").rstrip("/") + "/"
        else:
            dp = os.fspath(data_path)
            self.data_path = (dp if is_object_url(dp) else str(Path(dp).expanduser().absolute())).rstrip("/") + "/"
        self._data_path_given = data_path is not None
        self.catalog = spec.display
        self._ready = False  # flightlog's tables are known to be there
        self._lock = threading.Lock()
        self._reads: _LakeReads | None = None

    @property
    def where(self) -> str:
        return self.spec.display

    def describe(self, mode: str) -> str:
        return (
            f"DuckDBManager({str(self.owner.root)!r}, catalog={self.catalog!r}, data_path={self.data_path!r}, {mode})"
        )

    def redact(self, text: str) -> str:
        return self.spec.redact(text)

    @property
    def reads(self) -> _LakeReads | None:
        return self._reads

    def exists(self) -> bool:
        if self._ready:
            return True
        try:
            with self._cursor() as cur:
                self._ready = self._has_tables(cur)
        except FileNotFoundError:  # no DuckLake catalog there yet
            return False
        return self._ready

    @staticmethod
    def _has_tables(mem: Any) -> bool:
        return bool(
            mem.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
                "AND table_name IN ('runs', 'telemetry', 'events', '_ingested_files')",
                [_CAT],
            ).fetchall()[0][0]
            >= 4
        )

    def close(self) -> None:
        """The read session lets go of the catalog (and its PostgreSQL connections);
        Results already returned stay readable."""
        with self._lock:
            reads, self._reads = self._reads, None
            if reads is not None:
                reads.keep = False
                reads.settle()

    # ------------------------------------------------------------------ consolidation

    def consolidate(
        self,
        report: ConsolidationReport,
        load: Callable[[Any], _State],
        discover: Callable[[_State], Any],
        write: Callable[[Any, _State, Any], None],
    ) -> None:
        # No lock and no reason to let go of the session while the files are listed.
        with self.open_rw() as con:
            self.ensure_schema(con)
            state = load(con)
            write(con, state, discover(state))

    def ensure_schema(self, con: Any) -> None:
        # DuckLake has no PRIMARY KEY: exactly-once comes from the guard tables.

        def create(con: Any) -> None:
            self._create_tables(con)
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
            self.transaction("create the catalog tables", create, con)
        self._ready = True

    # ------------------------------------------------------------------ guards (module doc of .manager)

    def refill_guards(self, con: Any) -> None:
        """Gives every empty guard table a row again (its own transaction; a race adds two rows,
        which guards as well as one)."""

        def refill(con: Any) -> None:
            for g in _GUARDS:
                con.execute(
                    f"INSERT INTO {_guard_table(g)} SELECT 'refilled', now()::TIMESTAMP "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {_guard_table(g)})"
                )

        self.transaction("refill the guard tables", refill, con)

    def guard(self, con: Any, guards: Iterable[str]) -> None:
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

    def reload_columns(self, con: Any, columns: dict[str, dict[str, str]]) -> None:
        columns.update(state_columns(con))  # another writer may have added columns since we looked

    def claim_runs(
        self, con: Any, rows: list[dict[str, Any]], source: str
    ) -> tuple[set[str] | None, list[dict[str, Any]]]:
        # Two consolidators may add the same run: the guard makes the second one
        # start again and see the first one's row (replaced, not added twice;
        # left alone when it already says what we would write).
        from .schema import _GUARD_RUNS

        self.guard(con, [_GUARD_RUNS])
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
        return existing, rows

    def claim_files(self, con: Any, batch: list[_Unit]) -> None:
        from .write import _unit_guards

        self.guard(con, {g for u in batch for g in _unit_guards(u)})
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

    def batches(self, units: list[_Unit]) -> list[list[_Unit]]:
        from .write import _lake_batches

        batches = list(_lake_batches(units))
        # Consolidators on other hosts list the same files in the same order: each
        # starts at its own place, so that they mostly take different guard tables.
        turn = random.randrange(len(batches)) if batches else 0
        return batches[turn:] + batches[:turn]

    # ------------------------------------------------------------------ sessions

    @contextlib.contextmanager
    def open_rw(self, rebuild: ConsolidationReport | None = None) -> Iterator[Any]:
        """An in-memory session of its own (not the cached read session) with the catalog
        attached read-write as the default database."""
        con = self._instance()
        try:
            self._attach(con, read_only=False, alias=_LAKE_ALIAS)
            con.execute(f"USE {_LAKE_ALIAS}")
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def reader(self) -> Iterator[Any]:
        """A cursor on the manager's cached read session (:meth:`_cursor`)."""
        if not self.owner.read_only and not self._ready:
            with self.open_rw() as con:
                self.ensure_schema(con)
        with self._cursor() as cur:
            if not self._ready:
                if not self._has_tables(cur):
                    raise FileNotFoundError(
                        f"no flightlog tables in the DuckLake catalog {self.where}; "
                        "run DuckDBManager(..., catalog=...).consolidate() first"
                    )
                self._ready = True
            yield cur

    def _instance(self) -> Any:
        """A new in-memory DuckDB instance that can open the DuckLake catalog: its
        extensions loaded offline, the S3 secret created (no catalog attached yet)."""
        from .._s3 import is_object_url, load_extensions

        tree = self.owner._tree
        con = duckdb_connect(offline=True)
        try:
            needs_s3 = isinstance(tree, HttpfsTree) or is_object_url(self.data_path or "")
            load_extensions(con, *self.spec.extensions, *(("httpfs",) if needs_s3 else ()))
            if isinstance(tree, HttpfsTree):
                tree.prepare(con)
            elif needs_s3:
                from .._s3 import duckdb_secret_sql, storage_options

                con.execute(duckdb_secret_sql(storage_options(self.owner._storage_overrides)))
        except BaseException:
            con.close()
            raise
        return con

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor with the DuckLake catalog attached read-only as ``_CAT`` and selected.

        The cursor is new (DuckDB connections are not shared between threads); the
        instance under it is the manager's :class:`_LakeReads`, made once per process,
        so the extensions are loaded and the catalog attached once, not per call
        (module doc). Every statement on the cursor is its own transaction, which
        reads the catalog's latest snapshot: a read sees all that was committed
        before it began, by any process."""
        with self._lock:
            self.owner._check_open()
            reads = self._reads
            if reads is None or reads.pid != os.getpid():  # DuckDB does not survive fork()
                reads = self._reads = _LakeReads(self._instance(), keep=self.spec.kind == "postgres")
            if not reads.attached:
                self._attach(reads.con, read_only=True, alias=_CAT)
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
            with self._lock:
                reads.users -= 1
                if failed is not None and _is_unreachable(failed):
                    # The server went away: the next read connects again.
                    reads.keep = False
                    if self._reads is reads:
                        self._reads = None
                reads.settle()

    def _attach(self, con: Any, read_only: bool, alias: str) -> None:
        duckdb = _duckdb()
        lake = self.spec
        options = [f"DATA_PATH {_literal(self.data_path or '')}"]
        if read_only:
            options.append("READ_ONLY")
            if lake.kind == "duckdb" and not os.path.exists(lake.target):
                raise FileNotFoundError(
                    f"no DuckLake catalog at {lake.display} yet; run DuckDBManager(..., catalog=...).consolidate() first"
                )
        timeout = self.owner.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
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
                        f"the DuckLake catalog {lake.display} stayed locked by another process for {timeout} s"
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

"""What the :class:`~flightlog.catalog.DuckDBManager` facade asks of a catalog, and what every
kind of catalog shares. One subclass per kind: :class:`~.embedded.EmbeddedCatalog`
(``duckdb.db``), :class:`~.lake.LakeCatalog` (DuckLake) and :class:`~.files.FilesCatalog`
(no catalog). The facade chooses one in its constructor; nothing else asks which it is."""

from __future__ import annotations

import abc
import contextlib
import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .report import ConsolidationReport, Result
from .schema import _KINDS, _LISTING, _LISTING_COLUMNS, _RUNS_COLUMNS
from .sql import (
    _duckdb,
    _GuardRepaired,
    _ident,
    _is_conflict,
    _Rollback,
    _rollback_quietly,
    _strip_terminators,
    table_columns,
)

if TYPE_CHECKING:
    from .ingest import _State, _Unit
    from .manager import DuckDBManager

#: How often one transaction is tried again when other writers keep committing first.
_LAKE_ATTEMPTS = 60


def columns_sql(spec: Mapping[str, str]) -> str:
    """``"name" TYPE, ...`` of a column spec."""
    return ", ".join(f"{_ident(k)} {v}" for k, v in spec.items())


#: The columns every telemetry/events table starts with.
_RESERVED_SQL = "run_id VARCHAR, flow_name VARCHAR, schema_version INTEGER"


class CatalogBackend(abc.ABC):
    """One kind of catalog behind the facade. ``owner`` is the facade: the root, its tree,
    ``timeout`` and ``read_only``."""

    #: The table a Result's rows go to (``{n}``: a number unique in the manager) and how it is made.
    result_table = "memory.main._flightlog_result_{n}"
    result_create = "CREATE TABLE"
    #: Whether a transaction that lost a write-write conflict is run again (only DuckLake has
    #: concurrent writers).
    retries_conflicts = False

    def __init__(self, owner: DuckDBManager) -> None:
        self.owner = owner
        self.db_path: Path | None = None
        self.data_path: str | None = None
        #: The catalog string for ``repr`` and messages, password masked (DuckLake only).
        self.catalog: str | None = None
        self._result_ids = itertools.count()

    # ------------------------------------------------------------------ what it is

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """The catalog, for messages."""

    @abc.abstractmethod
    def describe(self, mode: str) -> str:
        """The facade's ``repr`` (``mode``: ``"read-only"`` or ``"read-write"``)."""

    def redact(self, text: str) -> str:
        """``text`` (an error message) without the catalog's secrets."""
        return text

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the catalog has been created (creates nothing)."""

    def close(self) -> None:
        """Lets go of what is kept between calls."""
        return None

    @property
    def reads(self) -> Any:
        """The cached read session, if this kind of catalog keeps one."""
        return None

    # ------------------------------------------------------------------ sessions

    @abc.abstractmethod
    def reader(self) -> contextlib.AbstractContextManager[Any]:
        """A connection with the catalog attached read-only as the default database."""

    @abc.abstractmethod
    def open_rw(self, rebuild: ConsolidationReport | None = None) -> contextlib.AbstractContextManager[Any]:
        """A read-write connection to the catalog (closed on exit)."""

    @abc.abstractmethod
    def ensure_schema(self, con: Any) -> None:
        """Creates the catalog's tables that are missing."""

    def refuse_writes(self) -> None:
        """Raises ``PermissionError`` when :meth:`consolidate` may not write."""
        if self.owner.read_only:
            raise PermissionError(f"DuckDBManager(read_only=True) cannot consolidate {self.where}")

    @abc.abstractmethod
    def consolidate(
        self,
        report: ConsolidationReport,
        load: Callable[[Any], _State],
        discover: Callable[[_State], Any],
        write: Callable[[Any, _State, Any], None],
    ) -> None:
        """Runs one consolidation: ``load(con)`` reads the catalog's bookkeeping,
        ``discover(state)`` lists the root (the catalog need not be held meanwhile), and
        ``write(con, state, found)`` writes what it found."""

    def materialise(self, mem: Any, sql: str, params: Any = None, *, names: bool = False) -> Result:
        """Runs ``sql`` into a table of ``mem`` (the Result's own connection: the table is
        freed with it, when the Result is garbage-collected).

        With ``duckdb.db`` the table is in ``mem``'s own in-memory database, not in the
        catalog the query sees (``SHOW TABLES`` lists the catalog's tables only); a
        DuckLake read session is shared, so there it is a temporary table of the cursor.
        ``names``: keep the query's column names where the table had to rename
        duplicates (``SELECT 1 AS x, 2 AS x``)."""
        table = self.result_table.format(n=next(self._result_ids))
        body = _strip_terminators(sql)
        columns = None
        if names:
            with contextlib.suppress(Exception):  # DESCRIBE takes queries, not SHOW/SUMMARIZE (no duplicates there)
                columns = [r[0] for r in mem.execute(f"DESCRIBE {body}\n", params).fetchall()]
        mem.execute(f"{self.result_create} {table.replace('temp.main.', '')} AS SELECT * FROM (\n{body}\n)", params)
        return Result(mem, table, columns)

    def transaction(self, what: str, body: Callable[[Any], Any], con: Any) -> Any:
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
                self.refill_guards(con)
            except duckdb.Error as e:
                _rollback_quietly(con)
                if not self.retries_conflicts or not _is_conflict(e) or attempt + 1 >= _LAKE_ATTEMPTS:
                    raise
                time.sleep(min(0.01 * 1.5**attempt, 1.0) * (0.5 + random.random()))
            except BaseException:
                _rollback_quietly(con)
                raise
        raise AssertionError(f"unreachable ({what})")  # pragma: no cover

    # ------------------------------------------------------------------ writers side by side
    # duckdb.db has one writer at a time (its lock): these do nothing there.

    def refill_guards(self, con: Any) -> None:
        """Gives every emptied guard table a row again."""
        return None

    def guard(self, con: Any, guards: Iterable[str]) -> None:
        """Makes the caller's transaction conflict with any other that guards the same tables."""
        return None

    def reload_columns(self, con: Any, columns: dict[str, dict[str, str]]) -> None:
        """Reads the tables' columns again when another writer may have added some."""
        return None

    def claim_runs(
        self, con: Any, rows: list[dict[str, Any]], source: str
    ) -> tuple[set[str] | None, list[dict[str, Any]]]:
        """Inside the transaction writing ``runs`` rows: the manifest paths another writer
        already wrote (None: no other writer) and the rows still to write."""
        return None, rows

    def claim_files(self, con: Any, batch: list[_Unit]) -> None:
        """Inside the transaction ingesting ``batch``: drops the files another writer took."""
        return None

    def between_batches(self, con: Any) -> None:
        """Called by a consolidation between two committed batches: a backend whose
        writer excludes readers lets waiting ones in here (nothing by default)."""
        return None

    def batches(self, units: list[_Unit]) -> list[list[_Unit]]:
        """The units in the batches (one transaction each) they are written in."""
        from .write import _batches

        return list(_batches(units))

    # ------------------------------------------------------------------ shared table creation

    def _create_tables(self, con: Any, ingested_path: str = '"path" VARCHAR') -> None:
        """``CREATE TABLE IF NOT EXISTS`` of the catalog's tables (inside a transaction)."""
        from .schema import _GUARD_SCHEMA, _INGESTED_COLUMNS

        ingested = columns_sql(_INGESTED_COLUMNS).replace('"path" VARCHAR', ingested_path, 1)
        con.execute(f"CREATE TABLE IF NOT EXISTS runs ({columns_sql(_RUNS_COLUMNS)})")
        con.execute(f"CREATE TABLE IF NOT EXISTS telemetry ({_RESERVED_SQL})")
        con.execute(f"CREATE TABLE IF NOT EXISTS events ({_RESERVED_SQL})")
        con.execute(f"CREATE TABLE IF NOT EXISTS _ingested_files ({ingested})")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {_GUARD_SCHEMA}")
        con.execute(f"CREATE TABLE IF NOT EXISTS {_LISTING} ({columns_sql(_LISTING_COLUMNS)})")
        if "outcome" not in {r[0] for r in con.execute(f"DESCRIBE {_LISTING}").fetchall()}:
            # A listing from before its outcome column: the column, filled from the manifests;
            # a run whose outcome is not text is read from its files again (as new ones are).
            con.execute(f"ALTER TABLE {_LISTING} ADD COLUMN outcome VARCHAR")
            con.execute(f"DELETE FROM {_LISTING} WHERE json_type(manifest, '$.outcome') NOT IN ('VARCHAR', 'NULL')")
            con.execute(f"UPDATE {_LISTING} SET outcome = json_extract_string(manifest, '$.outcome')")


def state_columns(con: Any) -> dict[str, dict[str, str]]:
    """The telemetry and events tables' columns."""
    return {t: table_columns(con, t) for t in _KINDS}


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield

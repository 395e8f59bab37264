"""The embedded catalog: one ``duckdb.db`` file (default ``<root>/duckdb.db``), one writer at
a time (``<db>.lock``), readers that open it for the length of one query."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _core
from .._errors import CatalogLockedError
from ..runs.views import ObjectPath
from .backend import CatalogBackend
from .lock import writer_lock
from .report import ConsolidationReport
from .schema import _CAT
from .sql import _duckdb, _is_lock_conflict, _literal, _quiet, _sleep_backoff
from .version import CatalogUnreadable, _record_writer, _set_aside, _unreadable

if TYPE_CHECKING:
    from .ingest import _State
    from .manager import DuckDBManager


#: Beside ``duckdb.db``: touched by a reader that found a consolidation writing, so
#: that the writer lets go of the file between two batches (see ``between_batches``).
READERS_WAITING_SUFFIX = ".readers-waiting"
#: How long a writer stays away when readers wait: longer than a reader's longest
#: pause between two tries (``_sleep_backoff``: 0.25 s), so each waiting reader gets in.
_READER_WINDOW = 0.3


class _WriterConnection:
    """The consolidating writer's DuckDB connection, which it can close and open again
    between batches (every other attribute is the connection's)."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


class EmbeddedCatalog(CatalogBackend):
    """``duckdb.db``: the default catalog."""

    def __init__(self, owner: DuckDBManager, db_path: str | os.PathLike[str] | None, data_path: Any) -> None:
        from .._s3 import is_object_url

        super().__init__(owner)
        if data_path is not None:
            raise ValueError("data_path= is where a DuckLake catalog keeps its files: it needs catalog='ducklake:...'")
        root = owner.root
        if db_path is None and isinstance(root, ObjectPath):
            raise ValueError(
                f"DuckDBManager({str(root)!r}) needs db_path= (a local duckdb.db file: DuckDB cannot "
                "write its database file to an object store) or catalog='ducklake:postgres:<dsn>' "
                "(or files_only=True to read the run files without a catalog)"
            )
        if db_path is not None and is_object_url(os.fspath(db_path)):
            raise ValueError(f"db_path= must be a local file, got {os.fspath(db_path)!r}")
        #: Readers that waited before this time were let in (``between_batches``).
        self._readers_served_ns = 0
        self.file: Path = (
            Path(os.fspath(db_path)).expanduser() if db_path is not None else Path(str(root)) / "duckdb.db"
        ).absolute()
        self.db_path = self.file

    @property
    def where(self) -> str:
        return str(self.file)

    def describe(self, mode: str) -> str:
        return f"DuckDBManager({str(self.owner.root)!r}, db_path={str(self.file)!r}, {mode})"

    def exists(self) -> bool:
        return self.file.exists()

    # ------------------------------------------------------------------ consolidation

    def consolidate(
        self,
        report: ConsolidationReport,
        load: Callable[[Any], _State],
        discover: Callable[[_State], Any],
        write: Callable[[Any, _State, Any], None],
    ) -> None:
        # The database is let go while the files are listed, and between two batches
        # when readers wait: they get in meanwhile and see whole batches only.
        with writer_lock(Path(str(self.file) + ".lock"), self.owner.timeout):
            with self.open_rw(rebuild=report) as con:
                self.ensure_schema(con)
                state = load(con)
            found = discover(state)
            self._readers_served_ns = time.time_ns()
            with self.open_rw() as con:
                writer = _WriterConnection(con)
                try:
                    write(writer, state, found)
                finally:
                    if writer.con is not con:
                        writer.con.close()

    def between_batches(self, con: Any) -> None:
        """Lets readers that found the file locked in: the connection is closed (its
        batches are committed and checkpointed), left closed for ``_READER_WINDOW`` and
        opened again once they are done. Readers say they wait by touching the
        ``.readers-waiting`` file beside ``duckdb.db``; without one this does nothing."""
        if not isinstance(con, _WriterConnection):
            return
        try:
            asked = os.stat(str(self.file) + READERS_WAITING_SUFFIX).st_mtime_ns
        except OSError:
            return
        if asked <= self._readers_served_ns:
            return
        self._readers_served_ns = time.time_ns()
        con.con.close()
        time.sleep(_READER_WINDOW)
        duckdb = _duckdb()
        fresh = self._retry_locked(lambda: self._connect_rw(duckdb), "by readers")
        _quiet(fresh)
        self.owner._tree.prepare(fresh)
        con.con = fresh

    def ensure_schema(self, con: Any) -> None:
        def create(con: Any) -> None:
            self._create_tables(con, '"path" VARCHAR PRIMARY KEY')

        self.transaction("create the catalog tables", create, con)

    # ------------------------------------------------------------------ sessions

    @contextlib.contextmanager
    def open_rw(self, rebuild: ConsolidationReport | None = None) -> Iterator[Any]:
        """A read-write connection, retrying while readers hold the file; closed on exit.

        ``duckdb.db`` that this DuckDB cannot read (written by another DuckDB line, or
        not a database) raises :class:`CatalogUnreadable`; with ``rebuild`` (the
        caller holds the writer lock and is about to consolidate) the file is set
        aside as ``duckdb.db.duckdb-<version>.bak`` instead and an empty catalog is
        published in its place, which the consolidation fills from the run tree."""
        duckdb = _duckdb()
        if not self.file.exists():
            self._create_db_file()
        try:
            con = self._retry_locked(lambda: self._connect_rw(duckdb), "by another process")
        except CatalogUnreadable as e:
            if rebuild is None or not e.rebuildable:
                raise
            kept = _set_aside(self.file, e.written_by)
            rebuild.rebuilt = f"{e.what}; rebuilt it from the run tree (the old file is kept as {kept.name})"
            self._create_db_file()
            con = self._retry_locked(lambda: self._connect_rw(duckdb), "by another process")
        try:
            _quiet(con)
            _record_writer(con, self.file)
            self.owner._tree.prepare(con)
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def reader(self) -> Iterator[Any]:
        """A private in-memory connection with ``duckdb.db`` attached read-only as the default
        database; the file is detached on exit (results stay in memory)."""
        duckdb = _duckdb()
        if not self.file.exists():
            if self.owner.read_only:
                raise FileNotFoundError(f"no catalog at {self.file}; run DuckDBManager(...).consolidate() first")
            self.owner._check_root()
            with writer_lock(Path(str(self.file) + ".lock"), self.owner.timeout), self.open_rw() as con:
                self.ensure_schema(con)

        def attach() -> Any:
            mem = duckdb.connect(":memory:")
            try:
                _quiet(mem)
                mem.execute(f"ATTACH {_literal(str(self.file))} AS {_CAT} (READ_ONLY)")
            except duckdb.Error as e:
                mem.close()
                unreadable = _unreadable(self.file, e)
                if unreadable is None:
                    raise
                raise unreadable from e
            except BaseException:
                mem.close()
                raise
            return mem

        mem = self._retry_locked(attach, "by a writer", on_conflict=self._say_a_reader_waits)
        try:
            mem.execute(f"USE {_CAT}")
            yield mem
        finally:
            with contextlib.suppress(Exception):
                mem.execute("USE memory")
                mem.execute(f"DETACH {_CAT}")

    def _connect_rw(self, duckdb: Any) -> Any:
        try:
            return duckdb.connect(str(self.file))
        except duckdb.Error as e:
            unreadable = _unreadable(self.file, e)
            if unreadable is None:
                raise
            raise unreadable from e

    def _create_db_file(self) -> None:
        create_catalog_file_atomically(self.file, self.ensure_schema)

    def _say_a_reader_waits(self) -> None:
        # Best effort: a read-only folder leaves the reader waiting for the whole write.
        with contextlib.suppress(OSError):
            Path(str(self.file) + READERS_WAITING_SUFFIX).touch()

    def _retry_locked(self, open_: Callable[[], Any], by: str, on_conflict: Callable[[], None] | None = None) -> Any:
        """``open_()``, tried again while DuckDB says another process holds ``duckdb.db``;
        :class:`~flightlog.CatalogLockedError` after ``timeout`` seconds. ``on_conflict``
        runs at the first conflict."""
        duckdb = _duckdb()
        timeout = self.owner.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in itertools.count():
            try:
                return open_()
            except duckdb.Error as e:
                if not _is_lock_conflict(e):
                    raise
                if attempt == 0 and on_conflict is not None:
                    on_conflict()
                if not _sleep_backoff(attempt, deadline):
                    raise CatalogLockedError(f"{self.file} stayed locked {by} for {timeout} s: {e}") from e
        raise AssertionError("unreachable")  # pragma: no cover


def create_catalog_file_atomically(final: Path, init: Callable[[Any], None]) -> None:
    """Creates the DuckDB database ``final``, its tables made by ``init(con)`` and no rows,
    atomically (the caller holds the writer lock).

    ``duckdb.connect`` on a new path writes the file's header in place, so a
    process killed at that moment would leave a file DuckDB refuses for good; and
    a file published before its tables exist would make readers fail on a missing
    ``runs`` table. The database and its tables are made under a temp name in the
    same folder, then published by ``_core.publish_bytes`` (the one atomic writer:
    fsync, a link that never replaces a file another program created meanwhile, the
    folder fsynced so the name survives power loss)."""
    duckdb = _duckdb()
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        # Left by a process killed while creating it; we hold the writer lock.
        with contextlib.suppress(OSError):
            stale.unlink()
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        con = duckdb.connect(str(tmp))
        try:
            init(con)
            _record_writer(con, None)
        finally:
            con.close()  # checkpoints: the tables are in the file itself, not a .wal
        # A new catalog is a few pages of empty tables: published whole, create-only (a
        # catalog another process created meanwhile is kept, never replaced).
        with contextlib.suppress(FileExistsError):
            _core.publish_bytes(final, tmp.read_bytes(), create_only=True)
    finally:
        for leftover in (tmp, Path(f"{tmp}.wal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()

"""What the catalog returns: :class:`Result` (a materialised query) and
:class:`ConsolidationReport`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from .sql import _ident


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
        rows: list[tuple[Any, ...]] = self._rel.fetchall()  # the relation is untyped (DuckDB 1.5 and 2.x)
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        """The first row, or ``None`` when there is none."""
        rows = self._rel.limit(1).fetchall()
        return rows[0] if rows else None

    def fetchnumpy(self) -> dict[str, Any]:
        """Columns as a dict of numpy arrays."""
        columns: dict[str, Any] = self._rel.fetchnumpy()
        return columns

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
        from .._html import grid

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
        from .._html import grid, key_values

        items = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "files_skipped"]
        html = key_values("ConsolidationReport", items)
        if self.files_skipped:
            html += grid(["skipped file", "reason"], self.files_skipped, title="skipped")
        return html


# --------------------------------------------------------------------------- discovery records

"""SQL text helpers: quoting, bound-JSON row sources, statement checks, error classification,
transactions' control exceptions and retry backoff."""

from __future__ import annotations

import contextlib
import functools
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .schema import _INTS, RESERVED_COLUMNS


def _duckdb() -> Any:
    import duckdb

    return duckdb


class _Rollback(Exception):
    """Raised inside a transaction body: roll back and return ``value``."""

    def __init__(self, value: Any) -> None:
        super().__init__("rollback")
        self.value = value


class _GuardRepaired(Exception):
    """A guard table was found empty and has been refilled: run the transaction again."""


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


def _quiet(con: Any) -> None:
    """No DuckDB progress bar on this connection: DuckDB prints it to stdout for queries
    over 2 s (a busy machine, a large batch), into the output of ``flightlog query
    --format csv`` or of a program that consolidates."""
    con.execute("SET enable_progress_bar = false")


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


def _short(exc: BaseException | str) -> str:
    """An error's text on one line, at most 300 characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def is_numeric(duck_type: str) -> bool:
    t = duck_type.upper()
    return t in _INTS or t in ("UBIGINT", "HUGEINT", "FLOAT", "DOUBLE", "REAL") or t.startswith("DECIMAL")


def is_metric(name: str, duck_type: str) -> bool:
    """Whether column ``name`` of type ``duck_type`` can be a metric (:func:`check_metric`)."""
    return name not in RESERVED_COLUMNS and is_numeric(duck_type)


class MetricError(ValueError):
    """A metric name that is no numeric telemetry column (:func:`check_metric`);
    ``missing``: there is no column of that name at all."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


def check_metric(metric: str, columns: Mapping[str, str]) -> None:
    """The one rule for a metric (what ``compare`` summarises, what is charted): a numeric
    telemetry column the catalog does not set itself. ``columns`` is ``{name: DuckDB type}``
    of the telemetry table. Raises :class:`MetricError` naming the column (and, when it is
    missing, the columns there are); callers that speak another error type translate it."""
    if metric not in columns:
        raise MetricError(f"no telemetry column {metric!r}; columns: {', '.join(columns) or '(none)'}", missing=True)
    if is_metric(metric, columns[metric]):
        return
    if metric in RESERVED_COLUMNS:
        raise MetricError(
            f"telemetry column {metric!r} is reserved (set by the catalog for every row), not a metric", missing=False
        )
    raise MetricError(
        f"telemetry column {metric!r} is {columns[metric]}, not numeric: it cannot be a metric", missing=False
    )


def table_columns(con: Any, table: str) -> dict[str, str]:
    """``{column: DuckDB type}`` of ``table`` on ``con``."""
    rows = con.execute(f"DESCRIBE {_ident(table)}").fetchall()
    return {r[0]: str(r[1]) for r in rows}

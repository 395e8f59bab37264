"""Read-only queries over the catalog: query, runs, telemetry, events, compare."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..runs.manifest import parse_manifest
from .base import _catalog_io, _ManagerBase
from .report import Result
from .sql import _check_one_select, _ident, check_metric, table_columns
from .values import _id_list


class _Queries(_ManagerBase):
    """The public reads of the catalog."""

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
        with self._backend.reader() as mem:
            return self._backend.materialise(mem, body, params, names=True)

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
            data = parse_manifest(self._tree.read_bytes(manifest), str(manifest))
            where = self.root / path if (mode or "run") == "run" and path else manifest
            return self._tree.evidence_status(data, where)
        except (OSError, ValueError):  # ManifestError is a ValueError
            return None

    def _rows_of(self, table: str, where: str, params: list[Any], columns: Sequence[str] | None, order: str) -> Result:
        self._check_open()
        with self._backend.reader() as mem:
            available = table_columns(mem, table)
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
            return self._backend.materialise(mem, f"SELECT {select} FROM {table} WHERE {where}{order_by}", params)

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
        with self._backend.reader() as mem:
            available = table_columns(mem, "telemetry")
            check_metric(metric, available)  # a MetricError is the ValueError documented above
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
            return self._backend.materialise(mem, sql, [ids, list(range(len(ids))), ids])

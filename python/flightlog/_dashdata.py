"""The data behind the dashboard (``flightlog ui``) and the HTML report (``flightlog report``).

The one place the dashboard reads data, and it reads it through the existing layers:

- the runs (status by evidence, manifests) from :func:`flightlog.runs.discover.scan_runs`;
- telemetry and events of consolidated runs from the catalog (:class:`~flightlog.DuckDBManager`,
  opened read-only; every value bound as a parameter), of the others from their durable files
  (:meth:`~flightlog.DuckDBManager.live`), so a running run shows what it has made durable;
- the comparison from :func:`flightlog._analysis.compare_rows` (the CLI's ``compare``);
- downsampling with the plot's M4 query (:func:`flightlog._plot._downsample_sql`: first, min, max
  and last point of each pixel bucket, computed in DuckDB), so a spike is never hidden and a
  10-million-row run sends a few thousand points, never its rows.

Every answer is plain JSON-able data (lists, dicts, numbers, text; non-finite floats as ``None``).
Run ids from a URL are checked (:func:`check_run_id`) and must name a run found under the root:
no text from a request becomes a path or SQL.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

__all__ = ["DashData", "DashError", "check_run_id"]

#: The metrics shown as last values in the runs table, when the runs have them.
CORE_METRICS = ("E", "grad_norm", "phi_residual")
#: Pixel buckets of a chart (M4: at most 4 points each).
DEFAULT_BUCKETS = 800
MAX_BUCKETS = 4000
MAX_PAGE = 500
#: Up to this many rows a chart is M4 (each drawn point is a real row: exact hover readouts);
#: above, min/max per pixel bucket (about 3x cheaper in DuckDB: no arg_min/arg_max).
M4_MAX_ROWS = 2_000_000
_SCAN_TTL = 1.0  # seconds a scan of the root is reused (the runs page polls)
_MAX_EVENTS = 500
#: Downsampled series kept (run, metric, width, range; each a few thousand numbers).
_SERIES_CACHE = 256


class DashError(ValueError):
    """A request the dashboard cannot answer: ``status`` is the HTTP status (400 bad input, 404 unknown run)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_run_id(value: Any) -> str:
    """``value`` if it can be a run id (a safe name: no path separator, no ``..``, no control
    characters, at most 128 characters), else :class:`DashError` (400)."""
    from ._names import validate_name

    try:
        return validate_name("run id", value)
    except (TypeError, ValueError) as e:
        raise DashError(str(e)) from None


def _num(v: Any) -> Any:
    """A JSON-safe value: finite floats (6 significant digits would change values a person reads
    in a table, so tables keep full precision), None for NaN/inf, text for times."""
    if isinstance(v, bool) or v is None or isinstance(v, int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Decimal):
        return _num(float(v))
    if isinstance(v, _dt.datetime | _dt.date):
        return v.isoformat()
    if isinstance(v, Mapping):
        return {str(k): _num(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_num(x) for x in v]
    try:
        return _num(float(v))
    except (TypeError, ValueError):
        return str(v)


class DashData:
    """Read-only access to a root (and its catalog) for the dashboard.

    Args:
        root: the flightlog root (a folder or ``s3://bucket/prefix``; default as the CLI).
        db_path: the embedded catalog file (default ``<root>/duckdb.db``).
        catalog: a DuckLake catalog string instead (``ducklake:...``).
        timeout: seconds to wait for a catalog locked by a writer.

    Safe to share between threads (the server answers requests in a thread pool).
    """

    def __init__(
        self,
        root: Any = None,
        *,
        db_path: Any = None,
        catalog: str | None = None,
        timeout: float = 30.0,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        from .catalog import DuckDBManager
        from .runs.discover import _root

        self.root = _root(root)
        self.storage_options = dict(storage_options or {})
        files_only = isinstance(self.root, str) and db_path is None and catalog is None
        if files_only:
            self.db = DuckDBManager(self.root, timeout=timeout, files_only=True, storage_options=storage_options)
        else:
            self.db = DuckDBManager(
                self.root,
                db_path=db_path,
                catalog=catalog,
                read_only=True,
                timeout=timeout,
                storage_options=storage_options,
            )
        self._lock = threading.Lock()
        self._scan: tuple[float, list[Any]] | None = None
        self._cache: dict[str, tuple[float, Any]] = {}
        self._live_lock = threading.RLock()
        self._series: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}

    def _cached(self, key: str, make: Any) -> Any:
        """``make()``, reused for ``_SCAN_TTL`` seconds: the catalog's columns and contents change
        only when ``consolidate`` runs, and each catalog read opens the file anew."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < _SCAN_TTL:
                return hit[1]
        value = make()
        with self._lock:
            now = time.monotonic()
            # Old entries go (a live run's copy in memory is not kept once nobody looks at it).
            for k in [k for k, (t, _) in self._cache.items() if now - t > 10 * _SCAN_TTL]:
                del self._cache[k]
            self._cache[key] = (now, value)
        return value

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ runs

    def scan(self, *, fresh: bool = False) -> list[Any]:
        """:func:`~flightlog.runs.discover.scan_runs` of the root, reused for ``_SCAN_TTL`` seconds."""
        from ._analysis import listing_catalog
        from .runs.discover import scan_runs

        with self._lock:
            if not fresh and self._scan is not None and time.monotonic() - self._scan[0] < _SCAN_TTL:
                return self._scan[1]
        with listing_catalog(self.root) as listing:
            runs = scan_runs(self.root, storage_options=self.storage_options or None, db=listing)
        with self._lock:
            self._scan = (time.monotonic(), runs)
        return runs

    def ref(self, run_id: Any) -> Any:
        """The :class:`~flightlog.runs.discover.RunRef` of ``run_id`` (exactly its id), else DashError 404."""
        from .runs.discover import BAD_MANIFEST

        rid = check_run_id(run_id)
        for fresh in (False, True):  # a run started a moment ago is not in the cached scan yet
            for r in self.scan(fresh=fresh):
                if r.run_id == rid:
                    if r.status == BAD_MANIFEST:
                        raise DashError(f"run {rid!r} has a bad manifest: {r.problem}", 404)
                    return r
        raise DashError(f"no run {rid!r} under {self.root}", 404)

    def _catalog_ok(self) -> bool:
        from .catalog import CatalogUnreadable

        try:
            return bool(self.db.exists())
        except CatalogUnreadable:
            return False

    def _columns(self) -> dict[str, str]:
        def make() -> dict[str, str]:
            if not self._catalog_ok():
                return {}
            return {r[0]: str(r[1]) for r in self.db.query("DESCRIBE telemetry").fetchall()}

        return dict(self._cached("columns", make))

    def _consolidated(self) -> frozenset[str]:
        """The runs whose telemetry the catalog holds (one query, reused for a second)."""

        def make() -> frozenset[str]:
            if not self._catalog_ok():
                return frozenset()
            got = self.db.query(
                "SELECT DISTINCT run_id FROM _ingested_files WHERE kind = 'telemetry' AND rows > 0"
            ).fetchall()
            return frozenset(r[0] for r in got)

        return frozenset(self._cached("consolidated", make))

    def _in_catalog(self, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` whose telemetry the catalog holds (else they are read from their files)."""
        done = self._consolidated()
        return {r for r in ids if r in done}

    def runs(
        self,
        *,
        flow: str | None = None,
        status: str | None = None,
        param: str | None = None,
        q: str | None = None,
        ids: Sequence[str] | None = None,
        sort: str | None = None,
        desc: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        """One page of the runs table.

        ``param`` filters on a param, ``name=value`` (the value compared as text) or ``name``
        (runs that have it); ``ids`` keeps those runs; ``q`` keeps runs whose id or flow contains it. ``sort`` is any
        column (``params.X`` for a param). Returns ``{"columns", "rows", "total", "offset",
        "limit", "flows", "statuses", "params", "metrics"}``; each row is a dict."""
        if not isinstance(offset, int) or offset < 0:
            raise DashError(f"offset must be an integer >= 0, got {offset!r}")
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise DashError(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
        from ._analysis import run_start_and_duration

        all_runs = self.scan()
        flows = sorted({str(r.manifest.get("flow_name")) for r in all_runs if r.manifest.get("flow_name")})
        statuses = sorted({r.status for r in all_runs})
        param_names: list[str] = []
        for r in all_runs:
            for k in (r.manifest.get("params") or {}).keys():
                if k not in param_names:
                    param_names.append(k)
        runs = list(all_runs)
        if ids is not None:
            wanted = set(ids)
            runs = [r for r in runs if r.run_id in wanted]
        if flow:
            runs = [r for r in runs if r.manifest.get("flow_name") == flow]
        if status:
            runs = [r for r in runs if r.status == status]
        if q:
            ql = q.lower()
            runs = [r for r in runs if ql in r.run_id.lower() or ql in str(r.manifest.get("flow_name", "")).lower()]
        if param:
            name, eq, value = param.partition("=")
            name = name.strip().removeprefix("params.")
            if not name:
                raise DashError(f"param filter {param!r}: give name=value or name")

            def keep(r: Any) -> bool:
                p = r.manifest.get("params") or {}
                if name not in p:
                    return False
                return not eq or _text(p[name]) == value.strip()

            runs = [r for r in runs if keep(r)]
        now = _dt.datetime.now(_dt.UTC)
        rows: list[dict[str, Any]] = []
        for r in runs:
            m = r.manifest
            start, duration = run_start_and_duration(m, r.status, now)
            counts = m.get("counts") or {}
            row = {
                "run_id": r.run_id,
                "flow_name": m.get("flow_name"),
                "status": r.status,
                "started": start.isoformat() if start else None,
                "duration_s": duration,
                "rows": counts.get("rows_written"),
            }
            for k, v in (m.get("params") or {}).items():
                row[f"params.{k}"] = _num(v)
            rows.append(row)
        total = len(rows)
        metrics = self._core_metrics()
        metric_cols = [f"last_{m}" for m in metrics]
        sort_key = sort or "started"
        known = ["run_id", "flow_name", "status", "started", "duration_s", "rows", *metric_cols]
        known += [f"params.{p}" for p in param_names]
        if sort_key not in known:
            raise DashError(f"cannot sort by {sort_key!r}: columns are {', '.join(known)}")
        if sort_key in metric_cols:  # needs the values of every run shown
            self._add_last_values(rows, metrics, runs)
        rows.sort(key=lambda d: _sort_key(d.get(sort_key)), reverse=desc)
        page = rows[offset : offset + limit]
        if sort_key not in metric_cols:
            self._add_last_values(page, metrics, [r for r in runs if r.run_id in {d["run_id"] for d in page}])
        columns = [*known[:6], *metric_cols, *[f"params.{p}" for p in param_names]]
        return {
            "root": str(self.root),
            "columns": columns,
            "rows": page,
            "total": total,
            "all": len(all_runs),
            "offset": offset,
            "limit": limit,
            "flows": flows,
            "statuses": statuses,
            "params": param_names,
            "metrics": metrics,
        }

    def _core_metrics(self) -> list[str]:
        cols = self._columns()
        return [m for m in CORE_METRICS if m in cols] or (["E"] if not cols else [])

    def _add_last_values(self, rows: list[dict[str, Any]], metrics: list[str], refs: list[Any]) -> None:
        """``last_<metric>`` of each row: from the catalog (one query), else for a run not
        consolidated yet (a running one) from the last row of its newest durable file."""
        ids = [d["run_id"] for d in rows]
        for d in rows:
            for m in metrics:
                d.setdefault(f"last_{m}", None)
        if not ids or not metrics:
            return
        cols = self._columns()
        have = [m for m in metrics if m in cols]
        found: set[str] = set()
        if have and "iter" in cols:
            sel = ", ".join(f"arg_max({_ident(m)}, iter) FILTER (WHERE {_ident(m)} IS NOT NULL)" for m in have)
            got = self.db.query(
                f"SELECT run_id, count(*), {sel} FROM telemetry WHERE list_contains(?::VARCHAR[], run_id) "
                "GROUP BY run_id",
                [ids],
            ).fetchall()
            by_id = {r[0]: r for r in got}
            for d in rows:
                r = by_id.get(d["run_id"])
                if r is None:
                    continue
                found.add(d["run_id"])
                if d.get("rows") is None:
                    d["rows"] = r[1]
                for i, m in enumerate(have):
                    d[f"last_{m}"] = _num(r[2 + i])
        by_ref = {r.run_id: r for r in refs}
        for d in rows:
            ref = by_ref.get(d["run_id"])
            if d["run_id"] in found or ref is None or ref.tree is not None or ref.status != "running":
                continue
            self._live_tail(d, ref, metrics)

    def _live_tail(self, d: dict[str, Any], ref: Any, metrics: list[str]) -> None:
        from . import _core
        from ._analysis import _last_row, _segment_files

        files = _segment_files(ref)
        if not files:
            return
        try:
            d["rows"] = sum(int(_core.parquet_rows(str(f))) for f in files)
            for m in metrics:
                d[f"last_{m}"] = _num(_last_row(files[-1], m).get(m))
        except (OSError, ValueError):
            pass  # a segment merged away this instant: the next poll reads the new file

    # ------------------------------------------------------------------ one run

    def run(self, run_id: Any) -> dict[str, Any]:
        """A run's page: manifest (params, units, provenance, the recorder's own counts),
        status by evidence, its numeric fields (the charts), its events, and where its data
        comes from (``catalog`` or ``files``, the durable segments of a running run)."""
        ref = self.ref(run_id)
        m = _num(dict(ref.manifest))
        in_cat = ref.run_id in self._in_catalog([ref.run_id])
        if in_cat:
            cols = self._columns()
            present, rows = self._present_metrics(ref, cols)
            events = self.db.events(ref.run_id).to_dicts()
        elif (got := self._files_metrics(ref)) is not None:
            cols, present, rows = got
            with self._live_lock:
                ev = self._live(ref.run_id, kind="events")
                events = ev.to_dicts() if len(ev) else []
        else:
            with self._live_lock:
                live = self._live(ref.run_id)
                cols = dict(zip(live.columns, live.types, strict=True)) if len(live) else {}
                rows = len(live)
                present = [c for c in cols if _chartable(c, cols[c])]
                if present:
                    sel = ", ".join(f"count({_ident(c)}) AS {_ident(c)}" for c in present)
                    counts = live.relation.query("t", f"SELECT {sel} FROM t").fetchall()[0]
                    present = [c for c, n in zip(present, counts, strict=True) if n]
                ev = self._live(ref.run_id, kind="events")
                events = ev.to_dicts() if len(ev) else []
        ev_rows = [{k: _num(e.get(k)) for k in ("t_wall_ms", "iter", "event", "payload")} for e in events[:_MAX_EVENTS]]
        return {
            "run_id": ref.run_id,
            "status": ref.status,
            "flow_name": ref.manifest.get("flow_name"),
            "location": ref.location,
            "source": "catalog" if in_cat else "files",
            "rows": int(rows),
            "metrics": present,
            "x": "iter" if "iter" in cols else None,
            "manifest": m,
            "events": ev_rows,
            "events_total": len(events),
        }

    def _files_metrics(self, ref: Any) -> tuple[dict[str, str], list[str], int] | None:
        """``(columns, numeric fields with values, rows)`` of a run not in the catalog, from the
        schema and footers of its own durable files (:meth:`_run_files`): no row is read. None
        when the files cannot tell (then the run's rows are read)."""

        from ._plot import _file_columns, _footer_stats

        def read(con: Any, files: list[str]) -> tuple[dict[str, str], list[str], int] | None:
            got = _footer_stats(con, files)
            if got is None:
                return None
            cols = _file_columns(con, files)
            return cols, [c for c in cols if _chartable(c, cols[c]) and got[1].get(c, 0) > 0], got[0]

        got: tuple[dict[str, str], list[str], int] | None = self._with_files(ref, read, ({}, [], 0))
        return got

    def _present_metrics(self, ref: Any, cols: Mapping[str, str]) -> tuple[list[str], int]:
        """The numeric fields this run has values of (a shared catalog has every flow's columns),
        and its rows. From the Parquet footers of a local run's files when they tell (value and
        null counts: no scan of the rows), else with one counting query over the catalog."""
        cand = [c for c in cols if _chartable(c, cols[c])]
        got = self._footer_counts(ref) if ref.tree is None else None
        if got is not None:
            rows, non_null = got
            present = [c for c in cand if non_null.get(c, 0) > 0]
            # the footers must agree with the catalog (a file rewritten since: count instead)
            check = self.db.query("SELECT count(*) FROM telemetry WHERE run_id = ?", [ref.run_id]).fetchall()[0]
            if check is not None and check[0] == rows:
                return present, rows
        sel = ", ".join(["count(*)", *(f"count({_ident(c)})" for c in cand)])
        counts = self.db.query(f"SELECT {sel} FROM telemetry WHERE run_id = ?", [ref.run_id]).fetchall()[0]
        return [c for c, n in zip(cand, counts[1:], strict=True) if n], int(counts[0])

    @staticmethod
    def _footer_counts(ref: Any) -> tuple[int, dict[str, int]] | None:
        """``(rows, {column: values that are not null})`` from the footers of the run's own
        telemetry files (a run folder's segments/final file), None when they cannot tell."""
        import duckdb

        from ._analysis import _segment_files
        from ._plot import _footer_stats

        if ref.mode != "run":
            return None  # dev/tuner parts hold several runs' rows
        try:
            files = [str(f) for f in _segment_files(ref)]
            if not files:
                return None
            con = duckdb.connect(":memory:")
            try:
                return _footer_stats(con, files)
            finally:
                con.close()
        except (OSError, duckdb.Error):
            return None

    def _live(self, run_id: str, kind: str = "telemetry") -> Any:
        """The run's durable rows (:meth:`~flightlog.DuckDBManager.live`), read once a second at
        most: a live run's page polls the run and each of its charts every second, and each read
        copies the run into memory. Use the result under ``self._live_lock`` (one DuckDB
        connection is not for several threads at once)."""

        def make() -> Any:
            try:
                return self.db.live(run_id, kind=kind)
            except ValueError as e:
                raise DashError(str(e), 404) from None

        return self._cached(f"live:{kind}:{run_id}", make)

    def series(
        self,
        run_id: Any,
        metric: str,
        *,
        buckets: int = DEFAULT_BUCKETS,
        x_min: float | None = None,
        x_max: float | None = None,
    ) -> dict[str, Any]:
        """``metric`` against ``iter`` for one run, downsampled in DuckDB (M4 per pixel bucket),
        within ``[x_min, x_max]`` when given (a zoom). Returns ``{"run_id", "metric", "x", "y",
        "rows", "points", "phases": [[x_from, x_to, phase], ...], "events": [[x, y, name, payload], ...],
        "status", "source"}``. Values that are not finite are not drawn."""
        from ._plot import _downsample, _phase_spans, _points, _short_float, _thin

        ref = self.ref(run_id)
        if not isinstance(metric, str) or not metric:
            raise DashError("metric must be a column name")
        if not isinstance(buckets, int) or not 16 <= buckets <= MAX_BUCKETS:
            raise DashError(f"buckets must be an integer from 16 to {MAX_BUCKETS}, got {buckets!r}")
        for name, v in (("x_min", x_min), ("x_max", x_max)):
            if v is not None and not math.isfinite(v):
                raise DashError(f"{name} must be a finite number, got {v!r}")
        rid = ref.run_id
        in_cat = rid in self._in_catalog([rid])
        # Bounds bound as integers: a BIGINT iter compared with a DOUBLE (or infinite) bound
        # is cast row by row, several times slower on 10M rows.
        bounds = {"ilo": -(2**62) if x_min is None else math.ceil(x_min)}
        bounds["ihi"] = 2**62 if x_max is None else math.floor(x_max)
        if in_cat:
            cols = self._columns()
            self._check_metric(metric, cols)
            key = ("catalog", rid, metric, buckets, bounds["ilo"], bounds["ihi"], self._catalog_stamp())

            def query(sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
                return list(self.db.query(sql, dict(params)).fetchall())

            src, cond = "telemetry", "run_id = $rid AND"
            args = (metric, cols, buckets, bounds, M4_MAX_ROWS)
            rows = self._series_cache(key, lambda: _downsample(query, src, cond, {"rid": rid}, *args))
        else:
            got = self._files_series(ref, metric, buckets, bounds)
            got = self._live_series(ref, metric, buckets, x_min, x_max) if got is None else got
            if got is None:
                return self._empty_series(ref, metric)
            rows = got
        xs, ys = _points(rows)
        events = []
        for it, name, payload in self._marks(rid, in_cat):
            # The marker sits on the line drawn: the value of the nearest point at or after its iter.
            i = bisect.bisect_left(xs, it)
            y = ys[min(i, len(ys) - 1)] if ys else None
            events.append([_short_float(it), _short_float(y), name, payload])
        xs, ys = _thin([_short_float(x) for x in xs], [_short_float(y) for y in ys])
        return {
            "run_id": rid,
            "metric": metric,
            "status": ref.status,
            "source": "catalog" if in_cat else "files",
            "x": xs,
            "y": ys,
            "rows": int(sum(r[1] for r in rows)),
            "points": len(xs),
            "phases": [[_short_float(a), _short_float(b), p] for a, b, p in _phase_spans(rows)],
            "events": events,
        }

    def _live_series(
        self, ref: Any, metric: str, buckets: int, x_min: float | None, x_max: float | None
    ) -> list[tuple[Any, ...]] | None:
        """Bucket rows of a run copied through :meth:`~flightlog.DuckDBManager.live` (when its files
        are not all its own, or not local); None when it has no rows yet."""
        rid = ref.run_id
        with self._live_lock:
            live = self._live(rid)
            if not len(live):
                return None
            cols = dict(zip(live.columns, live.types, strict=True))
            self._check_metric(metric, cols)
            # The live relation holds this run only: the run-id filter becomes TRUE, so no value
            # is formatted into the SQL (DuckDB relations take no parameters).
            src = "t"
            if x_min is not None or x_max is not None:  # floats checked finite: no request text in the SQL
                conds = [f"iter >= {float(x_min)!r}"] if x_min is not None else []
                conds += [f"iter <= {float(x_max)!r}"] if x_max is not None else []
                src = f"(SELECT * FROM t WHERE {' AND '.join(conds)})"
            from ._plot import _downsample_sql

            sql = _downsample_sql(src, metric, "iter", "phase" in cols, False, False, buckets)
            sql = sql.replace("list_contains(?::VARCHAR[], run_id)", "TRUE")
            return [r[1:] for r in live.relation.query("t", sql).fetchall()]

    def _run_files(self, ref: Any) -> list[str] | None:
        """A local run's durable telemetry files, as ``DuckDBManager.live`` lists them (a merge in
        progress never counted twice); None when some are shared files or the root is remote."""
        if ref.tree is not None:
            return None
        try:
            listed = self.db._live_files(self.db._locate(ref.run_id), ref.run_id, "telemetry")
        except (OSError, ValueError, KeyError):
            return None
        if any(lo is not None for _, lo, _ in listed):
            return None
        return [str(f) for f, _, _ in listed]

    def _with_files(self, ref: Any, read: Any, empty: Any) -> Any:
        """``read(con, files)`` over the run's own durable files (:meth:`_run_files`) on a fresh
        in-memory DuckDB connection; ``empty`` when it has none yet, None when its files cannot
        be read so. A file merged away between listing and reading: listed and read again."""
        import duckdb

        for _attempt in range(3):
            files = self._run_files(ref)
            if files is None:
                return None
            if not files:
                return empty
            con = duckdb.connect(":memory:")
            try:
                return read(con, files)
            except (OSError, duckdb.IOException, duckdb.InvalidInputException):
                continue
            finally:
                con.close()
        return None

    def _files_series(
        self, ref: Any, metric: str, buckets: int, bounds: Mapping[str, int]
    ) -> list[tuple[Any, ...]] | None:
        """Bucket rows of a run not in the catalog, aggregated by DuckDB straight from its own durable
        Parquet files (``read_parquet([...])``, no copy of its rows), cached while the files stay
        the same; None when they cannot be read so (:meth:`_live_series` then reads the run)."""
        from ._plot import _FILES, _downsample, _file_columns

        def read(con: Any, files: list[str]) -> list[tuple[Any, ...]]:
            stamp = tuple((f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files)
            key = ("files", ref.run_id, metric, buckets, bounds["ilo"], bounds["ihi"], stamp)
            cols = _file_columns(con, files)
            self._check_metric(metric, cols)

            def query(sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
                return list(con.execute(sql, {**params, "files": files}).fetchall())

            args = (metric, cols, buckets, bounds, M4_MAX_ROWS)
            return self._series_cache(key, lambda: _downsample(query, _FILES, "", {}, *args))

        got: list[tuple[Any, ...]] | None = self._with_files(ref, read, [])
        return got

    def _series_cache(self, key: tuple[Any, ...], make: Any) -> list[tuple[Any, ...]]:
        """``make()`` (a run's bucket rows), kept for the same ``key`` (run, metric, width, range and
        the size and mtime of what it was read from): a run page reloaded, a second viewer, or a
        finished run polled, do not aggregate its rows again. At most ``_SERIES_CACHE`` entries."""
        if key[-1] is None:  # no stamp (a DuckLake catalog): not cached
            return list(make())
        with self._lock:
            hit = self._series.pop(key, None)
            if hit is not None:
                self._series[key] = hit  # most recently used last
                return hit
        value = list(make())
        with self._lock:
            self._series[key] = value
            while len(self._series) > _SERIES_CACHE:
                del self._series[next(iter(self._series))]
        return value

    def _catalog_stamp(self) -> tuple[Any, ...] | None:
        """Size and mtime of ``duckdb.db`` and its WAL (None for DuckLake: nothing cached)."""
        path = getattr(self.db, "db_path", None)
        if path is None or self.db.catalog is not None:
            return None
        out: list[Any] = []
        for f in (str(path), str(path) + ".wal"):
            try:
                st = os.stat(f)
                out.append((st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def _marks(self, rid: str, in_cat: bool) -> list[tuple[int, str, Any]]:
        """``(iter, event, payload)`` of the events to mark on a run's charts (one read per run
        and second, shared by its charts), at most ``_MAX_EVENTS``; start/finish are not marked."""

        def make() -> list[tuple[int, str, Any]]:
            sql = (
                "SELECT iter, event, payload FROM {src} WHERE {cond} event NOT IN ('RUN_STARTED', 'RUN_FINISHED') "
                f"AND iter IS NOT NULL ORDER BY t_wall_ms LIMIT {_MAX_EVENTS}"
            )
            if in_cat:
                if not self._catalog_has("events"):
                    return []
                got = self.db.query(sql.format(src="events", cond="run_id = ? AND"), [rid]).fetchall()
            else:
                with self._live_lock:
                    ev = self._live(rid, kind="events")
                    if not len(ev) or "iter" not in ev.columns:
                        return []
                    got = ev.relation.query("e", sql.format(src="e", cond="")).fetchall()
            return [(int(it), str(name), payload) for it, name, payload in got]

        return list(self._cached(f"marks:{rid}:{in_cat}", make))

    def _empty_series(self, ref: Any, metric: str) -> dict[str, Any]:
        return {
            "run_id": ref.run_id,
            "metric": metric,
            "status": ref.status,
            "source": "files",
            "x": [],
            "y": [],
            "rows": 0,
            "points": 0,
            "phases": [],
            "events": [],
        }

    def _catalog_has(self, table: str) -> bool:
        def make() -> bool:
            got = self.db.query("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchall()[0]
            return bool(got and got[0])

        return bool(self._cached(f"has:{table}", make))

    @staticmethod
    def _check_metric(metric: str, cols: Mapping[str, str]) -> None:
        from .catalog import MetricError, check_metric

        try:
            check_metric(metric, cols)
        except MetricError as e:
            raise DashError(str(e), 404 if e.missing else 400) from None
        if metric == "iter":
            raise DashError("telemetry column 'iter' is the charts' x axis, not a metric")
        if "iter" not in cols:
            raise DashError("telemetry has no iter column to chart against")

    # ------------------------------------------------------------------ compare

    def compare(
        self,
        run_ids: Sequence[Any],
        metric: str = "E",
        *,
        group_by: str | None = None,
        tol: float | None = None,
    ) -> dict[str, Any]:
        """The CLI's ``compare`` (:func:`~flightlog._analysis.compare_rows`) of consolidated runs: per run,
        and per group with ``group_by`` (bootstrap intervals, time to ``tol``). Runs not in the
        catalog yet are listed in ``"not_in_catalog"``."""
        from ._analysis import compare_rows
        from ._errors import InputError

        if not run_ids:
            raise DashError("compare needs run ids")
        if len(run_ids) > 200:
            raise DashError("compare takes at most 200 runs")
        ids = [self.ref(r).run_id for r in run_ids]
        if tol is not None and not math.isfinite(tol):
            raise DashError(f"tol must be a finite number, got {tol!r}")
        in_cat = self._in_catalog(ids)
        out: dict[str, Any] = {
            "runs": ids,
            "metric": metric,
            "not_in_catalog": [r for r in ids if r not in in_cat],
            "columns": [],
            "rows": [],
            "group_by": group_by,
            "group_columns": [],
            "group_rows": [],
        }
        cat_ids = [r for r in ids if r in in_cat]
        if not cat_ids:
            return out
        try:
            cols, rows = compare_rows(self.db, cat_ids, metric, tol=tol)
            out["columns"], out["rows"] = cols, _num(rows)
            if group_by:
                gcols, grows = compare_rows(self.db, cat_ids, metric, tol=tol, group_by=group_by)
                out["group_columns"], out["group_rows"] = gcols, _num(grows)
        except (InputError, ValueError) as e:
            raise DashError(str(e)) from None
        return out


def _chartable(name: str, duck_type: str) -> bool:
    """A metric (:func:`flightlog.catalog.check_metric`'s rule) other than the charts' x axis."""
    from .catalog import is_metric

    return name != "iter" and is_metric(name, duck_type)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(v: Any) -> str:
    if isinstance(v, float) and v == int(v) and abs(v) < 1e15:
        return repr(v)
    return v if isinstance(v, str) else json.dumps(v)


def _sort_key(v: Any) -> tuple[int, Any]:
    """Sorts mixed values: None last-ish (first group), numbers, then text."""
    if v is None:
        return (0, 0)
    if isinstance(v, bool):
        return (1, int(v))
    if isinstance(v, int | float):
        return (1, v)
    return (2, str(v))

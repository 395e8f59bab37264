"""Convergence plots (PNG) of runs, downsampled on read in DuckDB.

Every point stays on disk; a plot reads at most four points per run and pixel
column (M4: first, min, max and last of each bucket of ``x``), computed by one
aggregate query over the catalog, so a 10-million-row run plots in about a
second and the line looks exactly as if every point had been drawn.

matplotlib is an optional dependency (``pip install 'flightlog[plot]'``); it is
imported when a plot is made, with the non-interactive Agg backend.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CURVE_COLORS", "EVENT_STYLE", "PHASE_COLORS", "plot_runs"]

# Three families that never share a colour: a red curve next to a red CERT_FAIL marker
# and a RED phase reads as one thing.
#: Colours of the CFS phases (shading and the phase ribbon).
PHASE_COLORS = {"RED": "#d62728", "AMBER": "#ffa600", "GREEN": "#2ca02c"}
#: Colours of the runs' curves: tab10 without its red, orange, green and grey.
CURVE_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#8c6d31")
#: Marker and fill of each event: shapes in black, white and a neutral teal, no phase or curve colour.
EVENT_STYLE = {
    "CERT_PASS": ("o", "#ffffff"),
    "CERT_FAIL": ("X", "#000000"),
    "TIMEOUT": ("s", "#5f5f5f"),
    "ROW_BUDGET_EXCEEDED": ("D", "#00a087"),
}
_EVENT_DEFAULT = ("v", "#1f1f1f")
_EVENT_STYLE = EVENT_STYLE
#: ``logy=None`` draws a log y axis when the (all positive) values span this many decades.
AUTO_LOG_DECADES = 3.0
_SKIP_EVENTS = ("RUN_STARTED", "RUN_FINISHED")
_MAX_EVENTS_PER_RUN = 50


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(f"plots need matplotlib: pip install 'flightlog[plot]' ({e})") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _downsample_sql(src: str, metric: str, x: str, has_phase: bool, logx: bool, logy: bool, buckets: int) -> str:
    """M4 downsampling of ``src`` (columns run_id, x, metric[, phase]) into ``buckets`` columns of x.

    Rows whose metric is not finite (or not positive with ``logy``) cannot be drawn and are left out.
    The bucket is a rounding cast to USMALLINT (at most 65,535 buckets): DuckDB then aggregates
    with a small fixed key domain, several times faster than ``floor()`` or a BIGINT key; rounding
    only shifts the bucket edges by half a bucket.
    """
    u = "ln(1 + greatest(x, 0))" if logx else "x"
    yfilter = f"isfinite({_ident(metric)})" + (f" AND {_ident(metric)} > 0" if logy else "")
    phase_col = f", {_ident('phase')}::VARCHAR AS phase" if has_phase else ", NULL::VARCHAR AS phase"
    return f"""
    WITH t AS (
        SELECT run_id, {_ident(x)}::DOUBLE AS x, {_ident(metric)}::DOUBLE AS y{phase_col}
        FROM {src}
        WHERE list_contains(?::VARCHAR[], run_id) AND isfinite({_ident(x)}) AND {yfilter}
    ),
    r AS (SELECT min({u}) AS u0, {buckets - 1} / greatest(max({u}) - min({u}), 1e-300) AS scale FROM t),
    b AS (SELECT t.*, (({u} - r.u0) * r.scale)::USMALLINT AS bucket FROM t, r)
    SELECT run_id, bucket, count(*) AS n,
           min(x) AS x_first, arg_min(y, x) AS y_first,
           arg_min(x, y) AS x_min, min(y) AS y_min,
           arg_max(x, y) AS x_max, max(y) AS y_max,
           max(x) AS x_last, arg_max(y, x) AS y_last,
           min(x) AS x_lo, max(x) AS x_hi, arg_max(phase, x) AS phase
    FROM b GROUP BY run_id, bucket ORDER BY run_id, bucket
    """


def _downsample(
    query: Any,
    src: str,
    cond: str,
    base: Mapping[str, Any],
    metric: str,
    cols: Mapping[str, str],
    buckets: int,
    bounds: Mapping[str, int],
    m4_max_rows: int,
) -> list[tuple[Any, ...]]:
    """Bucket rows (the M4 layout of :func:`_points`) of ``metric`` against ``iter``
    in ``src`` (rows ``cond`` keeps, e.g. one run of the catalog), within ``bounds`` (``ilo``,
    ``ihi``), at ``buckets`` pixel buckets. ``query(sql, params)`` runs one statement.

    Up to ``m4_max_rows`` rows, M4 (every drawn point a real row). Above, min and max per bucket
    (:func:`_minmax_sql`: a spike of one row stays visible)."""
    has_phase = "phase" in cols
    span = query(
        f"SELECT min(iter), max(iter), count(*) FROM {src} WHERE {cond} iter BETWEEN $ilo AND $ihi",
        {**base, **bounds},
    )[0]
    if span is None or span[0] is None:
        return []
    lo, hi, n = int(span[0]), int(span[1]), int(span[2])
    scale = (buckets - 1) / max(float(hi - lo), 1e-300)
    params = {**base, "lo": float(lo), "ilo": lo, "ihi": hi, "scale": scale}
    if n <= m4_max_rows:
        return list(query(_m4_sql(metric, has_phase, src, cond), params))
    got = query(_minmax_sql(metric, has_phase, src, cond), params)
    return _minmax_rows(got)


def _m4_sql(metric: str, has_phase: bool, src: str = "telemetry", cond: str = "run_id = $rid AND") -> str:
    """The plot's M4 downsampling (:func:`flightlog._plot._downsample_sql`: first, min, max and last
    point of each pixel bucket of ``iter``, rows in its bucket-row layout for ``_points`` and
    ``_phase_spans``) of the rows of ``src`` that ``cond`` keeps, with the x range bound as
    parameters (``$lo``, ``$ilo``, ``$ihi``, ``$scale``): a bucket computed from bound numbers is
    several times faster on a 10M-row run than a joined range."""
    y = f"{_ident(metric)}::DOUBLE"
    phase = "arg_max(phase::VARCHAR, iter)" if has_phase else "NULL::VARCHAR"
    return f"""
    SELECT ((iter - $lo) * $scale)::USMALLINT AS bucket, count(*) AS n,
           min(iter)::DOUBLE AS x_first, arg_min({y}, iter) AS y_first,
           arg_min(iter, {y})::DOUBLE AS x_min, min({y}) AS y_min,
           arg_max(iter, {y})::DOUBLE AS x_max, max({y}) AS y_max,
           max(iter)::DOUBLE AS x_last, arg_max({y}, iter) AS y_last,
           min(iter)::DOUBLE AS x_lo, max(iter)::DOUBLE AS x_hi, {phase} AS phase
    FROM {src}
    WHERE {cond} iter BETWEEN $ilo AND $ihi AND isfinite({y})
    GROUP BY bucket ORDER BY bucket
    """


def _minmax_sql(metric: str, has_phase: bool, src: str = "telemetry", cond: str = "run_id = $rid AND") -> str:
    """Min and max of ``metric`` per pixel bucket of ``iter`` (and the bucket's iter range and
    phase, the greatest name in the bucket), in one scan of the rows of ``src`` that ``cond``
    keeps: what a line at pixel resolution needs, spikes included, without the per-row argument
    tracking of M4. (Reading the phase of a sample of rows only was tried: no faster, measured
    against this query in the same run, and not deterministic.)"""
    y = f"{_ident(metric)}::DOUBLE"
    phase = "max(phase::VARCHAR)" if has_phase else "NULL::VARCHAR"
    return f"""
    SELECT ((iter - $lo) * $scale)::USMALLINT AS bucket, count(*) AS n,
           min(iter)::DOUBLE AS x_lo, max(iter)::DOUBLE AS x_hi, min({y}) AS y_min, max({y}) AS y_max,
           {phase} AS phase
    FROM {src}
    WHERE {cond} iter BETWEEN $ilo AND $ihi AND isfinite({y})
    GROUP BY bucket ORDER BY bucket
    """


def _minmax_rows(got: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Min/max bucket rows in the M4 row layout (for ``_points`` and ``_phase_spans``): each bucket
    becomes two points at its ends, min and max in the order that continues the line from the
    previous bucket (at one bucket per pixel the line looks as if every row were drawn)."""
    out: list[tuple[Any, ...]] = []
    prev: float | None = None
    for bucket, n, x_lo, x_hi, y_min, y_max, phase in got:
        if prev is not None and abs(prev - y_max) < abs(prev - y_min):
            first, last = y_max, y_min
        else:
            first, last = y_min, y_max
        if x_lo == x_hi:
            first = last = y_min if y_min == y_max else first
        prev = last
        out.append((bucket, n, x_lo, first, None, None, None, None, x_hi, last, x_lo, x_hi, phase))
    return out


def _short_float(v: Any) -> Any:
    """A chart coordinate with 7 significant digits (a pixel needs far fewer): keeps the report small."""
    if v is None:
        return None
    f = float(v)
    if not math.isfinite(f):
        return None
    if f == int(f) and abs(f) < 1e15:
        return int(f)
    return float(f"{f:.7g}")


def _thin(xs: list[Any], ys: list[Any]) -> tuple[list[Any], list[Any]]:
    """Drops points inside a run of equal y (a constant stretch draws the same with its two ends)."""
    if len(xs) < 3:
        return xs, ys
    ox, oy = [xs[0]], [ys[0]]
    for i in range(1, len(xs) - 1):
        if not (ys[i] == ys[i - 1] == ys[i + 1]):
            ox.append(xs[i])
            oy.append(ys[i])
    ox.append(xs[-1])
    oy.append(ys[-1])
    return ox, oy


_FILES = "read_parquet($files, union_by_name = true)"


def _file_columns(con: Any, files: list[str]) -> dict[str, str]:
    return {str(r[0]): str(r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {_FILES}", {"files": files}).fetchall()}


def _footer_stats(con: Any, files: list[str]) -> tuple[int, dict[str, int]] | None:
    """``(rows, {column: values that are not null})`` from the Parquet footers of ``files``, None
    when a row group lacks its null count."""
    meta = con.execute(
        "SELECT path_in_schema, sum(num_values), sum(stats_null_count), count(*) - count(stats_null_count) "
        "FROM parquet_metadata($files) GROUP BY 1",
        {"files": files},
    ).fetchall()
    nrows = con.execute("SELECT sum(num_rows) FROM parquet_file_metadata($files)", {"files": files}).fetchone()
    if any(unknown for *_, unknown in meta) or not nrows or nrows[0] is None:
        return None
    return int(nrows[0]), {str(name): int(vals) - int(nulls or 0) for name, vals, nulls, _ in meta}


# Bucket rows (without run_id): bucket, n, x_first, y_first, x_min, y_min, x_max, y_max, x_last, y_last,
# x_lo, x_hi, phase.


def _points(rows: list[tuple[Any, ...]]) -> tuple[list[float], list[float]]:
    """Bucket rows (M4) to a polyline in x order."""
    xs: list[float] = []
    ys: list[float] = []
    for r in rows:
        pts = {(r[2], r[3]), (r[4], r[5]), (r[6], r[7]), (r[8], r[9])}
        for px, py in sorted(p for p in pts if p[0] is not None and p[1] is not None):
            xs.append(px)
            ys.append(py)
    return xs, ys


def _phase_spans(rows: list[tuple[Any, ...]]) -> list[tuple[float, float, str]]:
    """(x_from, x_to, phase) islands from bucket rows (phase of each bucket's last point)."""
    spans: list[tuple[float, float, str]] = []
    for r in rows:
        lo, hi, phase = r[10], r[11], r[12]
        if phase is None:
            continue
        if spans and spans[-1][2] == phase:
            spans[-1] = (spans[-1][0], hi, phase)
        else:
            if spans:  # close the gap to this bucket
                spans[-1] = (spans[-1][0], lo, spans[-1][2])
            spans.append((lo, hi, phase))
    return spans


def _auto_params(params: dict[str, dict[str, Any]]) -> list[str]:
    """Params whose values differ between the runs (at most three), for the legend."""
    keys: list[str] = []
    for p in params.values():
        keys += [k for k in p if k not in keys]
    varying = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params.values()}) > 1]
    return varying[:3]


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plot_runs(
    db: Any,
    run_ids: Sequence[str] | str,
    metric: str = "E",
    out: str | os.PathLike[str] = "convergence.png",
    *,
    x: str = "iter",
    logy: bool | None = None,
    logx: bool = False,
    params: Iterable[str] | None = None,
    title: str | None = None,
    width: int = 1400,
    height: int = 800,
    dpi: int = 110,
    events: bool = True,
    phases: bool = True,
) -> dict[str, Any]:
    """Plot ``metric`` against ``x`` for ``run_ids`` into the PNG ``out``.

    ``db`` is a :class:`~flightlog.DuckDBManager` (or a root path). Runs in the
    catalog are read from it; a run not consolidated yet is read from its
    durable files (:meth:`~flightlog.DuckDBManager.live`). One line per run,
    legend ``run_id`` plus the ``params`` named (default: those that differ
    between the runs), CFS phases as a ribbon under the axes (and shaded behind
    a single run), events marked on the lines, failed runs ending in a cross.

    ``logy=None`` (default) picks a log y axis when every value is positive and
    they span at least ``AUTO_LOG_DECADES`` decades (an optimality gap falling
    from 1 to 1e-15 is a flat line at 0 on a linear axis). The y label is the
    metric with its unit and method from the runs' manifests (``units=``).

    Returns ``{"path", "runs", "rows", "points", "markers", "logy", "ylabel", "seconds"}``: ``rows``
    read (every point), ``points`` drawn, ``markers`` the events drawn (``run_id``,
    ``event``, ``x``, ``y``; at the event's row on the x axis given, e.g. its time
    for ``x="t_wall_ms"``).

    Raises:
        ImportError: matplotlib is missing (``pip install 'flightlog[plot]'``).
        ValueError: no run ids, a run with no rows, or an unknown/non-numeric column.
    """
    t0 = time.perf_counter()
    ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    if not ids:
        raise ValueError("plot needs at least one run id")
    plt = _matplotlib()
    if not hasattr(db, "query"):
        from .catalog import DuckDBManager

        db = DuckDBManager(db, read_only=True)

    buckets = min(max(64, int(width * 0.85)), 65_535)
    by_run, event_rows, run_info = _read_runs(db, ids, metric, x, logx=logx, logy=logy, buckets=buckets, events=events)

    if logy is None:
        logy = _auto_logy(by_run)
    ylabel = _y_label(metric, [run_info.get(r, {}).get("units", {}).get(metric) for r in ids])
    legend_params = list(params) if params is not None else _auto_params({r: run_info[r]["params"] for r in ids})
    multi = len(ids) > 1
    show_phases = phases and any(r[12] is not None for rows in by_run.values() for r in rows)

    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    if show_phases:
        lane = 0.22 if multi else 0.3
        grid = fig.add_gridspec(2, 1, height_ratios=[7.5, max(0.6, lane * len(ids))], hspace=0.05)
        ax = fig.add_subplot(grid[0])
        rib = fig.add_subplot(grid[1], sharex=ax)
    else:
        ax, rib = fig.add_subplot(1, 1, 1), None
    colors = CURVE_COLORS
    total_rows, total_points = 0, 0
    line_xy: dict[str, tuple[list[float], list[float]]] = {}
    for i, rid in enumerate(ids):
        rows = by_run[rid]
        total_rows += sum(r[1] for r in rows)
        xs, ys = _points(rows)
        total_points += len(xs)
        line_xy[rid] = (xs, ys)
        info = run_info.get(rid, {})
        label = rid
        extras = [f"{k}={_fmt_value(info.get('params', {}).get(k))}" for k in legend_params]
        if extras:
            label += "  " + " ".join(extras)
        if info.get("status") not in (None, "finished"):
            label += f"  [{info.get('status')}]"
        color = colors[i % len(colors)]
        ax.plot(xs, ys, color=color, lw=1.6, label=label, solid_joinstyle="round")
        if xs and info.get("status") in ("failed", "crashed"):
            ax.plot([xs[-1]], [ys[-1]], marker="X", ms=11, color=color, mec="black", mew=0.8, zorder=5)
        if show_phases and rib is not None:
            for lo, hi, phase in _phase_spans(rows):
                rib.barh(i, hi - lo, left=lo, height=0.8, color=PHASE_COLORS.get(phase, "#bbbbbb"), alpha=0.85)
                if not multi:
                    ax.axvspan(lo, hi, color=PHASE_COLORS.get(phase, "#bbbbbb"), alpha=0.08, lw=0)

    markers = _mark_events(ax, event_rows, ids, line_xy)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.3)
        ax.set_xlim(left=0)
    ax.grid(True, which="major", alpha=0.35)
    if logy:
        ax.grid(True, which="minor", axis="y", alpha=0.12)
    ax.set_ylabel(ylabel, fontsize=9 if "\n" in ylabel else None)
    ax.set_title(title or f"{metric} by {x}: {len(ids)} run{'s' if multi else ''}", fontsize=12)
    handles, labels = ax.get_legend_handles_labels()
    handles, labels = _event_legend(plt, event_rows, handles, labels)
    ax.legend(handles, labels, fontsize=8.5, loc="best", framealpha=0.9)
    if rib is not None:
        _dress_ribbon(plt, ax, rib, ids, x, logx=logx, multi=multi)
    else:
        ax.set_xlabel(x)
    # Margins by hand (constrained layout costs more than the query on a 10M-row run).
    label_px = 7.5 * dpi / 72 * 0.62 * max(len(rid) for rid in ids) + 16 if rib is not None and multi else 0
    left = max(0.07, (label_px + 10) / width)
    fig.subplots_adjust(left=left, right=0.985, top=0.95, bottom=(95 if rib is not None else 55) / height)
    path = _save_png(plt, fig, out, dpi)
    return {
        "path": str(path),
        "runs": ids,
        "rows": total_rows,
        "points": total_points,
        "markers": markers,
        "logy": bool(logy),
        "ylabel": ylabel,
        "seconds": time.perf_counter() - t0,
    }


def _read_runs(
    db: Any,
    ids: list[str],
    metric: str,
    x: str,
    *,
    logx: bool,
    logy: bool | None,
    buckets: int,
    events: bool,
) -> tuple[dict[str, list[tuple[Any, ...]]], list[tuple[Any, ...]], dict[str, dict[str, Any]]]:
    """What :func:`plot_runs` draws, downsampled to ``buckets`` per run: ``(rows by run, event
    rows, run info)``; a run in the catalog is read from it, any other from its durable files."""
    cols: dict[str, str] = {}
    in_catalog: set[str] = set()
    run_info: dict[str, dict[str, Any]] = {}
    if db.exists():
        cols = {r[0]: str(r[1]) for r in db.query("DESCRIBE telemetry").fetchall()}
        present = db.query(
            "SELECT DISTINCT run_id FROM _ingested_files WHERE kind = 'telemetry' AND rows > 0 "
            "AND list_contains(?::VARCHAR[], run_id)",
            [ids],
        ).fetchall()
        in_catalog = {r[0] for r in present}
        for rid, status, flow, p, u in db.query(
            "SELECT run_id, status, flow_name, params, units FROM runs WHERE list_contains(?::VARCHAR[], run_id)",
            [ids],
        ).fetchall():
            run_info[rid] = {
                "status": status,
                "flow_name": flow,
                "params": json.loads(p) if p else {},
                "units": json.loads(u) if u else {},
            }

    by_run: dict[str, list[tuple[Any, ...]]] = {rid: [] for rid in ids}
    event_rows: list[tuple[Any, ...]] = []
    cat_ids = [r for r in ids if r in in_catalog]
    if cat_ids:
        _check_columns(cols, metric, x)
        sql = _downsample_sql("telemetry", metric, x, "phase" in cols, logx, bool(logy), buckets)
        for row in db.query(sql, [cat_ids]).fetchall():
            by_run[row[0]].append(row[1:])
        if events:
            event_rows += db.query(_events_sql("events", "telemetry", metric, x), [cat_ids]).fetchall()
    for rid in ids:
        if rid in in_catalog:
            continue
        live = db.live(rid)  # raises ValueError for an unknown run
        lcols = dict(zip(live.columns, live.types, strict=True))
        if len(live) == 0:
            raise ValueError(f"run {rid!r} has no durable telemetry rows yet")
        _check_columns(lcols, metric, x)
        sql = _downsample_sql("t", metric, x, "phase" in lcols, logx, bool(logy), buckets)
        # A relation's query takes no parameters: the id goes in as a quoted literal.
        literal = "'" + rid.replace("'", "''") + "'"
        for row in live.relation.query("t", sql.replace("?::VARCHAR[]", f"[{literal}]")).fetchall():
            by_run[row[0]].append(row[1:])
        if events:
            ev = db.live(rid, kind="events")
            if len(ev):
                ev_sql = (
                    "SELECT run_id, iter, event, payload, NULL::DOUBLE AS y, "
                    f"{_event_x(x)}::DOUBLE AS ex FROM e "
                    f"WHERE event NOT IN {_SKIP_EVENTS!r} AND iter IS NOT NULL ORDER BY t_wall_ms LIMIT 500"
                )
                event_rows += ev.relation.query("e", ev_sql).fetchall()
        if rid not in run_info:
            manifest = _manifest_of(db, rid)
            run_info[rid] = {
                "status": "running",
                "params": dict(manifest.get("params") or {}),
                "units": dict(manifest.get("units") or {}),
            }
    for rid, rows in by_run.items():
        if not rows:
            raise ValueError(f"run {rid!r} has no telemetry rows")

    return by_run, event_rows, run_info


def _dress_ribbon(plt: Any, ax: Any, rib: Any, ids: list[str], x: str, *, logx: bool, multi: bool) -> None:
    """The phase ribbon under the axes: a lane a run, the x label, the phase legend."""
    rib.set_yticks(range(len(ids)), [rid if multi else "phase" for rid in ids], fontsize=7.5)
    rib.set_ylim(len(ids) - 0.5, -0.5)
    rib.set_xlabel(x + ("  (symlog)" if logx else ""))
    plt.setp(ax.get_xticklabels(), visible=False)
    ax.xaxis.get_offset_text().set_visible(False)
    rib.tick_params(axis="y", length=0)
    for spine in ("top", "right"):
        rib.spines[spine].set_visible(False)
    patches = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.85) for c in PHASE_COLORS.values()]
    rib.legend(
        patches,
        list(PHASE_COLORS),
        fontsize=7.5,
        ncols=3,
        loc="upper left",
        bbox_to_anchor=(0.0, -0.3),
        frameon=False,
    )


def _save_png(plt: Any, fig: Any, out: str | os.PathLike[str], dpi: int) -> Path:
    """``fig`` written to ``out`` atomically (no half-written PNG: ``_core.publish_bytes``);
    closes it."""
    import io

    from . import _core

    path = Path(out)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    _core.publish_bytes(path, buf.getvalue())
    return path


def _check_columns(cols: dict[str, str], metric: str, x: str) -> None:
    for name, what in ((metric, "metric"), (x, "x")):
        if name not in cols:
            raise ValueError(f"no telemetry column {name!r} ({what}); columns: {', '.join(cols)}")
        t = cols[name].upper()
        if t not in ("DOUBLE", "FLOAT", "REAL", "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT"):
            raise ValueError(f"telemetry column {name!r} is {cols[name]}, not numeric")


def _event_x(x: str) -> str:
    """The x of an event from the events table alone (``NULL`` for an x that only telemetry has)."""
    return {"iter": "iter", "t_wall_ms": "t_wall_ms"}.get(x, "NULL")


def _events_sql(events: str, telemetry: str, metric: str, x: str = "iter") -> str:
    """Events to mark: run_id, iter, event, payload, y (the metric at the event's iter), ex (its x).

    ``ex`` is the x of the telemetry row at the event's iter (so a marker sits on its
    line whatever ``x`` is), else the event's own ``iter`` or ``t_wall_ms`` when ``x``
    is one of them: markers at iteration numbers on a time axis squash every curve.
    """
    skip = ", ".join(f"'{e}'" for e in _SKIP_EVENTS)
    own = _event_x(x)
    return f"""
    WITH e AS (
        SELECT run_id, iter, event, payload, {own}::DOUBLE AS own_x,
               row_number() OVER (PARTITION BY run_id ORDER BY t_wall_ms) AS k
        FROM {events}
        WHERE list_contains(?::VARCHAR[], run_id) AND event NOT IN ({skip}) AND iter IS NOT NULL
    )
    SELECT e.run_id, e.iter, e.event, e.payload, any_value(t.{_ident(metric)})::DOUBLE AS y,
           coalesce(any_value(t.{_ident(x)})::DOUBLE, any_value(e.own_x)) AS ex
    FROM e LEFT JOIN {telemetry} t ON t.run_id = e.run_id AND t.iter = e.iter
    WHERE e.k <= {_MAX_EVENTS_PER_RUN}
    GROUP BY e.run_id, e.iter, e.event, e.payload, e.k ORDER BY e.run_id, e.iter
    """


def _interp(xs: list[float], ys: list[float], at: float) -> float | None:
    if not xs:
        return None
    import bisect

    i = bisect.bisect_left(xs, at)
    if i >= len(xs):
        return ys[-1]
    return ys[i]


def _mark_events(ax: Any, rows: list[tuple[Any, ...]], ids: list[str], line_xy: dict[str, Any]) -> list[dict[str, Any]]:
    drawn: list[dict[str, Any]] = []
    for run_id, _it, name, _payload, y, ex in rows:
        xy = line_xy.get(run_id)
        if xy is None or ex is None or not math.isfinite(ex):
            continue  # no x for this event on this axis
        if y is None or not math.isfinite(y):
            y = _interp(xy[0], xy[1], float(ex))
        if y is None or (ax.get_yscale() == "log" and y <= 0):
            continue
        marker, color = _EVENT_STYLE.get(name, _EVENT_DEFAULT)
        ax.plot([ex], [y], marker=marker, ms=8, color=color, mec="black", mew=0.7, ls="none", zorder=6)
        drawn.append({"run_id": run_id, "event": name, "x": float(ex), "y": float(y)})
    return drawn


def _event_legend(
    plt: Any, rows: list[tuple[Any, ...]], handles: list[Any], labels: list[str]
) -> tuple[list[Any], list[str]]:
    from matplotlib.lines import Line2D

    for name in sorted({r[2] for r in rows}):
        marker, color = _EVENT_STYLE.get(name, _EVENT_DEFAULT)
        handles.append(Line2D([], [], marker=marker, color=color, mec="black", mew=0.7, ls="none", ms=8))
        labels.append(name)
    return handles, labels


def _manifest_of(db: Any, run_id: str) -> dict[str, Any]:
    from ._errors import RunNotFoundError
    from .runs.discover import find_run

    try:
        ref = find_run(db.root, run_id, storage_options=getattr(db, "_storage_overrides", None))
        return dict(ref.manifest)
    except RunNotFoundError:
        return {}


def _auto_logy(by_run: dict[str, list[tuple[Any, ...]]]) -> bool:
    """Whether the drawn values are all positive and span ``AUTO_LOG_DECADES`` decades."""
    ys = [y for rows in by_run.values() for r in rows for y in (r[3], r[5], r[7], r[9]) if y is not None]
    if not ys or min(ys) <= 0:
        return False
    return math.log10(max(ys) / min(ys)) >= AUTO_LOG_DECADES


def _y_label(metric: str, units: list[Any]) -> str:
    """``metric [unit]`` and its method (on a second line) when the runs agree on them."""
    seen = {json.dumps(u, sort_keys=True, default=str) for u in units if u}
    if len(seen) != 1:
        return metric
    (u,) = [u for u in units if u][:1]
    unit, method = (u.get("unit"), u.get("method")) if isinstance(u, dict) else (u, None)
    label = metric + (f" [{unit}]" if unit not in (None, "", "1") else "")
    if method:
        method = str(method)
        label += "\n" + (method if len(method) <= 70 else method[:67] + "...")
    return label

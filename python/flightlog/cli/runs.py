"""``flightlog runs`` and ``flightlog show``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Mapping
from typing import Any

from .._analysis import (
    _parse_time,
    _without_unreadable_catalog,
    listing_catalog,
    runs_rows,
)
from .._render import _cell, _json_value, _typed, render
from .._render import emit as _emit
from ..runs.discover import RunRef, _root, find_run
from ._common import AddCommand, _open_catalog, _parse_since


def cmd_runs(args: argparse.Namespace) -> int:
    since = _parse_since(args.since) if args.since else None
    root = _root(args.root)
    db = _open_catalog(args, required=False)
    cols, rows = runs_rows(root, db=db, flow=args.flow, status=args.status, since=since, metric=args.metric)
    if args.limit:
        rows = rows[-args.limit :]
    _emit(render(cols, rows, args.format))
    if args.format == "table" and not rows:
        _emit(f"(no runs under {_root(args.root)})", sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with listing_catalog(args.root) as listing:
        ref = find_run(args.root, args.run, db=listing)
    db = _open_catalog(args, required=False)
    m = dict(ref.manifest)
    m["status"] = ref.status
    if ref.status != ref.manifest.get("status"):
        m["manifest_status"] = ref.manifest.get("status")
    in_cat, summary, events, categorical = _summary(db, ref)
    col_names = ["column", "type", "count", "null_pct", "min", "max", "mean", "std"]
    col_rows = [
        [
            s["column_name"],
            s["column_type"],
            s["count"],
            float(s["null_percentage"]) if s["null_percentage"] is not None else None,
            s["min"],
            s["max"],
            _num(s["avg"]),
            _num(s["std"]),
        ]
        for s in summary
    ]
    ev_cols = ["t_wall_ms", "iter", "event", "payload"]
    ev_rows = [[e.get(c) for c in ev_cols] for e in events]
    if args.format == "json":
        # Typed values in JSON: SUMMARIZE gives min/max as text, payloads are JSON text.
        for r in col_rows:
            r[4], r[5] = _typed(r[4], r[1]), _typed(r[5], r[1])
        for r in ev_rows:
            with contextlib.suppress(TypeError, ValueError):
                r[3] = json.loads(r[3]) if isinstance(r[3], str) else r[3]
        _emit(
            json.dumps(
                _json_value(
                    {
                        "run": m,
                        "path": ref.location,
                        "source": "catalog" if in_cat else "files",
                        "columns": [
                            {**dict(zip(col_names, r, strict=True)), **_counts_of(categorical, r[0])} for r in col_rows
                        ],
                        "events": [dict(zip(ev_cols, r, strict=True)) for r in ev_rows],
                    }
                ),
                indent=1,
            )
        )
        return 0
    if args.format == "csv":
        _emit(render(col_names, col_rows, "csv"))
        return 0
    _emit(_describe_manifest(ref, m))
    shown = [r for r in col_rows if r[3] is None or r[3] < 100.0]
    hidden = [r[0] for r in col_rows if r not in shown]
    _emit("")
    _emit(render(col_names, shown, "table", title=f"columns ({'catalog' if in_cat else 'durable files'})"))
    if hidden:
        _emit(f"  ({len(hidden)} all-null columns hidden: {', '.join(hidden)})")
    for name, counts in categorical.items():
        more = ", ..." if len(counts) > 10 else ""
        _emit(f"  {name}: " + ", ".join(f"{v} {n}" for v, n in list(counts.items())[:10]) + more)
    _emit("")
    limit = args.events
    _emit(render(ev_cols, ev_rows[:limit], "table", title=f"events ({len(ev_rows)})"))
    if len(ev_rows) > limit:
        _emit(f"  ... {len(ev_rows) - limit} more (--events N, or --format json)")
    return 0


def _summary(db: Any, ref: RunRef) -> tuple[bool, list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """What ``show`` prints of a run's data: ``(from the catalog, SUMMARIZE rows, events,
    value counts of the categorical columns)``, from the catalog when it holds the run, else
    from the run's durable files."""
    in_cat = False
    with _without_unreadable_catalog("showing the run from its files"):
        in_cat = db.exists() and bool(
            db.query(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = $1) AND EXISTS (SELECT 1 FROM telemetry WHERE run_id = $1)",
                [ref.run_id],
            ).fetchone()[0]
        )
    if in_cat:
        summary = db.query(
            "SUMMARIZE (SELECT * EXCLUDE (schema_version) FROM telemetry WHERE run_id = $1)", [ref.run_id]
        ).to_dicts()
        events = db.events(ref.run_id).to_dicts()
    else:
        live = db.live(ref.run_id)
        summary = live.relation.query("t", "SUMMARIZE t").fetchall() if len(live) else []
        cols = [
            "column_name",
            "column_type",
            "min",
            "max",
            "approx_unique",
            "avg",
            "std",
            "q25",
            "q50",
            "q75",
            "count",
            "null_percentage",
        ]
        summary = [dict(zip(cols, r, strict=False)) for r in summary]
        events = db.live(ref.run_id, kind="events").to_dicts()
    # A min/max of a string column is lexicographic ("min AMBER max RED"): a categorical
    # column with several values shows its value counts instead.
    categorical = {}
    for s in summary:
        ctype = str(s["column_type"]).upper()
        if (ctype == "VARCHAR" or ctype.startswith("ENUM")) and s["min"] != s["max"]:
            quoted = '"' + str(s["column_name"]).replace('"', '""') + '"'
            sql = f"SELECT {quoted}::VARCHAR AS v, count(*) AS n FROM {{src}} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 11"
            if in_cat:
                got = db.query(sql.format(src="telemetry WHERE run_id = $1"), [ref.run_id]).fetchall()
            else:
                got = live.relation.query("t", sql.format(src="t")).fetchall()
            categorical[s["column_name"]] = dict(got)
            s["min"] = s["max"] = None
    return in_cat, summary, events, categorical


def _counts_of(categorical: Mapping[str, Mapping[Any, int]], name: str) -> dict[str, Any]:
    """``{"counts": {value: rows}}`` for a categorical column (at most 11 values), else ``{}``."""
    return {"counts": dict(categorical[name])} if name in categorical else {}


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _kv_line(d: Mapping[str, Any]) -> str:
    return "  ".join(f"{k}={_cell(v)}" for k, v in d.items())


def _describe_manifest(ref: RunRef, m: Mapping[str, Any]) -> str:
    lines = [f"run {ref.run_id}   flow {m.get('flow_name')}   mode {ref.mode}   status {ref.status}"]
    if m.get("manifest_status"):
        lines[-1] += f" (manifest says {m['manifest_status']}; `flightlog recover` finalises it)"
    if m.get("outcome"):
        lines[-1] += f"   outcome {m['outcome']}"
    if m.get("trial_id"):
        lines.append(f"trial    {m['trial_id']}")
    start, end = _parse_time(m.get("created_at")), _parse_time(m.get("finished_at"))
    when = f"started  {m.get('created_at')}"
    if end is not None:
        when += f"   finished {m.get('finished_at')}"
        if start is not None:
            when += f"   ({(end - start).total_seconds():.2f} s)"
    lines.append(when)
    lines.append(f"path     {ref.location}")
    if m.get("error_type"):
        lines.append(f"error    {m.get('error_type')}: {m.get('error_message')}")
    for key in ("params", "tags", "counts", "cost", "sampling"):
        if m.get(key):
            lines.append(f"{key:<8} {_kv_line(m[key])}")
    units = m.get("units") or {}
    for field, u in units.items():
        text = _kv_line(u) if isinstance(u, Mapping) else _cell(u)
        lines.append(f"{'units' if field == next(iter(units)) else '':<8} {field}: {text}")
    for f in m.get("files") or []:
        lines.append(
            f"{'files' if f is m['files'][0] else '':<8} {f.get('path')}  {f.get('kind')}  "
            f"{f.get('rows')} rows  {_size(f.get('bytes'))}"
        )
    prov = m.get("provenance") or {}
    if prov:
        keys = ("host", "user", "pid", "python", "flightlog_version", "numpy_version", "git_commit", "git_dirty")
        lines.append(f"{'from':<8} {_kv_line({k: prov[k] for k in keys if prov.get(k) is not None})}")
    return "\n".join(lines)


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def add_parsers(add: AddCommand) -> None:
    """Registers the subcommands of this module (``add`` is :func:`~flightlog.cli._parser.build_parser`'s)."""
    p = add("runs", cmd_runs, "list runs (status by evidence: a dead running run shows as crashed)", True)
    p.add_argument("--flow", help="only this flow")
    p.add_argument(
        "--status",
        action="append",
        choices=["running", "finished", "failed", "crashed"],
        help="only runs with this status (repeatable)",
    )
    p.add_argument("--since", help="only runs started since: a duration (30m, 2h, 3d) or an ISO date/time")
    p.add_argument("--metric", default="E", help="metric for the final/min columns (default E)")
    p.add_argument("--limit", type=int, help="only the N most recent runs")
    p = add("show", cmd_show, "one run: manifest, per-column summary, events", True)
    p.add_argument("run", help="run id (or its folder name, or a unique prefix)")
    p.add_argument("--events", type=int, default=30, help="events to list in the table (default 30)")

"""The ``flightlog`` command line.

::

    flightlog runs [--flow F] [--status S] [--since 2h|2025-10-20]
    flightlog show RUN
    flightlog consolidate [--prune]
    flightlog query "SELECT ..." [--param name=value ...]
    flightlog compare RUN... --metric E [--tol 1e-8] [--group-by params.X] [--params a,b] [--plot FILE]
    flightlog plot RUN... --metric E [--logy] [--logx] -o FILE.png
    flightlog tail RUN
    flightlog recover
    flightlog compact FLOW [--which dev|tuner]
    flightlog demo [--quick]
    flightlog report RUN... [-o report.html] [--metric E ...]
    flightlog ui [--host 127.0.0.1] [--port 0]

Every command takes ``--root`` (else ``$FLIGHTLOG_ROOT``, else ``./telematry_cfs``)
and, where the output is a table, ``--format table|csv|json``: ``csv`` has a
header row; ``json`` is a list of objects with the columns as keys, in order
(non-finite floats are ``null``; times are ISO 8601 text). ``tail --format json``
prints one JSON object per line.

The commands that use the catalog (``runs``, ``show``, ``consolidate``, ``query``,
``compare``, ``plot``) also take ``--db PATH`` (the embedded DuckDB file, default
``$FLIGHTLOG_DB``, else ``<root>/duckdb.db``) or ``--catalog CATALOG`` (a DuckLake
catalog, ``ducklake:postgres:<dsn>`` or ``ducklake:<file>``, default
``$FLIGHTLOG_CATALOG``; see docs/SCALE_OUT.md). An explicit option beats the other
one's environment variable.

The root may be an object store, ``s3://bucket/prefix`` (settings from the ``AWS_*``
environment: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...; needs
``pip install 'flightlog[lake]'``). There ``consolidate``, ``query`` and
``compare`` need ``--db`` or ``--catalog``; ``runs``, ``show``, ``tail`` and
``plot`` read the manifests and files in the bucket (and the catalog when given);
``recover`` finalises crashed runs in the bucket; ``compact`` and ``demo`` work on
local roots only.

Errors exit with status 1 (2 for bad usage) and one line on stderr;
``FLIGHTLOG_DEBUG=1`` shows the traceback instead. Tables use ``rich`` when it
is installed (``pip install 'flightlog[cli]'``) and plain text otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime as _dt
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from .runs.discover import (
    CLIError,
    RunNotFoundError,
    RunRef,
    _is_object_root,
    _object_status,
    _root,
    _scan_local,
    _scan_object_root,
    find_run,
    scan_runs,
)

__all__ = ["RunNotFoundError", "find_run", "main", "render", "scan_runs"]

FORMATS = ("table", "csv", "json")
_DEFAULT_TIMEOUT = 30.0


# --------------------------------------------------------------------------- values and rendering


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Decimal):
        return _json_value(float(v))
    if isinstance(v, _dt.datetime | _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if v is None or isinstance(v, bool | int | str):
        return v
    if hasattr(v, "item"):  # numpy scalars
        return _json_value(v.item())
    return str(v)


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    t = type(v)
    if t is str:  # the common cases first: isinstance against the ABCs below costs ~1 us
        return v
    if t is int:
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, _dt.datetime | _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, Mapping | list | tuple):
        return json.dumps(_json_value(v))
    return str(v)


def _cell(v: Any) -> str:
    """A value for a human-readable table."""
    if v is None:
        return ""
    t = type(v)
    if t is str:  # the common cases first (see _csv_value)
        return v
    if t is int:
        return str(v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float | Decimal):
        f = float(v)
        if not math.isfinite(f):
            return str(f)
        # One rule for every float column: 4 significant digits (2.507e-17, 0.04149, 1.226).
        return f"{f:.4g}"
    if isinstance(v, _dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, Mapping | list | tuple):
        return json.dumps(_json_value(v))
    return str(v)


def _typed(text: Any, column_type: Any) -> Any:
    """A SUMMARIZE min/max (text) as the column's type: int, float or bool; else as is."""
    if not isinstance(text, str):
        return text
    t = str(column_type).upper()
    try:
        if t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"):
            return int(text)
        if t in ("DOUBLE", "FLOAT", "REAL") or t.startswith("DECIMAL"):
            return _json_value(float(text))
        if t == "BOOLEAN":
            return text.lower() == "true"
    except ValueError:
        pass
    return text


def _is_numeric(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


def _use_rich() -> Any:
    if os.environ.get("FLIGHTLOG_PLAIN"):
        return None
    try:
        import rich  # noqa: F401
    except ImportError:
        return None
    from rich.console import Console

    return Console


#: Tables longer than this are laid out by :func:`_simple_head_table` when it can give
#: rich's exact output (rich takes ~1.6 ms a row: 16 s for 10,000 runs).
_RICH_MAX_ROWS = 200


def _plain_cell(text: str) -> bool:
    """Whether rich prints ``text`` as is, one cell wide per character: printable ASCII,
    no markup (``[``) and no emoji code (``:name:``) that rich would replace."""
    if not (text.isascii() and text.isprintable()) or "[" in text:
        return False
    if text.count(":") >= 2:
        from rich._emoji_replace import _emoji_replace

        return _emoji_replace(text) == text
    return True


def _simple_head_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool], title: str | None
) -> str | None:
    """The text rich prints for :func:`render`'s table (``box.SIMPLE_HEAD``, no edge, no
    colour), built directly; None when rich would do anything but pad cells (a cell it
    would change, or a table wider than the console, which rich folds)."""
    cells = [[_cell(v) for v in r] for r in rows]
    if not all(_plain_cell(c) for c in columns) or not all(_plain_cell(c) for r in cells for c in r):
        return None
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    total = sum(widths) + 3 * (len(widths) - 1)
    if sys.stdout.isatty():
        import shutil

        if total > max(shutil.get_terminal_size().columns, 80):
            return None
    elif total > 10_000:
        return None
    if title and (len(title) > total or not _plain_cell(title)):
        return None  # rich wraps a title wider than its table

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "   ".join(parts).rstrip()

    out = [title] if title else []
    out += [line(list(columns)), "\u2500" * total]
    out += [line(r) for r in cells]
    return "\n".join(out)


def render(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", *, title: str | None = None
) -> str:
    """``rows`` as a table (rich if installed, else aligned text), CSV or JSON text."""
    if fmt == "json":
        return json.dumps([{c: _json_value(v) for c, v in zip(columns, r, strict=True)} for r in rows], indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_csv_value(v) for v in r])
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise CLIError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    numeric = [
        any(_is_numeric(r[i]) for r in rows) and all(r[i] is None or _is_numeric(r[i]) for r in rows)
        for i in range(len(columns))
    ]
    console_cls = _use_rich()
    if console_cls is not None and len(rows) > _RICH_MAX_ROWS:
        fast = _simple_head_table(columns, rows, numeric, title)
        if fast is not None:
            return fast
    if console_cls is not None:
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, show_edge=False)
        for c, num in zip(columns, numeric, strict=True):
            table.add_column(c, justify="right" if num else "left", no_wrap=True, overflow="fold")
        for r in rows:
            table.add_row(*(_cell(v) for v in r))
        buf = io.StringIO()
        interactive = sys.stdout.isatty()
        console = console_cls(
            file=buf,
            width=None if interactive else 10_000,
            force_terminal=False,
            color_system=None,
            soft_wrap=False,
            highlight=False,
        )
        if interactive:
            console.width = max(console.width, 80)
            import shutil

            console.width = max(shutil.get_terminal_size().columns, 80)
        console.print(table)
        return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines())
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out += [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _emit(text: str, file: TextIO | None = None) -> None:
    print(text, file=file or sys.stdout)


def _seconds(text: str) -> float:
    """argparse type of --timeout: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def _finite(text: str) -> float:
    """argparse type of --tol: a finite number (NaN would compare true with every value in DuckDB)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _sql_text(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _parse_time(text: Any) -> _dt.datetime | None:
    """A manifest time (ISO text or TOML datetime) as an aware UTC datetime."""
    if isinstance(text, _dt.datetime):
        value = text
    elif isinstance(text, str) and text:
        try:
            value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return value.replace(tzinfo=_dt.UTC) if value.tzinfo is None else value.astimezone(_dt.UTC)


_SINCE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def _parse_since(text: str) -> _dt.datetime:
    m = _SINCE_RE.match(text)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=seconds)
    value = _parse_time(text)
    if value is None:
        raise CLIError(f"--since {text!r}: give a duration (30m, 2h, 3d, 1w) or an ISO date/time (2025-10-20)")
    return value


def _catalog(root: str | os.PathLike[str] | None, timeout: float = _DEFAULT_TIMEOUT, read_only: bool = True) -> Any:
    from ._catalog import DuckDBManager

    return DuckDBManager(root, read_only=read_only, timeout=timeout)


CATALOG_ENV = "FLIGHTLOG_CATALOG"
DB_ENV = "FLIGHTLOG_DB"


def _catalog_options(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(catalog, db_path)`` from ``--catalog``/``--db``, else ``$FLIGHTLOG_CATALOG``/``$FLIGHTLOG_DB``."""
    catalog, db_path = getattr(args, "catalog", None), getattr(args, "db", None)
    if catalog and db_path:
        raise CLIError(
            "--catalog and --db exclude each other: --db is the embedded DuckDB file, --catalog a DuckLake catalog"
        )
    if catalog or db_path:
        return catalog or None, db_path or None
    catalog, db_path = os.environ.get(CATALOG_ENV) or None, os.environ.get(DB_ENV) or None
    if catalog and db_path:
        raise CLIError(f"${CATALOG_ENV} and ${DB_ENV} are both set: unset one, or pass --catalog or --db")
    return catalog, db_path


def _needs_catalog(root: str) -> str:
    return (
        f"the object-store root {root} needs a catalog for this: pass --db FILE (a local DuckDB file) "
        f"or --catalog ducklake:postgres:<dsn> (or set ${DB_ENV} / ${CATALOG_ENV})"
    )


def _open_catalog(args: argparse.Namespace, *, read_only: bool = True, required: bool = True) -> Any:
    """The :class:`~flightlog.DuckDBManager` of ``--root`` with ``--catalog``/``--db``.

    An ``s3://`` root without either has no catalog: with ``required`` that is an
    error; else the manager returned is a ``files_only`` one, which reads only the
    run files (``live``) and whose ``exists()`` is False."""
    from ._catalog import DuckDBManager

    root = _root(args.root, must_exist=False)  # the options are checked first, then the root
    catalog, db_path = _catalog_options(args)
    files_only = _is_object_root(root) and catalog is None and db_path is None
    if files_only and required:
        raise CLIError(_needs_catalog(str(root)))
    db: Any
    try:
        if files_only:
            db = DuckDBManager(root, timeout=args.timeout, files_only=True)
        else:
            db = DuckDBManager(root, db_path=db_path, read_only=read_only, timeout=args.timeout, catalog=catalog)
    except ValueError as e:  # say it in the CLI's words
        raise CLIError(str(e).replace("catalog=", "--catalog").replace("db_path=", "--db")) from None
    _root(args.root)  # a local root that does not exist is an error
    return db


def _require_catalog(db: Any) -> None:
    if db.files_only:
        raise CLIError(_needs_catalog(str(db.root)))
    if not db.exists():
        if db.catalog is not None:
            raise CLIError(
                f"no flightlog tables in the catalog {db.location} yet; "
                f"run `flightlog consolidate --root {db.root} --catalog ...` first"
            )
        db_opt = "" if isinstance(db.root, Path) else f" --db {db.db_path}"
        raise CLIError(f"no catalog at {db.location}; run `flightlog consolidate --root {db.root}{db_opt}` first")


def _telemetry_columns(db: Any) -> dict[str, str]:
    if not db.exists():
        return {}
    return {r[0]: str(r[1]) for r in db.query("DESCRIBE telemetry").fetchall()}


RUNS_COLUMNS = (
    "run_id",
    "flow_name",
    "mode",
    "status",
    "outcome",
    "started",
    "duration_s",
    "rows",
    "final_E",
    "min_E",
)


def runs_rows(
    root: str | os.PathLike[str] | None,
    *,
    run_ids: Sequence[str] | None = None,
    db: Any = None,
    flow: str | None = None,
    status: Sequence[str] | None = None,
    since: _dt.datetime | None = None,
    metric: str = "E",
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """The runs table: from the manifests on disk or in the bucket (status by evidence),
    final and min of ``metric`` from the catalog when the run is consolidated (for an
    ``s3://`` root only when ``db`` is given)."""
    base = _root(root)
    if isinstance(base, str):
        runs = _scan_object_root(base, storage_options)
    else:
        db = db if db is not None else _catalog(root)
        runs = _scan_local(base, db, full=False)
    if run_ids is not None:
        wanted = set(run_ids)
        runs = [r for r in runs if r.run_id in wanted]
    if flow is not None:
        runs = [r for r in runs if r.manifest.get("flow_name") == flow]
    if status:
        runs = [r for r in runs if r.status in status]
    if since is not None:
        runs = [r for r in runs if (t := _parse_time(r.manifest.get("created_at"))) is not None and t >= since]
    values: dict[str, tuple[Any, Any]] = {}
    if runs and (db is not None or not _is_object_root(_root(root))):
        db = db if db is not None else _catalog(root)
        with _without_unreadable_catalog(f"listed the runs from their manifests, without final_{metric}/min_{metric}"):
            cols = _telemetry_columns(db)
            if metric in cols and "iter" in cols:
                m = '"' + metric.replace('"', '""') + '"'
                # No bound parameter: DuckDB's Python binding imports pandas to bind one (~0.3-1 s).
                # A few runs: their ids inline (zone maps skip the others' rows); many: every run,
                # grouped once (a list of 100,000 ids compared per row takes seconds).
                wanted = {r.run_id for r in runs}
                where = ""
                if len(wanted) <= 2000:
                    where = f" WHERE run_id IN ({', '.join(_sql_text(i) for i in sorted(wanted))})"
                for rid, last, low in db.query(
                    f"SELECT run_id, arg_max({m}, iter) FILTER (WHERE {m} IS NOT NULL), min({m}) FROM telemetry"
                    f"{where} GROUP BY run_id"
                ).fetchall():
                    if rid in wanted:
                        values[rid] = (last, low)
    now = _dt.datetime.now(_dt.UTC)
    rows = []
    for r in runs:
        m = r.manifest
        start = _parse_time(m.get("created_at"))
        end = _parse_time(m.get("finished_at"))
        duration = None
        if start is not None:
            if end is not None:
                duration = (end - start).total_seconds()
            elif r.status == "running":
                duration = (now - start).total_seconds()
        counts = m.get("counts") or {}
        last, low = values.get(r.run_id, (None, None))
        rows.append(
            [
                r.run_id,
                m.get("flow_name"),
                r.mode,
                r.status,
                m.get("outcome"),
                start,
                round(duration, 3) if duration is not None else None,
                counts.get("rows_written"),
                last,
                low,
            ]
        )
    columns = list(RUNS_COLUMNS)
    columns[-2:] = [f"final_{metric}", f"min_{metric}"]
    return columns, rows


# --------------------------------------------------------------------------- compare


def _param_of(params_json: Any, key: str) -> Any:
    try:
        value: Any = json.loads(params_json) if isinstance(params_json, str) else (params_json or {})
    except ValueError:
        return None
    for part in key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _run_table(db: Any, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = db.query(
        "SELECT * FROM runs WHERE list_contains(?::VARCHAR[], run_id) ORDER BY created_at", [list(ids)]
    ).to_dicts()
    return {r["run_id"]: r for r in rows}


def _per_run_tol(db: Any, ids: Sequence[str], metric: str, tol: float | None) -> dict[str, dict[str, Any]]:
    m = '"' + metric.replace('"', '""') + '"'
    tol_v = float("-inf") if tol is None else float(tol)
    sql = f"""
    WITH t AS (SELECT run_id, iter AS k, {m}::DOUBLE AS v, t_wall_ms::DOUBLE AS w
               FROM telemetry WHERE list_contains(?::VARCHAR[], run_id))
    SELECT run_id, arg_max(v, k) FILTER (WHERE v IS NOT NULL) AS final, min(v) AS best,
           min(k) AS k0, min(w) AS w0,
           min(k) FILTER (WHERE v <= ?) AS k_tol, arg_min(w, k) FILTER (WHERE v <= ?) AS w_tol
    FROM t GROUP BY run_id
    """
    out = {}
    for rid, final, best, k0, w0, k_tol, w_tol in db.query(sql, [list(ids), tol_v, tol_v]).fetchall():
        out[rid] = {
            "final": final,
            "best": best,
            "iters_to_tol": None if k_tol is None else int(k_tol - k0),
            "time_to_tol_s": None if w_tol is None else (w_tol - w0) / 1000.0,
        }
    return out


#: Outcomes of runs that `compare --group-by` leaves out of its statistics (with a
#: status other than finished): their numbers describe a failure, not the method.
EXCLUDED_OUTCOMES = ("diverged", "cert_fail")


def _outcomes(db: Any, ids: Sequence[str]) -> dict[str, str]:
    """Each run's outcome from the catalog's events: the ``outcome`` of its ``RUN_FINISHED``
    payload (written by :class:`~flightlog.TelemetryManager`), else its last terminal event
    (``TIMEOUT``, ``CANCELLED``, ``CERT_FAIL``), as the manager derives it."""
    cols = {r[0] for r in db.query("DESCRIBE events").fetchall()}
    if not {"event", "payload", "t_wall_ms"} <= cols:
        return {}
    sql = """
    SELECT run_id, coalesce(
        arg_max(json_extract_string(payload, '$.outcome'), t_wall_ms) FILTER (WHERE event = 'RUN_FINISHED'),
        arg_max(CASE event WHEN 'TIMEOUT' THEN 'timeout' WHEN 'CANCELLED' THEN 'cancelled' ELSE 'cert_fail' END,
                t_wall_ms) FILTER (WHERE event IN ('TIMEOUT', 'CANCELLED', 'CERT_FAIL')))
    FROM events WHERE list_contains(?::VARCHAR[], run_id) GROUP BY run_id
    """
    return {rid: o for rid, o in db.query(sql, [list(ids)]).fetchall() if o is not None}


def _check_metric(db: Any, metric: str, need: Iterable[str] = ("iter", "t_wall_ms")) -> None:
    from ._catalog import RESERVED_COLUMNS, _is_numeric

    cols = _telemetry_columns(db)
    if metric not in cols:
        raise CLIError(f"no telemetry column {metric!r}; columns: {', '.join(cols) or '(none)'}")
    if metric in RESERVED_COLUMNS:
        raise CLIError(f"telemetry column {metric!r} is reserved (set by the catalog for every row), not a metric")
    if not _is_numeric(cols[metric]):
        raise CLIError(f"telemetry column {metric!r} is {cols[metric]}, not numeric: it cannot be a metric")
    missing = [c for c in need if c not in cols]
    if missing:
        raise CLIError(f"telemetry has no {', '.join(missing)} column(s), needed to compare runs")


def _bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[float | None, float | None]:
    import numpy as np

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return None, None
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def compare_rows(
    db: Any,
    run_ids: Sequence[str],
    metric: str = "E",
    *,
    tol: float | None = None,
    params: Sequence[str] | None = None,
    group_by: str | None = None,
    include_failed: bool = False,
) -> tuple[list[str], list[list[Any]]]:
    """Per-run comparison (:meth:`DuckDBManager.compare` plus the outcome, params and
    time-to-``tol``), or with ``group_by`` (``params.X`` or a ``runs`` column) per group: mean,
    std and bootstrap 95% interval of the final and best value, and iterations/seconds to reach
    ``tol``. Grouped, a run whose status is not ``finished`` (failed, crashed, running) or whose
    outcome is one of ``EXCLUDED_OUTCOMES`` (diverged) is left out of the statistics and counted
    in the ``excluded`` column, unless ``include_failed``."""
    _require_catalog(db)
    if tol is not None and not (isinstance(tol, int | float) and math.isfinite(tol)):
        # DuckDB's v <= NaN is true: a NaN tolerance would be "reached" at once.
        raise CLIError(f"--tol must be a finite number, got {tol!r}")
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        raise CLIError("compare needs run ids (or --flow)")
    _check_metric(db, metric)
    info = _run_table(db, ids)
    missing = [r for r in ids if r not in info]
    if missing:
        raise RunNotFoundError(
            f"no run {missing[0]!r} in the catalog {db.location} (run `flightlog consolidate` first?)"
        )
    per_run = _per_run_tol(db, ids, metric, tol)
    outcomes = _outcomes(db, ids)
    params = list(params or [])
    if group_by is None:
        res = db.compare(ids, metric=metric)
        base = res.columns
        extra_p = [f"params.{p}" if not p.startswith("params.") else p for p in params]
        cols = base[:3] + ["outcome"] + [p.removeprefix("params.") for p in extra_p] + base[3:]
        if tol is not None:
            cols += ["iters_to_tol", "time_to_tol_s"]
        rows = []
        for rec in res.to_dicts():
            rid = rec["run_id"]
            prow = [_param_of(info[rid].get("params"), p.removeprefix("params.")) for p in extra_p]
            row = [rec[c] for c in base[:3]] + [outcomes.get(rid)] + prow + [rec[c] for c in base[3:]]
            if tol is not None:
                pr = per_run.get(rid, {})
                row += [pr.get("iters_to_tol"), pr.get("time_to_tol_s")]
            rows.append(row)
        return cols, rows

    key_name = group_by.removeprefix("params.")
    groups: dict[str, list[str]] = {}
    excluded: dict[str, int] = {}
    keys: dict[str, Any] = {}
    for rid in ids:
        row = info[rid]
        if group_by.startswith("params."):
            k = _param_of(row.get("params"), key_name)
        elif group_by in row:
            k = row[group_by]
        else:
            raise CLIError(f"--group-by {group_by!r}: use params.<name> or a runs column ({', '.join(row)})")
        ks = json.dumps(_json_value(k), sort_keys=True)
        keys[ks] = k
        groups.setdefault(ks, [])
        if not include_failed and (row.get("status") != "finished" or outcomes.get(rid) in EXCLUDED_OUTCOMES):
            excluded[ks] = excluded.get(ks, 0) + 1
        else:
            groups[ks].append(rid)

    def stats(vals: list[Any]) -> list[Any]:
        import numpy as np

        v = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
        if not v:
            return [None, None, None, None]
        lo, hi = _bootstrap_ci(v)
        std = float(np.std(v, ddof=1)) if len(v) > 1 else None
        return [float(np.mean(v)), std, lo, hi]

    cols = [key_name, "runs", "excluded", "finite"]
    cols += ["final_mean", "final_std", "final_ci95_lo", "final_ci95_hi"]
    cols += ["best_mean", "best_std", "best_ci95_lo", "best_ci95_hi"]
    if tol is not None:
        cols += [
            "reached_tol",
            "iters_to_tol_mean",
            "iters_to_tol_ci95_lo",
            "iters_to_tol_ci95_hi",
            "time_to_tol_s_mean",
        ]
    rows = []
    for ks in sorted(groups, key=lambda s: (str(type(keys[s])), keys[s] if keys[s] is not None else "")):
        members = [per_run.get(r, {}) for r in groups[ks]]
        finals = [m.get("final") for m in members]
        row = [keys[ks], len(members), excluded.get(ks, 0)]
        row.append(sum(1 for f in finals if f is not None and math.isfinite(f)))
        row += stats(finals) + stats([m.get("best") for m in members])
        if tol is not None:
            reached = [m for m in members if m.get("iters_to_tol") is not None]
            its = stats([m["iters_to_tol"] for m in reached])
            secs = stats([m["time_to_tol_s"] for m in reached])
            row += [len(reached), its[0], its[2], its[3], secs[0]]
        rows.append(row)
    return cols, rows


def narrow_compare(
    cols: list[str], rows: list[list[Any]], drop: Iterable[str] = ("rows_per_s",)
) -> tuple[list[str], list[list[Any]]]:
    """The per-run comparison without the ``delta_*`` columns except ``delta_min`` (for a screen)."""
    hide = {c for c in cols if c.startswith("delta_") and c != "delta_min"} | set(drop)
    keep = [i for i, c in enumerate(cols) if c not in hide]
    return [cols[i] for i in keep], [[r[i] for i in keep] for r in rows]


# --------------------------------------------------------------------------- commands


def _ids_for(args: argparse.Namespace, db: Any) -> list[str]:
    known = _catalog_ids(db, args.runs)
    ids = [r if r in known else find_run(args.root, r).run_id for r in args.runs]
    for flow in getattr(args, "flow", None) or []:
        _require_catalog(db)
        found = [r[0] for r in db.runs(flow_name=flow).fetchall()]
        if not found:
            raise RunNotFoundError(f"no runs of flow {flow!r} in the catalog {db.location}")
        ids += found
    return list(dict.fromkeys(ids))


def _catalog_ids(db: Any, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` that the catalog has in ``runs`` (one query: each costs a catalog session)."""
    if not ids or not db.exists():
        return set()
    sql = "SELECT DISTINCT run_id FROM runs WHERE list_contains(?::VARCHAR[], run_id)"
    return {r[0] for r in db.query(sql, [list(ids)]).fetchall()}


@contextlib.contextmanager
def _without_unreadable_catalog(did: str) -> Iterator[list[bool]]:
    """Lets a command that can answer from the run tree carry on when ``duckdb.db`` cannot
    be read by this DuckDB (another DuckDB line wrote it, or it is not a database): one
    line on stderr says what happened and what the command did instead. The yielded
    list holds ``True`` once that happened."""
    from ._catalog import _CatalogUnreadable

    fell_back: list[bool] = []
    try:
        yield fell_back
    except _CatalogUnreadable as e:
        fell_back.append(True)
        _emit(f"flightlog: catalog unreadable: {e.what}; {did} (`flightlog consolidate` rebuilds it)", sys.stderr)


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
    ref = find_run(args.root, args.run)
    db = _open_catalog(args, required=False)
    m = dict(ref.manifest)
    m["status"] = ref.status
    if ref.status != ref.manifest.get("status"):
        m["manifest_status"] = ref.manifest.get("status")
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
        n /= 1024  # type: ignore[assignment]
    return str(n)


def cmd_consolidate(args: argparse.Namespace) -> int:
    db = _open_catalog(args, read_only=False)
    progress, finish = _progress_bar("consolidating", enabled=args.format == "table" and not args.quiet)
    try:
        report = db.consolidate(prune=args.prune, progress=progress)
    finally:
        finish()
    if report.rebuilt:
        _emit(f"flightlog: {report.rebuilt}", sys.stderr)
    if args.format == "json":
        _emit(json.dumps(_json_value(dataclasses.asdict(report)), indent=1))
    elif args.format == "csv":
        d = dataclasses.asdict(report)
        d["files_skipped"] = len(d["files_skipped"])
        _emit(render(list(d), [list(d.values())], "csv"))
    else:
        _emit(f"consolidated {db.root} into {db.location}: {report}")
        if report.files_skipped:
            _emit(render(["skipped", "reason"], [list(s) for s in report.files_skipped], "table"))
    return 0


def _progress_bar(what: str, enabled: bool) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A ``progress(done, total)`` callback drawing on stderr when it is a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None, lambda: None
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    except ImportError:
        state = {"last": 0.0}

        def plain(done: int, total: int) -> None:
            now = time.monotonic()
            if now - state["last"] > 0.2 or done == total:
                state["last"] = now
                print(f"\r{what}: {done}/{total} files", end="", file=sys.stderr, flush=True)

        return plain, lambda: print(file=sys.stderr) if state["last"] else None
    bar = Progress(
        f"[bold]{what}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(what, total=total)
        bar.update(task, completed=done, total=total)

    def finish() -> None:
        if task is not None:
            bar.stop()

    return update, finish


def _parse_param(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CLIError(f"--param {text!r}: use name=value (referenced as $name in the SQL)")
    for conv in (int, float):
        try:
            number = conv(value)
        except ValueError:
            continue
        if isinstance(number, float) and math.isinf(number) and "inf" not in value.lower():  # overflow, as 1e400
            raise CLIError(f"--param {text!r}: {value} is out of range of a 64-bit float (at most about 1.8e308)")
        return name, number
    return name, {"true": True, "false": False, "null": None}.get(value, value)


def cmd_query(args: argparse.Namespace) -> int:
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    db = _open_catalog(args)
    _require_catalog(db)
    params = dict(_parse_param(p) for p in args.param) or None
    res = db.query(sql, params)
    _emit(render(res.columns, res.fetchall(), args.format))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    db = _open_catalog(args)
    _require_catalog(db)
    ids = _ids_for(args, db)
    params = [p for chunk in args.params for p in chunk.split(",") if p]
    cols, rows = compare_rows(
        db, ids, args.metric, tol=args.tol, params=params, group_by=args.group_by, include_failed=args.include_failed
    )
    if args.format == "table" and args.group_by is None:
        cols, rows = narrow_compare(cols, rows)
    _emit(render(cols, rows, args.format))
    if args.group_by is not None and not args.include_failed:
        n = sum(r[cols.index("excluded")] for r in rows)
        if n:
            _emit(
                f"flightlog: {n} run(s) left out of the statistics (failed, crashed, running or diverged: "
                "the 'excluded' column); --include-failed pools them",
                sys.stderr,
            )
    if args.plot:
        from ._plot import plot_runs

        info = plot_runs(db, ids, args.metric, args.plot, logy=args.logy, params=params or None)
        _emit(f"plot: {info['path']}", sys.stderr if args.format != "table" else None)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from ._plot import plot_runs

    db = _open_catalog(args, required=False)
    ids = _ids_for(args, db)
    if not ids:
        raise CLIError("plot needs run ids (or --flow)")
    params = [p for chunk in args.params for p in chunk.split(",") if p] if args.params else None
    info = plot_runs(
        db,
        ids,
        args.metric,
        args.output,
        x=args.x,
        logy=args.logy,
        logx=args.logx,
        params=params,
        title=args.title,
        width=args.width,
        height=args.height,
    )
    if args.format == "json":
        _emit(json.dumps(_json_value(info), indent=1))
    else:
        _emit(
            f"wrote {info['path']}: {len(ids)} run(s), {info['rows']} rows drawn as {info['points']} points "
            f"in {info['seconds']:.2f} s"
        )
    return 0


def _segment_files(ref: RunRef) -> list[Path]:
    """Published telemetry files of a run: segments (run folder) or parts (dev/tuner).
    FIFOs, devices and links are left out: reading one could block or read another run."""
    from ._regular import regular_only

    if ref.mode == "run":
        seg = ref.folder / "segments"
        files = sorted(seg.glob("telemetry-*.parquet")) if seg.is_dir() else []
        final = ref.folder / "telemetry.parquet"
        files += [final] if final.exists() else []
    else:
        from .runs.status import part_pattern

        pat = part_pattern(ref.run_id)
        parts_dir = ref.folder / f"{ref.mode}_telemetry"
        files = sorted(p for p in parts_dir.glob("part-*.parquet") if pat.match(p.name)) if parts_dir.is_dir() else []
    refused = {p for p, _ in regular_only(files)}
    return [f for f in files if str(f) not in refused]


def _last_row(path: Path | str, metric: str, con: Any = None) -> dict[str, Any]:
    """The last row's ``iter``, ``t_wall_ms``, ``phase`` and ``metric`` of a Parquet file
    (read with ``con`` when given: one that can read ``s3://`` URLs)."""
    import duckdb

    own = con is None
    con = duckdb.connect(":memory:") if own else con
    try:
        cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()]
        want = [c for c in ("iter", "t_wall_ms", "phase", metric) if c in cols]
        if not want:
            return {}
        order = "iter" if "iter" in cols else "file_row_number"
        sel = ", ".join('"' + c + '"' for c in want)
        row = con.execute(
            f"SELECT {sel} FROM read_parquet(?, file_row_number = true) ORDER BY {order} DESC LIMIT 1", [str(path)]
        ).fetchone()
        return dict(zip(want, row, strict=True)) if row else {}
    finally:
        if own:
            con.close()


class _TailSource:
    """What ``tail`` polls: a run's folder on disk, or its objects in a bucket."""

    def __init__(self, ref: RunRef) -> None:
        self.ref = ref
        self._con: Any = None
        if ref.tree is not None:  # DuckDB reads the last rows over httpfs: set it up now, errors up front
            from .runs.s3 import duckdb_secret_sql, load_extensions, storage_options
            from .runs.views import duckdb_connect

            con = duckdb_connect(offline=True)
            try:
                load_extensions(con, "httpfs")
                con.execute(duckdb_secret_sql(storage_options(ref.tree.storage_options)))
            except BaseException:
                con.close()
                raise
            self._con = con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()

    def state(self) -> tuple[dict[str, Any], str]:
        """The manifest now and the status by evidence (the scanned manifest and "unknown" if unreadable)."""
        from .runs.manifest import read_manifest
        from .runs.status import run_status

        ref = self.ref
        try:
            if ref.tree is None:
                manifest = read_manifest(ref.manifest_path)
                return manifest, run_status(manifest, ref.where)
            got = ref.tree.read_manifest(ref.manifest_path.as_posix())
            if got is None:
                raise FileNotFoundError(ref.tree.url(ref.manifest_path.as_posix()))
            return got[0], _object_status(got[0], ref.where, ref.tree.list(ref.folder.as_posix()))
        except (OSError, ValueError):
            return ref.manifest, "unknown"

    def files(self) -> list[tuple[str, Any]]:
        """``(name, handle)`` of the published telemetry files, as :func:`_segment_files`."""
        ref, tree = self.ref, self.ref.tree
        if tree is None:
            return [(f.name, f) for f in _segment_files(ref)]
        folder = ref.folder.as_posix()
        if ref.mode == "run":
            seg = f"{folder}/segments"
            names = sorted(n for n in tree.names(seg) if n.startswith("telemetry-") and n.endswith(".parquet"))
            out = [(n, f"{seg}/{n}") for n in names]
            if tree.exists(f"{folder}/telemetry.parquet"):
                out.append(("telemetry.parquet", f"{folder}/telemetry.parquet"))
            return out
        from .runs.status import part_pattern

        pat = part_pattern(ref.run_id)
        parts = f"{folder}/{ref.mode}_telemetry"
        return [(n, f"{parts}/{n}") for n in sorted(tree.names(parts)) if pat.match(n)]

    def rows(self, handle: Any) -> int:
        from . import _core

        tree = self.ref.tree
        if tree is None:
            return int(_core.parquet_rows(str(handle)))
        return int(_core.parquet_rows(tree.key(handle), store=tree.store))

    def last_row(self, handle: Any, metric: str) -> dict[str, Any]:
        tree = self.ref.tree
        return _last_row(handle if tree is None else tree.url(handle), metric, self._con)


def cmd_tail(args: argparse.Namespace) -> int:
    ref = find_run(args.root, args.run)
    source = _TailSource(ref)
    try:
        return _tail(args, ref, source)
    finally:
        source.close()


def _tail(args: argparse.Namespace, ref: RunRef, source: _TailSource) -> int:
    seen: set[str] = set()
    total = 0
    deadline = None if args.timeout_tail is None else time.monotonic() + args.timeout_tail
    if args.format == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["file", "rows", "total_rows", "iter", "t_wall_ms", "phase", args.metric])
    if args.format == "table":
        _emit(f"following run {ref.run_id} ({ref.manifest.get('flow_name')}, {ref.status}) in {ref.location}")
    while True:
        manifest, status = source.state()
        for name, handle in source.files():
            if name in seen:
                continue
            try:
                rows = source.rows(handle)
                last = source.last_row(handle, args.metric)
            except Exception:  # merged or removed while we looked: the next poll sees the result
                continue
            seen.add(name)
            if name == "telemetry.parquet":  # the merged file holds every segment
                total = rows
            else:
                total += rows
            rec = {
                "file": name,
                "rows": rows,
                "total_rows": total,
                "iter": last.get("iter"),
                "t_wall_ms": last.get("t_wall_ms"),
                "phase": last.get("phase"),
                args.metric: last.get(args.metric),
            }
            if args.format == "json":
                _emit(json.dumps(_json_value(rec)))
            elif args.format == "csv":
                w.writerow([_csv_value(v) for v in rec.values()])
            else:
                vals = "  ".join(
                    f"{k}={_cell(v)}"
                    for k, v in rec.items()
                    if k not in ("file", "rows", "total_rows") and v is not None
                )
                _emit(f"{time.strftime('%H:%M:%S')}  {name}  +{rows} rows  total {total}  {vals}")
            sys.stdout.flush()
        if status != "running":
            counts = manifest.get("counts") or {}
            end = {"status": status, "rows": counts.get("rows_written", total), "events": counts.get("events")}
            if args.format == "json":
                _emit(json.dumps(_json_value({"end": True, **end})))
            elif args.format == "table":
                _emit(f"run {ref.run_id} {status}: {end['rows']} rows, {end['events']} events")
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            if args.format == "table":
                _emit(f"run {ref.run_id} still running after {args.timeout_tail} s; stopped following")
            return 0
        time.sleep(args.interval)


def cmd_recover(args: argparse.Namespace) -> int:
    from .runs.recover import recover
    from .runs.status import DEFAULT_STALE_AFTER

    if args.file is not None:
        from ._recorder import is_output_file

        if not is_output_file(args.file):
            raise CLIError(f"{args.file}: not an output file (a path ending in .parquet); runs are found with --root")
        root: Any = args.file
    else:
        root = _root(args.root)
    report = recover(root, stale_after=args.stale_after if args.stale_after is not None else DEFAULT_STALE_AFTER)
    cols = [
        "run_id",
        "path",
        "flow_name",
        "mode",
        "previous_status",
        "status",
        "telemetry_rows",
        "event_rows",
        "segments_merged",
        "temp_files_removed",
    ]
    rows = [[r.get(c) for c in cols] for r in report.recovered]
    if args.format == "json":
        _emit(json.dumps(_json_value(report.as_dict()), indent=1))
    elif args.format == "csv":
        _emit(render(cols, rows, "csv"))
    else:
        if rows:
            _emit(render(cols, rows, "table"))
        for e in report.errors:
            _emit(f"could not recover {e.get('path')}: {e.get('error')}", sys.stderr)
        _emit(f"{report.root}: {report}")
    return 1 if report.errors else 0


def cmd_compact(args: argparse.Namespace) -> int:
    from .runs.compact import compact

    root = _root(args.root)
    if _is_object_root(root):
        raise CLIError(
            f"compact works on local roots only; on {root} the parts stay where they are "
            "(`flightlog consolidate --db FILE` or `--catalog` reads them in place)"
        )
    rep = compact(root, args.flow, which=args.which)
    cols = ["kind", "path", "parts_merged", "rows", "bytes", "leftovers_removed", "skipped"]
    rows = [
        [
            k,
            rep[k]["path"],
            rep[k]["parts_merged"],
            rep[k]["rows"],
            rep[k]["bytes"],
            rep[k]["leftovers_removed"],
            len(rep[k].get("skipped") or []),
        ]
        for k in ("telemetry", "events")
    ]
    if args.format == "json":
        _emit(json.dumps(_json_value(rep), indent=1))
    else:
        _emit(render(cols, rows, args.format))
        if args.format == "table":
            for k in ("telemetry", "events"):
                for s in rep[k].get("skipped") or []:
                    _emit(f"kept {s['path']}: {s['reason']}", sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    if _is_object_root(_root(args.root, must_exist=False)):
        raise CLIError("demo writes to a local root; give --root a folder")
    plot: bool | str = False if args.no_plot else (args.output or True)
    run_demo(
        args.root, quick=args.quick, plot=plot, fmt=args.format, n=args.n, kappa=args.kappa, max_iter=args.max_iter
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ._report import write_report

    catalog, db_path = _catalog_options(args)
    metrics = [m for chunk in args.metric for m in chunk.split(",") if m] if args.metric else None
    info = write_report(
        args.root,
        args.runs,
        args.output,
        metrics=metrics,
        db_path=db_path,
        catalog=catalog,
        timeout=args.timeout,
        tol=args.tol,
    )
    if args.format == "json":
        _emit(json.dumps(_json_value(info), indent=1))
    else:
        _emit(
            f"wrote {info['path']}: {len(info['runs'])} run(s), {len(info['metrics'])} chart(s) per run, "
            f"{info['bytes'] / 1e6:.2f} MB, self-contained (open it in a browser)"
        )
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from ._ui import serve

    catalog, db_path = _catalog_options(args)
    return serve(args.root, db_path=db_path, catalog=catalog, host=args.host, port=args.port, timeout=args.timeout)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535 (0: any free port), got {text!r}")
    return value


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(fmt: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--root",
        default=argparse.SUPPRESS,
        help="flightlog root: a folder or s3://bucket/prefix (default: $FLIGHTLOG_ROOT, else ./telematry_cfs)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=argparse.SUPPRESS,
        help=f"seconds to wait for a locked catalog (default {_DEFAULT_TIMEOUT:g})",
    )
    if fmt:
        p.add_argument("--format", choices=FORMATS, default=argparse.SUPPRESS, help="output format (default: table)")
    return p


def _catalog_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--catalog",
        metavar="CATALOG",
        help=f"a DuckLake catalog: ducklake:postgres:<dsn> or ducklake:<file> (default: ${CATALOG_ENV}, "
        "else the embedded DuckDB file)",
    )
    p.add_argument(
        "--db",
        metavar="PATH",
        help=f"the embedded DuckDB catalog file (default: ${DB_ENV}, else <root>/duckdb.db; "
        "an s3:// root has no default)",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``flightlog``."""
    from . import __version__

    common = _common()
    catalog = _catalog_args()
    parser = _Parser(
        prog="flightlog",
        description="flightlog: a flight recorder for numeric code. Runs, catalog, plots and the demo.",
        parents=[common],
        epilog="Start with `flightlog demo`. FLIGHTLOG_DEBUG=1 shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"flightlog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help: str, uses_catalog: bool = False, **kw: Any
    ) -> argparse.ArgumentParser:
        parents = [common, catalog] if uses_catalog else [common]
        p = sub.add_parser(name, help=help, description=help, parents=parents, **kw)
        p.set_defaults(func=func)
        return p

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

    p = add("consolidate", cmd_consolidate, "ingest new immutable files into the catalog (duckdb.db)", True)
    p.add_argument("--prune", action="store_true", help="remove rows of runs whose folders are gone")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = add("query", cmd_query, "run SQL over the catalog (tables runs, telemetry, events, _ingested_files)", True)
    p.add_argument("sql", help="the SQL ('-' reads it from stdin)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind $NAME to VALUE (int, float, true/false/null, else text); repeatable",
    )

    p = add("compare", cmd_compare, "compare runs on a metric (per run, or per group with --group-by)", True)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids")
    p.add_argument("--flow", action="append", default=[], help="also every run of this flow (repeatable)")
    p.add_argument("--metric", "-m", default="E", help="telemetry column (default E); lower is better")
    p.add_argument("--tol", type=_finite, help="report iterations and seconds until metric <= TOL")
    p.add_argument("--group-by", help="params.NAME (or a runs column such as flow_name): aggregate per group")
    p.add_argument("--params", action="append", default=[], help="params to show as columns (a,b)")
    p.add_argument(
        "--include-failed",
        action="store_true",
        help="with --group-by: also pool runs that failed, crashed, are running or diverged (left out by default)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="also plot the runs")
    p.add_argument(
        "--logy", action=argparse.BooleanOptionalAction, default=None, help="log y axis for --plot (default: auto)"
    )

    p = add("plot", cmd_plot, "plot a metric of runs into a PNG (downsampled on read)", True)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids")
    p.add_argument("--flow", action="append", default=[], help="also every run of this flow (repeatable)")
    p.add_argument("--metric", "-m", default="E", help="telemetry column (default E)")
    p.add_argument("--x", default="iter", help="x column (default iter; e.g. t_wall_ms)")
    p.add_argument(
        "--logy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log y axis (default: log when the positive values span 3+ decades)",
    )
    p.add_argument("--logx", action="store_true", help="log x axis (symlog: iteration 0 stays visible)")
    p.add_argument("--params", action="append", help="params for the legend (default: those that differ)")
    p.add_argument("--title")
    p.add_argument("--width", type=int, default=1400, help="pixels (default 1400)")
    p.add_argument("--height", type=int, default=800, help="pixels (default 800)")
    p.add_argument("-o", "--output", default="flightlog-plot.png", help="PNG file (default flightlog-plot.png)")

    p = add("tail", cmd_tail, "follow a running run: a line per new durable segment; ends with the run")
    p.add_argument("run", help="run id")
    p.add_argument("--metric", "-m", default="E", help="metric to show (default E)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls (default 0.5)")
    p.add_argument("--for", dest="timeout_tail", type=float, help="stop following after this many seconds")

    p = add("recover", cmd_recover, "finalise crashed runs (merge segments, mark crashed)")
    p.add_argument(
        "file",
        nargs="?",
        metavar="FILE.parquet",
        help="finalise this output file of a bare FlightRecorder instead of the runs under --root",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        help="seconds without new files after which another host's running run counts as crashed",
    )

    p = add("compact", cmd_compact, "merge a flow's append-mode parts into one file")
    p.add_argument("flow", help="flow name")
    p.add_argument("--which", choices=["dev", "tuner"], default="dev", help="which parts (default dev)")

    p = add("demo", cmd_demo, "run the demo sweep, consolidate, compare and plot")
    p.add_argument("--quick", action="store_true", help="a small problem (seconds; for tests)")
    p.add_argument("--no-plot", action="store_true", help="skip the plot")
    p.add_argument("-o", "--output", help="plot file (default <root>/convergence.png)")
    p.add_argument("--n", type=int, help="problem dimension (default 100; quick 40)")
    p.add_argument("--kappa", type=float, help="condition number (default 5000; quick 200)")
    p.add_argument("--max-iter", type=int, help="iterations per run at most (default 120000; quick 5000)")

    p = add("report", cmd_report, "write runs' charts and comparison into one self-contained HTML file", True)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique prefixes)")
    p.add_argument("-o", "--output", help="HTML file (default <root>/report.html)")
    p.add_argument("--metric", "-m", action="append", help="only these metrics (repeatable, or a,b; default: all)")
    p.add_argument("--tol", type=_finite, help="compare: iterations and seconds until metric <= TOL")

    p = add("ui", cmd_ui, "serve a local web dashboard of the root (needs flightlog[ui]); prints its URL", True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=0, help="port (default 0: a free one, printed)")
    return parser


def _error_line(exc: BaseException) -> str:
    """One line describing ``exc`` for a person."""
    text = str(exc) or type(exc).__name__
    try:
        import duckdb

        if isinstance(exc, duckdb.Error):
            head = text.split("\n\n")[0]
            text = "; ".join(part.strip() for part in head.splitlines() if part.strip())
            if not re.match(r"^[A-Z][A-Za-z ]* Error:", text):
                text = f"{type(exc).__name__}: {text}"
            return f"bad SQL or query: {text}" if not isinstance(exc, duckdb.IOException) else text
    except ImportError:
        pass
    from ._errors import CatalogLockedError

    if isinstance(exc, CatalogLockedError):
        return f"catalog locked: {text} (retry, or raise --timeout)"
    if isinstance(exc, ImportError):
        if "flightlog[" in text:
            return text
        name = getattr(exc, "name", None) or ""
        extra = {"matplotlib": "plot", "rich": "cli", "pandas": "pandas", "pyarrow": "pandas"}.get(name.split(".")[0])
        hint = f": pip install 'flightlog[{extra}]'" if extra else ""
        return f"missing optional dependency {name or text}{hint}"
    if isinstance(exc, CLIError):
        return text
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    # An S3 error response quoted whole (XML with request ids): its code and message say it.
    text = _S3_ERROR_XML.sub(lambda m: f"{m.group(1)}: {m.group(2)}", text)
    return " ".join(text.split())


_S3_ERROR_XML = re.compile(
    r"(?:<\?xml[^>]*>\s*)?<Error>\s*<Code>(.*?)</Code>\s*<Message>(.*?)</Message>.*?</Error>", re.S
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flightlog`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("root", None), ("format", "table"), ("timeout", _DEFAULT_TIMEOUT)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if os.environ.get("FLIGHTLOG_DEBUG"):
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("flightlog: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `flightlog query ... | head`
        with contextlib.suppress(OSError):  # avoid a second error when Python flushes stdout at exit
            sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as exc:  # the CLI's contract: one line, no traceback
        print(f"flightlog: error: {_error_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

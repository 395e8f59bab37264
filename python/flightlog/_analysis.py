"""Analysis of runs: the runs table (:func:`runs_rows`), the comparison of runs
(:func:`compare_rows`: per run, or per group with bootstrap intervals), per-run
time-to-tolerance, outcomes, and the last row of a telemetry file.

A library module: bad input raises :class:`~flightlog._errors.InputError` (the message
says what was wrong; the CLI prints it as its one error line) and an unknown run
:class:`~flightlog._errors.RunNotFoundError`. The CLI, the demo, the plots, the report and
the dashboard use it; it imports none of them."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import FlightlogError, InputError, RunNotFoundError
from ._render import _json_value, emit

if TYPE_CHECKING:
    from .runs.discover import RunRef

_DEFAULT_TIMEOUT = 30.0

#: The environment variables naming the catalog (``--catalog``) and the DuckDB file (``--db``).
CATALOG_ENV = "FLIGHTLOG_CATALOG"
DB_ENV = "FLIGHTLOG_DB"


def _sql_text(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _parse_time(text: Any) -> _dt.datetime | None:
    """A manifest time (ISO text or TOML datetime) as an aware UTC datetime."""
    if type(text) is str and text:  # the common case first: 100,000 runs are listed at a time
        try:
            value = _dt.datetime.fromisoformat(text)  # Python 3.11+ reads a "Z" suffix itself
        except ValueError:
            try:
                value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
    elif isinstance(text, _dt.datetime):
        value = text
    elif isinstance(text, str) and text:
        try:
            value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if value.tzinfo is _dt.UTC:
        return value
    return value.replace(tzinfo=_dt.UTC) if value.tzinfo is None else value.astimezone(_dt.UTC)


def run_start_and_duration(
    manifest: Mapping[str, Any], status: str, now: _dt.datetime
) -> tuple[_dt.datetime | None, float | None]:
    """A run's start (its manifest's ``created_at``, aware UTC) and duration in seconds,
    rounded to the millisecond: ``finished_at - created_at``, or ``now - created_at`` while
    its ``status`` (by evidence) is ``running``; None for what the manifest does not say.
    The runs table of the CLI (:func:`runs_rows`) and of the dashboard both use it."""
    start = _parse_time(manifest.get("created_at"))
    end = _parse_time(manifest.get("finished_at"))
    duration = None
    if start is not None:
        if end is not None:
            duration = (end - start).total_seconds()
        elif status == "running":
            duration = (now - start).total_seconds()
    return start, round(duration, 3) if duration is not None else None


def _catalog(root: str | os.PathLike[str] | None, timeout: float = _DEFAULT_TIMEOUT, read_only: bool = True) -> Any:
    from .catalog import DuckDBManager

    return DuckDBManager(root, read_only=read_only, timeout=timeout)


@contextlib.contextmanager
def listing_catalog(root: str | os.PathLike[str] | Path | None) -> Iterator[Any]:
    """The root's own ``duckdb.db`` opened read-only without waiting for a writer, for the
    run listing's fast path (:func:`flightlog.runs.discover.scan_runs`'s ``db``); None when
    the root is in a bucket, has no catalog or it cannot be opened now (the listing then
    reads every manifest: the same answer, slower). Closed on exit."""
    from .runs.discover import _root

    base = _root(root)
    db = None
    if not isinstance(base, str) and (base / "duckdb.db").is_file():
        import duckdb

        from .catalog import DuckDBManager

        try:
            # timeout 0: a catalog held by a writer is not waited for (the files answer).
            db = DuckDBManager(base, read_only=True, timeout=0)
        except (FlightlogError, duckdb.Error, OSError, ValueError):
            db = None
    try:
        yield db
    finally:
        if db is not None:
            db.close()


def _needs_catalog(root: str) -> str:
    return (
        f"the object-store root {root} needs a catalog for this: pass --db FILE (a local DuckDB file) "
        f"or --catalog ducklake:postgres:<dsn> (or set ${DB_ENV} / ${CATALOG_ENV})"
    )


def _require_catalog(db: Any) -> None:
    if db.files_only:
        raise InputError(_needs_catalog(str(db.root)))
    if not db.exists():
        if db.catalog is not None:
            raise InputError(
                f"no flightlog tables in the catalog {db.location} yet; "
                f"run `flightlog consolidate --root {db.root} --catalog ...` first"
            )
        db_opt = "" if isinstance(db.root, Path) else f" --db {db.db_path}"
        raise InputError(f"no catalog at {db.location}; run `flightlog consolidate --root {db.root}{db_opt}` first")


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
    from .runs.discover import _is_object_root, _listed_and_unlisted, _root, _scan_object_root, _unlisted_ref

    base = _root(root)
    # Local: the runs the catalog answers for come as result rows (``listed``, oldest first,
    # final/min of ``metric`` included): no manifest read, no Python object but the row.
    listed: list[tuple[Any, ...]] = []
    if isinstance(base, str):
        runs = _scan_object_root(base, storage_options)
    else:
        db = db if db is not None else _catalog(root)
        listed, unlisted = _listed_and_unlisted(base, db, full=False, metric=metric)
        runs = [ref for ref in (_unlisted_ref(mpath, is_folder) for mpath, _, is_folder in unlisted) if ref]
    if run_ids is not None:
        wanted = set(run_ids)
        runs = [r for r in runs if r.run_id in wanted]
        listed = [r for r in listed if r[2] in wanted]
    if flow is not None:
        runs = [r for r in runs if r.manifest.get("flow_name") == flow]
        listed = [r for r in listed if r[3] == flow]
    if status:
        runs = [r for r in runs if r.status in status]
        listed = [r for r in listed if r[5] in status]
    if since is not None:
        runs = [r for r in runs if (t := _parse_time(r.manifest.get("created_at"))) is not None and t >= since]
        listed = [r for r in listed if (t := _parse_time(r[6])) is not None and t >= since]
    values: dict[str, tuple[Any, Any]] = {}
    if runs and (db is not None or not _is_object_root(_root(root))):
        db = db if db is not None else _catalog(root)
        with _without_unreadable_catalog(f"listed the runs from their manifests, without final_{metric}/min_{metric}"):
            cols = _telemetry_columns(db)
            if metric in cols and "iter" in cols:
                q = '"' + metric.replace('"', '""') + '"'
                # No bound parameter: DuckDB's Python binding imports pandas to bind one (~0.3-1 s).
                # A few runs: their ids inline (zone maps skip the others' rows); many: every run,
                # grouped once (a list of 100,000 ids compared per row takes seconds).
                wanted = {r.run_id for r in runs}
                where = ""
                if len(wanted) <= 2000:
                    where = f" WHERE run_id IN ({', '.join(_sql_text(i) for i in sorted(wanted))})"
                for rid, last, low in db.query(
                    f"SELECT run_id, arg_max({q}, iter) FILTER (WHERE {q} IS NOT NULL), min({q}) FROM telemetry"
                    f"{where} GROUP BY run_id"
                ).fetchall():
                    if rid in wanted:
                        values[rid] = (last, low)
    rows = []
    utc, iso = _dt.UTC, _dt.datetime.fromisoformat
    start: _dt.datetime | None
    end: _dt.datetime | None
    duration: float | None
    for _, _, rid, flow_name, mode, run_status, created, finished, rows_written, outcome, last, low in listed:
        try:  # what flightlog writes ("...Z" times), inline: 100,000 runs are listed at a time
            start, end = iso(created), iso(finished)
            if start.tzinfo is not utc or end.tzinfo is not utc:
                raise ValueError
        except (TypeError, ValueError):  # None, another offset, or another form
            start, end = _parse_time(created), _parse_time(finished)
        duration = round((end - start).total_seconds(), 3) if start is not None and end is not None else None
        rows.append([rid, flow_name, mode or "run", run_status, outcome, start, duration, rows_written, last, low])
    if runs:
        now = _dt.datetime.now(_dt.UTC)
        read = []
        for r in runs:
            m = r.manifest
            start, duration = run_start_and_duration(m, r.status, now)
            counts = m.get("counts") or {}
            last, low = values.get(r.run_id, (None, None))
            row = [r.run_id, m.get("flow_name"), r.mode, r.status, m.get("outcome"), start, duration]
            read.append((str(m.get("created_at", "")), r.run_id, [*row, counts.get("rows_written"), last, low]))
        # Merged into the listed rows (oldest first) in the one order of every listing.
        keyed = [(created or "", rid, row) for (_, _, rid, _, _, _, created, *_), row in zip(listed, rows, strict=True)]
        keyed += read
        keyed.sort(key=lambda k: (k[0], k[1]))
        rows = [k[2] for k in keyed]
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
    from .catalog import MetricError, check_metric

    cols = _telemetry_columns(db)
    try:
        check_metric(metric, cols)
    except MetricError as e:
        raise InputError(str(e)) from None
    missing = [c for c in need if c not in cols]
    if missing:
        raise InputError(f"telemetry has no {', '.join(missing)} column(s), needed to compare runs")


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
        raise InputError(f"--tol must be a finite number, got {tol!r}")
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        raise InputError("compare needs run ids (or --flow)")
    _check_metric(db, metric)
    info = _run_table(db, ids)
    missing = [r for r in ids if r not in info]
    if missing:
        raise RunNotFoundError(
            f"no run {missing[0]!r} in the catalog {db.location} (run `flightlog consolidate` first?)"
        )
    per_run = _per_run_tol(db, ids, metric, tol)
    outcomes = _outcomes(db, ids)
    if group_by is None:
        return _compare_per_run(db, ids, metric, tol, list(params or []), info, per_run, outcomes)
    groups, excluded, keys = _groups(ids, group_by, info, outcomes, include_failed)
    return _compare_groups(group_by.removeprefix("params."), tol, groups, excluded, keys, per_run)


def _compare_per_run(
    db: Any,
    ids: list[str],
    metric: str,
    tol: float | None,
    params: list[str],
    info: Mapping[str, Mapping[str, Any]],
    per_run: Mapping[str, Mapping[str, Any]],
    outcomes: Mapping[str, str],
) -> tuple[list[str], list[list[Any]]]:
    """:func:`compare_rows` without ``group_by``: one row a run."""
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


def _groups(
    ids: list[str],
    group_by: str,
    info: Mapping[str, Mapping[str, Any]],
    outcomes: Mapping[str, str],
    include_failed: bool,
) -> tuple[dict[str, list[str]], dict[str, int], dict[str, Any]]:
    """The runs of each group of :func:`compare_rows` (``group_by`` value as sorted-key JSON):
    ``(runs in the statistics, runs excluded, the group's value)``."""
    key_name = group_by.removeprefix("params.")
    groups: dict[str, list[str]] = {}
    excluded: dict[str, int] = {}
    keys: dict[str, Any] = {}
    for rid in ids:
        run = info[rid]
        if group_by.startswith("params."):
            k = _param_of(run.get("params"), key_name)
        elif group_by in run:
            k = run[group_by]
        else:
            raise InputError(f"--group-by {group_by!r}: use params.<name> or a runs column ({', '.join(run)})")
        ks = json.dumps(_json_value(k), sort_keys=True)
        keys[ks] = k
        groups.setdefault(ks, [])
        if not include_failed and (run.get("status") != "finished" or outcomes.get(rid) in EXCLUDED_OUTCOMES):
            excluded[ks] = excluded.get(ks, 0) + 1
        else:
            groups[ks].append(rid)
    return groups, excluded, keys


def _stats(vals: list[Any]) -> list[Any]:
    """``[mean, std, ci95_lo, ci95_hi]`` of the finite values (None for what cannot be told)."""
    import numpy as np

    v = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
    if not v:
        return [None, None, None, None]
    lo, hi = _bootstrap_ci(v)
    std = float(np.std(v, ddof=1)) if len(v) > 1 else None
    return [float(np.mean(v)), std, lo, hi]


def _compare_groups(
    key_name: str,
    tol: float | None,
    groups: Mapping[str, list[str]],
    excluded: Mapping[str, int],
    keys: Mapping[str, Any],
    per_run: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], list[list[Any]]]:
    """:func:`compare_rows` with ``group_by``: one row a group, sorted by the group's value."""
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
        row += _stats(finals) + _stats([m.get("best") for m in members])
        if tol is not None:
            reached = [m for m in members if m.get("iters_to_tol") is not None]
            its = _stats([m["iters_to_tol"] for m in reached])
            secs = _stats([m["time_to_tol_s"] for m in reached])
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


@contextlib.contextmanager
def _without_unreadable_catalog(did: str) -> Iterator[list[bool]]:
    """Lets a command that can answer from the run tree carry on when ``duckdb.db`` cannot
    be read by this DuckDB (another DuckDB line wrote it, or it is not a database): one
    line on stderr says what happened and what the command did instead. The yielded
    list holds ``True`` once that happened."""
    from .catalog import CatalogUnreadable

    fell_back: list[bool] = []
    try:
        yield fell_back
    except CatalogUnreadable as e:
        fell_back.append(True)
        emit(f"flightlog: catalog unreadable: {e.what}; {did} (`flightlog consolidate` rebuilds it)", sys.stderr)


# --------------------------------------------------------------------------- files of a run


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
        from .runs.layout import part_pattern

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

"""The quick look at a local root's run folders: which have nothing new, in one query.

``consolidate`` with nothing new must not cost a Python loop over every run folder and every
bookkeeping row (seconds at 100,000 runs). The Rust extension lists the root and ``lstat``s
each folder's manifest and data files on a few threads; DuckDB joins those signatures with
``runs``, ``_ingested_files`` and the listing; only the other folders' bookkeeping is loaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..runs.layout import FLOWS_DIR, MANIFEST_NAME
from .schema import _KINDS, _LISTING, FINAL_STATUSES
from .sql import _literal


def settled_folders(
    con: Any, root: Path
) -> tuple[list[tuple[str, bool, bool]] | None, dict[str, tuple[str, str | None, str, int | None]]]:
    """The entries right below a local root (the Rust extension lists them and ``lstat``s
    each folder's manifest and data files on a few threads) and, joined with the
    bookkeeping in one query, the run folders with nothing to do: what ``_Discovery._settled``
    decides for one folder, for all of them. A temporary table
    ``_flightlog_settled_paths`` then holds their manifest and data file paths.
    ``(None, {})`` when a name below the root is not UTF-8 (discovery lists it then)."""
    from .. import _core

    files = [MANIFEST_NAME, *(f"{kind}.parquet" for kind in _KINDS)]
    scan = _core.scan_run_folders(str(root), FLOWS_DIR, files)
    if scan is None:
        return None, {}
    con.register("_flightlog_folder_stream", scan.__arrow_c_stream__())
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _flightlog_folders AS SELECT * FROM _flightlog_folder_stream")
    finally:
        con.unregister("_flightlog_folder_stream")
    folders = con.execute("SELECT name, is_dir, is_symlink FROM _flightlog_folders ORDER BY name").fetchall()
    final = ", ".join(_literal(s) for s in sorted(FINAL_STATUSES))
    joins, checks = [], []
    for k, kind in enumerate(_KINDS, start=1):
        joins.append(f"JOIN _ingested_files d{k} ON d{k}.path = f.name || '/{kind}.parquet'")
        # The same size and mtime as when ingested (seconds as a double, within 1 us: as _settled).
        checks.append(f"f.regular_{k} AND d{k}.size = f.size_{k} AND abs(d{k}.mtime - f.mtime_ns_{k} / 1e9) <= 1e-6")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _flightlog_settled AS "
        "SELECT f.name, r.manifest_path, r.run_id, r.flow_name, r.manifest_status, r.rows_written "
        f"FROM _flightlog_folders f JOIN runs r ON r.manifest_path = f.name || '/{MANIFEST_NAME}' "
        f"SEMI JOIN {_LISTING} l ON l.manifest_path = r.manifest_path {' '.join(joins)} "
        "WHERE f.is_dir AND NOT f.is_symlink AND f.regular_0 AND f.mtime_ns_0 = r.manifest_mtime_ns "
        "AND f.size_0 = r.manifest_size AND r.status IS DISTINCT FROM 'running' "
        f"AND r.manifest_status IN ({final}) AND {' AND '.join(checks)}"
    )
    settled = {
        name: (run_id, flow, status, rows)
        for name, run_id, flow, status, rows in con.execute(
            "SELECT name, run_id, flow_name, manifest_status, rows_written FROM _flightlog_settled"
        ).fetchall()
    }
    kinds = " UNION ALL ".join(f"SELECT name || '/{kind}.parquet' FROM _flightlog_settled" for kind in _KINDS)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _flightlog_settled_paths AS "
        f"SELECT manifest_path AS path FROM _flightlog_settled UNION ALL {kinds}"
    )
    return folders, settled


def top_entries(top: str) -> list[tuple[str, bool, bool]]:
    """(name, is a folder, is a symlink) of the entries right below a local root, sorted by
    name, but hidden ones and the flows folder (an entry that cannot be examined is left out)."""
    found = []
    with os.scandir(top) as it:
        for e in it:
            if e.name == FLOWS_DIR or e.name.startswith("."):
                continue
            try:
                found.append((e.name, e.is_dir(), e.is_symlink()))
            except OSError:
                continue
    found.sort()
    return found

"""``flightlog tail``: follow a run as its files are published."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from typing import Any

from .._analysis import (
    _last_row,
    _segment_files,
    listing_catalog,
)
from .._render import _cell, _csv_value, _json_value
from .._render import emit as _emit
from ..runs.discover import RunRef, _object_status, find_run
from ..runs.layout import (
    SEGMENT_SUFFIX,
    SEGMENTS_DIR,
    TELEMETRY_FILE,
    TELEMETRY_SEGMENT_PREFIX,
    part_pattern,
    parts_dir_name,
)
from ._common import AddCommand


class _TailSource:
    """What ``tail`` polls: a run's folder on disk, or its objects in a bucket."""

    def __init__(self, ref: RunRef) -> None:
        self.ref = ref
        self._con: Any = None
        if ref.tree is not None:  # DuckDB reads the last rows over httpfs: set it up now, errors up front
            from .._s3 import duckdb_secret_sql, load_extensions, storage_options
            from ..runs.views import duckdb_connect

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
        from ..runs.manifest import read_manifest
        from ..runs.status import run_status

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
            seg = f"{folder}/{SEGMENTS_DIR}"
            names = sorted(
                n for n in tree.names(seg) if n.startswith(TELEMETRY_SEGMENT_PREFIX) and n.endswith(SEGMENT_SUFFIX)
            )
            out = [(n, f"{seg}/{n}") for n in names]
            if tree.exists(f"{folder}/{TELEMETRY_FILE}"):
                out.append((TELEMETRY_FILE, f"{folder}/{TELEMETRY_FILE}"))
            return out
        pat = part_pattern(ref.run_id)
        parts = f"{folder}/{parts_dir_name(ref.mode, 'telemetry')}"
        return [(n, f"{parts}/{n}") for n in sorted(tree.names(parts)) if pat.match(n)]

    def rows(self, handle: Any) -> int:
        from .. import _core

        tree = self.ref.tree
        if tree is None:
            return int(_core.parquet_rows(str(handle)))
        return int(_core.parquet_rows(tree.key(handle), store=tree.store))

    def last_row(self, handle: Any, metric: str) -> dict[str, Any]:
        tree = self.ref.tree
        return _last_row(handle if tree is None else tree.url(handle), metric, self._con)


def cmd_tail(args: argparse.Namespace) -> int:
    with listing_catalog(args.root) as listing:
        ref = find_run(args.root, args.run, db=listing)
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
            if name == TELEMETRY_FILE:  # the merged file holds every segment
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


def add_parsers(add: AddCommand) -> None:
    """Registers the subcommands of this module (``add`` is :func:`~flightlog.cli._parser.build_parser`'s)."""
    p = add("tail", cmd_tail, "follow a running run: a line per new durable segment; ends with the run")
    p.add_argument("run", help="run id")
    p.add_argument("--metric", "-m", default="E", help="metric to show (default E)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls (default 0.5)")
    p.add_argument("--for", dest="timeout_tail", type=float, help="stop following after this many seconds")

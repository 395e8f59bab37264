"""Listing part files and reading Parquet footers (row counts, flightlog key-value metadata, schema)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..runs.layout import PART_RE, SEGMENT_ROWS_KEY, SEGMENTS_KEY
from ..runs.views import ObjectPath, duckdb_connect
from .sql import _literal

_PART_RE = PART_RE  # the layout owner's pattern (runs.layout)


def _list_dir(folder: Path | ObjectPath) -> list[str]:
    if isinstance(folder, ObjectPath):
        return [e.name for e in folder.tree.scandir(folder)]
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _list_parts(folder: Path | ObjectPath) -> list[str]:
    """Published part files in ``folder`` (temp files start with a dot and never match)."""
    return [n for n in _list_dir(folder) if PART_RE.match(n)]


def _part_run(name: str) -> str | None:
    m = _PART_RE.match(name)
    return m.group("run_id") if m else None


_KV_KEYS = ("schema_version", SEGMENTS_KEY, SEGMENT_ROWS_KEY, "flightlog.run_id")


def _read_kv(files: Sequence[Any], connect: Callable[[], Any] = duckdb_connect) -> dict[str, dict[str, str]]:
    """The flightlog key-value metadata of Parquet files (in-memory DuckDB from ``connect``; no catalog)."""
    con = connect()
    try:
        names = [str(f) for f in files]
        out: dict[str, dict[str, str]] = {n: {} for n in names}
        keys = ", ".join(f"{_literal(k)}::BLOB" for k in _KV_KEYS)
        for fname, key, value in con.execute(
            f"SELECT file_name, decode(key), decode(value) FROM parquet_kv_metadata(?) WHERE key IN ({keys})",
            [names],
        ).fetchall():
            out.setdefault(fname, {})[key] = value
        return out
    finally:
        con.close()


def _read_file_meta(
    files: Sequence[Any], connect: Callable[[], Any] = duckdb_connect
) -> dict[str, tuple[int, dict[str, str], dict[str, str]]]:
    """(rows, flightlog KV, {column: DuckDB type}) of Parquet files, from their footers."""
    names = [str(f) for f in files]
    rows: dict[str, int]
    if all(isinstance(f, Path) for f in files):
        # Local files: row count and key-value metadata from one footer read each, on a few
        # threads (DuckDB's parquet_file_metadata + parquet_kv_metadata read each footer twice,
        # one file at a time: most of a consolidation of 100,000 tiny runs' metadata pass).
        from .. import _core

        footers = _core.parquet_footers(names)
        rows = {n: r for n, (r, _) in zip(names, footers, strict=True)}
        kv = {n: {k: v for k, v in pairs if k in _KV_KEYS} for n, (_, pairs) in zip(names, footers, strict=True)}
    else:
        kv = _read_kv(files, connect)
    con = connect()
    try:
        if not all(isinstance(f, Path) for f in files):
            rows = dict(con.execute("SELECT file_name, num_rows FROM parquet_file_metadata(?)", [names]).fetchall())
        schema: dict[str, list[tuple[str, str | None, int | None]]] = {n: [] for n in names}
        for fname, col, dtype, children in con.execute(
            "SELECT file_name, name, duckdb_type, num_children FROM parquet_schema(?)", [names]
        ).fetchall():
            schema.setdefault(fname, []).append((col, dtype, children))
        out = {}
        for n in names:
            elements = schema.get(n, [])
            if n not in rows or not elements:
                raise ValueError(f"{n}: no Parquet footer")
            nested = any((c or 0) > 0 for _, _, c in elements[1:])
            if nested or any(t is None for _, t, _ in elements[1:]):
                described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [n]).fetchall()
                columns = {r[0]: str(r[1]) for r in described}
            else:
                columns = {c: str(t) for c, t, _ in elements[1:]}
            out[n] = (int(rows[n]), kv.get(n, {}), columns)
        return out
    finally:
        con.close()

"""Reads of running runs straight from their durable files (not the catalog)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..runs.ids import DEFAULT_RUN_PREFIX
from ..runs.layout import MANIFEST_NAME, SEGMENT_ROWS_KEY, SEGMENTS_DIR, SEGMENTS_KEY, parts_dir_name
from ..runs.manifest import parse_manifest
from ..runs.views import TreePath
from .base import _catalog_io, _ManagerBase
from .parquet import _list_dir, _list_parts, _part_run, _read_kv
from .report import Result
from .schema import _FILE_COL, _KINDS
from .sql import _duckdb, _literal, _rows_source, _short, _sleep_backoff

#: A Parquet file to read, with the row range [lo, hi) of the run in it (None, None: all of it).
_FileRows = tuple[TreePath, int | None, int | None]


class _Live(_ManagerBase):
    """``live()``: a run's durable rows so far."""

    @_catalog_io
    def live(self, run_id: str, kind: str = "telemetry") -> Result:
        """What a run has made durable so far, read straight from its files (not the catalog).

        For a run folder: ``telemetry.parquet`` (if present) minus the segments it
        lists, plus ``segments/telemetry-*.parquet``; for a dev/tuner run: its parts,
        and its rows in the compacted file. The file list is taken so that a merge
        or compaction happening at the same moment is never counted twice (a file
        that vanishes mid-read makes the read start again). ``kind="events"``
        reads the events instead. Works for finished runs too.

        Raises:
            ValueError: no run ``run_id`` under the root, or a bad ``kind``.
        """
        self._check_open()
        if kind not in _KINDS:
            raise ValueError(f"kind must be 'telemetry' or 'events', got {kind!r}")
        duckdb = _duckdb()
        self._tree.refresh()
        where = self._locate(run_id)
        deadline = time.monotonic() + max(self.timeout or 0, 5.0)
        for attempt in itertools.count():
            if attempt:
                self._tree.refresh()
            mem = self._tree.connect(private=True)
            try:
                files = self._live_files(where, run_id, kind)
                if not files:
                    mem.execute("CREATE TABLE memory.main.live AS SELECT NULL::VARCHAR AS run_id WHERE false")
                    return Result(mem, "memory.main.live")
                mapping = json.dumps(
                    [{"file": str(f), "lo": lo, "hi": hi, "ord": i} for i, (f, lo, hi) in enumerate(files)]
                )
                spec = {"file": "VARCHAR", "lo": "BIGINT", "hi": "BIGINT", "ord": "BIGINT"}
                mem.execute(
                    f"CREATE TABLE memory.main.live AS SELECT p.* EXCLUDE ({_FILE_COL}, file_row_number) "
                    f"FROM read_parquet(?, union_by_name = true, filename = {_literal(_FILE_COL)}, "
                    f"file_row_number = true) p JOIN {_rows_source(spec)} m ON p.{_FILE_COL} = m.file "
                    "AND (m.lo IS NULL OR (p.file_row_number >= m.lo AND p.file_row_number < m.hi)) "
                    "ORDER BY m.ord, p.file_row_number",
                    [sorted({str(f) for f, _, _ in files}), mapping],
                )
                return Result(mem, "memory.main.live")
            except (duckdb.Error, OSError, KeyError) as e:
                # A file merged or compacted away between listing and reading: list again.
                mem.close()
                if not _sleep_backoff(attempt, deadline):
                    raise ValueError(f"could not read the durable files of run {run_id!r}: {_short(e)}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _locate(self, run_id: str) -> tuple[str, TreePath, Mapping[str, Any] | None]:
        """("folder", run folder, manifest) or ("parts", flow folder, manifest) of a run."""
        from .._names import validate_name

        validate_name("run_id", run_id)
        # The default <run_prefix><run_id> and a bare <run_id> first, then any folder named
        # <something><run_id> (a run recorded with another run_prefix): the manifest decides.
        candidates = [self.root / f"{DEFAULT_RUN_PREFIX}{run_id}", self.root / run_id]
        if self.root.is_dir():
            candidates += sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.endswith(run_id))
        for folder in candidates:
            manifest = folder / MANIFEST_NAME
            if not manifest.is_file():
                continue
            with contextlib.suppress(OSError, ValueError):  # ManifestError is a ValueError
                data = parse_manifest(self._tree.read_bytes(manifest), str(manifest))
                if data.get("run_id") == run_id:
                    return "folder", folder, data
        flows = self.root / "flows"
        if flows.is_dir():
            for flow_dir in sorted(p for p in flows.iterdir() if p.is_dir()):
                manifest = flow_dir / "runs" / f"{run_id}.toml"
                if manifest.exists():
                    flow_data: dict[str, Any] | None = None
                    with contextlib.suppress(OSError, ValueError):
                        flow_data = parse_manifest(self._tree.read_bytes(manifest), str(manifest))
                    return "parts", flow_dir, flow_data
            for flow_dir in sorted(p for p in flows.iterdir() if p.is_dir()):
                for mode in ("dev", "tuner"):
                    if any(_part_run(n) == run_id for n in _list_parts(flow_dir / parts_dir_name(mode, "telemetry"))):
                        return "parts", flow_dir, None
        raise ValueError(f"no run {run_id!r} under {self.root}")

    def _live_files(
        self, where: tuple[str, TreePath, Mapping[str, Any] | None], run_id: str, kind: str
    ) -> list[_FileRows]:
        how, base, manifest = where
        if how == "folder":
            seg_dir = base / SEGMENTS_DIR
            segments = [n for n in _list_dir(seg_dir) if n.startswith(f"{kind}-") and n.endswith(".parquet")]
            final = base / f"{kind}.parquet"
            files: list[_FileRows] = []
            listed: set[str] = set()
            final_id = None
            if final.exists() and self._tree.unreadable(final) is None:
                kv = _read_kv([final], self._tree.connect)[str(final)]
                listed = set(json.loads(kv.get(SEGMENTS_KEY, "[]")))
                files.append((final, None, None))
                final_id = _file_id(final)
            # A close publishes a single segment as the final file by linking it there,
            # then removing the segment: between the two, both names are one file, read once.
            files += [
                (seg_dir / n, None, None)
                for n in segments
                if n not in listed and (final_id is None or _file_id(seg_dir / n) != final_id)
            ]
            return self._readable(files)
        modes = [manifest["mode"]] if manifest and manifest.get("mode") in ("dev", "tuner") else ["dev", "tuner"]
        files = []
        for mode in modes:
            parts_dir = base / f"{mode}_{kind}"
            parts = [n for n in _list_parts(parts_dir) if _part_run(n) == run_id]
            compacted = base / f"{mode}_{kind}.parquet"
            listed = set()
            if compacted.exists() and self._tree.unreadable(compacted) is None:
                kv = _read_kv([compacted], self._tree.connect)[str(compacted)]
                names = json.loads(kv.get(SEGMENTS_KEY, "[]"))
                rows = json.loads(kv.get(SEGMENT_ROWS_KEY, "null"))
                listed = set(names)
                if any(_part_run(n) == run_id for n in names):
                    if not isinstance(rows, list) or len(rows) != len(names):
                        raise ValueError(f"{compacted} lacks flightlog.segment_rows; cannot split it into parts")
                    offset = 0
                    for name, n in zip(names, rows, strict=True):
                        if _part_run(name) == run_id:
                            files.append((compacted, offset, offset + int(n)))
                        offset += int(n)
            files += [(parts_dir / n, None, None) for n in parts if n not in listed]
        return self._readable(files)

    def _readable(self, files: list[_FileRows]) -> list[_FileRows]:
        """``files`` without those that must not be opened (FIFOs, devices, links): DuckDB
        would block on a FIFO, and a link may bring in another run's rows."""
        return [f for f in files if self._tree.unreadable(f[0]) is None]


def _file_id(path: TreePath) -> tuple[int, int] | None:
    """(device, inode) of a local file, to tell two names of one file; None for an
    object-store path (a close there always writes a new merged file) or a file gone."""
    if not isinstance(path, Path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)

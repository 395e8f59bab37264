"""Compaction of a flow's append-mode (dev/tuner) parts into one file.

:func:`compact` merges a flow's published parts into one file. Crash safety: the
merged file is published atomically and lists the parts it holds
(``flightlog.segments``); parts are deleted only after it is durable, and a part
still present that the merged file lists is a leftover, deleted by the next
``compact`` or ``recover`` (readers must skip such parts). Parts published while
compaction runs are not in its snapshot and are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from .._names import validate_name
from .._regular import problem
from .ids import ROOT_ENV, file_lock, flow_paths, resolve_root
from .layout import PART_RE, SEGMENT_ROWS_KEY, SEGMENTS_KEY, compacted_name
from .manifest import fsync_dir, read_manifest
from .status import _TEMP_MARKER, _core, _scandir, run_status

__all__ = ["compact"]

_PART_RE = PART_RE
_SEGMENTS_KEY = SEGMENTS_KEY
_SEGMENT_ROWS_KEY = SEGMENT_ROWS_KEY


def _kv(path: Path) -> dict[str, str]:
    return dict(_core().parquet_kv(str(path)))


def _listed(compacted: Path) -> list[tuple[str, int | None]]:
    """(name, rows) of the parts a compacted file lists."""
    if not compacted.exists():
        return []
    kv = _kv(compacted)
    names = json.loads(kv.get(_SEGMENTS_KEY, "[]"))
    rows = json.loads(kv.get(_SEGMENT_ROWS_KEY, "null")) or [None] * len(names)
    return list(zip(names, rows, strict=False))


def _remove_listed_leftovers(parts_dir: Path, compacted: Path) -> int:
    """Delete parts that ``compacted`` already holds (a compaction died before
    deleting them). A part is deleted only if it is older than the compacted file
    and has the row count listed for it: a part that merely has a listed name
    (a run id reused after its runs/ manifest was removed) is kept."""
    listed = _listed(compacted)
    if not listed:
        return 0
    compacted_mtime = compacted.stat().st_mtime_ns
    removed = 0
    for name, rows in listed:
        if not _PART_RE.match(name):
            continue  # e.g. the previous compacted file itself
        part = parts_dir / name
        try:
            if part.stat().st_mtime_ns > compacted_mtime:
                continue
            if rows is not None and int(_core().parquet_rows(str(part))) != int(rows):
                continue
            os.unlink(part)
            removed += 1
        except FileNotFoundError:
            continue
    if removed:
        fsync_dir(parts_dir)
    return removed


def _schema_json(kv: Mapping[str, str]) -> Any:
    text = kv.get("flightlog.schema")
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _running_run_ids(runs_dir: Path) -> set[str]:
    """Run ids of the flow's dev/tuner runs still running by evidence: their
    recorders still own their parts and merge nothing, but must not see them vanish."""
    running = set()
    for e in _scandir(runs_dir):
        if not e.name.endswith(".toml") or e.name.startswith("."):
            continue
        try:
            manifest = read_manifest(e.path)
        except Exception:
            continue
        if run_status(manifest, e.path) == "running":
            running.add(str(manifest.get("run_id", e.name[: -len(".toml")])))
    return running


def _compact_kind(parts_dir: Path, out: Path, running: Collection[str] = ()) -> dict[str, Any]:
    result: dict[str, Any] = {"path": str(out), "parts_merged": 0, "rows": 0, "bytes": 0, "leftovers_removed": 0}
    result["leftovers_removed"] = _remove_listed_leftovers(parts_dir, out)
    skipped: list[dict[str, str]] = []
    parts = []
    for e in _scandir(parts_dir):
        m = _PART_RE.match(e.name)
        if m is None:
            continue
        try:
            # A symbolic link (perhaps to another run's file: its rows would be merged
            # and counted twice) or a FIFO is reported, never merged or opened.
            why = problem(e.path)
        except FileNotFoundError:
            continue
        if why is not None:
            skipped.append({"path": e.path, "reason": why})
            continue
        if m.group("run_id") in running:
            skipped.append({"path": e.path, "reason": "its run is still running; compact again after it ends"})
            continue
        parts.append(Path(e.path))
    parts.sort()
    if parts:
        reference = _schema_json(_kv(out)) if out.exists() else _schema_json(_kv(parts[0]))
        chosen = []
        for p in parts:
            if _schema_json(_kv(p)) == reference:
                chosen.append(p)
            else:
                skipped.append({"path": str(p), "reason": "its schema differs from the compacted file's"})
        if chosen:
            inputs = ([out] if out.exists() else []) + chosen
            merged = dict(_core().merge_parquet(str(out), [str(p) for p in inputs]))
            # The merged file is durable and lists `chosen`: only now delete them.
            for p in chosen:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            fsync_dir(parts_dir)
            result.update(parts_merged=len(chosen), rows=int(merged["rows"]), bytes=int(merged["bytes"]))
    if not result["parts_merged"] and out.exists():
        result.update(rows=int(_core().parquet_rows(str(out))), bytes=out.stat().st_size)
    result["skipped"] = skipped
    return result


def _sweep_compaction_temps(flow: Path, which: str) -> int:
    """Remove temp files of a compaction that died (call with the compact lock held)."""
    removed = 0
    for e in _scandir(flow):
        if e.name.startswith(
            tuple(f".{compacted_name(which, kind)}{_TEMP_MARKER}" for kind in ("telemetry", "events"))
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)
                removed += 1
    if removed:
        fsync_dir(flow)
    return removed


def compact(base_path: str | os.PathLike[str] | None, flow_name: str, which: str = "dev") -> dict[str, Any]:
    """Merge a flow's published ``which`` parts (``"dev"`` or ``"tuner"``) into
    ``flows/<flow>/<which>_telemetry.parquet`` (and events into
    ``<which>_events.parquet``), together with what an earlier compaction merged.

    Returns ``{"flow_name", "which", "telemetry": {...}, "events": {...}}``, each
    with ``path``, ``parts_merged``, ``rows`` (in the compacted file), ``bytes``,
    ``leftovers_removed`` and ``skipped`` (parts whose schema differs, with the
    reason; they stay as they are). One compaction per flow at a time (file
    lock); see the module doc for crash safety.
    """
    validate_name("flow_name", flow_name)
    from .._s3 import is_object_url

    if is_object_url(base_path if base_path is not None else os.environ.get(ROOT_ENV)):
        # Object stores cannot replace a compacted file in place (publishing is
        # create-only), and DuckDB/DuckLake read the parts where they are.
        raise ValueError(
            "compact works on local roots; on an object store the parts stay as they are "
            "(consolidate them with DuckDBManager, which reads them in place)"
        )
    if which not in ("dev", "tuner"):
        raise ValueError(f"which must be 'dev' or 'tuner', got {which!r}")
    root = resolve_root(base_path, create=False)
    paths = flow_paths(root, flow_name, which)
    if not paths["flow"].is_dir():
        raise FileNotFoundError(f"no flow {flow_name!r} under {root} ({paths['flow']} does not exist)")
    report: dict[str, Any] = {"flow_name": flow_name, "which": which}
    with file_lock(paths["flow"] / ".compact.lock"):
        report["temp_files_removed"] = _sweep_compaction_temps(paths["flow"], which)
        running = _running_run_ids(paths["runs"])
        for kind in ("telemetry", "events"):
            report[kind] = _compact_kind(paths[kind], paths[f"compacted_{kind}"], running)
    return report

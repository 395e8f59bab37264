"""A run's status by evidence.

Status by evidence (:func:`run_status`): a manifest that says ``running`` is
believed only while its process can be alive:

- same host (and same boot): the pid must exist, not be a zombie, and (Linux)
  have the start time recorded in the manifest, so a reused pid does not keep a
  dead run "running";
- another host: some file of the run (manifest, segment, part, temp file) must
  have changed within ``stale_after`` seconds.

Otherwise the run is ``crashed`` (:func:`crashed_manifest` says so in its manifest;
:mod:`flightlog.runs.recover` finalises such runs).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .layout import MANIFEST_NAME, RUNS_DIR, SEGMENTS_DIR, TEMP_MARKER, part_pattern, part_temp_prefix, parts_dir_name
from .manifest import boot_id, process_start_ticks

__all__ = [
    "DEFAULT_STALE_AFTER",
    "crashed_manifest",
    "part_pattern",
    "process_alive",
    "run_status",
    "status_by_evidence",
]

#: Seconds without any new file after which a ``running`` run of another host counts as crashed.
DEFAULT_STALE_AFTER = 600.0

_TEMP_MARKER = TEMP_MARKER


def _core() -> Any:
    from .. import _core

    return _core


def _kv(path: Path) -> dict[str, str]:
    return dict(_core().parquet_kv(str(path)))


# --------------------------------------------------------------------------- evidence


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] in (b"Z", b"X")
    except (OSError, ValueError):
        return False


def process_alive(prov: Mapping[str, Any]) -> bool | None:
    """Whether the process described by a manifest's ``provenance`` is alive:
    ``True``/``False`` on the same host, ``None`` when this host cannot tell
    (another host, no pid)."""
    host, pid = prov.get("host"), prov.get("pid")
    if host != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if os.name == "nt":
        # os.kill(pid, 0) is TerminateProcess on Windows: never probe there.
        # Unknown, so the status rests on the files' age (docs/PLATFORMS.md).
        return None
    recorded_boot, this_boot = prov.get("boot_id"), boot_id()
    if recorded_boot and this_boot and recorded_boot != this_boot:
        return False  # the host rebooted since
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else
        except OSError:
            return None
        if _zombie(pid):
            return False
    ticks = prov.get("pid_start_ticks")
    if isinstance(ticks, int):
        current = process_start_ticks(pid)
        if current is not None and current != ticks:
            return False  # the pid was reused
    return True


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _newest(paths: list[Path]) -> float | None:
    times = [t for t in map(_mtime, paths) if t is not None]
    return max(times) if times else None


def _scandir(d: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(d) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _run_files_for_evidence(manifest: Mapping[str, Any], where: Path) -> list[Path]:
    mode = manifest.get("mode", "run")
    if mode == "run":
        files = [where, where / MANIFEST_NAME, where / SEGMENTS_DIR]
        files += [Path(e.path) for e in _scandir(where / SEGMENTS_DIR)]
        return files
    flow, manifest_file = _flow_locations(manifest, where)
    run_id = str(manifest.get("run_id", ""))
    pat = part_pattern(run_id)
    files = [manifest_file]
    for sub in (parts_dir_name(mode, "telemetry"), parts_dir_name(mode, "events")):
        for e in _scandir(flow / sub):
            name = e.name
            if pat.match(name) or (name.startswith(part_temp_prefix(run_id)) and _TEMP_MARKER in name):
                files.append(Path(e.path))
    return files


def _flow_locations(manifest: Mapping[str, Any], where: Path) -> tuple[Path, Path]:
    """(flow folder, per-run manifest file) of a dev/tuner run given either."""
    if where.suffix == ".toml" or where.is_file():
        return where.parent.parent, where
    return where, where / RUNS_DIR / f"{manifest.get('run_id')}.toml"


def run_status(
    manifest: Mapping[str, Any],
    run_dir: str | os.PathLike[str],
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
    now: float | None = None,
) -> str:
    """The status of a run by evidence: the manifest's ``status``, except that
    ``running`` becomes ``crashed`` when its process is gone (see the module doc).

    ``run_dir`` is the run folder (mode ``"run"``), or for dev/tuner runs the
    per-run manifest file ``flows/<flow>/runs/<run_id>.toml`` or the flow folder.
    A manifest without a status reads as ``"unknown"``.
    """
    return status_by_evidence(
        manifest, lambda: _newest(_run_files_for_evidence(manifest, Path(run_dir))), stale_after=stale_after, now=now
    )


def status_by_evidence(
    manifest: Mapping[str, Any],
    newest: Callable[[], float | None],
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
    now: float | None = None,
) -> str:
    """:func:`run_status` for any storage: ``newest()`` gives the time (seconds since
    the epoch) of the run's newest file or object, or ``None`` if it has none; it is
    only asked when the process cannot be (another host, no pid)."""
    status = manifest.get("status")
    if status != "running":
        return str(status) if status else "unknown"
    prov = manifest.get("provenance") or {}
    alive = process_alive(prov) if isinstance(prov, Mapping) else None
    if alive is not None:
        return "running" if alive else "crashed"
    t = newest()
    if t is None:
        return "crashed"
    return "crashed" if (time.time() if now is None else now) - t > stale_after else "running"


def crashed_manifest(
    manifest: Mapping[str, Any], *, finished_at: str, telemetry_rows: int, event_rows: int
) -> dict[str, Any]:
    """The manifest of a run found dead: ``crashed``, when it last wrote, what was recovered."""
    m = dict(manifest)
    m["status"] = "crashed"
    m["finished_at"] = finished_at
    m.setdefault("error_message", _died_message(manifest))
    counts = dict(m.get("counts") or {})
    counts["rows_written"] = telemetry_rows
    counts["events"] = event_rows
    m["counts"] = counts
    return m


def _died_message(manifest: Mapping[str, Any]) -> str:
    prov = manifest.get("provenance") or {}
    who = f"process {prov.get('pid', '?')} on {prov.get('host', '?')}"
    return f"{who} ended without closing the run; finalised by flightlog.recover"

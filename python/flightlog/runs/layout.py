"""The on-disk layout of a root, named once.

The names of a recording's files come from the core's ``OutputLayout`` and its
constants, exported by ``_core`` (never spelled again in Python); the names the
core does not know (the manifest, the run-folder prefix, the flows folder) are
defined here, the one Python owner. A root::

    <root>/<DEFAULT_RUN_PREFIX><run_id>/     a run folder (mode "run")
        MANIFEST_NAME, TELEMETRY_FILE, EVENTS_FILE
        SEGMENTS_DIR/<TELEMETRY_SEGMENT_PREFIX|EVENTS_SEGMENT_PREFIX><digits><SEGMENT_SUFFIX>
        RUN_LOCK_NAME, SPOOL_DIR_NAME/       while a recorder holds the run
    <root>/FLOWS_DIR/<flow>/                 dev/tuner runs of a flow
        MANIFEST_NAME, RUNS_DIR/<run_id>.toml
        <mode>_telemetry/, <mode>_events/    parts: part_name(run_id, seq)
        <mode>_telemetry.parquet, ...        compacted parts

A file being published is a dot-name containing ``TEMP_MARKER`` beside its final name.
"""

from __future__ import annotations

import re

from .. import _core

__all__ = [
    "DEFAULT_RUN_PREFIX",
    "EVENTS_FILE",
    "EVENTS_SEGMENT_PREFIX",
    "FLOWS_DIR",
    "MANIFEST_NAME",
    "PART_RE",
    "RUNS_DIR",
    "RUN_MANIFEST_SUFFIX",
    "RUN_LOCK_NAME",
    "SEGMENTS_DIR",
    "SEGMENTS_KEY",
    "SEGMENT_ROWS_KEY",
    "SEGMENT_SUFFIX",
    "SPOOL_DIR_NAME",
    "SPOOL_META_NAME",
    "TELEMETRY_FILE",
    "TELEMETRY_SEGMENT_PREFIX",
    "TEMP_MARKER",
    "is_temp_name",
    "compacted_name",
    "part_lock_name",
    "part_pattern",
    "parts_dir_name",
    "part_temp_prefix",
]

# -- from the core (OutputLayout, atomic_file, claim, spool, parquet_io)
SEGMENTS_DIR: str = _core.SEGMENTS_DIR
TELEMETRY_SEGMENT_PREFIX: str = _core.TELEMETRY_SEGMENT_PREFIX
EVENTS_SEGMENT_PREFIX: str = _core.EVENTS_SEGMENT_PREFIX
TELEMETRY_FILE: str = _core.TELEMETRY_FILE
EVENTS_FILE: str = _core.EVENTS_FILE
TEMP_MARKER: str = _core.TEMP_MARKER
RUN_LOCK_NAME: str = _core.RUN_LOCK_NAME
SPOOL_DIR_NAME: str = _core.SPOOL_DIR_NAME
SPOOL_META_NAME: str = _core.SPOOL_META_NAME
SEGMENT_SUFFIX: str = _core.SEGMENT_SUFFIX
#: Parquet key-value metadata of a merged file: the segments (parts) it holds, and their rows.
SEGMENTS_KEY: str = _core.SEGMENTS_KEY
SEGMENT_ROWS_KEY: str = _core.SEGMENT_ROWS_KEY
_PART_PREFIX: str = _core.PART_PREFIX
_PART_RUN_ID_END: str = _core.PART_RUN_ID_END
_DIGITS = rf"\d{{{int(_core.SEGMENT_MIN_DIGITS)},}}"
_SUFFIX = re.escape(_core.SEGMENT_SUFFIX)

# -- Python's own: the core writes no manifests and makes no run folders
#: The manifest of a run folder, of a flow and (as ``<run_id>.toml``) of a dev/tuner run.
MANIFEST_NAME = "manifest.toml"
#: Run folders are ``<prefix><run_id>``; ``TelemetryManager(run_prefix=...)`` may change it.
DEFAULT_RUN_PREFIX = "fda_run_"
FLOWS_DIR = "flows"
RUNS_DIR = "runs"
#: Suffix of a dev/tuner run's manifest file in ``RUNS_DIR`` (``<run_id>.toml``).
RUN_MANIFEST_SUFFIX = ".toml"

#: Any published part: ``part-<run_id>-<digits>.parquet`` (groups ``run_id``, ``seq``).
PART_RE: re.Pattern[str] = re.compile(
    rf"^{re.escape(_PART_PREFIX)}(?P<run_id>.+){re.escape(_PART_RUN_ID_END)}(?P<seq>{_DIGITS}){_SUFFIX}$"
)


def part_pattern(run_id: str) -> re.Pattern[str]:
    """Regex matching the published part files of ``run_id`` (``part-<run_id>-NNNNNN.parquet``)."""
    return re.compile(rf"^{re.escape(_PART_PREFIX + run_id + _PART_RUN_ID_END)}{_DIGITS}{_SUFFIX}$")


def part_temp_prefix(run_id: str) -> str:
    """How the temp files of ``run_id``'s parts begin (``.part-<run_id>-``); they contain :data:`TEMP_MARKER`."""
    return f".{_PART_PREFIX}{run_id}{_PART_RUN_ID_END}"


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a file being published (a dot-name with :data:`TEMP_MARKER`)."""
    return name.startswith(".") and TEMP_MARKER in name


def part_lock_name(run_id: str) -> str:
    """The one-writer claim file of a dev/tuner run, beside its parts (``claim.rs``'s
    ``lock_path`` of an append layout: ``.part-<run_id>-flightlog.lock``)."""
    return f".{_PART_PREFIX}{run_id}{_PART_RUN_ID_END}{RUN_LOCK_NAME.removeprefix('.')}"


def parts_dir_name(mode: str, kind: str) -> str:
    """The folder of a flow holding ``mode``'s (``dev``/``tuner``) parts of ``kind``
    (``telemetry``/``events``): ``<mode>_<kind>``."""
    return f"{mode}_{kind}"


def compacted_name(mode: str, kind: str) -> str:
    """The file :func:`flightlog.compact` merges those parts into: ``<mode>_<kind>.parquet``."""
    return f"{parts_dir_name(mode, kind)}{_core.SEGMENT_SUFFIX}"

"""The catalog's tables: column specs, statuses, kinds, widening rules and guard tables."""

from __future__ import annotations

#: Manifest statuses whose files are final (``crashed`` is written by ``recover``).
FINAL_STATUSES = frozenset({"finished", "failed", "crashed"})
_STATUSES = FINAL_STATUSES | {"running"}
_MODES = ("run", "dev", "tuner")
_KINDS = ("telemetry", "events")
#: Columns the catalog sets on every telemetry/events row.
RESERVED_COLUMNS = ("run_id", "flow_name", "schema_version")


_CAT = "flightlog_catalog"  # alias of the attached database in reader sessions
_FILE_COL = "__flightlog_file"


_INTS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER")
# file type -> table types it may be inserted into without loss of meaning
_WIDENS = {
    **{t: {"BIGINT", "DOUBLE", "HUGEINT"} for t in _INTS},
    "UBIGINT": {"HUGEINT", "DOUBLE"},
    "FLOAT": {"DOUBLE"},
}
# type a new table column gets for a file type (so later f32/f64/i64 files fit)
_NEW_COLUMN_TYPE = {**{t: "BIGINT" for t in _INTS}, "FLOAT": "DOUBLE"}

_RUNS_COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR",
    "flow_name": "VARCHAR",
    "mode": "VARCHAR",
    "trial_id": "VARCHAR",
    "status": "VARCHAR",
    "manifest_status": "VARCHAR",
    "created_at": "TIMESTAMP",
    "finished_at": "TIMESTAMP",
    "duration_s": "DOUBLE",
    "error_type": "VARCHAR",
    "error_message": "VARCHAR",
    "schema_version": "INTEGER",
    "rows_offered": "BIGINT",
    "rows_written": "BIGINT",
    "rows_sampled_out": "BIGINT",
    "rows_dropped": "BIGINT",
    "rows_over_budget": "BIGINT",
    "rows_lost": "BIGINT",
    "segments": "BIGINT",
    "events": "BIGINT",
    "flush_secs": "DOUBLE",
    "bytes_written": "BIGINT",
    "producer_stalls": "BIGINT",
    "sampling_keep_first": "BIGINT",
    "sampling_every": "BIGINT",
    "max_rows": "BIGINT",
    "params": "VARCHAR",
    "tags": "VARCHAR",
    "units": "VARCHAR",
    "host": "VARCHAR",
    "pid": "BIGINT",
    "user": "VARCHAR",
    "argv": "VARCHAR",
    "cwd": "VARCHAR",
    "python": "VARCHAR",
    "platform": "VARCHAR",
    "flightlog_version": "VARCHAR",
    "numpy_version": "VARCHAR",
    "git_commit": "VARCHAR",
    "git_dirty": "BOOLEAN",
    "path": "VARCHAR",
    "manifest_path": "VARCHAR",
    "manifest_mtime_ns": "BIGINT",
    "manifest_size": "BIGINT",
    "updated_at": "TIMESTAMP",
}
_INGESTED_COLUMNS: dict[str, str] = {
    "path": "VARCHAR",
    "kind": "VARCHAR",
    "run_id": "VARCHAR",
    "flow_name": "VARCHAR",
    "rows": "BIGINT",
    "size": "BIGINT",
    "mtime": "DOUBLE",
    "ingested_at": "TIMESTAMP",
    "source": "VARCHAR",
}
#: ``_flightlog.run_listing``: what listing a run needs (``flightlog runs``, :func:`flightlog.cli.scan_runs`),
#: one row per consolidated run whose manifest is terminal and plain (see :func:`_listing_row`).
#: A run is listed from this row while its manifest's ``mtime_ns`` and size are still the
#: ones recorded here; otherwise its manifest is read again (status by evidence).
_LISTING = "_flightlog.run_listing"
_LISTING_COLUMNS: dict[str, str] = {
    "manifest_path": "VARCHAR",
    "manifest_mtime_ns": "BIGINT",
    "manifest_size": "BIGINT",
    "manifest_ino": "UBIGINT",
    "run_id": "VARCHAR",
    "flow_name": "VARCHAR",
    "mode": "VARCHAR",
    "status": "VARCHAR",
    "created_at": "VARCHAR",
    "finished_at": "VARCHAR",
    "rows_written": "BIGINT",
    "manifest": "VARCHAR",
    # Its own column (added by the first consolidate of an older catalog): reading it out of
    # ``manifest`` was half of `flightlog runs` at 100,000 runs.
    "outcome": "VARCHAR",
}
_MAP_COLUMNS = {
    "file": "VARCHAR",
    "run_id": "VARCHAR",
    "flow_name": "VARCHAR",
    "schema_version": "INTEGER",
    "lo": "BIGINT",
    "hi": "BIGINT",
}
_PRUNE_COLUMNS = {"run_id": "VARCHAR", "flow_name": "VARCHAR"}


#: Guard tables (see the module doc): files hash to one of these; ``runs`` rows use ``guard_runs``.
_GUARD_SCHEMA = "_flightlog"
_GUARD_SHARDS = 8
_GUARD_RUNS = "guard_runs"
_GUARDS = (_GUARD_RUNS, *(f"guard_{i:02d}" for i in range(_GUARD_SHARDS)))

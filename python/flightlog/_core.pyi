"""Type stubs of the native module ``flightlog._core`` (Rust, PyO3).

The public API is :class:`flightlog.FlightRecorder`; these are its native parts.
"""

import builtins
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Self, final

__all__ = [
    "__version__",
    "ArrowData",
    "ObjectStore",
    "Recorder",
    "merge_parquet",
    "parquet_kv",
    "parquet_rows",
    "parquet_footers",
    "recover_output_file",
    "recover_run_dir",
    "salvage_parts",
    "shared_spool_dir",
    "_after_fork_in_child",
    "_ints_in_place",
    "publish_bytes",
    "durable_files",
    "list_run_manifests",
    "scan_run_folders",
    "EVENTS_FILE",
    "EVENTS_SEGMENT_PREFIX",
    "PART_PREFIX",
    "PART_RUN_ID_END",
    "RUN_LOCK_NAME",
    "SEGMENTS_DIR",
    "SEGMENTS_KEY",
    "SEGMENT_MIN_DIGITS",
    "SEGMENT_ROWS_KEY",
    "SEGMENT_SUFFIX",
    "SPOOL_DIR_NAME",
    "SPOOL_META_NAME",
    "TELEMETRY_FILE",
    "TELEMETRY_SEGMENT_PREFIX",
    "TEMP_MARKER",
]

__version__: str
# Whether record() reads ints in place (CPython 3.11's layout detected at import).
_ints_in_place: bool

_FieldSpec = tuple[str, str, bool, list[str] | None, str | None, str | None]

@final
class Recorder:
    """The native recorder: a lock-free ring, a flusher thread, atomic Parquet segments."""

    def __new__(
        cls,
        path: str | PathLike[str],
        schema: list[_FieldSpec] | None,
        schema_version: int,
        *,
        run_id: str | None = None,
        flush_interval: float = 1.0,
        segment_rows: int | None = None,
        ring_capacity: int | None = None,
        compression: str = "zstd",
        on_full: str = "block",
        sampling: tuple[int, int] | None = None,
        max_rows: int | None = None,
        metadata: list[tuple[str, str]] | None = None,
        constants: list[tuple[str, Any]] | None = None,
        parts: tuple[str | PathLike[str], str] | None = None,
        store: ObjectStore | None = None,
        output_file: bool | None = None,
        sync_first: Sequence[str | PathLike[str]] | None = None,
    ) -> Self: ...
    # record, log, _record_ints_by_api and _noop are builtins bound to the recorder (METH_FASTCALL:
    # no tuple or dict is built per call); each access makes a new one.
    @property
    def record(self) -> Callable[..., None]:
        """``record(*values)``: one row from values in schema order (constant columns
        skipped; trailing nullable fields may be omitted; ``None`` for ``t_wall_ms``
        stamps it)."""
    @property
    def log(self) -> Callable[..., None]:
        """``log(**fields)``: one row from keywords; the first call infers the schema
        when there is none."""
    def extend(self, **columns: Any) -> int:
        """Rows from numpy arrays or sequences of equal length; returns the row count.

        The coercion rule is ``FlightRecorder``'s (see its docstring): f64/f32 take
        float and int arrays, i64 int arrays, bool bool arrays, str/enum str or object
        arrays; datetime64/timedelta64, complex, bytes and structured arrays, and
        dict/set columns raise ``TypeError`` naming the field. Any byte stride is read
        as numpy reads it. Masked entries (numpy masked arrays) and None/``pd.NA`` are
        nulls. Converted and pushed in bounded chunks; a bad column records nothing."""
    @property
    def _record_ints_by_api(self) -> Callable[..., None]:
        """``record`` as bound where ints are not read in place (any interpreter but
        CPython 3.11): its row's leading int read through the C API. For the tests."""
    @property
    def _noop(self) -> Callable[..., None]:
        """``_noop(*values)``: the same call as ``record`` doing nothing (the benchmarks'
        call floor)."""
    def event(self, name: str, payload_json: str | None = None, t_wall_ms: float | None = None) -> None:
        """An event with a JSON payload (already serialised). Before the schema is
        known (no ``log()`` yet) it is kept, in an events-only spool that ``recover``
        publishes after a crash, and recorded when the recorder starts."""
    def start(self, spec: list[_FieldSpec]) -> None:
        """Gives a recorder whose schema is not known yet this schema (of the version it
        was made with) instead of one its first ``log()`` would infer; an error if it
        has one already."""
    def flush(self) -> None:
        """Returns when every earlier row is in a published segment."""
    def close(self, defer_folder_sync: bool = False) -> PathLike[str] | str | None:
        """Makes everything durable and merges segments; idempotent. ``defer_folder_sync``:
        the folder fsync of a short recording's final files may be left to the caller,
        who gets that folder back (else None) and must fsync it before anything listing
        the files can be durable (``publish_bytes(after=folder)``)."""
    @property
    def files(self) -> list[tuple[str, int, int]]:
        """After close: (path, rows, bytes) of each published file."""
    @property
    def closed(self) -> bool: ...
    def schema_spec(self) -> tuple[list[_FieldSpec], int] | None:
        """Field specs and version, or None before the first ``log()`` infers them."""
    def stats(self) -> dict[str, int | float]:
        """rows_offered, rows_written, rows_sampled_out, rows_dropped, rows_over_budget,
        rows_lost, segments, bytes_written, flush_secs, producer_stalls, events."""
    def now_ms(self) -> float:
        """Milliseconds since the recorder was made (monotonic), before the first ``log()`` too."""
    def to_arrow(self) -> ArrowData:
        """Durable telemetry (what the last flush published)."""
    def events_to_arrow(self) -> ArrowData:
        """Durable events."""

@final
class ArrowData:
    """Record batches exposed through the Arrow PyCapsule interface; every
    ``__arrow_c_stream__`` call makes a fresh stream (DuckDB scans twice)."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...
    @property
    def num_rows(self) -> int: ...
    @property
    def column_names(self) -> list[str]: ...
    def __len__(self) -> int: ...

def recover_output_file(path: str | PathLike[str]) -> dict[str, int] | None: ...
def salvage_parts(
    parts_dir: str | PathLike[str],
    events_dir: str | PathLike[str],
    run_id: str,
    store: ObjectStore | None = None,
    spool_dir: str | PathLike[str] | None = None,
) -> dict[str, int]: ...
def shared_spool_dir(spool_dir: str | PathLike[str] | None = None) -> Path:
    """The local folder holding the spools of object-store recordings (one
    ``<location>.spool`` folder each): ``spool_dir``, else ``$FLIGHTLOG_SPOOL_DIR``,
    else ``flightlog/spool`` in the user's cache folder."""

def recover_run_dir(
    path: str | PathLike[str], store: ObjectStore | None = None, spool_dir: str | PathLike[str] | None = None
) -> dict[str, int]:
    """Finalise a run folder whose process died: sweep temp files, merge segments,
    remove leftovers a merge already covered. Idempotent."""

def merge_parquet(out: str | PathLike[str], inputs: list[str | PathLike[str]]) -> dict[str, int]:
    """Atomic raw column-chunk merge of same-schema Parquet files; the result lists
    its parts (``flightlog.segments``, ``flightlog.segment_rows``). Returns rows, bytes.
    An existing ``out`` is replaced only when it is one of ``inputs`` (a compaction);
    otherwise it is never replaced (``WriteError``)."""

def _after_fork_in_child() -> None:
    """Run in a forked child (the package registers it with ``os.register_at_fork``):
    recorders made before the fork refuse to write there and their close does nothing."""

def parquet_kv(path: str | PathLike[str], store: ObjectStore | None = None) -> list[tuple[str, str]]:
    """Key-value metadata of a Parquet file."""

def parquet_rows(path: str | PathLike[str], store: ObjectStore | None = None) -> int:
    """Row count of a Parquet file, from its footer."""

def parquet_footers(paths: list[str] | list[PathLike[str]]) -> list[tuple[int, list[tuple[str, str]]]]:
    """``(rows, key-value metadata)`` of local Parquet files, one footer read each (on a few
    threads); raises for the first file that cannot be read, naming it."""

def list_run_manifests(
    root: str | PathLike[str], manifest: str, flows_dir: str, runs_dir: str, manifest_suffix: str
) -> ArrowData | None:
    """Every possible run under a local root (``{folder}/{manifest}`` of each folder below it,
    ``{flows_dir}/{flow}/{runs_dir}/*{manifest_suffix}``) with its manifest's ``lstat``: columns
    ``manifest_rel``, ``is_folder``, ``mtime_ns``, ``size``, ``ino``, ``is_regular`` (null where
    there is no manifest). None when a name under the root is not UTF-8."""

def scan_run_folders(root: str | PathLike[str], flows_dir: str, files: list[str]) -> ArrowData | None:
    """The entries right below a local root (sorted; not hidden, not ``flows_dir``): columns
    ``name``, ``is_dir``, ``is_symlink`` and, per file ``k`` of ``files`` inside each real folder,
    ``mtime_ns_k``, ``size_k``, ``regular_k``. None when a name is not UTF-8."""

@final
class ObjectStore:
    """A bucket opened with the ``AWS_*`` environment and explicit options (object_store keys)."""

    def __new__(cls, url: str, options: list[tuple[str, str]] | None = None) -> Self: ...
    @property
    def prefix(self) -> str:
        """The key prefix of the URL the store was opened with."""
    def url(self, key: str) -> str:
        """``s3://bucket/key``."""
    def put(self, key: str, data: bytes, mode: str = "create", e_tag: str | None = None) -> str | None:
        """Create-only (``FileExistsError``), conditional update (``ConflictError``) or overwrite; the new ETag."""
    def get(self, key: str) -> tuple[bytes, str | None] | None:
        """``(data, e_tag)``, or ``None`` if absent."""
    def head(self, key: str) -> dict[str, Any] | None:
        """``{key, size, last_modified_ms, e_tag}``, or ``None`` if absent."""
    def list(self, prefix: str) -> builtins.list[dict[str, Any]]:
        """Every object below ``prefix``, recursively, sorted by key."""
    def list_names(self, dir: str) -> builtins.list[str]:
        """Names of the objects directly below ``dir``, sorted."""
    def delete(self, key: str) -> None:
        """Deletes ``key``; a missing object is not an error."""

def publish_bytes(
    path: str | PathLike[str],
    data: bytes,
    create_only: bool = False,
    after: str | PathLike[str] | None = None,
    durable: bool = True,
) -> int:
    """Publish ``data`` at ``path`` atomically and durably (temp file, fsync, link or rename,
    folder fsync). ``create_only``: ``FileExistsError`` if ``path`` exists (left as it is).
    ``after``: a folder whose fsync completes before ``path`` is placed (it runs at the same
    time as the temp file's). ``durable=False``: placed the same way without any fsync; the
    caller owes the file's and its folder's (``Recorder(sync_first=...)``). Other failures
    are ``OSError`` subclasses by errno, naming the file. Returns the size."""

def durable_files(
    segment_dir: str | PathLike[str],
    prefix: str,
    final_path: str | PathLike[str] | None = None,
    store: ObjectStore | None = None,
) -> list[Path]:
    """The durable files of a recording: the final file if it exists, then the segments
    named ``prefix...`` that it does not list (with ``store``: keys in that store)."""

# The on-disk layout, read from the core's OutputLayout (wrapped by flightlog.runs.layout).
SEGMENTS_DIR: str
TELEMETRY_SEGMENT_PREFIX: str
EVENTS_SEGMENT_PREFIX: str
TELEMETRY_FILE: str
EVENTS_FILE: str
PART_PREFIX: str
PART_RUN_ID_END: str
SEGMENT_MIN_DIGITS: int
SEGMENT_SUFFIX: str
TEMP_MARKER: str
RUN_LOCK_NAME: str
SPOOL_DIR_NAME: str
SPOOL_META_NAME: str
SEGMENTS_KEY: str
SEGMENT_ROWS_KEY: str

"""The flight recorder: :class:`FlightRecorder`."""

from __future__ import annotations

import atexit
import math
import os
import weakref
from _thread import allocate_lock
from collections.abc import Callable, Sequence

from . import _core
from ._errors import SchemaError
from ._schema import Enum, Field, Schema
from .events import payload_json

# `typing` costs milliseconds at import; type checkers treat this name as typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = ["FlightRecorder", "Sampling"]

_EVENT_NAME_MAX = 128


class Sampling:
    """Keep every row up to ``keep_first``, then one row in ``every``.

    >>> Sampling(keep_first=1000, every=10)
    Sampling(keep_first=1000, every=10)
    """

    __slots__ = ("every", "keep_first")
    keep_first: int
    every: int

    def __init__(self, keep_first: int = 1000, every: int = 10) -> None:
        for name, v in (("keep_first", keep_first), ("every", every)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"Sampling.{name} must be a non-negative int, got {v!r}")
        if every < 1:
            raise ValueError(f"Sampling.every must be at least 1, got {every}")
        object.__setattr__(self, "keep_first", keep_first)
        object.__setattr__(self, "every", every)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Sampling is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sampling) and (other.keep_first, other.every) == (self.keep_first, self.every)

    def __hash__(self) -> int:
        return hash((self.keep_first, self.every))

    def __repr__(self) -> str:
        return f"Sampling(keep_first={self.keep_first}, every={self.every})"

    @classmethod
    def coerce(cls, value: Any) -> Sampling | None:
        """None, a Sampling, a ``(keep_first, every)`` pair or a mapping with those keys."""
        if value is None or isinstance(value, Sampling):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, tuple | list) and len(value) == 2:
            return cls(*value)
        raise TypeError(f"sampling must be None, Sampling(...), (keep_first, every) or a dict, got {value!r}")


def _schema_from_spec(spec: tuple[list[Any], int] | None) -> Schema | None:
    if spec is None:
        return None
    fields, version = spec
    out = []
    for name, dtype, nullable, variants, unit, doc in fields:
        out.append(Field(name, Enum(variants) if dtype == "enum" else dtype, nullable, unit, doc))
    return Schema(out, version=version)


# Recorders still open at interpreter exit are closed so that no row is lost.
_open_recorders: weakref.WeakSet[FlightRecorder] = weakref.WeakSet()
_open_lock = allocate_lock()


@atexit.register
def _close_all_at_exit() -> None:
    with _open_lock:
        recorders = list(_open_recorders)
    for rec in recorders:
        try:
            rec.close()
        except Exception:
            pass


#: What the layers above reset in the child of a fork, after the recorders
#: (:func:`add_after_fork_hook`; the run manager's open-run registry).
_after_fork_hooks: list[Callable[[], None]] = []


def add_after_fork_hook(hook: Callable[[], None]) -> None:
    """Run ``hook`` in the child of every ``os.fork()``, after the recorders are
    reset (:func:`_after_fork_in_child`), in the order the hooks were added.

    The seam for the layers above: :mod:`flightlog.runs.manager` adds the reset
    of its open runs when it is imported, so this module never looks them up."""
    _after_fork_hooks.append(hook)


def _after_fork_in_child() -> None:
    """Runs in the child of ``os.fork()``: the parent's recorders are not the child's.

    Their native side refuses to write there (``FlightlogError`` naming the
    parent) and their ``close()`` does nothing; the child's exit hook forgets
    them, and the registry's lock is new (a parent thread may have held it at
    the fork). Then the hooks of :func:`add_after_fork_hook`."""
    global _open_recorders, _open_lock
    _core._after_fork_in_child()
    _open_recorders = weakref.WeakSet()
    _open_lock = allocate_lock()
    for hook in _after_fork_hooks:
        hook()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FlightRecorder:
    """Records rows of telemetry into crash-safe Parquet segments in a run folder.

    ``path`` is a folder (created if missing). While recording, rows become
    durable as ``path/segments/telemetry-NNNNNN.parquet`` every ``flush_interval``
    seconds (and on :meth:`flush`); :meth:`close` merges them into
    ``path/telemetry.parquet`` and events into ``path/events.parquet``.

    **Output-file form.** A local ``path`` ending in ``.parquet`` (that is not an
    existing folder) is the output file itself: :meth:`close` publishes the
    telemetry there, atomically. Everything else the recorder keeps lives in the
    hidden sibling folder ``.<name>.flightlog/`` (which never matches
    ``*.parquet``): the segments while running, temp files, the one-writer claim
    (``.flightlog.lock``) and, after close, the events (``events.parquet``; read
    them with :meth:`events_to_arrow`). An existing file raises
    ``FileExistsError``; ``overwrite=True`` records beside it and replaces it by
    one atomic rename when the new recording closes (a crash or a failed close
    leaves the old file as it was; :func:`flightlog.recover` on the file path
    finishes a killed recording of either kind).

    The hot methods :meth:`record`, :meth:`log` and :meth:`extend` are the native
    methods themselves (no Python frame in between):

    * ``record(*values)`` takes values in schema order (constant columns skipped);
      trailing nullable fields may be omitted, and ``None`` (or omitting it) for an
      f64 field named ``t_wall_ms`` stamps it with :meth:`now_ms`.
    * ``log(**fields)`` takes keywords; missing nullable fields are null, a missing
      ``t_wall_ms`` is stamped.
    * ``extend(**columns)`` takes numpy arrays or sequences of equal length and
      records them in bulk; a missing ``t_wall_ms`` column is stamped with one
      time for the whole block. A bad column records nothing. The columns are
      converted and pushed in chunks of 16,384 rows, so memory does not grow with
      their length; numpy arrays are read in place with their strides (fields of
      structured arrays, reversed, Fortran-order and broadcast views).

      Coercion: the rule of ``record()``, column by column. ``f64``/``f32`` fields
      take float and integer arrays (and sequences of numbers); ``i64`` integer
      arrays (a ``uint64`` value above 2**63-1 raises ``OverflowError``); ``bool``
      bool arrays; ``str`` and enum fields str or object arrays of ``str``.
      Everything else raises ``TypeError`` naming the field: ``datetime64`` and
      ``timedelta64`` arrays of every unit (convert them to numbers first, e.g.
      ``(t - t[0]) / np.timedelta64(1, "ms")``), bool arrays for numeric fields,
      float arrays for ``i64`` (``.astype(np.int64)`` if meant), complex, bytes
      and structured arrays, elements that are dicts, sets or lists, and a column
      that is a ``dict``, ``set``, ``str``, ``bytes`` or iterator instead of an
      array or sequence. Missing values: a masked entry of a numpy masked array,
      ``None`` and ``pd.NA`` (pandas nullable ``Int64``, ``Float64``, ``boolean``,
      ``string`` columns) are nulls in nullable fields and raise ``TypeError`` in
      non-nullable ones. NaN in a float array is data, not a null.

    :meth:`event` does not need the row schema: events recorded before the first
    :meth:`log` infers it are kept and recorded then. Their ``t_wall_ms`` is on the
    recorder's clock, which runs from the recorder's creation (:meth:`now_ms`
    counts from it before the first :meth:`log` too, and goes on across it). A
    recorder closed without ever getting a schema writes no files, and warns
    (``RuntimeWarning``) if events are lost so.

    >>> import tempfile
    >>> from flightlog import FlightRecorder, Schema, Field
    >>> schema = Schema([Field("iter", "i64", nullable=False), Field("E", "f64", nullable=False)])
    >>> with FlightRecorder(tempfile.mkdtemp(), schema) as rec:
    ...     rec.record(0, 1.5)
    ...     rec.log(iter=1, E=0.75)
    >>> rec.to_arrow().num_rows
    2

    Options: ``schema_version`` (overrides the schema's), ``run_id`` (stored in
    file metadata and the events' ``run_id``), ``flush_interval`` seconds,
    ``segment_rows`` (rows per segment), ``ring_capacity`` (rows buffered between
    the caller and the writer thread, rounded up to a power of two), ``compression`` (``"zstd"``, ``"snappy"``,
    ``"lz4"``, ``"none"``), ``on_full`` (``"block"``: wait, lossless; ``"drop"``:
    drop and count), ``sampling`` (:class:`Sampling`), ``max_rows`` (row budget),
    ``metadata`` (extra Parquet key-value metadata; keys starting with ``flightlog.``
    and ``schema_version`` are reserved: ``ValueError``), ``constants`` (fields with one
    value for every row, which :meth:`record` then skips).

    One writer per folder: the recorder claims ``path`` at construction (a lock on
    ``path/.flightlog.lock``, held until :meth:`close` or the process's death); a
    second recorder on it, in any thread or process of the host, raises
    :class:`~flightlog.RunClaimedError` naming the holder, and a folder whose run
    finished raises ``FileExistsError``. In a child of ``os.fork()`` the recorder
    refuses to write (``FlightlogError``) and :meth:`close` does nothing: open a
    recorder in the child.

    ``path`` may be an object-store URL, ``s3://bucket/prefix/run``: segments and
    final files are then published with create-only puts (multipart uploads
    above ``multipart_threshold``), configured by the ``AWS_*`` environment
    variables and ``storage_options`` (see ``docs/SCALE_OUT.md``).
    """

    # Set per instance to the native methods; declared for type checkers.
    record: Any
    log: Any
    extend: Any

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: Schema | None = None,
        *,
        schema_version: int | None = None,
        run_id: str | None = None,
        flush_interval: float = 1.0,
        segment_rows: int | None = None,
        ring_capacity: int | None = None,
        compression: str = "zstd",
        on_full: str = "block",
        sampling: Sampling | tuple[int, int] | Mapping[str, int] | None = None,
        max_rows: int | None = None,
        metadata: Mapping[str, str] | None = None,
        constants: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        _parts: tuple[str | os.PathLike[str], str] | None = None,
        _sync_first: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        self._native: Any = None
        if schema is not None and not isinstance(schema, Schema):
            raise TypeError(f"schema must be a flightlog.Schema or None, got {type(schema).__name__}")
        if schema_version is not None and (isinstance(schema_version, bool) or not isinstance(schema_version, int)):
            raise TypeError(f"schema_version must be an int, got {schema_version!r}")
        if isinstance(flush_interval, bool) or not isinstance(flush_interval, int | float):
            raise TypeError(f"flush_interval must be a number of seconds, got {flush_interval!r}")
        if not math.isfinite(flush_interval) or flush_interval <= 0:
            raise ValueError(f"flush_interval must be a positive number of seconds, got {flush_interval!r}")
        for name, value in (("segment_rows", segment_rows), ("ring_capacity", ring_capacity), ("max_rows", max_rows)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
        if not isinstance(compression, str):
            raise TypeError(f"compression must be a str, got {compression!r}")
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full must be 'block' or 'drop', got {on_full!r}")
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
        sampling = Sampling.coerce(sampling)
        meta = [(str(k), str(v)) for k, v in (metadata or {}).items()]
        version = schema_version if schema_version is not None else (schema.version if schema is not None else 1)
        from pathlib import Path  # here, not at import: pathlib is slow to import

        store = None
        native_path: Any
        parts: tuple[Any, str] | None = None
        output_file: bool | None = None
        if isinstance(path, str) and path[:3].lower() in ("s3:", "s3a"):
            from ._s3 import ObjectLocation, open_store

            loc = ObjectLocation.parse(path)
            store = open_store(loc, storage_options)
            self._path: Any = loc.url()
            native_path = loc.key()
            if _parts is not None:
                events_loc = ObjectLocation.parse(os.fspath(_parts[0]))
                if events_loc.bucket != loc.bucket:
                    raise ValueError(f"events must go to the same bucket as the parts: {_parts[0]!r} vs {path!r}")
                parts = (events_loc.key(), _parts[1])
        else:
            if storage_options is not None:
                raise ValueError(f"storage_options is only for object-store paths (s3://...), not {path!r}")
            self._path = Path(os.fspath(path))
            native_path = self._path
            if _parts is not None:
                parts = (Path(os.fspath(_parts[0])), _parts[1])
            elif is_output_file(self._path):
                _check_output_file(self._path, overwrite)
                output_file = overwrite
        if overwrite and output_file is None:
            raise ValueError(
                f"overwrite=True is for an output file (a path ending in .parquet), not {path!r}: "
                "a run folder is never overwritten; use a new folder"
            )
        self._run_id = run_id
        self._native = _core.Recorder(
            native_path,
            schema._spec() if schema is not None else None,
            version,
            run_id=run_id,
            flush_interval=float(flush_interval),
            segment_rows=segment_rows,
            ring_capacity=ring_capacity,
            compression=compression,
            on_full=on_full,
            sampling=(sampling.keep_first, sampling.every) if sampling is not None else None,
            max_rows=max_rows,
            metadata=meta,
            constants=list((constants or {}).items()),
            parts=parts,
            store=store,
            output_file=output_file,
            # Files the caller placed without an fsync (a run's start manifest): made
            # durable before this recorder's first file.
            sync_first=[os.fspath(p) for p in _sync_first] or None,
        )
        self._sampling = sampling
        self._max_rows = max_rows
        # The hot path: the native methods, bound straight onto the instance.
        self.record = self._native.record
        self.log = self._native.log
        self.extend = self._native.extend
        with _open_lock:
            _open_recorders.add(self)

    @classmethod
    def for_parts(
        cls,
        parts_dir: str | os.PathLike[str],
        events_dir: str | os.PathLike[str],
        run_id: str,
        schema: Schema | None = None,
        **options: Any,
    ) -> FlightRecorder:
        """A recorder writing append-mode parts ``parts_dir/part-{run_id}-NNNNNN.parquet``
        (events in ``events_dir``), never merged at close."""
        return cls(parts_dir, schema, run_id=run_id, _parts=(events_dir, run_id), **options)

    @staticmethod
    def _version() -> str:
        return str(_core.__version__)

    # -- properties ---------------------------------------------------------------------------

    @property
    def path(self) -> Any:
        """The run folder, the output file (a path ending in ``.parquet``) or the
        parts folder of an append-mode recorder: a ``Path``, or the ``s3://`` URL
        string of an object-store recording."""
        return self._path

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def schema(self) -> Schema | None:
        """The schema (None until the first :meth:`log` infers it)."""
        return _schema_from_spec(self._native.schema_spec())

    @property
    def closed(self) -> bool:
        return bool(self._native.closed)

    @property
    def files(self) -> list[dict[str, Any]]:
        """After :meth:`close`: the published files with their rows and bytes."""
        return [{"path": p, "rows": r, "bytes": b} for p, r, b in self._native.files]

    @property
    def sampling(self) -> Sampling | None:
        return self._sampling

    @property
    def max_rows(self) -> int | None:
        return self._max_rows

    # -- operations ---------------------------------------------------------------------------

    def event(self, name: str, payload: Any = None, *, t_wall_ms: float | None = None) -> None:
        """Records an event; ``payload`` must be JSON-serialisable (``TypeError`` otherwise).

        Its ``iter`` is that of the newest row this thread recorded (if this one
        recorded none: a recent row of another thread that did): rows sampled
        out, over the row budget or dropped by a full ring do not count, and a
        null ``iter`` gives a null."""
        if not isinstance(name, str) or not name or len(name) > _EVENT_NAME_MAX:
            raise ValueError(f"event name must be a str of 1 to {_EVENT_NAME_MAX} characters, got {name!r}")
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise ValueError(f"event name {name!r} contains a control character")
        text = payload_json(name, payload)  # standard JSON: NaN/inf as strings; TypeError if it cannot be
        self._native.event(name, text, None if t_wall_ms is None else float(t_wall_ms))

    def _start(self, schema: Schema) -> None:
        """Gives a recorder made with ``schema=None`` this schema before any ``log()``
        (a run closed before its first row records its events with it)."""
        self._native.start(schema._spec())

    def flush(self) -> None:
        """Returns when every row recorded before the call is in a published segment."""
        self._native.flush()

    def close(self) -> None:
        """Makes everything durable and merges segments into ``telemetry.parquet``.

        Idempotent. Raises :class:`~flightlog.WriteError` if the data could not be
        written; published segments then stay on disk for :func:`flightlog.recover`.
        """
        try:
            self._native.close()
        finally:
            with _open_lock:
                _open_recorders.discard(self)

    def _close_deferring_folder_sync(self) -> str | None:
        """:meth:`close`, except that the folder fsync of a short recording's final files
        may be left to the caller: returns that folder (else None), which the caller must
        fsync before anything that lists the files can be durable, e.g. with
        ``_core.publish_bytes(manifest, data, after=folder)`` (a run's final manifest)."""
        try:
            owed = self._native.close(True)
        finally:
            with _open_lock:
                _open_recorders.discard(self)
        return None if owed is None else os.fspath(owed)

    def stats(self) -> dict[str, Any]:
        """Counters: rows_offered, rows_written, rows_sampled_out, rows_dropped,
        rows_over_budget, rows_lost, segments, bytes_written, flush_secs,
        producer_stalls, events, spool_errors (spool files that could not be made or
        appended to, a full disk: rows since are protected against a crash only once
        flushed)."""
        return dict(self._native.stats())

    def now_ms(self) -> float:
        """Milliseconds since the recorder was created, from a monotonic clock (the
        clock of ``t_wall_ms``; with ``schema=None``, also before the first :meth:`log`)."""
        return float(self._native.now_ms())

    def _flush_if_open(self) -> None:
        if not self._native.closed:
            self._native.flush()

    def to_arrow(self) -> Any:
        """Every row recorded before the call, as an object with ``__arrow_c_stream__``.

        Consumable more than once (DuckDB scans it twice); ``pyarrow.table(obj)``,
        ``polars.DataFrame(obj)`` and ``duckdb.sql("select * from obj")`` read it.

        Cost: on an open recorder it first calls :meth:`flush`, which publishes
        the rows buffered since the last flush as one more segment (a Parquet
        write and an fsync: 3 to 25 ms on a loaded 2-core VM), then reads every
        segment back. Calling it once per iteration of a loop would make many
        small segments (merged at close); read every few hundred iterations, or
        after :meth:`close`, which reads the one final file.
        """
        self._flush_if_open()
        return self._native.to_arrow()

    def events_to_arrow(self) -> Any:
        """Every event recorded before the call, like :meth:`to_arrow` (same cost)."""
        self._flush_if_open()
        return self._native.events_to_arrow()

    def __len__(self) -> int:
        """Rows recorded before the call and kept (after sampling, drops and the
        row budget): flushes an open recorder first, like :meth:`to_arrow`, and
        counts without reading the files back."""
        self._flush_if_open()
        return int(self._native.stats()["rows_written"])

    def __bool__(self) -> bool:
        # A recorder is a thing, not a collection: `if rec:` must not flush.
        return True

    def to_dataframe(self) -> Any:
        """Every row recorded before the call, as a pandas DataFrame (needs pandas
        and pyarrow); flushes first, like :meth:`to_arrow`."""
        try:
            import pandas  # noqa: F401
            import pyarrow
        except ImportError as e:
            raise ImportError(
                f"to_dataframe() needs pandas and pyarrow ({e.name} is missing): pip install 'flightlog[pandas]'"
            ) from None
        return pyarrow.table(self.to_arrow()).to_pandas()

    def __enter__(self) -> FlightRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._native is not None and self.closed else "open"
        return f"<FlightRecorder {state} path={str(self._path)!r}>"


def is_output_file(path: Any) -> bool:
    """True for a local path that :class:`FlightRecorder` takes as its output file:
    it ends in ``.parquet`` and is not an existing folder (a run folder made
    with such a name before the output-file form keeps working as one)."""
    return str(path).lower().endswith(".parquet") and not os.path.isdir(path)


def _check_output_file(file: Any, overwrite: bool) -> None:
    """The refusals of the output-file form, with what to do (the native side
    checks again, race-free, with terser messages)."""
    sidecar = file.with_name(f".{file.name}.flightlog")
    if not overwrite and file.exists():
        raise FileExistsError(
            f"{file} already exists: pass overwrite=True to replace it when the new recording closes "
            "(the old file stays until then), or choose another path"
        )
    if not overwrite and not file.exists() and (sidecar / "events.parquet").exists():
        raise FileExistsError(
            f"{sidecar / 'events.parquet'} holds the events of an earlier recording of {file.name}, whose "
            f"file was removed: remove the folder {sidecar} too, or pass overwrite=True"
        )


# Keep the name used in error messages discoverable.
_ = SchemaError

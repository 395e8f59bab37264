"""Runs: :class:`TelemetryManager` turns a recorder into a self-describing run.

A run is one folder ``<root>/fda_run_<id>/`` (mode ``"run"``) or a set of
append-mode parts under ``<root>/flows/<flow_name>/`` with a per-run manifest
``flows/<flow_name>/runs/<id>.toml`` (modes ``"dev"`` and ``"tuner"``).

Order of work when a run starts, each step only after the previous succeeded:

1. every name, option, param, tag and unit is validated and converted (a bad one
   raises ``ValueError``/``TypeError`` and nothing touches the disk); names also by
   the longest file name they will make, in bytes
   (:func:`flightlog._names.check_run_names`);
2. the root is resolved and checked to be writable;
3. the run id is claimed atomically, with the ``running`` manifest (run folder:
   ``mkdir`` then the manifest; dev/tuner: the complete manifest appears at once
   under its final name, so claiming and writing are one step);
4. the recorder is created (if that fails, what step 3 made is removed) and
   ``RUN_STARTED`` is recorded.

``close()`` records ``RUN_FINISHED``, closes the recorder and rewrites the
manifest with status, counts, cost and files. A process that dies before that
leaves ``status = "running"``; evidence (a dead pid, or no new file for
``stale_after`` seconds) shows it as ``crashed`` and ``flightlog.recover``
finalises it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

from .. import events as _events
from .._errors import FlightlogError, SchemaError
from .._names import check_run_names, validate_name
from .._recorder import FlightRecorder, Sampling, add_after_fork_hook
from .._schema import Field, Schema
from .finish import _Finishing, _schema_of
from .ids import DEFAULT_RUN_PREFIX
from .layout import FLOWS_DIR, RUNS_DIR, parts_dir_name
from .manifest import provenance as _provenance  # the name `provenance` is an argument of __init__
from .manifest import (
    provenance_options,
    to_toml_table,
    utc_now_iso,
)
from .tree import RootTree

#: The terminal events that set :attr:`TelemetryManager.outcome` (unless it was set explicitly).
OUTCOME_OF_EVENT = {_events.TIMEOUT: "timeout", _events.CANCELLED: "cancelled", _events.CERT_FAIL: "cert_fail"}

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_SAMPLING",
    "MODES",
    "TelemetryManager",
    "UnitsWarning",
]

#: The run modes.
MODES = ("run", "dev", "tuner")
#: Row budget of a ``"run"`` when ``max_rows`` is not given.
DEFAULT_MAX_ROWS = 1_000_000
#: Sampling of ``"dev"``/``"tuner"`` runs when ``sampling`` is not given: every
#: row up to 1,000, then every 10th.
DEFAULT_SAMPLING = (1000, 10)
#: Fields whose units and method of computation a manifest must carry (CFS rule).
UNIT_FIELDS = ("phi_residual", "invariant_drift_max")

_RECORDER_OPTIONS = frozenset(
    {
        "schema_version",
        "flush_interval",
        "segment_rows",
        "ring_capacity",
        "compression",
        "on_full",
        "sampling",
        "max_rows",
        "metadata",
    }
)


# Runs still open at interpreter exit are closed by _close_all_at_exit. It is
# registered after the recorder's own exit hook, so it runs first (LIFO) and can
# still write RUN_FINISHED and the manifest.
_open_runs: weakref.WeakSet[TelemetryManager] = weakref.WeakSet()
# Re-entrant: the collector may finish a run (__del__) inside a section holding it.
_open_lock = threading.RLock()


@atexit.register
def _close_all_at_exit() -> None:
    with _open_lock:
        runs = list(_open_runs)
    # An exception that ended the program is in sys.last_value (set when it was printed).
    error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    for tm in runs:
        with contextlib.suppress(Exception):
            tm.close(error=error if isinstance(error, BaseException) and not _clean_exit(error) else None)


def _after_fork_in_child() -> None:
    """The child of a fork does not own its parent's runs: its exit hook must not
    close them, and a lock a parent thread held at the fork is never released here."""
    global _open_runs, _open_lock
    _open_runs = weakref.WeakSet()
    _open_lock = threading.RLock()


add_after_fork_hook(_after_fork_in_child)


class UnitsWarning(UserWarning):
    """A CFS field (``phi_residual``, ``invariant_drift_max``) has no entry in ``units``.

    The CFS requires these two fields to carry their units and how they were
    computed, e.g. ``units={"phi_residual": {"unit": "1", "method": "||r||/||b||"}}``.
    To silence it: ``warnings.filterwarnings("ignore", category=flightlog.UnitsWarning)``.
    """


def _recorders_lock_free() -> bool:
    """Whether the lock of :mod:`._recorder`'s open-recorder set is free (a probe: it
    may be held by the thread asking, which would deadlock closing a recorder)."""
    from .. import _recorder

    lock = getattr(_recorder, "_open_lock", None)
    if lock is None or lock.acquire(blocking=False):
        if lock is not None:
            lock.release()
        return True
    return False


def _clean_exit(exc: BaseException | None) -> bool:
    """``sys.exit(0)``/``sys.exit()`` and a generator closed inside the ``with`` block end a
    run normally: neither is an error."""
    if isinstance(exc, GeneratorExit):
        return True
    if isinstance(exc, SystemExit):
        code = exc.code
        return code is None or (isinstance(code, int) and code == 0)
    return False


def _sampling_pair(sampling: Any) -> tuple[int, int] | None:
    s = Sampling.coerce(sampling)  # validates: ValueError/TypeError before the disk is touched
    return None if s is None else (s.keep_first, s.every)


def _with_constant_fields(schema: Schema, constants: Mapping[str, str]) -> Schema:
    if not isinstance(schema, Schema):
        raise TypeError(f"schema must be a flightlog.Schema or None, got {type(schema).__name__}")
    for name in constants:
        if name in schema and schema[name].dtype != "str":
            raise SchemaError(
                f"field {name!r} of the schema has dtype {schema[name].dtype_name}; "
                "the manager fills it in and needs it to be 'str'"
            )
    extra = [
        Field(name, "str", nullable=(name == "trial_id"), doc=f"{name}, filled in by the manager")
        for name in constants
        if name not in schema
    ]
    return schema.with_fields(extra, first=True) if extra else schema


class TelemetryManager(_Finishing):
    """One run of a flow: ids, folder or parts, manifest, events, constant columns.

    >>> import tempfile
    >>> from flightlog import Schema, Field
    >>> schema = Schema([Field("iter", "i64"), Field("E", "f64")])
    >>> with TelemetryManager(tempfile.mkdtemp(), "demo", schema=schema) as tm:
    ...     for i in range(3):
    ...         tm.log(iter=i, E=1.0 / (i + 1))
    ...     tm.event("CERT_PASS", {"gap": 0.12})
    >>> tm.manifest["status"], tm.manifest["counts"]["rows_written"]
    ('finished', 3)

    Args:
        base_path: the root (else ``$FLIGHTLOG_ROOT``, else ``./telematry_cfs``).
        flow_name: name of the flow (a column of every row).
        run_id: the run id (default: UTC start time ``YYYYMMDD_HHMMSS``); a taken id
            gets ``_2``, ``_3``, ...
        mode: ``"run"`` (immutable run folder, all rows, ``max_rows`` default
            1,000,000), ``"dev"`` or ``"tuner"`` (append-mode parts under
            ``flows/<flow_name>/``, sampling default ``(1000, 10)``).
        schema: a :class:`~flightlog.Schema` (``run_id``, ``flow_name`` and, when a
            trial id is given, ``trial_id`` str fields are added if missing), or
            ``None``: the first ``log()`` infers it (``record()`` then needs a
            ``log()`` first).
        trial_id: required in ``"tuner"`` mode; a constant column whenever given.
        params, tags, units: user config, labels, and units/notes per field, written
            to the manifest (see :mod:`flightlog.runs.manifest` for how values convert).
        run_prefix: prefix of run folders (``"fda_run_"``).
        provenance: what the manifest's ``[provenance]`` records of the command line:
            ``None`` (default: ``argv`` with secret-looking values such as
            ``--password X``, ``password=`` in DSNs and URL passwords replaced by
            ``"<redacted>"``), ``{"argv": False}`` (no argv), ``{"redact": [regex, ...]}``
            (also mask what these match).
        **recorder_options: passed to :class:`~flightlog.FlightRecorder`
            (``flush_interval``, ``segment_rows``, ``ring_capacity``, ``compression``,
            ``on_full``, ``sampling``, ``max_rows``, ``metadata``, ``schema_version``).

    ``log``, ``record``, ``extend`` and ``flush`` are the recorder's own native
    methods, bound onto the manager: no Python frame on the hot path. With
    ``schema=None`` the recorder is created by the first ``log()`` (which then
    binds them); events before that are kept and written then, with their
    ``t_wall_ms`` on the recorder's clock, which runs from the run's start (not from
    the first ``log()``).

    Leaving a ``with`` block by an exception closes the run as ``failed`` (type
    and message in the manifest, every row kept) and re-raises; ``sys.exit(0)``,
    ``sys.exit()`` and ``GeneratorExit`` (a generator closed inside the block) end
    it ``finished``, a non-zero ``sys.exit`` ``failed``. ``KeyboardInterrupt``
    during :meth:`close` still writes every row and ends the run ``failed``; a
    manager garbage-collected without ``close()`` is finished then, as one still
    open at interpreter exit is.
    """

    def __init__(
        self,
        base_path: str | os.PathLike[str] | None,
        flow_name: str,
        run_id: str | None = None,
        *,
        mode: str = "run",
        schema: Schema | None = None,
        trial_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        units: Mapping[str, Any] | None = None,
        run_prefix: str = DEFAULT_RUN_PREFIX,
        storage_options: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        **recorder_options: Any,
    ) -> None:
        # 1. Validate and convert everything before touching the disk.
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
        self.flow_name: str = validate_name("flow_name", flow_name)
        if run_id is not None:
            validate_name("run_id", run_id)
        if trial_id is not None:
            validate_name("trial_id", trial_id)
        elif mode == "tuner":
            raise ValueError("mode='tuner' needs a trial_id (it becomes a column of every row)")
        validate_name("run_prefix", run_prefix)
        # Names are limited in bytes on disk: refuse ids whose longest name would not fit.
        check_run_names(flow_name=self.flow_name, run_id=run_id, run_prefix=run_prefix, mode=mode)
        provenance_opts = provenance_options(provenance)
        unknown = sorted(set(recorder_options) - _RECORDER_OPTIONS)
        if unknown:
            raise TypeError(
                f"TelemetryManager got unexpected option(s) {', '.join(unknown)}; "
                f"recorder options are {', '.join(sorted(_RECORDER_OPTIONS))}"
            )
        options = dict(recorder_options)
        if mode == "run":
            options.setdefault("max_rows", DEFAULT_MAX_ROWS)
        else:
            options.setdefault("sampling", Sampling(*DEFAULT_SAMPLING))
        sampling = _sampling_pair(options.get("sampling"))
        max_rows = options.get("max_rows")
        self._params = to_toml_table(params or {}, "params")
        self._tags = to_toml_table(tags or {}, "tags")
        self._units = to_toml_table(units or {}, "units")

        self.mode: str = mode
        self.trial_id: str | None = trial_id
        self._constants: dict[str, str] = {"run_id": "", "flow_name": self.flow_name}
        if trial_id is not None:
            self._constants["trial_id"] = trial_id
        self._schema: Schema | None = None if schema is None else _with_constant_fields(schema, self._constants)
        self._schema_version = options.get("schema_version")
        if self._schema is not None:
            self._check_units(self._schema, stacklevel=3)
        self._options = options
        self._lock = threading.RLock()
        self._closed = False
        self._closing = False  # close() is running
        self._finish_recorded = False  # RUN_FINISHED is in the recorder
        self._outcome: str | None = None  # the flow's outcome (see the outcome property)
        self._outcome_set = False  # set explicitly: terminal events no longer change it
        self._collected = False  # finished by the garbage collector (__del__)
        # A forked child inherits this object but not the run: see close().
        self._pid = os.getpid()
        # Lazy mode: the recorder of the events recorded before the first log() (its
        # schema comes with that log()), which keeps them in its spool.
        self._pending: Any = None
        self._t0 = time.monotonic()
        self._recorder: Any = None

        # 2. The root: a local folder, or an object-store URL (s3://bucket/prefix).
        from .roots import open_root

        self._tree: RootTree = open_root(base_path, storage_options)
        self.root: Any = self._tree.where()

        # 3. Claim the id together with the "running" manifest.
        sampling_table: dict[str, Any] = {"policy": "all"} if sampling is None else {}
        if sampling is not None:
            sampling_table = {"policy": "keep_first_then_every", "keep_first": sampling[0], "every": sampling[1]}
        if max_rows is not None:
            sampling_table["max_rows"] = int(max_rows)
        self._manifest: dict[str, Any] = {
            "schema_version": self._version(self._schema),
            "run_id": "",
            "flow_name": self.flow_name,
            "mode": mode,
            "trial_id": trial_id,
            "status": "running",
            "created_at": utc_now_iso(),
            "params": self._params,
            "tags": self._tags,
            "units": self._units,
            "provenance": _provenance(provenance_opts),
            "sampling": sampling_table,
        }
        if self._schema is not None:
            self._manifest["schema"] = self._schema.to_dict()
        self._flow_dir: Any = None
        # Run ids are unique per (root, flow) across modes: a "run" folder and a dev/tuner
        # run of the same flow started in the same second would otherwise share an id,
        # and the catalog (keyed by run_id and flow_name) could not tell their rows apart.
        # The tree claims the run's own name first, then yields if the other side's name
        # exists: of two concurrent claims at least one sees the other.
        tree = self._tree
        if mode != "run":
            flow = f"{FLOWS_DIR}/{self.flow_name}"
            parts, events = (f"{flow}/{parts_dir_name(mode, kind)}" for kind in ("telemetry", "events"))
            tree.make_folders([f"{flow}/{RUNS_DIR}", parts, events])
            self._flow_dir = tree.where(flow)
            self._parts_dir, self._events_dir = tree.where(parts), tree.where(events)
        # A run folder whose recorder starts now leaves its first manifest's fsyncs to
        # that recorder: its first file (at the latest, the close of a short run) waits
        # for them in the same wait as its own, so a run costs two fewer waits for the
        # disk, and no file of the run is ever durable without its manifest.
        claimed = tree.claim_run_id(
            mode, self.flow_name, run_prefix, run_id, self._manifest, durable=self._schema is None
        )
        self._unsynced = claimed.unsynced
        rid = claimed.run_id
        self._manifest_rel, self._manifest_etag = claimed.manifest_rel, claimed.e_tag
        self._manifest_path: Any = tree.where(claimed.manifest_rel)
        self.run_path: Any = tree.where(run_prefix + rid) if mode == "run" else self._flow_dir
        self.run_id: str = rid
        self._constants["run_id"] = rid

        # 4. The recorder.
        try:
            if self._schema is not None:
                self._start_recorder(self._schema)
            if self._flow_dir is not None:
                self._update_flow_manifest()
            self.event(_events.RUN_STARTED, {"mode": mode, "pid": os.getpid()})
        except BaseException:
            self._abandon()
            raise
        with _open_lock:
            _open_runs.add(self)
        self._started = True  # __del__ finishes it from now on

    # ------------------------------------------------------------------ recorder

    def _version(self, schema: Schema | None) -> int | None:
        if self._schema_version is not None:
            return int(self._schema_version)
        return None if schema is None else schema.version

    def _check_units(self, schema: Schema, *, stacklevel: int) -> None:
        missing = [f for f in UNIT_FIELDS if f in schema and f not in self._units]
        if missing:
            warnings.warn(
                f"units for {', '.join(missing)} are missing: the CFS requires their units and how they were "
                f"computed in the manifest, e.g. units={{{missing[0]!r}: {{'unit': '1', 'method': '...'}}}} "
                "(to silence: warnings.filterwarnings('ignore', category=flightlog.UnitsWarning))",
                UnitsWarning,
                stacklevel=stacklevel,
            )

    def _new_recorder(self, schema: Schema | None) -> Any:
        opts = dict(self._options)
        if "sampling" in opts and isinstance(opts["sampling"], list):
            opts["sampling"] = tuple(opts["sampling"])
        opts.update(self._tree.recorder_options())
        if self.mode == "run":
            return FlightRecorder(
                self.run_path,
                schema,
                run_id=self.run_id,
                constants=dict(self._constants),
                _sync_first=self._unsynced,
                **opts,
            )
        return FlightRecorder.for_parts(
            self._parts_dir, self._events_dir, self.run_id, schema=schema, constants=dict(self._constants), **opts
        )

    def _start_recorder(self, schema: Schema | None) -> Any:
        rec = self._new_recorder(schema)
        self._recorder = rec
        self._bind(rec)
        return rec

    def _bind(self, rec: Any) -> None:
        # Straight to the native methods: no Python frame on the hot path.
        self.log = rec.log  # type: ignore[method-assign]
        self.record = rec.record  # type: ignore[method-assign]
        self.extend = rec.extend  # type: ignore[method-assign]
        self.flush = rec.flush  # type: ignore[method-assign]

    def _check_owner(self) -> None:
        """A forked child does not own its parent's run: refuse before taking
        ``self._lock``, which a parent thread may have held at the fork (it is never
        released in the child)."""
        if self._pid != os.getpid():
            raise FlightlogError(
                f"this run belongs to process {self._pid} (this is a forked child, process {os.getpid()}); "
                "open a recorder in the child, e.g. a TelemetryManager per worker"
            )

    def _ensure_recorder(self, first_log: Mapping[str, Any] | None = None) -> Any:
        """The recorder; in lazy mode it is created here (``first_log`` infers the schema)."""
        self._check_owner()
        with self._lock:
            if self._recorder is not None:
                return self._recorder
            if self._closed:
                raise FlightlogError(f"run {self.run_id} is closed")
            if first_log is None:
                schema = Schema(
                    [
                        Field(n, "str", nullable=(n == "trial_id"), doc=f"{n}, filled in by the manager")
                        for n in self._constants
                    ],
                    version=1 if self._schema_version is None else int(self._schema_version),
                )
                if self._pending is None:
                    rec = self._new_recorder(schema)
                else:
                    rec = self._pending
                    rec._start(schema)
            else:
                rec = self._pending_recorder()
                try:
                    rec.log(**first_log)  # infers the schema (constants first) and records the row
                except BaseException:
                    if _schema_of(rec) is None:  # inference failed: try again on the next log()
                        raise
                    self._adopt(rec)  # the schema stands; only this row was refused
                    raise
            self._adopt(rec)
            return rec

    def _pending_recorder(self) -> Any:
        """Lazy mode, before the first log(): the recorder without a schema yet
        (made on the first call; it claims the run folder)."""
        if self._pending is None:
            self._pending = self._new_recorder(None)
        return self._pending

    def _give_up_pending(self) -> None:
        """Closes the recorder still waiting for its schema, whose start failed at close:
        it lets go of the run folder's claim and spool (its close warns how many events
        go unwritten), so the closed run is not taken for a live one."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):
                pending.close()

    def _adopt(self, rec: Any) -> None:
        self._recorder, self._pending = rec, None
        schema = _schema_of(rec)
        if schema is not None:
            self._check_units(schema, stacklevel=5)
        self._bind(rec)

    # Used until the recorder exists (schema=None); then replaced per instance by
    # the recorder's native methods.
    def log(self, **fields: Any) -> None:
        """Record one row by keyword (``run_id``/``flow_name``/``trial_id`` are filled in)."""
        if self._recorder is not None:
            self._recorder.log(**fields)
            return
        self._check_owner()
        with self._lock:
            if self._recorder is None:
                self._ensure_recorder(fields)
                return
        self._recorder.log(**fields)

    def record(self, *values: Any) -> None:
        """Record one row from values in schema order, without the constant fields."""
        if self._recorder is None:
            raise SchemaError(
                "record() needs a schema: pass schema= to TelemetryManager or call log() first (it infers one)"
            )
        self._recorder.record(*values)

    def extend(self, **columns: Any) -> Any:
        """Record many rows from columns (numpy arrays or sequences) in one call."""
        if self._recorder is None:
            raise SchemaError(
                "extend() needs a schema: pass schema= to TelemetryManager or call log() first (it infers one)"
            )
        return self._recorder.extend(**columns)

    def flush(self) -> None:
        """Return when every earlier row and event is in a published file."""
        if self._recorder is not None:
            self._recorder.flush()

    def event(self, name: str, payload: Any = None, *, t_wall_ms: float | None = None) -> None:
        """Record event ``name`` (any valid name; see :mod:`flightlog.events`).

        ``payload`` is stored as JSON text; one that is not JSON-serialisable
        raises ``TypeError`` here.
        """
        validate_name("event name", name)
        self._check_owner()
        with self._lock:
            if self._closed:
                raise FlightlogError(f"run {self.run_id} is closed; cannot record event {name!r}")
            if name in OUTCOME_OF_EVENT and not self._outcome_set:
                self._outcome = OUTCOME_OF_EVENT[name]
            rec = self._recorder
            if rec is None:
                # Before the first log(): in the spool of the recorder to come.
                self._pending_recorder().event(name, payload, t_wall_ms=t_wall_ms)
                return
        if t_wall_ms is None:
            rec.event(name, payload)
        else:
            rec.event(name, payload, t_wall_ms=t_wall_ms)

    def stats(self) -> dict[str, Any]:
        """The recorder's counters (all zero before the first row of a lazy run)."""
        return dict(self._recorder.stats()) if self._recorder is not None else {}

    def now_ms(self) -> float:
        """Milliseconds since the recorder started (monotonic): the clock of ``t_wall_ms``.
        With ``schema=None`` it runs from the run's start, before the first ``log()`` too
        (the recorder that ``log()`` starts continues it)."""
        rec = self._recorder if self._recorder is not None else self._pending
        if rec is not None:
            return float(rec.now_ms())
        return (time.monotonic() - self._t0) * 1e3

    # ------------------------------------------------------------------ properties

    @property
    def recorder(self) -> Any:
        """The :class:`~flightlog.FlightRecorder` (``None`` before the first ``log()``
        when the schema is inferred)."""
        return self._recorder

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as last written (a copy)."""
        return to_toml_table(self._manifest)

    @property
    def manifest_path(self) -> Any:
        """The manifest file: ``run_path/manifest.toml`` or ``flows/<flow>/runs/<run_id>.toml``
        (a ``Path``, or an ``s3://`` URL string on an object-store root)."""
        return self._manifest_path

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def status(self) -> str:
        """``"running"``, ``"finished"`` or ``"failed"``: about the recording (did the
        ``with`` block end normally and every row get written), not the flow's result;
        see :attr:`outcome`."""
        return str(self._manifest["status"])

    @property
    def outcome(self) -> str | None:
        """The flow's outcome, as opposed to the recording's :attr:`status`: what the
        numeric code reached (``"converged"``, ``"diverged"``, ``"timeout"``...), or
        ``None`` when nothing said.

        Set it explicitly (``tm.outcome = "converged"``; any short text, at most 64
        characters, no control characters); until then the last terminal event sets
        it: ``TIMEOUT`` ``"timeout"``, ``CANCELLED`` ``"cancelled"``, ``CERT_FAIL``
        ``"cert_fail"``. Written at close to the manifest (``outcome``) and to the
        ``RUN_FINISHED`` event's payload, and shown by ``flightlog runs``, ``show``
        and ``compare``.
        """
        return self._outcome

    @outcome.setter
    def outcome(self, value: str | None) -> None:
        if value is not None:
            if not isinstance(value, str) or not value or len(value) > 64:
                raise ValueError(f"outcome must be a str of 1 to 64 characters or None, got {value!r}")
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValueError(f"outcome {value!r} contains a control character")
        with self._lock:
            if self._closed:
                raise FlightlogError(f"run {self.run_id} is closed; its outcome is in the manifest already")
            self._outcome, self._outcome_set = value, True

    def __repr__(self) -> str:
        return (
            f"TelemetryManager(flow_name={self.flow_name!r}, run_id={self.run_id!r}, mode={self.mode!r}, "
            f"status={self.status!r})"
        )

    def _repr_html_(self) -> str:
        from .._html import key_values

        stats = self._recorder.stats() if getattr(self, "_recorder", None) is not None else {}
        items = [
            ("run_id", self.run_id),
            ("flow_name", self.flow_name),
            ("mode", self.mode),
            ("status", self.status),
            *((("outcome", self._outcome),) if getattr(self, "_outcome", None) is not None else ()),
            ("path", self.run_path),
            *((k, stats[k]) for k in ("rows_offered", "rows_written", "rows_dropped", "segments") if k in stats),
        ]
        return key_values("TelemetryManager", items)

    # ------------------------------------------------------------------ closing

    def close(self, status: str | None = None, *, error: BaseException | None = None) -> None:
        """Finish the run: ``RUN_FINISHED``, close the recorder, rewrite the manifest.

        ``status`` is ``"finished"`` (default) or ``"failed"`` (default when
        ``error`` is given; its type and message go to the manifest). Idempotent.
        A recorder that fails to close (``WriteError``) marks the run ``failed``
        and the error is raised after the manifest is written; published
        segments stay for ``flightlog recover``.
        """
        if status is None:
            status = "failed" if error is not None else "finished"
        if status not in ("finished", "failed"):
            raise ValueError(f"status must be 'finished' or 'failed', got {status!r}")
        if self._pid != os.getpid():
            # A forked child: the run, its recorder and its manifest are the
            # parent's; touch nothing (and take no lock a parent thread held).
            return
        with self._lock:
            if self._closed or self._closing:
                # _closing: a call from inside close() on this thread (a signal handler, a
                # finaliser); the outer call finishes the run.
                return
            self._closing = True
            try:
                close_error = self._close_locked(status, error)
            finally:
                self._closing = False
        if close_error is not None:
            raise close_error

    def _forget(self) -> None:
        """Leave the set of runs the exit hook closes (the run is closed)."""
        with _open_lock:
            _open_runs.discard(self)

    def __enter__(self) -> TelemetryManager:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(error=None if _clean_exit(exc) else exc)

    def __del__(self) -> None:
        # A run dropped without close() is finished as the exit hook finishes one still
        # open at exit. The exit hook cannot: a run in a reference cycle has left its
        # WeakSet when the collector gets here. Not during interpreter shutdown: the exit
        # hook has run, and the modules close() needs may already be torn down (the
        # recorder's own drop still makes every row durable; `recover` finishes the rest).
        try:
            if not self.__dict__.get("_started") or self._closed or self._closing or sys.is_finalizing():
                return
            self._collected = True
            if _recorders_lock_free():
                self.close()
            else:
                # The collector runs inside a section of this thread that holds the
                # recorders' lock, which closing a recorder takes: close on a thread of
                # its own, which waits for the section to end (and keeps this manager
                # alive until then).
                threading.Thread(target=self._close_quietly, name="flightlog-close-collected").start()
        except Exception:  # nowhere to raise it; the manifest names what went wrong
            pass

    def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

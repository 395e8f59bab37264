"""The close path of :class:`~flightlog.TelemetryManager`: ``RUN_FINISHED``, closing the
recorder, the final manifest (local file or conditional put) and the flow manifest.

:class:`_Finishing` is a mixin of :class:`~flightlog.runs.manager.TelemetryManager`; it
holds no state of its own (the attributes below are the manager's).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Mapping
from typing import Any

from .. import events as _events
from .._errors import WriteError
from .._schema import Schema
from .layout import FLOWS_DIR
from .manifest import MANIFEST_NAME, ManifestError, utc_now_iso
from .tree import RootTree

_MAX_ERROR_MESSAGE = 4000


def _error_type(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _error_message(exc: BaseException) -> str:
    msg = str(exc)
    return msg if len(msg) <= _MAX_ERROR_MESSAGE else msg[: _MAX_ERROR_MESSAGE - 3] + "..."


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """fsync a folder, so that the names in it are durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _schema_of(rec: Any) -> Schema | None:
    schema = getattr(rec, "schema", None)
    return schema if isinstance(schema, Schema) else None


class _Finishing:
    """Closing a run (see the module doc)."""

    # The manager's attributes this mixin uses.
    run_id: str
    flow_name: str
    mode: str
    run_path: Any
    _manifest: dict[str, Any]
    _manifest_path: Any
    _manifest_rel: str
    _manifest_etag: str | None
    _tree: RootTree
    _recorder: Any
    _pending: Any
    _schema: Schema | None
    _outcome: str | None
    _flow_dir: Any
    _closed: bool
    _collected: bool
    _finish_recorded: bool

    def _ensure_recorder(self, first_log: Mapping[str, Any] | None = None) -> Any:
        raise NotImplementedError

    def _version(self, schema: Schema | None) -> int | None:
        raise NotImplementedError

    def _forget(self) -> None:
        raise NotImplementedError

    def _give_up_pending(self) -> None:
        raise NotImplementedError

    def _close_locked(self, status: str, error: BaseException | None) -> BaseException | None:
        """The work of :meth:`close`; returns the error to raise.

        An interrupt (``KeyboardInterrupt``, or any exception a signal handler raises)
        during the work does not stop it: the recorder is closed all the same (every
        row written), the run ends ``failed`` with the interrupt as its error, and the
        interrupt is re-raised. A second interrupt while the manifest is written
        escapes; the run then stays open (``closed`` is false, the exit hook still
        knows it), so another ``close()`` finishes it.
        """
        interrupt: BaseException | None = None
        close_error: BaseException | None = None
        # The folder whose fsync the recorder's close left to this close (a short run's
        # two final files: their data are durable, their names not yet). It is run at
        # the same time as the final manifest's own fsync and completes before the
        # manifest's rename (publish_bytes(after=...)): a manifest listing the files is
        # never durable before their names are, and close() returns only once both
        # are. Every other path fsyncs the folder below before close() returns.
        owed: str | None = None
        try:
            rec = self._ensure_recorder()
        except Exception as e:
            rec, close_error = None, e
            # The recorder waiting for its schema could not start (its folder not fit
            # for it): the run ends failed all the same, and lets go of its folder.
            self._give_up_pending()
        except BaseException as e:
            rec, interrupt = self._recorder, e
        if interrupt is not None and error is None:
            status, error = "failed", interrupt
        if rec is not None:
            if not self._finish_recorded:
                payload: dict[str, Any] = {"status": status}
                if self._outcome is not None:
                    payload["outcome"] = self._outcome
                if error is not None:
                    payload["error_type"] = _error_type(error)
                    payload["error_message"] = _error_message(error)
                try:
                    rec.event(_events.RUN_FINISHED, payload)
                    self._finish_recorded = True
                except Exception:
                    pass
                except BaseException as e:
                    interrupt = interrupt or e
            # Only a local run folder's close defers its fsync (the short close
            # publishes both final files into the run folder).
            defer = getattr(rec, "_close_deferring_folder_sync", None)
            if self.mode != "run" or self._tree.kind != "local":
                defer = None
            try:
                if defer is not None:
                    owed = defer()
                else:
                    rec.close()
            except Exception as e:
                close_error = e
            except BaseException as e:
                # Cut short (the native close cannot be interrupted: the interrupt came
                # just before or after it): close again, which is idempotent. A second
                # interrupt here escapes and leaves the run open.
                interrupt = interrupt or e
                if defer is not None:
                    # The interrupt may have come between the native close and the
                    # assignment, losing the folder it owed: fsync the run folder.
                    owed = os.fspath(self.run_path)
                try:
                    rec.close()
                except Exception as e2:
                    close_error = e2
        if interrupt is not None and error is None:
            status, error = "failed", interrupt
        if close_error is not None and error is None:
            status, error = "failed", close_error
        try:
            self._finish_manifest(rec, status, error)
            close_error = self._publish_final_manifest(owed, close_error)
            owed = None  # fsynced before the manifest was placed (or it failed: see below)
        finally:
            if owed is not None:
                # Not handed to the manifest's publish (interrupted before it): the
                # files' names are made durable here, as the recorder's close would.
                try:
                    fsync_folder(owed)
                except OSError as e:
                    if close_error is None:
                        close_error = WriteError(e.errno, f"run {self.run_id}: fsync of {owed} failed: {e}")
                        close_error.__cause__ = e
        # Closed only now: until the final manifest is written, another close() (or the
        # exit hook) finishes the run.
        self._closed = True
        self._forget()
        if self._flow_dir is not None:
            with contextlib.suppress(OSError, ManifestError):
                self._update_flow_manifest()
        return interrupt if interrupt is not None else close_error

    def _publish_final_manifest(self, owed: str | None, close_error: BaseException | None) -> BaseException | None:
        """Writes the final manifest (after ``owed``'s fsync); returns the error to raise."""
        try:
            try:
                self._write_final_manifest(after=owed)
            except OSError:
                if owed is not None:
                    # The publish may have failed before (or at) the owed fsync: it is
                    # still owed. A failure here is the disk's answer for the files.
                    fsync_folder(owed)
                raise
        except OSError as e:
            # The disk that refused the data usually refuses the manifest too (full,
            # read-only, run folder deleted): the recorder's WriteError says what
            # happened to the rows and stays the error raised; the manifest failure
            # is added to it. Alone, it is a WriteError naming the manifest.
            note = f"the final manifest {self._manifest_path} could not be written either: {e}"
            if close_error is None:
                close_error = WriteError(
                    e.errno,
                    f"run {self.run_id}: the final manifest {self._manifest_path} could not be written: {e}",
                )
                close_error.__cause__ = e
            else:
                close_error.add_note(note)
        return close_error

    def _write_final_manifest(self, after: str | None = None) -> None:
        self._tree.replace_manifest(self._manifest_rel, self._manifest, self._manifest_etag, after=after)

    def _finish_manifest(self, rec: Any, status: str, error: BaseException | None) -> None:
        m = self._manifest
        m["status"] = status
        if self._outcome is not None:
            m["outcome"] = self._outcome
        m["finished_at"] = utc_now_iso()
        if error is not None:
            m["error_type"] = _error_type(error)
            m["error_message"] = _error_message(error)
        if rec is None:
            return
        # The schema given at the start is the recorder's (and is in the manifest
        # already); a lazy run's comes with its first log().
        schema = self._schema if self._schema is not None else _schema_of(rec)
        if schema is not None:
            m["schema_version"] = self._version(schema)
            m["schema"] = schema.to_dict()
        stats: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            stats = dict(rec.stats())
        count_keys = (
            "rows_offered",
            "rows_written",
            "rows_sampled_out",
            "rows_dropped",
            "rows_over_budget",
            "rows_lost",
            "segments",
            "events",
        )
        m["counts"] = {k: stats[k] for k in count_keys if k in stats}
        m["cost"] = {k: stats[k] for k in ("flush_secs", "bytes_written", "producer_stalls") if k in stats}
        files = []
        for f in getattr(rec, "files", None) or []:
            if isinstance(f, Mapping):
                path, rows, size = f["path"], f.get("rows"), f.get("bytes")
            else:
                path, rows, size = f
            path = os.fspath(path)
            name, parent = os.path.basename(path), os.path.basename(os.path.dirname(path))
            if self.mode == "run":
                kind = "events" if name.startswith("events") else "telemetry"
            else:
                kind = "events" if parent.endswith("_events") else "telemetry"
            rel = self._tree.relative_to_manifest(self._manifest_rel, path)
            files.append({"path": rel, "kind": kind, "rows": rows, "bytes": size})
        m["files"] = files
        # Keep the documented key order: scalars, then the tables.
        order = [
            "schema_version",
            "run_id",
            "flow_name",
            "mode",
            "trial_id",
            "status",
            "outcome",
            "created_at",
            "finished_at",
            "error_type",
            "error_message",
        ]
        self._manifest = {k: m[k] for k in order if k in m} | {k: v for k, v in m.items() if k not in order}

    def _update_flow_manifest(self) -> None:
        """Create or update ``flows/<flow>/manifest.toml`` under a file lock, only
        when something in it changes (a new schema or mode)."""
        assert self._flow_dir is not None
        schema = self._schema or _schema_of(self._recorder)
        schema_json = schema.to_json() if schema is not None else None

        def up_to_date(m: dict[str, Any] | None) -> bool:
            return (
                m is not None
                and self.mode in m.get("modes", [])
                and (schema_json is None or m.get("schema") == schema_json)
            )

        def updated(m: dict[str, Any] | None) -> dict[str, Any]:
            now = utc_now_iso()
            data: dict[str, Any] = dict(m or {})
            data["flow_name"] = self.flow_name
            data.setdefault("created_at", now)
            data["updated_at"] = now
            data["modes"] = sorted({*data.get("modes", []), self.mode})
            if schema is not None:
                data["schema_version"] = self._version(schema)
                data["schema"] = schema_json
            return data

        rel = f"{FLOWS_DIR}/{self.flow_name}/{MANIFEST_NAME}"
        # A tuner starting thousands of runs re-reads the flow manifest only when another
        # process changed it (where the tree can tell without a request).
        key = (self._tree.url(rel), self.mode, schema_json)
        version = self._tree.cheap_version(rel)
        if version is not None and _flow_checked.get(key) == version:
            return
        # From __del__ the collector may be running inside another run's section holding
        # the flow's lock on this very thread: waiting would never end, so try it only
        # (the next run of the flow, or `compact`, brings it up to date).
        stored = self._tree.modify_manifest(
            rel, lambda m: None if up_to_date(m) else updated(m), blocking=not self._collected
        )
        if stored is not None:
            _flow_checked[key] = self._tree.cheap_version(rel)

    def _abandon(self) -> None:
        """Undo the claim after the recorder could not start."""
        self._closed = True
        for rec in (self._recorder, self._pending):
            if rec is not None:
                # A pending recorder's events go with the claim (no warning about them).
                with contextlib.suppress(Exception), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    rec.close()
        folder = self._manifest_rel.rsplit("/", 1)[0] if self.mode == "run" else None
        self._tree.unclaim(self._manifest_rel, folder)


# Flow manifests this process found up to date, by (path, mode, schema JSON),
# with their version then (RootTree.cheap_version): a tuner starting thousands of runs re-reads the
# flow manifest only when another process changed it.
_flow_checked: dict[tuple[str, str, str | None], str | None] = {}

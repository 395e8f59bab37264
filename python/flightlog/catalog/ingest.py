"""Planning what is new: discovery of run folders and flows, without holding the database."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import ManifestError
from ..runs.ids import DEFAULT_RUN_PREFIX
from ..runs.layout import MANIFEST_NAME, SEGMENT_ROWS_KEY, SEGMENTS_KEY, TELEMETRY_FILE
from ..runs.manifest import parse_manifest
from ..runs.views import LocalTree, ObjectPath, ObjectStat, TreePath
from .base import _ManagerBase
from .listing import _listing_row
from .parquet import _PART_RE, _list_parts, _read_file_meta, _read_kv
from .quick import settled_folders, top_entries
from .report import ConsolidationReport
from .schema import _KINDS, _LISTING, _MODES, _RUNS_COLUMNS, _STATUSES, FINAL_STATUSES
from .sql import _short, table_columns
from .values import _float, _int, _json_text, _str, _utc_now_text, _utc_text

# Runs are read only where they are: a link could point outside the root, or at
# another run (whose rows would then be ingested twice).
_LINK_REASON = "a symbolic link: not followed (it may point outside the root or at another run)"

#: A run folder found by discovery: its path, or (a local folder with nothing new) the
#: path as a str, made a Path only when needed.
_Folder = tuple[str | TreePath, tuple[str, str | None, str, int | None], dict[str, Any] | None]


def _folder_path(folder: str | TreePath) -> TreePath:
    return Path(folder) if isinstance(folder, str) else folder


def _compacted_marker(rel: str, rows: int) -> str:
    """The ``_ingested_files`` path recording that the version of compacted file ``rel``
    with ``rows`` rows is covered (compaction only appends, so rows identify a version)."""
    return f"{rel}#rows={rows}"


@dataclasses.dataclass
class _Piece:
    """Rows [lo, hi) of a file recorded under ``rel`` in ``_ingested_files``."""

    rel: str
    run_id: str | None
    flow_name: str | None
    lo: int | None = None
    hi: int | None = None
    size: int | None = None
    mtime: float | None = None


@dataclasses.dataclass
class _Unit:
    """One Parquet file to read: whole (one piece) or row ranges of a compacted file."""

    kind: str
    file: TreePath
    rel: str
    pieces: list[_Piece]
    compacted: bool = False
    marker: str | None = None  # _ingested_files row recording that a compacted version is covered
    flow_name: str | None = None
    size: int = 0
    mtime: float = 0.0
    rows: int = 0
    schema_version: int | None = None
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    kv: dict[str, str] = dataclasses.field(default_factory=dict)
    expected_rows: int | None = None  # the manifest's rows_written (run-folder telemetry)


@dataclasses.dataclass
class _State:
    ingested: dict[str, tuple[int | None, float | None, str | None]]
    files_by_run: dict[tuple[str | None, str | None], list[str]]
    runs: dict[str, dict[str, Any]]
    columns: dict[str, dict[str, str]]
    #: run-folder files already ingested, by (kind, run_id, flow_name): their paths
    run_files: dict[tuple[str, str | None, str | None], list[str]] = dataclasses.field(default_factory=dict)
    #: manifest paths that have a ``_flightlog.run_listing`` row
    listed: set[str] = dataclasses.field(default_factory=set)
    #: (name, is a folder, is a symlink) of the entries right below a local root, sorted by
    #: name, when they were scanned with the bookkeeping (else discovery lists the root)
    folders: list[tuple[str, bool, bool]] | None = None
    #: run folders (by name) with nothing new, recognised in one query: their run info, as
    #: ``_check_run`` returns it. Their bookkeeping rows are left out of the fields above.
    settled: dict[str, tuple[str, str | None, str, int | None]] = dataclasses.field(default_factory=dict)
    _by_key: dict[tuple[str | None, str | None], list[str]] | None = None

    def runs_by_key(self) -> dict[tuple[str | None, str | None], list[str]]:
        """Manifest paths of ``runs`` by (run_id, flow_name), built once (a lookup per
        changed run, not a scan of every run: quadratic at 10,000 changed runs)."""
        if self._by_key is None:
            self._by_key = {}
            for mp, known in self.runs.items():
                self._by_key.setdefault((known["run_id"], known["flow_name"]), []).append(mp)
        return self._by_key


@dataclasses.dataclass
class _Plan:
    """What discovery decided besides the files to read."""

    #: (old path, new path, size, mtime): an ingested run-folder file whose folder was
    #: renamed (the old path is gone, the same run's file of the same size is at the new one)
    moved: list[tuple[str, str, int, float]] = dataclasses.field(default_factory=list)
    #: (run_id, flow_name) of runs whose every ingested file and manifest are gone (prune=True)
    gone: list[tuple[str | None, str | None]] = dataclasses.field(default_factory=list)
    #: manifest paths of ``runs`` rows whose files are gone, without their run being gone
    gone_manifests: list[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- the manager


class _Discovery(_ManagerBase):
    """Discovery (no database held): which files and runs rows are new or changed."""

    def _load_state(self, con: Any, *, quick: bool = False) -> _State:
        """The bookkeeping discovery compares the root with. ``quick`` (a consolidation
        without pruning, of a local root): the run folders with nothing new are recognised
        in the database first (:func:`~flightlog.catalog.quick.settled_folders`) and their rows
        left out: at 100,000 runs, loading every row into Python took seconds."""
        root = self.root
        folders: list[tuple[str, bool, bool]] | None = None
        settled: dict[str, tuple[str, str | None, str, int | None]] = {}
        if quick and isinstance(self._tree, LocalTree) and isinstance(root, Path) and root.is_dir():
            folders, settled = settled_folders(con, root)
        ingested_sql = "SELECT path, kind, run_id, flow_name, size, mtime, source FROM _ingested_files"
        runs_sql = (
            "SELECT manifest_path, manifest_mtime_ns, manifest_size, status, manifest_status, run_id, flow_name, "
            "mode, path, rows_written FROM runs"
        )
        listed_sql = f"SELECT manifest_path FROM {_LISTING}"
        if settled:
            ingested_sql += " i ANTI JOIN _flightlog_settled_paths s ON s.path = i.path"
            runs_sql += " r ANTI JOIN _flightlog_settled_paths s ON s.path = r.manifest_path"
            listed_sql += " l ANTI JOIN _flightlog_settled_paths s ON s.path = l.manifest_path"
        ingested: dict[str, tuple[int | None, float | None, str | None]] = {}
        files_by_run: dict[tuple[str | None, str | None], list[str]] = {}
        run_files: dict[tuple[str, str | None, str | None], list[str]] = {}
        for path, kind, run_id, flow, size, mtime, source in con.execute(ingested_sql).fetchall():
            ingested[path] = (size, mtime, source)
            files_by_run.setdefault((run_id, flow), []).append(source or path)
            if source is None and kind in _KINDS and not path.startswith("flows/"):
                run_files.setdefault((kind, run_id, flow), []).append(path)
        runs = {}
        for row in con.execute(runs_sql).fetchall():
            keys = ("manifest_mtime_ns", "manifest_size", "status", "manifest_status", "run_id", "flow_name", "mode")
            runs[row[0]] = dict(zip(keys, row[1:8], strict=True)) | {"path": row[8], "rows_written": row[9]}
        columns = {t: table_columns(con, t) for t in _KINDS}
        listed = {r[0] for r in con.execute(listed_sql).fetchall()}
        return _State(ingested, files_by_run, runs, columns, run_files, listed, folders, settled)

    # ------------------------------------------------------------------ consolidation

    def _rel(self, path: TreePath) -> str:
        root = self.root
        try:
            if isinstance(path, Path) and isinstance(root, Path):
                if type(path) is type(root):
                    # A string prefix, not relative_to(): 3 us a call, 7 calls a run.
                    text, top = str(path), str(root)
                    if text.startswith(top + "/") and "/.." not in text and "/./" not in text:
                        return text[len(top) + 1 :]
                return path.relative_to(root).as_posix()
            if isinstance(path, ObjectPath) and isinstance(root, ObjectPath):
                return path.relative_to(root).as_posix()
        except ValueError:
            pass
        return path.as_posix()

    def _settled(self, folder: str, name: str, state: _State) -> tuple[str, str | None, str, int | None] | None:
        """A local run folder with nothing to do, known without building a path: its
        manifest unchanged since it was consolidated (mtime_ns, size; a terminal status,
        listed), and each of its data files ingested and unchanged (size, mtime). Returns
        its run info, as :meth:`_check_run` would; None means "look at it in full"
        (anything new, changed, missing or odd is handled and reported there)."""
        rel = f"{name}/manifest.toml"
        known = state.runs.get(rel)
        if known is None or known["status"] == "running" or rel not in state.listed:
            return None
        try:
            st = os.lstat(f"{folder}/manifest.toml")
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or (st.st_mtime_ns, st.st_size) != (
            known["manifest_mtime_ns"],
            known["manifest_size"],
        ):
            return None
        if known["manifest_status"] not in FINAL_STATUSES:
            return None
        for kind in _KINDS:
            done = state.ingested.get(f"{name}/{kind}.parquet")
            if done is None:
                return None
            try:
                fst = os.lstat(f"{folder}/{kind}.parquet")
            except OSError:
                return None
            size, mtime, _ = done
            if (
                not stat.S_ISREG(fst.st_mode)
                or size != fst.st_size
                or mtime is None
                or abs(mtime - fst.st_mtime) > 1e-6
            ):
                return None
        return known["run_id"], known["flow_name"], known["manifest_status"], known["rows_written"]

    def _discover(
        self, state: _State, report: ConsolidationReport, prune: bool
    ) -> tuple[list[dict[str, Any]], list[_Unit], _Plan]:
        run_rows: list[dict[str, Any]] = []
        units: list[_Unit] = []
        plan = _Plan()
        folders: list[_Folder] = []
        self._tree.refresh()  # an object store is listed once, here
        lake_dir = self._lake_data_folder()
        settled: set[int] = set()
        if self.root.is_dir() and isinstance(self._tree, LocalTree):
            # Local: one scandir; a folder with nothing new is recognised from two lstat calls
            # and the bookkeeping, without a Path (consolidate with nothing new, 100,000 runs).
            top = str(self.root)
            entries = state.folders if state.folders is not None else top_entries(top)
            for name, is_dir, is_link in entries:
                if not is_dir:
                    continue
                entry_path = f"{top}/{name}"
                if not is_link:
                    info = (
                        state.settled.get(name) if state.folders is not None else self._settled(entry_path, name, state)
                    )
                    if info is not None:
                        settled.add(len(folders))
                        folders.append((entry_path, info, None))  # a str: a Path only if it has a copy
                        continue
                path = Path(entry_path)
                if path == lake_dir:
                    continue  # the DuckLake catalog's own data files
                if is_link:
                    if (path / MANIFEST_NAME).exists():
                        report.files_skipped.append((name, _LINK_REASON))
                    continue
                found = self._run_folder_info(path, state, report, run_rows)
                if found is not None:
                    folders.append((path, *found))
        elif self.root.is_dir():
            for entry in self._tree.scandir(self.root):
                if entry.name == "flows" or entry.name.startswith(".") or not entry.is_dir:
                    continue
                if entry.path == lake_dir:
                    continue  # the DuckLake catalog's own data files
                if entry.is_symlink:
                    if (entry.path / MANIFEST_NAME).exists():
                        report.files_skipped.append((entry.name, _LINK_REASON))
                    continue
                found = self._run_folder_info(entry.path, state, report, run_rows)
                if found is not None:
                    folders.append((entry.path, *found))
        if self.root.is_dir():
            keep = self._one_folder_per_run(folders, state, report, run_rows)
            for i in keep:
                if i not in settled:
                    folder, info, row = folders[i]
                    self._discover_run_folder(_folder_path(folder), info, row, state, report, units, plan)
            flows = self.root / "flows"
            if flows.is_symlink():
                report.files_skipped.append(("flows", _LINK_REASON))
            elif flows.is_dir():
                for entry in self._tree.scandir(flows):
                    if entry.is_dir and not entry.name.startswith("."):
                        if entry.is_symlink:
                            report.files_skipped.append((f"flows/{entry.name}", _LINK_REASON))
                            continue
                        self._discover_flow(entry.path, state, report, run_rows, units)
        self._read_metadata(units, report)
        if prune:
            self._gone_runs(state, plan, run_rows)
        return run_rows, [u for u in units if u.pieces or u.marker], plan

    def _lake_data_folder(self) -> Any:
        """The DuckLake data folder when it is a folder right below the root (else None)."""
        if self.data_path is None:
            return None
        top = self.data_path.rstrip("/")
        root = str(self.root).rstrip("/")
        if top.startswith(root + "/") and "/" not in top[len(root) + 1 :]:
            return self.root / top[len(root) + 1 :]
        return None

    def _parse_manifest(self, path: Any, report: ConsolidationReport) -> dict[str, Any] | None:
        """A manifest's content, or None (reported) when it is malformed."""
        rel = self._rel(path)
        try:
            data = parse_manifest(self._tree.read_bytes(path), rel)
        except FileNotFoundError:
            return None
        except (OSError, ManifestError) as e:
            report.files_skipped.append((rel, f"malformed manifest: {e}"))
            return None
        problems = []
        if not isinstance(data.get("run_id"), str) or not data["run_id"]:
            problems.append("run_id missing or not a string")
        if data.get("status") not in _STATUSES:
            problems.append(f"status {data.get('status')!r} is not one of {sorted(_STATUSES)}")
        if data.get("mode", "run") not in _MODES:
            problems.append(f"mode {data.get('mode')!r} is not one of {list(_MODES)}")
        for table in ("params", "tags", "units", "provenance", "counts", "cost", "sampling"):
            if table in data and not isinstance(data[table], Mapping):
                problems.append(f"[{table}] is not a table")
        if problems:
            report.files_skipped.append((rel, "malformed manifest: " + "; ".join(problems)))
            return None
        return data

    def _run_row(
        self,
        data: Mapping[str, Any],
        status: str,
        path: TreePath,
        manifest: TreePath,
        st: os.stat_result | ObjectStat,
    ) -> dict[str, Any]:
        prov = data.get("provenance") or {}
        counts = data.get("counts") or {}
        cost = data.get("cost") or {}
        sampling = data.get("sampling") or {}
        created, finished = _utc_text(data.get("created_at")), _utc_text(data.get("finished_at"))
        duration = None
        if created and finished:
            duration = (_dt.datetime.fromisoformat(finished) - _dt.datetime.fromisoformat(created)).total_seconds()
        argv = prov.get("argv")
        return {
            "run_id": data["run_id"],
            "flow_name": _str(data.get("flow_name")),
            "mode": _str(data.get("mode", "run")),
            "trial_id": _str(data.get("trial_id")),
            "status": status,
            "manifest_status": data["status"],
            "created_at": created,
            "finished_at": finished,
            "duration_s": duration,
            "error_type": _str(data.get("error_type")),
            "error_message": _str(data.get("error_message")),
            "schema_version": _int(data.get("schema_version")),
            **{k: _int(counts.get(k)) for k in _RUNS_COLUMNS if k.startswith("rows_")},
            "segments": _int(counts.get("segments")),
            "events": _int(counts.get("events")),
            "flush_secs": _float(cost.get("flush_secs")),
            "bytes_written": _int(cost.get("bytes_written")),
            "producer_stalls": _int(cost.get("producer_stalls")),
            "sampling_keep_first": _int(sampling.get("keep_first")),
            "sampling_every": _int(sampling.get("every")),
            "max_rows": _int(sampling.get("max_rows")),
            "params": _json_text(data.get("params")),
            "tags": _json_text(data.get("tags")),
            "units": _json_text(data.get("units")),
            "host": _str(prov.get("host")),
            "pid": _int(prov.get("pid")),
            "user": _str(prov.get("user")),
            "argv": _json_text(argv) if isinstance(argv, list) else _str(argv),
            "cwd": _str(prov.get("cwd")),
            "python": _str(prov.get("python")),
            "platform": _str(prov.get("platform")),
            "flightlog_version": _str(prov.get("flightlog_version")),
            "numpy_version": _str(prov.get("numpy_version")),
            "git_commit": _str(prov.get("git_commit")),
            "git_dirty": prov.get("git_dirty") if isinstance(prov.get("git_dirty"), bool) else None,
            "path": self._rel(path),
            "manifest_path": self._rel(manifest),
            "manifest_mtime_ns": st.st_mtime_ns,
            "manifest_size": st.st_size,
            "updated_at": _utc_now_text(),
            "_listing": _listing_row(data, self._rel(manifest), st),
        }

    def _check_run(
        self,
        manifest: TreePath,
        run_path: TreePath,
        folder: TreePath | None,
        state: _State,
        report: ConsolidationReport,
        run_rows: list[dict[str, Any]],
    ) -> tuple[str, str | None, str, int | None] | None:
        """Reads a run's manifest if needed; queues its runs row when new or changed.

        Returns (run_id, flow_name, manifest status, rows_written) or None when it is
        missing/malformed.
        """
        rel = self._rel(manifest)
        reason = self._tree.unreadable(manifest)
        if reason is not None:  # a FIFO would block the read; a link may point at another run
            report.files_skipped.append((rel, f"manifest is {reason}"))
            return None
        try:
            st = manifest.stat()
        except FileNotFoundError:
            return None
        known = state.runs.get(rel)
        unchanged = backfill = False
        if known is not None:
            unchanged = known["manifest_mtime_ns"] == st.st_mtime_ns and known["manifest_size"] == st.st_size
            # A catalog written before _flightlog.run_listing existed gets its listing rows once.
            backfill = unchanged and known["manifest_status"] in FINAL_STATUSES and rel not in state.listed
            if unchanged and known["status"] != "running" and not backfill:
                return known["run_id"], known["flow_name"], known["manifest_status"], known["rows_written"]
        data = self._parse_manifest(manifest, report)
        if data is None:
            return None
        status = self._tree.evidence_status(data, folder if folder is not None else manifest)
        if known is None or not unchanged or known["status"] != status:
            row = self._run_row(data, status, run_path, manifest, st)
            row["_new"] = known is None
            run_rows.append(row)
        elif backfill:
            row = self._run_row(data, status, run_path, manifest, st)
            if row["_listing"] is not None:
                row["_new"], row["_listing_only"] = False, True
                run_rows.append(row)
        counts = data.get("counts") or {}
        return data["run_id"], _str(data.get("flow_name")), data["status"], _int(counts.get("rows_written"))

    def _file_piece(
        self, path: TreePath, state: _State, report: ConsolidationReport, run_id: str | None, flow: str | None
    ) -> _Piece | None:
        """A whole-file piece for ``path`` if it is not ingested yet (None otherwise)."""
        rel = self._rel(path)
        reason = self._tree.unreadable(path)
        if reason is not None:  # DuckDB would block on a FIFO, or read another run through a link
            report.files_skipped.append((rel, reason))
            return None
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        known = state.ingested.get(rel)
        if known is not None:
            size, mtime, _ = known
            if size is not None and (size != st.st_size or (mtime is not None and abs(mtime - st.st_mtime) > 1e-6)):
                report.files_skipped.append(
                    (rel, "changed after it was ingested; remove the run and consolidate(prune=True) to reload it")
                )
            return None
        return _Piece(rel, run_id, flow, size=st.st_size, mtime=st.st_mtime)

    def _run_folder_info(
        self, folder: TreePath, state: _State, report: ConsolidationReport, run_rows: list[dict[str, Any]]
    ) -> tuple[tuple[str, str | None, str, int | None], dict[str, Any] | None] | None:
        """(run info, its queued runs row or None) of a run folder, or None when it has no
        usable manifest."""
        manifest = folder / MANIFEST_NAME
        if not manifest.exists() and not manifest.is_symlink():
            if (folder / TELEMETRY_FILE).exists():
                report.files_skipped.append((self._rel(folder), "run folder without manifest.toml"))
            return None
        queued = len(run_rows)
        info = self._check_run(manifest, folder, folder, state, report, run_rows)
        if info is None:
            return None
        return info, run_rows[-1] if len(run_rows) > queued else None

    def _one_folder_per_run(
        self,
        folders: list[_Folder],
        state: _State,
        report: ConsolidationReport,
        run_rows: list[dict[str, Any]],
    ) -> list[int]:
        """One folder per (run_id, flow_name): a run copied (``cp -r fda_run_a fda_run_a.bak``)
        or renamed is ingested once. The folder kept is the one the catalog already knows,
        else the one named after the run id (``fda_run_<id>`` or ``<id>``, then any
        ``<run_prefix><id>``), else the first by name; the others are
        reported as skipped, naming both folders."""
        # Only runs found in more than one folder are grouped (100,000 runs, nearly all unique).
        first: dict[tuple[str, str | None], int] = {}
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i, (_, info, _) in enumerate(folders):
            key = (info[0], info[1])
            j = first.setdefault(key, i)
            if j != i:
                groups.setdefault(key, [j]).append(i)
        if not groups:
            return list(range(len(folders)))
        keep = [i for key, i in first.items() if key not in groups]
        for run_id, flow in sorted(groups, key=first.__getitem__):  # in the order they were found
            idx = groups[(run_id, flow)]

            def rank(i: int, run_id: str = run_id) -> tuple[bool, bool, bool, str]:
                folder = _folder_path(folders[i][0])
                known = self._rel(folder / MANIFEST_NAME) in state.runs or folder.name in state.settled
                canonical = folder.name in (f"{DEFAULT_RUN_PREFIX}{run_id}", run_id)
                # <run_prefix><run_id> for any run_prefix (the catalog is not told the prefix)
                named = folder.name.endswith(run_id)
                return (not known, not canonical, not named, folder.name)

            idx.sort(key=rank)
            keep.append(idx[0])
            primary = self._rel(_folder_path(folders[idx[0]][0]))
            for i in idx[1:]:
                folder, _, row = folders[i]
                if row is not None:
                    run_rows.remove(row)
                report.files_skipped.append(
                    (
                        self._rel(_folder_path(folder)),
                        f"the same run {run_id!r} (flow {flow!r}) as {primary}: a copied or renamed run folder; "
                        f"its rows are ingested once, from {primary}",
                    )
                )
        return sorted(keep)

    def _discover_run_folder(
        self,
        folder: TreePath,
        info: tuple[str, str | None, str, int | None],
        row: dict[str, Any] | None,
        state: _State,
        report: ConsolidationReport,
        units: list[_Unit],
        plan: _Plan,
    ) -> None:
        run_id, flow, manifest_status, rows_written = info
        if row is not None:
            # A renamed folder's run replaces the runs row of its old place (gone).
            row["_replaces"] = [
                mp
                for mp in state.runs_by_key().get((run_id, flow), ())
                if mp != row["manifest_path"]
                and (known := state.runs[mp]) is not None
                and known.get("mode", "run") == "run"
                and not (self.root / mp).exists()
            ]
        if manifest_status not in FINAL_STATUSES:
            return  # not immutable yet: segments may still be merged
        for kind in _KINDS:
            path = folder / f"{kind}.parquet"
            rel = self._rel(path)
            if not path.exists() and not path.is_symlink():
                if rel not in state.ingested:
                    report.files_skipped.append((rel, f"missing in a {manifest_status} run"))
                continue
            if rel not in state.ingested and self._moved(path, rel, kind, run_id, flow, state, report, plan):
                continue
            piece = self._file_piece(path, state, report, run_id, flow)
            if piece is not None:
                unit = _Unit(kind, path, piece.rel, [piece], size=piece.size or 0, mtime=piece.mtime or 0.0)
                if kind == "telemetry":
                    unit.expected_rows = rows_written
                units.append(unit)

    def _moved(
        self,
        path: TreePath,
        rel: str,
        kind: str,
        run_id: str,
        flow: str | None,
        state: _State,
        report: ConsolidationReport,
        plan: _Plan,
    ) -> bool:
        """Whether the run's rows of ``kind`` are already ingested from another path (True:
        nothing to read). A file of the same size whose old path is gone is the same file
        moved with its folder: the bookkeeping follows it (``plan.moved``)."""
        others = [p for p in state.run_files.get((kind, run_id, flow), []) if p != rel]
        if not others:
            return False
        if self._tree.unreadable(path) is not None:
            return False  # _file_piece reports it
        still = [p for p in others if (self.root / p).exists()]
        if still:
            report.files_skipped.append(
                (rel, f"the same run {run_id!r} (flow {flow!r}) is already ingested from {still[0]}; not read twice")
            )
            return True
        st = path.stat()
        same = [p for p in others if state.ingested[p][0] == st.st_size]
        if len(same) == 1:
            plan.moved.append((same[0], rel, st.st_size, st.st_mtime))
            return True
        report.files_skipped.append(
            (
                rel,
                f"run {run_id!r} (flow {flow!r}) was ingested from {others[0]}, which is gone, and this file differs "
                "from it; consolidate(prune=True) removes the old rows, then this file is read",
            )
        )
        return True

    def _discover_flow(
        self,
        flow_dir: TreePath,
        state: _State,
        report: ConsolidationReport,
        run_rows: list[dict[str, Any]],
        units: list[_Unit],
    ) -> None:
        flow = flow_dir.name
        runs_dir = flow_dir / "runs"
        if runs_dir.is_dir():
            for entry in self._tree.scandir(runs_dir):
                if entry.name.endswith(".toml") and not entry.name.startswith(".") and entry.is_file:
                    self._check_run(entry.path, entry.path, None, state, report, run_rows)
        for mode in ("dev", "tuner"):
            for kind in _KINDS:
                parts_dir = flow_dir / f"{mode}_{kind}"
                # Parts first, then the compacted file: a part compacted (and
                # deleted) in between is then listed by the compacted file.
                parts = _list_parts(parts_dir)
                compacted = flow_dir / f"{mode}_{kind}.parquet"
                listed: set[str] = set()
                if compacted.exists():
                    unit = _Unit(kind, compacted, self._rel(compacted), [], compacted=True, flow_name=flow)
                    units.append(unit)
                    listed = self._plan_compacted(unit, parts_dir, flow, state, report)
                for name in parts:
                    if name in listed:
                        continue
                    m = _PART_RE.match(name)
                    run_id = m.group("run_id") if m else None
                    piece = self._file_piece(parts_dir / name, state, report, run_id, flow)
                    if piece is not None:
                        units.append(
                            _Unit(
                                kind, parts_dir / name, piece.rel, [piece], size=piece.size or 0, mtime=piece.mtime or 0
                            )
                        )

    def _plan_compacted(
        self, unit: _Unit, parts_dir: TreePath, flow: str, state: _State, report: ConsolidationReport
    ) -> set[str]:
        """Reads a compacted file's part list; fills ``unit.pieces`` with the parts not yet
        ingested. Returns the listed part names (all of them, ingested or not)."""
        reason = self._tree.unreadable(unit.file)
        if reason is not None:
            unit.pieces = []
            report.files_skipped.append((unit.rel, reason))
            return set()
        try:
            st = unit.file.stat()
            kv = _read_kv([unit.file], self._tree.connect)[str(unit.file)]
        except Exception as e:
            unit.pieces = []
            report.files_skipped.append((unit.rel, f"unreadable Parquet: {_short(e)}"))
            return set()
        unit.size, unit.mtime, unit.kv = st.st_size, st.st_mtime, kv
        try:
            names = json.loads(kv[SEGMENTS_KEY])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("flightlog.segments is not a list of names")
        except (KeyError, ValueError) as e:
            report.files_skipped.append((unit.rel, f"compacted file without a valid flightlog.segments list: {e}"))
            return set()
        listed = set(names)
        try:
            rows = [int(r) for r in json.loads(kv[SEGMENT_ROWS_KEY])]
            if len(rows) != len(names) or min(rows, default=0) < 0:
                raise ValueError("flightlog.segment_rows does not match flightlog.segments")
        except (KeyError, ValueError, TypeError) as e:
            report.files_skipped.append((unit.rel, f"cannot split the compacted file into its parts: {_short(e)}"))
            return listed
        marker = _compacted_marker(unit.rel, sum(rows))
        if marker in state.ingested:
            return listed  # this very version was covered in full before
        pieces = []
        offset = 0
        for name, n in zip(names, rows, strict=True):
            m = _PART_RE.match(name)
            if m is None:
                # An earlier compacted file merged again (its own part list is not
                # carried over): its rows are covered only if we saw that version whole.
                if _compacted_marker(unit.rel, n) not in state.ingested:
                    report.files_skipped.append(
                        (
                            unit.rel,
                            f"it holds {n} rows of an earlier compaction ({name}) that this catalog never saw "
                            "whole, so they cannot be attributed to parts",
                        )
                    )
                    return listed
            elif self._rel(parts_dir / name) not in state.ingested:
                rel = self._rel(parts_dir / name)
                pieces.append(_Piece(rel, m.group("run_id"), flow, lo=offset, hi=offset + n, mtime=st.st_mtime))
            offset += n
        unit.pieces = pieces
        unit.marker = marker
        unit.rows = sum(rows)
        return listed

    def _read_metadata(self, units: list[_Unit], report: ConsolidationReport) -> None:
        """Fills rows, schema_version and columns of every unit (one batched pass, then
        file by file if that fails); unreadable files are reported and dropped."""
        todo = [u for u in units if u.pieces]
        if not todo:
            return
        bad: dict[int, str] = {}
        try:
            meta = _read_file_meta([u.file for u in todo], self._tree.connect)
        except Exception:
            meta = {}
            for u in todo:
                try:
                    meta.update(_read_file_meta([u.file], self._tree.connect))
                except Exception as e:
                    bad[id(u)] = f"unreadable Parquet: {_short(e)}"
        for u in todo:
            if id(u) in bad:
                report.files_skipped.append((u.rel, bad[id(u)]))
                u.pieces, u.marker = [], None
                continue
            rows, kv, columns = meta[str(u.file)]
            if u.compacted and rows != u.rows:
                report.files_skipped.append((u.rel, f"flightlog.segment_rows add up to {u.rows}, the file has {rows}"))
                u.pieces, u.marker = [], None
                continue
            if u.expected_rows is not None and u.expected_rows != rows:
                # The file is not the one the manifest describes (swapped, truncated or
                # another run's): reading it would give the run wrong rows.
                report.files_skipped.append(
                    (u.rel, f"the manifest says rows_written = {u.expected_rows}, the file has {rows} rows")
                )
                u.pieces, u.marker = [], None
                continue
            u.rows = rows
            u.kv = kv or u.kv
            u.columns = columns
            u.schema_version = _int(u.kv.get("schema_version"))
            if not u.compacted:
                u.pieces[0].lo, u.pieces[0].hi = None, None
            if not u.compacted and u.pieces and u.pieces[0].run_id is None:
                u.pieces[0].run_id = u.kv.get("flightlog.run_id")

    def _gone_runs(self, state: _State, plan: _Plan, run_rows: list[dict[str, Any]]) -> None:
        """Fills ``plan.gone``: runs whose every ingested file (a moved file counts at its new
        place) and every manifest are gone. Rows are pruned by the files that disappeared,
        never because one folder of a run went (a copy deleted, a folder renamed)."""
        moved = {old for old, _, _, _ in plan.moved}
        replaced = {mp for r in run_rows for mp in r.get("_replaces", ())}
        manifests: dict[tuple[str | None, str | None], list[str]] = {}
        for mp, info in state.runs.items():
            manifests.setdefault((info["run_id"], info["flow_name"]), []).append(mp)
        keys = set(manifests) | set(state.files_by_run)
        for key in sorted(keys, key=lambda k: (str(k[0]), str(k[1]))):
            files = state.files_by_run.get(key, [])
            if any(p in moved or (self.root / p).exists() for p in files):
                continue
            present = [mp for mp in manifests.get(key, []) if mp not in replaced and (self.root / mp).exists()]
            known = [state.runs[mp] for mp in manifests.get(key, [])]
            # A run folder's runs row goes with its folder; a dev/tuner run's when its
            # manifest and parts are gone.
            if not present and all(
                i["mode"] in ("dev", "tuner") or not (self.root / i["path"]).exists() for i in known
            ):
                plan.gone.append(key)

    # --- writing (database held) ---------------------------------------

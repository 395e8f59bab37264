"""Finding the runs under a root: :class:`RunRef`, :func:`scan_runs`, :func:`find_run`.

A local root is walked with ``os.scandir`` (the runs a catalog holds as finished are
taken from it while their manifests are unchanged); an ``s3://`` root is listed once
and its manifests read in parallel. Status is by evidence
(:mod:`flightlog.runs.status`). Used by the CLI, the dashboard, plots and reports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import InputError, RunNotFoundError, error_line
from .layout import DEFAULT_RUN_PREFIX, FLOWS_DIR, MANIFEST_NAME, RUN_MANIFEST_SUFFIX, RUNS_DIR

if TYPE_CHECKING:
    from .views import TreePath

__all__ = ["BAD_MANIFEST", "RunRef", "find_run", "scan_runs"]


@dataclasses.dataclass
class RunRef:
    """A run found under a root: its manifest and where it lives.

    On a local root ``where`` is a :class:`~pathlib.Path`; on an object-store root it
    is the key relative to the root (a :class:`~pathlib.PurePosixPath`) and ``tree``
    is the :class:`~flightlog.runs.s3tree.ObjectTree` of the root."""

    run_id: str
    manifest: dict[str, Any]
    where: PurePath  # run folder (mode "run") or per-run manifest file (dev/tuner)
    status: str  # by evidence (a dead "running" run is "crashed"); BAD_MANIFEST when unreadable
    tree: Any = None
    problem: str | None = None  # why the manifest is bad (status BAD_MANIFEST)

    @property
    def mode(self) -> str:
        return str(self.manifest.get("mode") or "run")

    @property
    def folder(self) -> Any:
        return self.where if self.mode == "run" else self.where.parent.parent

    @property
    def manifest_path(self) -> Any:
        return self.where / MANIFEST_NAME if self.mode == "run" else self.where

    @property
    def location(self) -> str:
        """The run folder (flow folder for dev/tuner runs): a path, or an ``s3://`` URL."""
        return str(self.folder) if self.tree is None else self.tree.url(self.folder.as_posix())


class ListingCatalog(Protocol):
    """What discovery uses of a root's catalog (a :class:`~flightlog.DuckDBManager`, a layer
    above this one): whether it has a catalog, its root, and its listing rows."""

    @property
    def files_only(self) -> bool: ...

    @property
    def root(self) -> TreePath: ...

    def _listing_of(
        self, scan: Any, *, manifests: bool = False, metric: str | None = None
    ) -> list[tuple[Any, ...]] | None: ...


# A --root that looks like a URL but is no object store (gs://..., https://..., s3:/x):
# never taken for a local folder named "gs:". One-letter schemes are Windows drives.
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def _root(root: Any, *, must_exist: bool = True) -> Path | str:
    """The root: a local :class:`~pathlib.Path`, or the ``s3://bucket/prefix`` URL (as text)
    of an object-store root. ``root`` is ``--root`` (else ``$FLIGHTLOG_ROOT``, else the default).
    A local root that does not exist is an error (a mistyped --root is never created),
    unless not ``must_exist`` (``demo`` creates its root)."""
    from .._s3 import ObjectLocation, is_object_url
    from .ids import DEFAULT_ROOT, ROOT_ENV, resolve_root

    if root is None:
        root = os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    raw = root if isinstance(root, str) else os.fspath(root) if isinstance(root, os.PathLike) else str(root)
    if is_object_url(raw):
        try:
            return ObjectLocation.parse(raw).url()
        except ValueError as e:
            raise InputError(f"--root: {e}") from None
    if _URL_LIKE.match(raw):
        raise InputError(f"--root {raw!r} is neither a local folder nor an s3://bucket/prefix URL")
    base = resolve_root(raw, create=False)
    if base.exists() and not base.is_dir():
        raise InputError(f"--root {base} is a file, not a flightlog root folder")
    if must_exist and not base.exists():
        raise InputError(f"no flightlog root at {base} (no such folder; check --root or ${ROOT_ENV})")
    return base


#: Status shown for a run whose manifest cannot be read, is not valid TOML, or says
#: something that is not a run (no run_id, an unknown status).
BAD_MANIFEST = "bad manifest"
_KNOWN_STATUSES = ("running", "finished", "failed", "crashed")


def _manifest_problem(manifest: Mapping[str, Any]) -> str | None:
    rid = manifest.get("run_id")
    if not isinstance(rid, str) or not rid:
        return "run_id missing or not a string"
    if manifest.get("status") not in _KNOWN_STATUSES:
        return f"status {manifest.get('status')!r} is not one of {', '.join(_KNOWN_STATUSES)}"
    return None


def _is_object_root(root: Path | str) -> bool:
    return isinstance(root, str)


def scan_runs(
    root: str | os.PathLike[str] | None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    db: ListingCatalog | None = None,
) -> list[RunRef]:
    """Every run under ``root`` (run folders and dev/tuner runs), oldest first, status by evidence.

    ``root`` may be ``s3://bucket/prefix`` (settings from ``AWS_*`` and ``storage_options``):
    then the manifests are listed and read in the bucket.

    On a local root, a run that the catalog (``db``, a :class:`~flightlog.DuckDBManager` of
    the root, e.g. :func:`flightlog._analysis.listing_catalog`'s) holds as finished, failed or
    crashed is taken from the catalog while its manifest's modification time, size and inode
    are the ones consolidated; every other run (running, new, changed since the last
    consolidation, or a catalog that cannot be read) has its manifest read and its
    status decided by evidence. The result is the same either way."""
    base = _root(root)
    if isinstance(base, str):
        return _scan_object_root(base, storage_options)
    return _scan_local(base, db, full=True)


def _runs_by_evidence(
    root: str | os.PathLike[str] | None, *, storage_options: Mapping[str, Any] | None = None
) -> list[RunRef]:
    """:func:`scan_runs` without the catalog: every manifest read (the reference the fast path must match)."""
    base = _root(root)
    if isinstance(base, str):
        return _scan_object_root(base, storage_options)
    return _scan_local(base, None, full=True, use_catalog=False)


def _local_candidates(base: Path) -> list[tuple[str, str, bool]]:
    """``(manifest path, manifest path relative to the root, is a run folder)`` of every
    possible run under a local root (strings: 100,000 ``Path`` objects cost a third of a second)."""
    from .tree import LocalRootTree

    top = os.fspath(base)
    return [(f"{top}/{e.manifest_rel}", e.manifest_rel, e.is_folder) for e in LocalRootTree(base).list_runs()]


def _listed_and_unlisted(
    base: Path, db: ListingCatalog | None, *, full: bool, metric: str | None = None
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, bool]]]:
    """The runs under a local root that the catalog answers for, and the others.

    Listed: the ``_listing_of`` rows (``(manifest_rel, is_folder, run_id, flow_name, mode,
    status, created_at, finished_at, rows_written, outcome[, manifest JSON][, final, min])``,
    oldest first) of runs the catalog holds as finished, failed or crashed whose
    ``manifest.toml`` keeps the ``mtime_ns``, size and inode it had when consolidated
    (one ``lstat`` a run, made by the Rust extension on a few threads, joined with the
    catalog in DuckDB). Unlisted: ``(manifest path, path relative to the root, is a run
    folder)`` of every other possible run, to be read from its files. Without a usable
    catalog (none, unreadable, locked by a writer, another root's) or with a name that is
    not UTF-8 under the root, every run is unlisted: the answer is the same, slower."""
    import duckdb

    from .. import _core
    from .._errors import FlightlogError

    top = os.fspath(base)
    rows = None
    try:
        # An object-store catalog is never a local root's.
        if (
            db is not None
            and not db.files_only
            and isinstance(db.root, Path)
            and os.path.abspath(db.root) == os.path.abspath(base)
        ):
            scan = _core.list_run_manifests(top, MANIFEST_NAME, FLOWS_DIR, RUNS_DIR, RUN_MANIFEST_SUFFIX)
            if scan is not None and len(scan):
                rows = db._listing_of(scan, manifests=full, metric=metric)
    except (FlightlogError, duckdb.Error, OSError, ValueError):
        rows = None
    if rows is None:
        return [], _local_candidates(base)
    listed = [r for r in rows if r[2] is not None]
    return listed, [(f"{top}/{r[0]}", r[0], r[1]) for r in rows if r[2] is None]


def _light_manifest(row: tuple[Any, ...]) -> dict[str, Any]:
    """The part of a manifest that listing uses, from a listed row (see
    :func:`_listed_and_unlisted`; keys the manifest did not have are left out, as they were)."""
    _, _, rid, flow, mode, status, created, finished, rows_written, outcome = row[:10]
    m: dict[str, Any] = {"run_id": rid, "status": status}
    for key, value in (("flow_name", flow), ("mode", mode), ("created_at", created), ("finished_at", finished)):
        if value is not None:
            m[key] = value
    if rows_written is not None:
        m["counts"] = {"rows_written": rows_written}
    if outcome is not None:
        m["outcome"] = outcome
    return m


def _evidence_ref(mpath: Path, where: Path) -> RunRef | None:
    """A run read from its manifest, status by evidence (None: no manifest there)."""
    from .manifest import read_manifest
    from .status import run_status

    # A run id for a bad manifest: the folder name without the prefix, or the file's stem.
    fallback = where.name.removeprefix(DEFAULT_RUN_PREFIX) if where == mpath.parent else mpath.stem
    try:
        manifest = read_manifest(mpath)
    except FileNotFoundError:
        return None  # a folder that is no run (or not yet: its manifest comes right after mkdir)
    except (OSError, ValueError) as e:
        return RunRef(fallback, {}, where, BAD_MANIFEST, problem=error_line(e))
    bad = _manifest_problem(manifest)
    if bad is not None:
        rid = manifest.get("run_id")
        rid = rid if isinstance(rid, str) and rid else fallback
        return RunRef(rid, manifest, where, BAD_MANIFEST, problem=f"manifest {mpath}: {bad}")
    try:
        status = run_status(manifest, where)
    except (OSError, ValueError):
        status = str(manifest.get("status", "unknown"))
    return RunRef(manifest["run_id"], manifest, where, status)


def _scan_local(base: Path, db: ListingCatalog | None, *, full: bool, use_catalog: bool = True) -> list[RunRef]:
    """:func:`scan_runs` of a local root. ``full``: whole manifests (else, for runs taken
    from the catalog, only what listing uses: :func:`_light_manifest`)."""
    listed, unlisted = _listed_and_unlisted(base, db if use_catalog else None, full=full)
    top = os.fspath(base)
    found: list[RunRef] = []
    for row in listed:
        mpath = f"{top}/{row[0]}"
        if full:
            where: Any = Path(mpath).parent if row[1] else Path(mpath)
            found.append(RunRef(row[2], json.loads(row[10]), where, row[5]))
        else:  # internal listing: ``where`` stays a string (a Path each costs ~2 us)
            where = mpath[: -len(MANIFEST_NAME) - 1] if row[1] else mpath
            found.append(RunRef(row[2], _light_manifest(row), where, row[5]))
    read = [ref for ref in (_unlisted_ref(mpath, is_folder) for mpath, _, is_folder in unlisted) if ref is not None]
    if read:  # the listed ones come oldest first already
        found += read
        found.sort(key=_run_order)
    return found


def _unlisted_ref(mpath: str, is_folder: bool) -> RunRef | None:
    mp = Path(mpath)
    return _evidence_ref(mp, mp.parent if is_folder else mp)


def _run_order(r: RunRef) -> tuple[str, str]:
    """How runs are listed: oldest first (manifest ``created_at``), then by run id."""
    return (str(r.manifest.get("created_at", "")), r.run_id)


def _object_status(manifest: Mapping[str, Any], where: PurePath, objects: Sequence[Mapping[str, Any]]) -> str:
    """A run's status by evidence on an object store (what ``recover`` would decide): a
    ``running`` run is ``crashed`` when its process is gone (same host) or when none of
    its objects (in the ``ObjectTree.list`` listing ``objects``) changed for
    ``DEFAULT_STALE_AFTER`` seconds."""
    from .s3tree import alive_by_evidence, newest_ms_of_run
    from .status import DEFAULT_STALE_AFTER

    status = manifest.get("status")
    if status != "running":
        return str(status) if status else "unknown"
    newest = newest_ms_of_run(manifest, where.as_posix(), objects)
    return "running" if alive_by_evidence(manifest, (newest or 0) / 1e3, DEFAULT_STALE_AFTER) else "crashed"


def _scan_object_root(url: str, storage_options: Mapping[str, Any] | None) -> list[RunRef]:
    """:func:`scan_runs` for ``s3://``: one listing of the root, then the manifests (read in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    from .._errors import FlightlogError
    from .s3tree import ObjectTree

    tree = ObjectTree(url, storage_options)
    objects = tree.list("")
    from .s3tree import runs_in_listing

    candidates = [(e.manifest_rel, PurePosixPath(e.where_rel)) for e in runs_in_listing(objects)]

    def read(rel: str) -> dict[str, Any] | None:
        try:
            got = tree.read_manifest(rel)
        except (OSError, ValueError, FlightlogError):
            return None
        return None if got is None else got[0]

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(candidates)))) as pool:
        manifests = list(pool.map(read, [rel for rel, _ in candidates]))
    found: list[RunRef] = []
    for (_, where), manifest in zip(candidates, manifests, strict=True):
        rid = manifest.get("run_id") if manifest is not None else None
        if manifest is None or not isinstance(rid, str) or not rid:
            continue
        found.append(RunRef(rid, manifest, where, _object_status(manifest, where, objects), tree))
    found.sort(key=_run_order)
    return found


def find_run(
    root: str | os.PathLike[str] | None,
    run_id: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    db: ListingCatalog | None = None,
) -> RunRef:
    """The run ``run_id`` (also its folder name, or a unique prefix of its id); ``db`` as
    for :func:`scan_runs` (a local root's runs are listed from it when it can).

    Raises:
        RunNotFoundError: no such run, or the prefix is ambiguous.
    """
    base = _root(root)
    runs = _scan_object_root(base, storage_options) if isinstance(base, str) else _scan_local(base, db, full=False)
    names = {id(r): os.path.basename(os.fspath(r.where)) for r in runs}  # where: a Path, or a str (light)
    exact = [r for r in runs if run_id in (r.run_id, names[id(r)])]
    if len(exact) != 1 and not exact:
        exact = [r for r in runs if r.run_id.startswith(run_id) or names[id(r)].startswith(run_id)]
    if len(exact) == 1:
        ref = exact[0]
        if isinstance(ref.where, str):
            # Listed from the catalog with part of its manifest: the one run found is read whole.
            where = Path(ref.where)
            ref = _evidence_ref(where / MANIFEST_NAME if where.is_dir() else where, where) or ref
        if ref.status == BAD_MANIFEST:
            raise RunNotFoundError(f"run {ref.run_id!r} has a bad manifest: {ref.problem}")
        return ref
    if len(exact) > 1:
        matches = ", ".join(f"{r.run_id} ({r.manifest.get('flow_name')})" for r in exact[:5])
        if len(exact) > 5:
            matches += f" and {len(exact) - 5} more"
        raise RunNotFoundError(
            f"run id {run_id!r} is ambiguous under {_root(root)}: {len(exact)} runs match: {matches}; "
            "give more of the id"
        )
    raise RunNotFoundError(f"no run {run_id!r} under {_root(root)} (see `flightlog runs`)")

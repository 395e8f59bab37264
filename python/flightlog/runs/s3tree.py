"""A run tree on an object store: the manager's and recovery's view of ``s3://`` roots.

The layout is the local one, key for path (DESIGN.md "Runs and layout"). What
replaces the local file-system primitives:

* a run id is claimed by the create-only put of its ``running`` manifest
  (``If-None-Match: *``): of two processes claiming one id, exactly one wins
  and the other moves on to ``_2`` (the same loop as ``mkdir`` locally);
* a manifest is rewritten with a conditional put on the ETag it was read or
  written with (``If-Match``): a lost race is a :class:`~flightlog.ConflictError`
  and the writer re-reads, never a silent overwrite;
* there are no folders, no temp files and no locks: the flow manifest is
  updated by read, modify, conditional put, retry.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import posixpath
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .._errors import ConflictError
from .._s3 import ObjectLocation, open_store
from .layout import (
    FLOWS_DIR,
    MANIFEST_NAME,
    RUNS_DIR,
    SEGMENTS_DIR,
    SPOOL_META_NAME,
    TELEMETRY_SEGMENT_PREFIX,
    part_pattern,
    parts_dir_name,
)
from .manifest import dumps_manifest, parse_manifest
from .status import status_by_evidence
from .tree import Claim, FileStat, ManifestChange, RunEntry, SpoolWriter, manifest_rels


class ObjectTree:
    """The run tree below ``s3://bucket/prefix``; ``rel`` arguments are ``/``-joined
    paths relative to the root, exactly as in a local root. The S3
    :class:`~flightlog.runs.tree.RootTree`."""

    kind = "s3"

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.location = ObjectLocation.parse(url)
        self.storage_options = dict(storage_options or {})
        self.store = open_store(self.location, self.storage_options)
        # One listing of the root, kept while recovery walks it (see snapshot()).
        self._snapshot: builtins.list[dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"ObjectTree({self.url()!r})"

    def __str__(self) -> str:
        return self.url()

    def key(self, rel: str = "") -> str:
        return self.location.key(rel)

    def url(self, rel: str = "") -> str:
        return self.location.url(rel)

    def rel(self, key: str) -> str:
        return self.location.relative(key)

    # -- objects --------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        return self.store.head(self.key(rel)) is not None

    def delete(self, rel: str) -> None:
        self.store.delete(self.key(rel))

    def list(self, rel_prefix: str) -> list[dict[str, Any]]:
        """Objects below ``rel_prefix/`` (recursively), with ``rel`` added to each."""
        out = []
        if self._snapshot is not None:
            base = self.key(rel_prefix)
            return [o for o in self._snapshot if not base or o["key"] == base or o["key"].startswith(base + "/")]
        for info in self.store.list(self.key(rel_prefix)):
            info["rel"] = self.rel(info["key"])
            out.append(info)
        return out

    def names(self, rel_dir: str) -> builtins.list[str]:
        """Names of the objects directly in ``rel_dir``."""
        return list(self.store.list_names(self.key(rel_dir)))

    def subfolders(self, rel_dir: str = "") -> builtins.list[str]:
        """Names of the "folders" directly below ``rel_dir`` (from a recursive listing)."""
        base = self.key(rel_dir)
        cut = len(base) + 1 if base else 0
        found = set()
        for info in self.store.list(base):
            rest = info["key"][cut:]
            if "/" in rest:
                found.add(rest.split("/", 1)[0])
        return sorted(found)

    # -- manifests ------------------------------------------------------------------------

    def create_manifest(self, rel: str, data: Mapping[str, Any]) -> str | None:
        """Publish a new manifest; ``FileExistsError`` if ``rel`` exists. Returns its ETag."""
        return _e_tag(self.store.put(self.key(rel), dumps_manifest(data), "create"))

    def update_manifest(self, rel: str, data: Mapping[str, Any], e_tag: str | None) -> str | None:
        """Replace the manifest if it still has ``e_tag`` (``ConflictError`` otherwise).
        Without an ETag (a store that gives none) the put is unconditional."""
        if e_tag is None:
            return _e_tag(self.store.put(self.key(rel), dumps_manifest(data), "overwrite"))
        return _e_tag(self.store.put(self.key(rel), dumps_manifest(data), "update", e_tag))

    def read_manifest(self, rel: str) -> tuple[dict[str, Any], str | None] | None:
        """``(manifest, e_tag)``, or ``None`` if there is none. ``ManifestError`` if unreadable."""
        got = self.store.get(self.key(rel))
        if got is None:
            return None
        raw, e_tag = got
        return parse_manifest(raw, self.url(rel)), e_tag

    def modify_manifest(
        self, rel: str, change: ManifestChange, *, blocking: bool = True, attempts: int = 50
    ) -> dict[str, Any] | None:
        """Read, ``change``, conditional put; again on a lost race. ``change`` gets the
        current manifest (``None`` if absent) and returns the new one, or ``None``
        to leave it as it is. Returns what is stored afterwards. No locks: ``blocking``
        changes nothing."""
        for attempt in range(attempts):
            current = self.read_manifest(rel)
            data, e_tag = current if current is not None else (None, None)
            new = change(None if data is None else dict(data))
            if new is None:
                return data
            try:
                if current is None:
                    self.create_manifest(rel, new)
                else:
                    self.update_manifest(rel, new, e_tag)
                return new
            except (FileExistsError, ConflictError):
                time.sleep(min(0.5, 0.005 * 2**attempt) * random.random())
        raise ConflictError(f"{self.url(rel)} kept changing under {attempts} attempts to update it")

    # -- a run's manager (flightlog.runs.manager) ----------------------------------------

    def where(self, rel: str = "") -> str:
        return self.url(rel)

    def make_folders(self, rels: builtins.list[str]) -> None:
        return None  # folders are implied by keys

    def recorder_options(self) -> dict[str, Any]:
        return {"storage_options": self.storage_options}

    def relative_to_manifest(self, manifest_rel: str, file: str) -> str:
        # A recorder on a store names its files by object key.
        return posixpath.relpath(file, posixpath.dirname(self.key(manifest_rel)) or ".")

    def replace_manifest(
        self, rel: str, data: Mapping[str, Any], e_tag: str | None, *, after: str | None = None
    ) -> None:
        if after is not None:  # a local folder's fsync owed first (not made by a store's recorder)
            from .finish import fsync_folder

            fsync_folder(after)
        try:
            self.update_manifest(rel, data, e_tag)
        except ConflictError:
            # Only `recover` rewrites a running run's manifest, and only when it judged
            # the run dead (another host, `stale_after` exceeded). This process is alive
            # and closing: what it knows wins.
            self.modify_manifest(rel, lambda _: dict(data))

    def cheap_version(self, rel: str) -> str | None:
        return None  # a version costs a request: always read

    def unclaim(self, manifest_rel: str, folder_rel: str | None) -> None:
        with contextlib.suppress(Exception):
            self.delete(manifest_rel)

    # -- recovery (flightlog.runs.recover) -----------------------------------------------
    # No folders, no temp files, no locks: the claims are no-ops, and what replaces them
    # is the conditional put of the recovered manifest (a lost race leaves the run's own).

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        self._snapshot = self.list("")
        try:
            yield
        finally:
            self._snapshot = None

    def _top_level(self) -> tuple[dict[str, int], dict[str, builtins.list[str]]]:
        folders: dict[str, int] = {}
        flows: dict[str, builtins.list[str]] = {}
        for info in self.list(""):
            top, _, rest = info["rel"].partition("/")
            if not rest:
                continue
            if top == FLOWS_DIR:
                flow, _, inner = rest.partition("/")
                if inner:
                    runs = flows.setdefault(flow, [])
                    if inner.startswith(f"{RUNS_DIR}/") and inner.endswith(".toml") and inner.count("/") == 1:
                        runs.append(info["rel"])
            elif not top.startswith("."):
                folders[top] = folders.get(top, 0) + 1
        return folders, flows

    def recovery_folders(self) -> builtins.list[tuple[str, str | None]]:
        # A run folder is also one a dead recorder of this host spooled rows for: killed
        # before its first flush, it left nothing in the bucket.
        return [(f, None) for f in sorted(set(self._top_level()[0]) | set(self._spooled_folders()))]

    def _local_spools(self) -> Iterator[tuple[str, dict[str, Any], Any]]:
        """``(folder, meta, spool_dir)`` for every spool on this host of a recording into a
        top-level run folder of this root, alive or not. The spool of a recording on an
        object store is a local folder (``_core.shared_spool_dir()``: the core's rule) whose
        ``meta.json`` names the recording's location."""
        from .. import _core

        base = _core.shared_spool_dir()
        head = self.url("").rstrip("/") + "/"
        tail = f"/{SEGMENTS_DIR}/{TELEMETRY_SEGMENT_PREFIX}"
        try:
            spools = [d for d in base.iterdir() if d.name.endswith(".spool") and d.is_dir()]
        except OSError:
            return
        for spool in spools:
            with contextlib.suppress(OSError):
                for inst in spool.iterdir():
                    try:
                        meta = json.loads((inst / SPOOL_META_NAME).read_text())
                    except (OSError, ValueError):
                        continue
                    loc = meta.get("location") if isinstance(meta, dict) else None
                    if not (isinstance(loc, str) and loc.startswith(head) and loc.endswith(tail)):
                        continue
                    folder = loc[len(head) : -len(tail)]
                    if folder and "/" not in folder and not folder.startswith("."):
                        yield folder, meta, inst

    def _spooled_folders(self) -> dict[str, float]:
        """Run folders of this root (top level) whose dead recorder's spool is on this
        host, with the time of the spool's newest file; a spool whose process lives is
        left out."""
        found: dict[str, float] = {}
        for folder, meta, inst in self._local_spools():
            if _alive(meta.get("pid")):
                continue
            with contextlib.suppress(OSError, ValueError):
                newest = max(e.stat().st_mtime for e in inst.iterdir())
                found[folder] = max(found.get(folder, 0.0), newest)
        return found

    def recovery_flows(self) -> builtins.list[tuple[str, str | None, builtins.list[str]]]:
        return [(f, None, sorted(rels)) for f, rels in sorted(self._top_level()[1].items())]

    def folder_leftovers(self, folder: str) -> tuple[bool, bool]:
        segments = f"{folder}/{SEGMENTS_DIR}/"
        has = any(o["rel"].startswith(segments) for o in self.list(folder)) or folder in self._spooled_folders()
        return has, False

    def claim_run(self, folder: str) -> contextlib.AbstractContextManager[tuple[str, bool] | None]:
        return contextlib.nullcontext()

    def spool_writers(self, folder: str) -> builtins.list[SpoolWriter] | None:
        # The recorders of this host spool here; those of other hosts on their own (for
        # them the objects' age decides).
        writers = []
        for name, meta, _inst in self._local_spools():
            if name != folder:
                continue
            try:
                writers.append(SpoolWriter(pid=int(meta["pid"]), boot_id=meta.get("boot_id")))
            except (KeyError, TypeError, ValueError):
                return None
        return writers

    def claim_parts(
        self, flow: str, mode: str, run_id: str
    ) -> contextlib.AbstractContextManager[tuple[str, bool] | None]:
        return contextlib.nullcontext()

    def merge_run_folder(self, folder: str) -> dict[str, int]:
        from .. import _core

        return {k: int(v) for k, v in dict(_core.recover_run_dir(self.key(folder), store=self.store)).items()}

    def salvage_parts(self, flow: str, mode: str, run_id: str) -> None:
        # Parts are published whole or not at all, but rows and events not yet in a
        # part are in the dead recorder's spool, a local folder of this host.
        from .. import _core

        rels = [f"{FLOWS_DIR}/{flow}/{parts_dir_name(mode, k)}" for k in ("telemetry", "events")]
        done = dict(_core.salvage_parts(self.key(rels[0]), self.key(rels[1]), run_id, store=self.store))
        if self._snapshot is not None and (done["salvaged_rows"] or done["salvaged_events"]):
            # The walk's one listing predates the parts just published: list their folders again.
            for rel in rels:
                base = self.key(rel) + "/"
                fresh = [dict(info, rel=self.rel(info["key"])) for info in self.store.list(self.key(rel))]
                self._snapshot = [o for o in self._snapshot if not o["key"].startswith(base)] + fresh

    def remove_part_temps(self, flow: str, mode: str, run_id: str) -> int:
        return 0  # no temp objects: an unfinished upload is invisible

    def list_parts(self, flow: str, mode: str, kind: str, run_id: str) -> builtins.list[tuple[str, FileStat]]:
        base = f"{FLOWS_DIR}/{flow}/{parts_dir_name(mode, kind)}"
        pat = part_pattern(run_id)
        found = [
            (o["rel"], FileStat(int(o["size"]), o["last_modified_ms"] / 1e3))
            for o in self.list(base)
            if posixpath.dirname(o["rel"]) == base and pat.match(posixpath.basename(o["rel"]))
        ]
        return sorted(found)

    def compacted_parts(self, flow: str, mode: str, kind: str) -> builtins.list[tuple[str, int | None]]:
        return []  # compact() works on local roots only

    def parquet_rows(self, rel: str) -> int:
        from .. import _core

        return int(_core.parquet_rows(self.key(rel), store=self.store))

    def sweep_flow(self, flow: str) -> tuple[int, int, builtins.list[dict[str, str]]]:
        return 0, 0, []

    # -- the RootTree protocol ------------------------------------------------------------

    def list_runs(self) -> builtins.list[RunEntry]:
        """Every run folder manifest and dev/tuner manifest: one listing of the root."""
        return runs_in_listing(self.list(""))

    def read_bytes(self, rel: str) -> bytes:
        got = self.store.get(self.key(rel))
        if got is None:
            raise FileNotFoundError(errno.ENOENT, "no such object", self.url(rel))
        return bytes(got[0])

    def stat(self, rel: str) -> FileStat | None:
        head = self.store.head(self.key(rel))
        return None if head is None else FileStat(int(head["size"]), head["last_modified_ms"] / 1e3)

    def newest_time(self, manifest: Mapping[str, Any], where_rel: str) -> float | None:
        mode = str(manifest.get("mode") or "run")
        base = where_rel if mode == "run" else posixpath.dirname(posixpath.dirname(where_rel))
        times = newest_ms_of_run(manifest, where_rel, self.list(base))
        spooled = self._spooled_folders().get(where_rel) if mode == "run" else None
        if times is None:
            return spooled
        return times / 1e3 if spooled is None else max(times / 1e3, spooled)

    def claim_run_id(
        self,
        mode: str,
        flow_name: str,
        run_prefix: str,
        run_id: str | None,
        manifest: dict[str, Any],
        *,
        durable: bool = True,  # a put is durable once it returns: nothing to hand over
    ) -> Claim:
        """Claims the run id with the create-only put of the ``running`` manifest; the
        run of the other kind that took the same id meanwhile wins (this one moves on)."""
        from .ids import claim

        mine, theirs = manifest_rels(mode, flow_name, run_prefix)
        folder = self.url(run_prefix) if mode == "run" else self.url(posixpath.dirname(mine))
        e_tags: dict[str, str | None] = {}

        def make(cand: str) -> None:
            manifest["run_id"] = cand
            e_tags[cand] = self.create_manifest(mine.format(cand), manifest)
            if self.exists(theirs.format(cand)):
                self.delete(mine.format(cand))
                raise FileExistsError(errno.EEXIST, "run id taken by a run of the other kind", cand)

        rid = claim(folder, make, run_id)
        return Claim(rid, mine.format(rid), e_tags[rid])


def _e_tag(put: Any) -> str | None:
    """The ETag a put returned (``None`` from a store that gives none)."""
    return None if put is None else str(put)


def runs_in_listing(objects: Sequence[Mapping[str, Any]]) -> list[RunEntry]:
    """The runs of a root from its listing (``ObjectTree.list("")``)."""
    found: list[RunEntry] = []
    for o in objects:
        parts = o["rel"].split("/")
        if len(parts) == 2 and parts[1] == MANIFEST_NAME and not parts[0].startswith(".") and parts[0] != FLOWS_DIR:
            found.append(RunEntry(o["rel"], parts[0], True))
        elif (
            len(parts) == 4
            and parts[0] == FLOWS_DIR
            and parts[2] == RUNS_DIR
            and parts[3].endswith(".toml")
            and not parts[3].startswith(".")
        ):
            found.append(RunEntry(o["rel"], o["rel"], False))
    return found


def newest_ms_of_run(manifest: Mapping[str, Any], where_rel: str, objects: Sequence[Mapping[str, Any]]) -> float | None:
    """When the run last wrote (ms since the epoch): its folder's objects (mode ``"run"``),
    else its manifest and parts; from a listing (``ObjectTree.list``) that holds them.
    None when it has none."""
    mode = str(manifest.get("mode") or "run")
    if mode == "run":
        prefix = where_rel + "/"
        times = [o["last_modified_ms"] for o in objects if o["rel"].startswith(prefix)]
    else:
        flow = posixpath.dirname(posixpath.dirname(where_rel))
        folders = {f"{flow}/{parts_dir_name(mode, kind)}" for kind in ("telemetry", "events")}
        pat = part_pattern(str(manifest.get("run_id", "")))
        times = [
            o["last_modified_ms"]
            for o in objects
            if o["rel"] == where_rel
            or (posixpath.dirname(o["rel"]) in folders and pat.match(posixpath.basename(o["rel"])))
        ]
    return max(times) if times else None


def relpath(key: str, base_key: str) -> str:
    """``key`` relative to the "folder" ``base_key`` (posix rules)."""
    return posixpath.relpath(key, base_key or ".")


def alive_by_evidence(manifest: Mapping[str, Any], newest_s: float, stale_after: float) -> bool:
    """Whether a ``running`` run is alive: its process on this host, else objects
    written within ``stale_after`` seconds (other hosts cannot be asked)."""
    running = {**manifest, "status": "running"}
    return status_by_evidence(running, lambda: newest_s, stale_after=stale_after) == "running"


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` of this host lives (a spool's writer)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's)
    return True

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
import errno
import posixpath
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._errors import ConflictError
from .._s3 import ObjectLocation, open_store
from .layout import (
    DEFAULT_RUN_PREFIX,
    EVENTS_FILE,
    FLOWS_DIR,
    MANIFEST_NAME,
    RUNS_DIR,
    SEGMENTS_DIR,
    TELEMETRY_FILE,
    part_pattern,
    parts_dir_name,
)
from .manifest import dumps_manifest, parse_manifest, utc_now_iso
from .status import crashed_manifest, status_by_evidence
from .tree import Claim, FileStat, RunEntry, manifest_rels


class ObjectTree:
    """The run tree below ``s3://bucket/prefix``; ``rel`` arguments are ``/``-joined
    paths relative to the root, exactly as in a local root. The S3
    :class:`~flightlog.runs.tree.RootTree`."""

    kind = "s3"

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.location = ObjectLocation.parse(url)
        self.storage_options = dict(storage_options or {})
        self.store = open_store(self.location, self.storage_options)

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
        for info in self.store.list(self.key(rel_prefix)):
            info["rel"] = self.rel(info["key"])
            out.append(info)
        return out

    def names(self, rel_dir: str) -> list[str]:
        """Names of the objects directly in ``rel_dir``."""
        return list(self.store.list_names(self.key(rel_dir)))

    def subfolders(self, rel_dir: str = "") -> list[str]:
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
        return self.store.put(self.key(rel), dumps_manifest(data), "create")

    def update_manifest(self, rel: str, data: Mapping[str, Any], e_tag: str | None) -> str | None:
        """Replace the manifest if it still has ``e_tag`` (``ConflictError`` otherwise).
        Without an ETag (a store that gives none) the put is unconditional."""
        if e_tag is None:
            return self.store.put(self.key(rel), dumps_manifest(data), "overwrite")
        return self.store.put(self.key(rel), dumps_manifest(data), "update", e_tag)

    def read_manifest(self, rel: str) -> tuple[dict[str, Any], str | None] | None:
        """``(manifest, e_tag)``, or ``None`` if there is none. ``ManifestError`` if unreadable."""
        got = self.store.get(self.key(rel))
        if got is None:
            return None
        raw, e_tag = got
        return parse_manifest(raw, self.url(rel)), e_tag

    def modify_manifest(
        self,
        rel: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        *,
        attempts: int = 50,
    ) -> dict[str, Any] | None:
        """Read, ``change``, conditional put; again on a lost race. ``change`` gets the
        current manifest (``None`` if absent) and returns the new one, or ``None``
        to leave it as it is. Returns what is stored afterwards."""
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
        return None if times is None else times / 1e3

    def claim_run_id(
        self, mode: str, flow_name: str, run_prefix: str, run_id: str | None, manifest: dict[str, Any]
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


# --------------------------------------------------------------------------- recovery


def alive_by_evidence(manifest: Mapping[str, Any], newest_s: float, stale_after: float) -> bool:
    """Whether a ``running`` run is alive: its process on this host, else objects
    written within ``stale_after`` seconds (other hosts cannot be asked)."""
    running = {**manifest, "status": "running"}
    return status_by_evidence(running, lambda: newest_s, stale_after=stale_after) == "running"


def _iso_ms(ms: float) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ms / 1e3, _dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _publish_recovered(tree: ObjectTree, rel: str, manifest: dict[str, Any], e_tag: str | None, existed: bool) -> bool:
    """Writes the recovered manifest; False if the run changed it meanwhile (it was
    alive after all and closed): then the run's own manifest stands."""
    try:
        if existed:
            tree.update_manifest(rel, manifest, e_tag)
        else:
            tree.create_manifest(rel, manifest)
    except (ConflictError, FileExistsError):
        return False
    return True


def recover_tree(tree: ObjectTree, stale_after: float, report: Any) -> None:
    """``flightlog.recover`` for an object-store root: finalises crashed runs into
    ``report`` (a ``RecoverReport``). Incomplete multipart uploads a crash left are
    invisible; a bucket lifecycle rule (AbortIncompleteMultipartUpload) reclaims them."""
    from .._errors import FlightlogError

    objects = tree.list("")
    run_folders: dict[str, list[dict[str, Any]]] = {}
    flow_objects: dict[str, list[dict[str, Any]]] = {}
    for info in objects:
        top, _, rest = info["rel"].partition("/")
        if not rest:
            continue
        if top == FLOWS_DIR:
            flow, _, inner = rest.partition("/")
            if inner:
                info["in_flow"] = inner
                flow_objects.setdefault(flow, []).append(info)
        elif not top.startswith("."):
            info["in_run"] = rest
            run_folders.setdefault(top, []).append(info)
    for folder, infos in sorted(run_folders.items()):
        try:
            _recover_run_folder(tree, folder, infos, stale_after, report)
        except (OSError, FlightlogError, ValueError) as err:
            report.errors.append({"path": tree.url(folder), "error": f"{type(err).__name__}: {err}"})
    for flow, infos in sorted(flow_objects.items()):
        for info in infos:
            inner = info["in_flow"]
            if not (inner.startswith("runs/") and inner.endswith(".toml") and inner.count("/") == 1):
                continue
            try:
                _recover_append_run(tree, flow, info, infos, stale_after, report)
            except (OSError, FlightlogError, ValueError) as err:
                report.errors.append({"path": tree.url(info["rel"]), "error": f"{type(err).__name__}: {err}"})


def _recover_run_folder(
    tree: ObjectTree, folder: str, infos: list[dict[str, Any]], stale_after: float, report: Any
) -> None:
    from .. import _core  # type: ignore[attr-defined]

    by_name = {i["in_run"]: i for i in infos}
    has_segments = any(n.startswith(f"{SEGMENTS_DIR}/") for n in by_name)
    newest_ms = max(i["last_modified_ms"] for i in infos)
    mrel = f"{folder}/{MANIFEST_NAME}"
    read = tree.read_manifest(mrel) if MANIFEST_NAME in by_name else None
    if read is None:
        # Segments without a manifest: not a flightlog run folder, unless old.
        if not has_segments or time.time() - newest_ms / 1e3 <= stale_after:
            return
        run_id = folder[len(DEFAULT_RUN_PREFIX) :] if folder.startswith(DEFAULT_RUN_PREFIX) else folder
        manifest: dict[str, Any] = {"run_id": run_id, "mode": "run", "status": "running"}
        e_tag, previous = None, "unknown"
    else:
        manifest, e_tag = read
        previous = str(manifest.get("status", "unknown"))
        if previous == "running" and alive_by_evidence(manifest, newest_ms / 1e3, stale_after):
            report.live.append(tree.url(folder))
            return
        if previous != "running" and not has_segments:
            return  # finished, failed or already recovered
    rep = {k: int(v) for k, v in dict(_core.recover_run_dir(tree.key(folder), store=tree.store)).items()}
    files = []
    for name, kind, rows in (
        (TELEMETRY_FILE, "telemetry", rep["telemetry_rows"]),
        (EVENTS_FILE, "events", rep["event_rows"]),
    ):
        head = tree.store.head(tree.key(f"{folder}/{name}"))
        if head is not None:
            files.append({"path": name, "kind": kind, "rows": rows, "bytes": int(head["size"])})
    m = dict(manifest)
    if previous in ("running", "unknown"):
        m = crashed_manifest(
            manifest,
            finished_at=_iso_ms(newest_ms),
            telemetry_rows=rep["telemetry_rows"],
            event_rows=rep["event_rows"],
        )
    m["files"] = files
    m["recovery"] = {"recovered_at": utc_now_iso(), **rep}
    if not _publish_recovered(tree, mrel, m, e_tag, read is not None):
        report.live.append(tree.url(folder))
        return
    report.recovered.append(
        {
            "run_id": str(m.get("run_id", folder)),
            "flow_name": m.get("flow_name"),
            "mode": "run",
            "path": tree.url(folder),
            "previous_status": previous,
            "status": m["status"],
            **rep,
        }
    )


def _recover_append_run(
    tree: ObjectTree,
    flow: str,
    minfo: dict[str, Any],
    flow_infos: list[dict[str, Any]],
    stale_after: float,
    report: Any,
) -> None:
    from .. import _core  # type: ignore[attr-defined]

    read = tree.read_manifest(minfo["rel"])
    if read is None:
        return
    manifest, e_tag = read
    previous = str(manifest.get("status", "unknown"))
    if previous != "running":
        return
    mode = str(manifest.get("mode", "dev"))
    run_id = str(manifest.get("run_id", posixpath.basename(minfo["rel"])[: -len(".toml")]))
    pat = part_pattern(run_id)
    parts = [
        (kind, i)
        for i in flow_infos
        for kind in ("telemetry", "events")
        if posixpath.dirname(i["in_flow"]) == f"{mode}_{kind}" and pat.match(posixpath.basename(i["in_flow"]))
    ]
    newest_ms = max([minfo["last_modified_ms"], *(i["last_modified_ms"] for _, i in parts)])
    if alive_by_evidence(manifest, newest_ms / 1e3, stale_after):
        report.live.append(tree.url(minfo["rel"]))
        return
    files = []
    rows = {"telemetry": 0, "events": 0}
    for kind, i in sorted(parts, key=lambda p: p[1]["key"]):
        n = int(_core.parquet_rows(i["key"], store=tree.store))
        rows[kind] += n
        files.append({"path": f"../{i['in_flow']}", "kind": kind, "rows": n, "bytes": int(i["size"])})
    m = crashed_manifest(
        manifest, finished_at=_iso_ms(newest_ms), telemetry_rows=rows["telemetry"], event_rows=rows["events"]
    )
    m["files"] = files
    m["recovery"] = {"recovered_at": utc_now_iso(), "temp_files_removed": 0}
    if not _publish_recovered(tree, minfo["rel"], m, e_tag, True):
        report.live.append(tree.url(minfo["rel"]))
        return
    report.recovered.append(
        {
            "run_id": run_id,
            "flow_name": m.get("flow_name", flow),
            "mode": mode,
            "path": tree.url(minfo["rel"]),
            "previous_status": previous,
            "status": "crashed",
            "telemetry_rows": rows["telemetry"],
            "event_rows": rows["events"],
            "segments_merged": 0,
            "temp_files_removed": 0,
            "leftover_segments_removed": 0,
        }
    )

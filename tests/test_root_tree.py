"""The RootTree contract: one suite, run against every implementation of a run root.

A local folder, S3 on moto (always) and S3 on SeaweedFS (when its binary is installed;
skipped with the reason otherwise, as in test_s3_conformance.py). What the manager,
discovery and recovery rely on: listing runs, reading and stat-ing files, the newest
file of a run, claiming run ids (collisions included, across run kinds and threads),
creating manifests create-only and updating them conditionally (a stale version is a
ConflictError, never a silent overwrite)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from conftest_servers import WEED_ACCESS, Bucket
from flightlog import ConflictError
from flightlog.runs.manifest import dumps_manifest
from flightlog.runs.roots import open_tree
from flightlog.runs.s3tree import ObjectTree
from flightlog.runs.tree import LocalRootTree, RootTree


class WeedBucket(Bucket):
    access = WEED_ACCESS


@pytest.fixture(params=["local", "moto", "seaweedfs"])
def tree(request: pytest.FixtureRequest, tmp_path) -> Any:
    if request.param == "local":
        root = tmp_path / "root"
        root.mkdir()
        yield open_tree(root)
        return
    if request.param == "moto":
        bucket = request.getfixturevalue("s3_bucket")
        yield open_tree(bucket.url("root"), bucket.storage_options)
        return
    b = WeedBucket.create(request.getfixturevalue("seaweed_server"))
    try:
        yield open_tree(b.url("root"), b.storage_options)
    finally:
        for key in b.keys():
            b.client.delete_object(Bucket=b.name, Key=key)
        b.client.delete_bucket(Bucket=b.name)


def race(n: int, fn) -> list[object]:
    """Runs fn(i) on n threads released together; returns each result or exception."""
    barrier = threading.Barrier(n)
    out: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return out


def running(flow: str = "gd", mode: str = "run") -> dict[str, Any]:
    return {"run_id": "", "flow_name": flow, "mode": mode, "status": "running", "created_at": "2025-01-01T00:00:00Z"}


def test_both_kinds_are_root_trees(tree) -> None:
    assert isinstance(tree, RootTree)
    assert tree.kind in ("local", "s3")
    assert isinstance(tree, LocalRootTree if tree.kind == "local" else ObjectTree)
    assert tree.url("a/b.toml").endswith("root/a/b.toml")
    assert tree.list_runs() == []


def test_create_read_stat_and_delete_a_manifest(tree) -> None:
    rel = "flows/gd/manifest.toml"
    assert tree.read_manifest(rel) is None
    assert tree.stat(rel) is None
    with pytest.raises(FileNotFoundError):
        tree.read_bytes(rel)
    e_tag = tree.create_manifest(rel, {"flow_name": "gd", "modes": ["dev"]})
    data, read_tag = tree.read_manifest(rel)
    assert data == {"flow_name": "gd", "modes": ["dev"]}
    assert read_tag == e_tag
    raw = tree.read_bytes(rel)
    assert raw == dumps_manifest({"flow_name": "gd", "modes": ["dev"]})
    st = tree.stat(rel)
    assert st is not None and st.size == len(raw) and abs(st.mtime - time.time()) < 300
    # Create-only: an existing manifest is never replaced.
    with pytest.raises(FileExistsError):
        tree.create_manifest(rel, {"flow_name": "other"})
    assert tree.read_manifest(rel)[0]["flow_name"] == "gd"
    tree.delete(rel)
    assert tree.read_manifest(rel) is None
    tree.delete(rel)  # a missing file is no error


def test_update_is_conditional_on_the_version_read(tree) -> None:
    rel = "fda_run_x/manifest.toml"
    first = tree.create_manifest(rel, {"status": "running"})
    second = tree.update_manifest(rel, {"status": "finished"}, first)
    assert tree.read_manifest(rel) == ({"status": "finished"}, second)
    # The version read before that update is stale now: refused, the manifest unchanged.
    with pytest.raises(ConflictError):
        tree.update_manifest(rel, {"status": "crashed"}, first)
    assert tree.read_manifest(rel)[0] == {"status": "finished"}
    # No version: unconditional.
    tree.update_manifest(rel, {"status": "crashed"}, None)
    assert tree.read_manifest(rel)[0] == {"status": "crashed"}
    # A manifest deleted since it was read is a conflict too, not a resurrection.
    _, tag = tree.read_manifest(rel)
    tree.delete(rel)
    with pytest.raises((ConflictError, FileNotFoundError)):
        tree.update_manifest(rel, {"status": "finished"}, tag)
    assert tree.read_manifest(rel) is None


def test_of_racing_conditional_updates_exactly_one_wins(tree) -> None:
    rel = "flows/gd/manifest.toml"
    tag = tree.create_manifest(rel, {"n": 0})
    results = race(6, lambda i: tree.update_manifest(rel, {"n": i + 1}, tag))
    winners = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if isinstance(r, Exception)), results
    assert tree.read_manifest(rel)[0] == {"n": winners[0] + 1}


def test_claims_move_on_past_taken_ids_of_either_kind(tree) -> None:
    a = tree.claim_run_id("run", "gd", "fda_run_", "20250101_000000", running())
    assert (a.run_id, a.manifest_rel) == ("20250101_000000", "fda_run_20250101_000000/manifest.toml")
    b = tree.claim_run_id("run", "gd", "fda_run_", "20250101_000000", running())
    assert b.run_id == "20250101_000000_2"
    # A dev run of the same flow may not reuse an id a run folder holds (and vice versa).
    c = tree.claim_run_id("dev", "gd", "fda_run_", "20250101_000000", running(mode="dev"))
    assert c.run_id not in (a.run_id, b.run_id)
    assert c.manifest_rel == f"flows/gd/runs/{c.run_id}.toml"
    d = tree.claim_run_id("run", "gd", "fda_run_", c.run_id, running())
    assert d.run_id not in (a.run_id, b.run_id, c.run_id)
    # Each claim published its manifest (with its id) at the version returned.
    for cl in (a, b, c, d):
        data, tag = tree.read_manifest(cl.manifest_rel)
        assert data["run_id"] == cl.run_id and data["status"] == "running"
        assert tag == cl.e_tag
    runs = {(e.manifest_rel, e.where_rel, e.is_folder) for e in tree.list_runs()}
    assert runs == {
        (a.manifest_rel, "fda_run_20250101_000000", True),
        (b.manifest_rel, "fda_run_20250101_000000_2", True),
        (c.manifest_rel, c.manifest_rel, False),
        (d.manifest_rel, d.manifest_rel.split("/")[0], True),
    }


@pytest.mark.parametrize("mode", ["run", "tuner"])
def test_racing_claims_of_one_id_all_get_different_ids(tree, mode) -> None:
    results = race(6, lambda i: tree.claim_run_id(mode, "gd", "fda_run_", "20250101_000000", running(mode=mode)))
    assert not [r for r in results if isinstance(r, Exception)], results
    ids = [r.run_id for r in results]  # type: ignore[union-attr]
    assert len(set(ids)) == 6, ids
    assert len(tree.list_runs()) == 6


def test_newest_time_of_a_run(tree) -> None:
    run = tree.claim_run_id("run", "gd", "fda_run_", "20250101_000000", running())
    dev = tree.claim_run_id("dev", "gd", "fda_run_", "20250101_000001", running(mode="dev"))
    for cl, where in ((run, "fda_run_20250101_000000"), (dev, dev.manifest_rel)):
        manifest, _ = tree.read_manifest(cl.manifest_rel)
        newest = tree.newest_time(manifest, where)
        assert newest is not None and abs(newest - time.time()) < 300, (cl, newest)


def test_the_catalogs_httpfs_view_finds_the_same_newest_time(tree) -> None:
    """The catalog reads a bucket through DuckDB's httpfs (runs.views.HttpfsTree): its
    evidence for a running run is the one the RootTree gives."""
    if tree.kind != "s3":
        pytest.skip("the httpfs view is of object-store roots")
    from conftest_servers import require_lake_extensions

    require_lake_extensions()
    from flightlog._s3 import storage_options
    from flightlog.runs.views import HttpfsTree

    run = tree.claim_run_id("run", "gd", "fda_run_", "20250101_000000", running())
    dev = tree.claim_run_id("dev", "gd", "fda_run_", "20250101_000001", running(mode="dev"))
    view = HttpfsTree(tree.location, storage_options(tree.storage_options))
    try:
        for cl, where in ((run, "fda_run_20250101_000000"), (dev, dev.manifest_rel)):
            manifest, _ = tree.read_manifest(cl.manifest_rel)
            got = view._newest_of_run(manifest, view.root / where)
            want = tree.newest_time(manifest, where)
            assert got is not None and want is not None and abs(got - want) <= 1.0, (cl, got, want)
        # Given the flow folder instead of the manifest (as the catalog may), the same.
        manifest, _ = tree.read_manifest(dev.manifest_rel)
        got = view._newest_of_run(manifest, view.root / "flows" / "gd")
        assert got is not None and abs(got - tree.newest_time(manifest, dev.manifest_rel)) <= 1.0
    finally:
        view.close()


# --------------------------------------------------------------------------- recovery
# What the one recovery procedure (runs.recover.recover_tree) asks a tree, on every kind.


def _parquet(n: int) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"step": pa.array(range(n), pa.int64())}), buf)
    return buf.getvalue()


def _put(tree: Any, rel: str, data: bytes) -> None:
    """Writes a file as a recorder would have (the tree itself publishes manifests only)."""
    if tree.kind == "local":
        path = tree.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        tree.store.put(tree.key(rel), data, "overwrite")


def _segment(n: int) -> str:
    from flightlog.runs.layout import SEGMENT_SUFFIX, SEGMENTS_DIR, TELEMETRY_SEGMENT_PREFIX

    return f"{SEGMENTS_DIR}/{TELEMETRY_SEGMENT_PREFIX}{n:06d}{SEGMENT_SUFFIX}"


def _part(mode: str, run_id: str, n: int) -> str:
    return f"flows/gd/{mode}_telemetry/part-{run_id}-{n:06d}.parquet"


def test_recovery_lists_run_folders_flows_and_leftovers(tree) -> None:
    tree.create_manifest("fda_run_a/manifest.toml", {"status": "finished"})
    _put(tree, f"fda_run_b/{_segment(1)}", _parquet(3))
    tree.create_manifest("flows/gd/runs/r1.toml", running(mode="dev"))
    _put(tree, _part("dev", "r1", 1), _parquet(2))
    for _ in range(2):  # the same answers from one listing of the root
        assert tree.recovery_folders() == [("fda_run_a", None), ("fda_run_b", None)]
        assert tree.recovery_flows() == [("gd", None, ["flows/gd/runs/r1.toml"])]
        assert tree.folder_leftovers("fda_run_a") == (False, False)
        assert tree.folder_leftovers("fda_run_b")[0] is True
        with tree.snapshot():
            assert tree.recovery_folders() == [("fda_run_a", None), ("fda_run_b", None)]
            assert tree.folder_leftovers("fda_run_b")[0] is True
    # Nothing a compaction left, nothing held: nothing to sweep, no claim in the way.
    assert tree.sweep_flow("gd") == (0, 0, [])
    with tree.claim_run("fda_run_b") as busy:
        assert busy is None
    # No spool in the folder: no writer to ask (an object store's recorders spool locally).
    assert tree.spool_writers("fda_run_b") == []
    with tree.claim_parts("gd", "dev", "r1") as busy:
        assert busy is None


def test_merge_run_folder_publishes_the_merged_file_through_the_core(tree) -> None:
    _put(tree, f"fda_run_x/{_segment(1)}", _parquet(3))
    _put(tree, f"fda_run_x/{_segment(2)}", _parquet(4))
    rep = tree.merge_run_folder("fda_run_x")
    assert rep["telemetry_rows"] == 7 and rep["segments_merged"] == 2, rep
    st = tree.stat("fda_run_x/telemetry.parquet")
    assert st is not None and st.size > 0
    assert tree.parquet_rows("fda_run_x/telemetry.parquet") == 7
    assert tree.folder_leftovers("fda_run_x") == (False, False)
    assert tree.merge_run_folder("fda_run_x")["segments_merged"] == 0  # idempotent


def test_a_dev_runs_parts_are_listed_by_name_with_their_sizes(tree) -> None:
    for n, rows in ((2, 5), (1, 2)):
        _put(tree, _part("dev", "r1", n), _parquet(rows))
    _put(tree, _part("dev", "r2", 1), _parquet(9))  # another run's part
    tree.salvage_parts("gd", "dev", "r1")  # nothing left unwritten: nothing published
    assert tree.remove_part_temps("gd", "dev", "r1") == 0
    parts = tree.list_parts("gd", "dev", "telemetry", "r1")
    assert [rel for rel, _ in parts] == [_part("dev", "r1", 1), _part("dev", "r1", 2)]
    assert [tree.parquet_rows(rel) for rel, _ in parts] == [2, 5]
    assert [st.size for _, st in parts] == [tree.stat(rel).size for rel, _ in parts]
    assert tree.list_parts("gd", "dev", "events", "r1") == []
    assert tree.compacted_parts("gd", "dev", "telemetry") == []


def test_one_recovery_finalises_dead_runs_of_either_kind_alike(tree) -> None:
    from flightlog.runs.recover import RecoverReport, recover_tree

    tree.create_manifest("fda_run_x/manifest.toml", {**running(), "run_id": "x"})
    _put(tree, f"fda_run_x/{_segment(1)}", _parquet(3))
    _put(tree, f"fda_run_y/{_segment(1)}", _parquet(4))  # died before its manifest
    tree.create_manifest("flows/gd/runs/r1.toml", {**running(mode="dev"), "run_id": "r1"})
    _put(tree, _part("dev", "r1", 1), _parquet(5))
    report = RecoverReport(root=tree.url())
    recover_tree(tree, -1.0, report)  # no process to ask: dead by their files' age
    assert report.errors == [] and report.live == []
    got = {r["path"]: (r["previous_status"], r["status"], r["telemetry_rows"]) for r in report.recovered}
    assert got == {
        tree.url("fda_run_x"): ("running", "crashed", 3),
        tree.url("fda_run_y"): ("unknown", "crashed", 4),
        tree.url("flows/gd/runs/r1.toml"): ("running", "crashed", 5),
    }
    m, _ = tree.read_manifest("fda_run_x/manifest.toml")
    assert m["files"] == [
        {
            "path": "telemetry.parquet",
            "kind": "telemetry",
            "rows": 3,
            "bytes": tree.stat("fda_run_x/telemetry.parquet").size,
        }
    ]
    m, _ = tree.read_manifest("flows/gd/runs/r1.toml")
    assert [(f["path"], f["rows"]) for f in m["files"]] == [("../dev_telemetry/part-r1-000001.parquet", 5)]
    assert m["counts"]["rows_written"] == 5
    # Idempotent: a second pass finds nothing to do.
    again = RecoverReport(root=tree.url())
    recover_tree(tree, -1.0, again)
    assert again.recovered == [] and again.errors == []


# --------------------------------------------------------------------------- the manager
# What TelemetryManager asks a tree instead of branching on the kind of root.


def test_locations_folders_and_recorder_options(tree) -> None:
    loc = tree.where("fda_run_x")
    assert str(loc).endswith("root/fda_run_x")
    assert str(tree.where()) == tree.url()
    tree.make_folders(["flows/gd/runs", "flows/gd/dev_telemetry"])  # implied by keys on a store
    opts = tree.recorder_options()
    assert opts == ({} if tree.kind == "local" else {"storage_options": tree.storage_options})
    # A recorder names its files by path locally and by object key on a store.
    file = str(tree.where("flows/gd/dev_telemetry/part-r1-000001.parquet"))
    if tree.kind == "s3":
        file = tree.key("flows/gd/dev_telemetry/part-r1-000001.parquet")
    assert tree.relative_to_manifest("flows/gd/runs/r1.toml", file) == "../dev_telemetry/part-r1-000001.parquet"
    file = str(tree.where("fda_run_x/telemetry.parquet"))
    if tree.kind == "s3":
        file = tree.key("fda_run_x/telemetry.parquet")
    assert tree.relative_to_manifest("fda_run_x/manifest.toml", file) == "telemetry.parquet"


def test_the_closing_run_wins_over_a_recover_that_judged_it_dead(tree) -> None:
    claimed = tree.claim_run_id("run", "gd", "fda_run_", "20250101_000000", running())
    # recover rewrote the manifest meanwhile: the version the run holds is stale.
    data, tag = tree.read_manifest(claimed.manifest_rel)
    tree.update_manifest(claimed.manifest_rel, {**data, "status": "crashed"}, tag)
    tree.replace_manifest(claimed.manifest_rel, {**data, "status": "finished"}, claimed.e_tag)
    assert tree.read_manifest(claimed.manifest_rel)[0]["status"] == "finished"


def test_modify_manifest_changes_only_what_needs_changing(tree) -> None:
    rel = "flows/gd/manifest.toml"
    calls: list[object] = []

    def add_mode(mode: str):
        def change(m):
            calls.append(m)
            if m is not None and mode in m.get("modes", []):
                return None
            return {"flow_name": "gd", "modes": sorted({*(m or {}).get("modes", []), mode})}

        return change

    assert tree.modify_manifest(rel, add_mode("dev")) == {"flow_name": "gd", "modes": ["dev"]}
    assert tree.modify_manifest(rel, add_mode("tuner")) == {"flow_name": "gd", "modes": ["dev", "tuner"]}
    assert tree.read_manifest(rel)[0]["modes"] == ["dev", "tuner"]
    before = tree.read_manifest(rel)[1]
    assert tree.modify_manifest(rel, add_mode("dev")) == {"flow_name": "gd", "modes": ["dev", "tuner"]}
    assert tree.read_manifest(rel)[1] == before  # unchanged: not rewritten
    # Concurrent modifications lose nothing.
    race(4, lambda i: tree.modify_manifest(rel, add_mode(f"m{i}")))
    assert tree.read_manifest(rel)[0]["modes"] == sorted(["dev", "tuner", "m0", "m1", "m2", "m3"])
    version = tree.cheap_version(rel)
    assert version == (tree.read_manifest(rel)[1] if tree.kind == "local" else None)


@pytest.mark.parametrize("mode", ["run", "dev"])
def test_unclaim_removes_the_claim(tree, mode) -> None:
    claimed = tree.claim_run_id(mode, "gd", "fda_run_", "20250101_000000", running(mode=mode))
    folder = claimed.manifest_rel.split("/")[0] if mode == "run" else None
    tree.unclaim(claimed.manifest_rel, folder)
    assert tree.read_manifest(claimed.manifest_rel) is None
    assert tree.list_runs() == []
    tree.unclaim(claimed.manifest_rel, folder)  # twice: no error

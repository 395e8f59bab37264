"""DuckDBManager: incremental, crash-safe consolidation and the query API.

Runs are written by the real recorder (TelemetryManager / FlightRecorder); only
deliberately broken files are written by hand.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tomli_w

import flightlog
from conftest import run_together
from flightlog import CatalogLockedError, DuckDBManager, Field, Schema, TelemetryManager

SCHEMA = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64")], version=3)


def make_run(root, run_id, n, *, flow="gd", schema=SCHEMA, mode="run", close=True, energy=None, **options):
    """A run of ``n`` rows: iter 0..n-1, E = energy (default 1/(iter+1)), written by the real recorder."""
    if mode != "run":
        options.setdefault("sampling", None)
        if mode == "tuner":
            options.setdefault("trial_id", f"t-{run_id}")
    tm = TelemetryManager(root, flow, run_id=run_id, mode=mode, schema=schema, **options)
    it = np.arange(n, dtype=np.int64)
    e = 1.0 / (it + 1.0) if energy is None else np.asarray(energy, dtype=np.float64)
    if n:
        tm.extend(iter=it, t_wall_ms=it * 2.0, E=e)
    tm.event("CERT_PASS", {"gap": 0.5})
    if close:
        tm.close()
    return tm


def count(db, sql, params=None):
    return db.query(sql, params).fetchone()[0]


def run_py(code, *args, **kwargs):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


# --------------------------------------------------------------------------- ingestion


def test_idempotent_and_incremental(root):
    make_run(root, "A", 100)
    make_run(root, "B", 50)
    db = DuckDBManager(root)
    rep = db.consolidate()
    assert (rep.files_added, rep.runs_added, rep.files_skipped) == (4, 2, [])
    # RUN_STARTED, CERT_PASS, RUN_FINISHED per run
    assert rep.rows_added == 150 + 2 * 3
    assert count(db, "SELECT count(*) FROM telemetry") == 150
    assert count(db, "SELECT count(*) FROM events WHERE event = 'CERT_PASS'") == 2

    again = db.consolidate()
    assert (again.files_added, again.rows_added, again.runs_added, again.runs_updated) == (0, 0, 0, 0)
    assert again.files_skipped == []

    make_run(root, "C", 10)
    third = db.consolidate()
    assert (third.files_added, third.rows_added - 3, third.runs_added) == (2, 10, 1)
    got = db.query("SELECT run_id, count(*) FROM telemetry GROUP BY run_id ORDER BY run_id").fetchall()
    assert got == [("A", 100), ("B", 50), ("C", 10)]
    assert count(db, "SELECT count(*) FROM _ingested_files") == 6
    row = db.runs().to_dicts()[0]
    assert row["run_id"] == "A" and row["status"] == "finished" and row["mode"] == "run"
    assert row["rows_written"] == 100 and row["path"] == "fda_run_A"
    assert row["host"] and row["pid"] == os.getpid()


def test_telemetry_has_run_flow_schema_version(root):
    make_run(root, "A", 5, flow="flowA")
    db = DuckDBManager(root)
    db.consolidate()
    rows = db.telemetry("A", columns=["run_id", "flow_name", "schema_version", "iter"]).fetchall()
    assert rows == [("A", "flowA", 3, i) for i in range(5)]
    ev = db.events("A", names=["CERT_PASS"]).to_dicts()
    assert len(ev) == 1 and json.loads(ev[0]["payload"]) == {"gap": 0.5} and ev[0]["schema_version"] == 3


def test_schema_evolution_new_column_and_older_version(root):
    old = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64")], version=2)
    new = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64"), Field("lam", "f64")], version=3)
    tm = TelemetryManager(root, "gd", run_id="NEW", schema=new)
    tm.extend(iter=np.arange(4), t_wall_ms=np.zeros(4), E=np.ones(4), lam=np.full(4, 0.5))
    tm.close()
    db = DuckDBManager(root)
    db.consolidate()
    make_run(root, "OLD", 3, schema=old)
    rep = db.consolidate()
    assert rep.files_skipped == []
    got = db.query(
        "SELECT run_id, schema_version, count(*), count(lam), min(lam) FROM telemetry GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert got == [("NEW", 3, 4, 4, 0.5), ("OLD", 2, 3, 0, None)]
    # a column first seen in a later file is added to the table
    make_run(root, "F32", 2, schema=Schema([*SCHEMA.fields, Field("extra", "f32")]))
    db.consolidate()
    types = dict(
        db.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'telemetry'")
    )
    assert types["extra"] == "DOUBLE" and types["lam"] == "DOUBLE"


def test_type_conflict_is_skipped_and_reported(root):
    make_run(root, "A", 10)
    bad = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "str")])
    tm = TelemetryManager(root, "gd", run_id="BAD", schema=bad)
    tm.log(iter=0, t_wall_ms=0.0, E="oops")
    tm.close()
    db = DuckDBManager(root)
    rep = db.consolidate()
    reasons = dict(rep.files_skipped)
    assert "type conflict" in reasons["fda_run_BAD/telemetry.parquet"]
    assert "'E'" in reasons["fda_run_BAD/telemetry.parquet"]
    assert count(db, "SELECT count(*) FROM telemetry") == 10
    # the events of that run are fine and go in; the runs row too
    assert count(db, "SELECT count(*) FROM events WHERE run_id = 'BAD'") == 2
    assert [r[0] for r in db.runs().fetchall()] == ["A", "BAD"]
    # reported again next time (never ingested), never fatal
    assert "fda_run_BAD/telemetry.parquet" in dict(db.consolidate().files_skipped)


def test_corrupt_parquet_and_malformed_manifests_are_skipped(root):
    make_run(root, "GOOD", 7)
    make_run(root, "CORRUPT", 7)
    tel = root / "fda_run_CORRUPT" / "telemetry.parquet"
    data = tel.read_bytes()
    tel.write_bytes(data[: len(data) // 2])  # truncated: no footer
    make_run(root, "GARBAGE", 3)
    (root / "fda_run_GARBAGE" / "telemetry.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    bad_toml = root / "fda_run_BADTOML"
    bad_toml.mkdir(parents=True)
    (bad_toml / "manifest.toml").write_text('run_id = "x"\nstatus = = "finished"\n')
    bad_status = root / "fda_run_BADSTATUS"
    bad_status.mkdir()
    (bad_status / "manifest.toml").write_text(tomli_w.dumps({"run_id": "BADSTATUS", "status": "weird"}))
    bad_dev = root / "flows" / "gd" / "runs"
    bad_dev.mkdir(parents=True)
    (bad_dev / "X.toml").write_bytes(b"\xff\xfe not utf-8")

    db = DuckDBManager(root)
    rep = db.consolidate()
    reasons = dict(rep.files_skipped)
    assert reasons["fda_run_CORRUPT/telemetry.parquet"].startswith("unreadable Parquet")
    assert reasons["fda_run_GARBAGE/telemetry.parquet"].startswith("unreadable Parquet")
    assert reasons["fda_run_BADTOML/manifest.toml"].startswith("malformed manifest")
    assert "status 'weird'" in reasons["fda_run_BADSTATUS/manifest.toml"]
    assert reasons["flows/gd/runs/X.toml"].startswith("malformed manifest")
    assert count(db, "SELECT count(*) FROM telemetry") == 7
    assert {r[0] for r in db.runs().fetchall()} == {"GOOD", "CORRUPT", "GARBAGE"}
    # fixing the file later gets it ingested
    make_run(root / "tmp", "CORRUPT", 7)
    shutil.copy(root / "tmp" / "fda_run_CORRUPT" / "telemetry.parquet", tel)
    rep = db.consolidate()
    assert "fda_run_CORRUPT/telemetry.parquet" not in dict(rep.files_skipped)
    assert count(db, "SELECT count(*) FROM telemetry WHERE run_id = 'CORRUPT'") == 7


def test_status_running_then_finished(root):
    tm = make_run(root, "LIVE", 20, close=False)
    tm.flush()
    db = DuckDBManager(root)
    rep = db.consolidate()
    assert rep.runs_added == 1 and rep.files_added == 0  # nothing of a running run is immutable yet
    assert db.runs().fetchall()[0][db.runs().columns.index("status")] == "running"
    tm.close()
    rep = db.consolidate()
    assert (rep.runs_added, rep.runs_updated, rep.files_added) == (0, 1, 2)
    assert db.runs(status="finished").to_dicts()[0]["run_id"] == "LIVE"
    assert count(db, "SELECT count(*) FROM telemetry") == 20


def test_crashed_by_evidence_then_recovered(root):
    code = """
        import os, sys, numpy as np
        from flightlog import TelemetryManager, Schema, Field
        s = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64")])
        tm = TelemetryManager(sys.argv[1], "gd", run_id="DEAD", schema=s, segment_rows=10)
        tm.extend(iter=np.arange(35), t_wall_ms=np.zeros(35), E=np.ones(35))
        tm.flush()
        os.kill(os.getpid(), 9)
    """
    proc = run_py(code, root)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    db = DuckDBManager(root)
    rep = db.consolidate()
    run = db.runs().to_dicts()[0]
    assert (run["status"], run["manifest_status"]) == ("crashed", "running")
    assert rep.files_added == 0
    # what it made durable is visible live, straight from its segments
    assert len(db.live("DEAD")) == 35
    flightlog.recover(root)
    rep = db.consolidate()
    assert rep.runs_updated == 1 and rep.files_added == 2
    assert db.runs().to_dicts()[0]["manifest_status"] == "crashed"
    assert count(db, "SELECT count(*) FROM telemetry WHERE run_id = 'DEAD'") == 35


def test_prune_removes_runs_whose_folders_are_gone(root):
    for rid in ("A", "B", "C"):
        make_run(root, rid, 10)
    make_run(root, "D1", 5, mode="dev")
    db = DuckDBManager(root)
    db.consolidate()
    shutil.rmtree(root / "fda_run_B")
    assert db.consolidate().runs_pruned == 0  # prune only on request
    assert count(db, "SELECT count(*) FROM telemetry WHERE run_id = 'B'") == 10
    rep = db.consolidate(prune=True)
    assert rep.runs_pruned == 1
    for table in ("telemetry", "events", "runs", "_ingested_files"):
        assert count(db, f"SELECT count(*) FROM {table} WHERE run_id = 'B'") == 0, table
    assert count(db, "SELECT count(*) FROM telemetry") == 25
    # a dev run goes when its manifest and its parts are gone
    (root / "flows" / "gd" / "runs" / "D1.toml").unlink()
    assert db.consolidate(prune=True).runs_pruned == 0  # parts still there
    shutil.rmtree(root / "flows" / "gd" / "dev_telemetry")
    shutil.rmtree(root / "flows" / "gd" / "dev_events")
    assert db.consolidate(prune=True).runs_pruned == 1
    assert count(db, "SELECT count(*) FROM telemetry WHERE run_id = 'D1'") == 0
    assert count(db, "SELECT count(*) FROM telemetry") == 20


# --------------------------------------------------------------------------- append mode, compaction


def test_parts_and_compaction_never_double_count(root):
    db = DuckDBManager(root)
    make_run(root, "D1", 25, mode="dev", segment_rows=10)
    make_run(root, "D2", 25, mode="dev", segment_rows=10)
    assert db.consolidate().files_added == 3 + 3 + 2
    flightlog.compact(root, "gd")
    assert not list((root / "flows" / "gd" / "dev_telemetry").glob("part-*"))
    rep = db.consolidate()
    assert (rep.files_added, rep.rows_added, rep.files_skipped) == (0, 0, [])
    # new parts, compacted before the catalog ever saw them
    make_run(root, "D3", 25, mode="dev", segment_rows=10)
    make_run(root, "T1", 12, mode="tuner", segment_rows=5)
    flightlog.compact(root, "gd")
    make_run(root, "D4", 5, mode="dev")  # a part not compacted
    rep = db.consolidate()
    assert rep.files_skipped == []
    assert rep.files_added == 3 + 1 + 3 + 1 + 1 + 1  # D3 parts+events, T1 parts+events, D4 part+events
    got = db.query("SELECT run_id, count(*), count(DISTINCT iter) FROM telemetry GROUP BY 1 ORDER BY 1").fetchall()
    assert got == [("D1", 25, 25), ("D2", 25, 25), ("D3", 25, 25), ("D4", 5, 5), ("T1", 12, 12)]
    assert count(db, "SELECT count(*) FROM telemetry WHERE run_id = 'T1' AND trial_id = 't-T1'") == 12
    assert db.consolidate().rows_added == 0
    # compacting again (the compacted file is merged into the new one) adds nothing twice
    make_run(root, "D5", 7, mode="dev")
    flightlog.compact(root, "gd")
    rep = db.consolidate()
    assert rep.files_skipped == [] and rep.rows_added == 7 + 3
    assert count(db, "SELECT count(*) FROM telemetry") == 25 * 3 + 5 + 12 + 7
    assert count(db, "SELECT count(*) FROM events WHERE event = 'CERT_PASS'") == 6


def test_compacted_file_listing_parts_is_read_by_ranges(root):
    # Leftover parts next to the compacted file that lists them are never read.
    make_run(root, "D1", 30, mode="dev", segment_rows=10)
    parts_dir = root / "flows" / "gd" / "dev_telemetry"
    keep = root / "keep"
    shutil.copytree(parts_dir, keep)
    flightlog.compact(root, "gd")
    for p in keep.iterdir():  # as if compaction died before deleting them
        shutil.copy(p, parts_dir / p.name)
    db = DuckDBManager(root)
    rep = db.consolidate()
    assert rep.files_skipped == []
    assert count(db, "SELECT count(*) FROM telemetry") == 30
    paths = [r[0] for r in db.query("SELECT path FROM _ingested_files WHERE kind = 'telemetry' ORDER BY 1")]
    # part-<run_id>-<8-digit recorder instance><6-digit sequence>.parquet
    assert [re.sub(r"-\d{8}(\d{6})\.", r"-\1.", p) for p in paths] == [
        f"flows/gd/dev_telemetry/part-D1-00000{i}.parquet" for i in (1, 2, 3)
    ]
    iters = [r[0] for r in db.query("SELECT iter FROM telemetry ORDER BY iter")]
    assert iters == list(range(30))


def test_recompaction_keeps_part_lists(root):
    make_run(root, "D1", 10, mode="dev")
    flightlog.compact(root, "gd")
    make_run(root, "D2", 10, mode="dev")
    flightlog.compact(root, "gd")
    db = DuckDBManager(root)
    rep = db.consolidate()
    assert rep.files_skipped == []
    assert count(db, "SELECT count(*) FROM telemetry") == 20
    assert len(db.live("D1")) == 10


# --------------------------------------------------------------------------- concurrency


def test_concurrent_consolidators_exact_counts(root):
    for i in range(12):
        make_run(root, f"R{i:02d}", 100 + i)
    code = """
        import sys, json
        from flightlog import DuckDBManager, CatalogLockedError
        try:
            r = DuckDBManager(sys.argv[1], timeout=60).consolidate()
            print(json.dumps([r.files_added, r.rows_added]))
        except CatalogLockedError as e:
            print(json.dumps(["locked", str(e)]))
    """
    args = [sys.executable, "-c", textwrap.dedent(code), str(root)]
    outs = [json.loads(out) for out in run_together([args] * 4, timeout=120)]
    assert sum(o[0] for o in outs) == 24
    assert sum(o[1] for o in outs) == sum(100 + i for i in range(12)) + 12 * 3
    db = DuckDBManager(root, read_only=True)
    assert count(db, "SELECT count(*) FROM telemetry") == sum(100 + i for i in range(12))
    assert count(db, "SELECT count(*) FROM _ingested_files") == 24


def test_lock_timeout_raises_catalog_locked(root):
    make_run(root, "A", 3)
    db = DuckDBManager(root, timeout=0.3)
    db.consolidate()
    holder = """
        import fcntl, sys, time
        f = open(sys.argv[1], "a+")
        fcntl.flock(f, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(30)
    """
    args = [sys.executable, "-c", textwrap.dedent(holder), str(root / "duckdb.db.lock")]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout.readline().strip() == "locked"
            t0 = time.monotonic()
            with pytest.raises(CatalogLockedError, match="another writer"):
                db.consolidate()
            assert 0.25 < time.monotonic() - t0 < 5
            # readers are not blocked by the writers' lock
            assert count(db, "SELECT count(*) FROM telemetry") == 3
        finally:
            p.kill()
    assert db.consolidate().files_added == 0


def test_reader_times_out_while_a_process_holds_the_database(root):
    make_run(root, "A", 3)
    DuckDBManager(root).consolidate()
    holder = """
        import duckdb, sys, time
        con = duckdb.connect(sys.argv[1])
        print("open", flush=True)
        time.sleep(float(sys.argv[2]))
        con.close()
    """
    args = [sys.executable, "-c", textwrap.dedent(holder), str(root / "duckdb.db")]
    with subprocess.Popen([*args, "30"], stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout.readline().strip() == "open"
            with pytest.raises(CatalogLockedError):
                DuckDBManager(root, read_only=True, timeout=0.3).query("SELECT 1")
            with pytest.raises(CatalogLockedError):
                DuckDBManager(root, timeout=0.3).consolidate()
        finally:
            p.kill()
    # a short hold is waited out
    with subprocess.Popen([*args, "0.5"], stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout.readline().strip() == "open"
        assert count(DuckDBManager(root, read_only=True, timeout=20), "SELECT count(*) FROM telemetry") == 3


def test_reader_while_writer_works(root):
    for i in range(30):
        make_run(root, f"R{i:02d}", 50)
    db = DuckDBManager(root, timeout=30)
    db.consolidate()  # creates the catalog
    for i in range(30, 60):
        make_run(root, f"R{i:02d}", 50)
    code = """
        import sys
        from flightlog.catalog import write as _catalog
        from flightlog import DuckDBManager
        _catalog._BATCH_FILES = 2
        print(DuckDBManager(sys.argv[1]).consolidate().files_added)
    """
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(root)], stdout=subprocess.PIPE, text=True)
    seen = []
    reader = DuckDBManager(root, read_only=True, timeout=30)
    while p.poll() is None:
        seen.append(count(reader, "SELECT count(*) FROM telemetry"))
    assert int(p.communicate()[0]) == 60
    seen.append(count(reader, "SELECT count(*) FROM telemetry"))
    # A reader gets in while the writer has let go (listing the tree, or between two
    # batches because readers wait), never while it writes a batch (DuckDB's file lock):
    # counts only grow, by whole files.
    assert seen == sorted(seen) and seen[-1] == 60 * 50
    assert all(n % 50 == 0 for n in seen)


def _consolidation_with_batches(root, wrap_batch: str, first_line: str = "") -> list[str]:
    """The command of a process consolidating ``root`` one file per batch, each batch
    written by ``wrap_batch``: the body of ``batch(self, con, batch, report)``, in which
    ``write_batch(...)`` writes it. Prints ``first_line`` (if any), then files_added."""
    code = f"""
import sys, time
from flightlog.catalog import write as _catalog
from flightlog import DuckDBManager
_catalog._BATCH_FILES = 1
write_batch = _catalog._Writer._write_batch

def batch(self, con, batch, report):
{textwrap.indent(textwrap.dedent(wrap_batch).strip(), "    ")}

_catalog._Writer._write_batch = batch
if {first_line!r}:
    print({first_line!r}, flush=True)
print(DuckDBManager(sys.argv[1]).consolidate().files_added, flush=True)
"""
    return [sys.executable, "-c", code, str(root)]


def test_writer_keeps_the_file_locked_while_it_writes(root):
    """DuckDB's lock on duckdb.db is a POSIX fcntl lock, which the process loses when it
    closes any descriptor of the file: the writer once read its own header after opening
    and so let readers in mid-write (under DuckDB 2 they read a half-checkpointed file)."""
    for i in range(4):
        make_run(root, f"R{i:02d}", 50)
    DuckDBManager(root).consolidate()
    for i in range(4, 8):
        make_run(root, f"R{i:02d}", 50)
    paused = """
        error = write_batch(self, con, batch, report)
        print("wrote one batch", flush=True)
        sys.stdin.readline()
        return error
    """
    args = _consolidation_with_batches(root, paused)
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout.readline().strip() == "wrote one batch"
            with pytest.raises(CatalogLockedError):
                DuckDBManager(root, read_only=True, timeout=0.3).query("SELECT count(*) FROM telemetry")
            out, _ = p.communicate(timeout=60)  # stdin closed: every later batch goes on
        finally:
            p.kill()
    assert out.strip().splitlines()[-1] == "8"  # 4 runs' telemetry and events files
    assert count(DuckDBManager(root, read_only=True), "SELECT count(*) FROM telemetry") == 8 * 50


def test_a_long_consolidation_lets_waiting_readers_in_between_batches(root):
    """The writer keeps its lock while it writes a batch, but a reader that waits does not
    wait for the whole consolidation: it says so (the .readers-waiting file) and the writer
    lets go between two batches. The reader sees whole batches, never part of one."""
    for i in range(2):
        make_run(root, f"R{i:02d}", 50)
    DuckDBManager(root).consolidate()
    for i in range(2, 14):
        make_run(root, f"R{i:02d}", 50)
    slow = """
        time.sleep(0.4)  # a batch of big files
        return write_batch(self, con, batch, report)
    """
    args = _consolidation_with_batches(root, slow, first_line="start")
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout.readline().strip() == "start"
            time.sleep(2.0)  # well into the 24 batches (about 10 s in all)
            assert p.poll() is None
            t0 = time.monotonic()
            mid = count(DuckDBManager(root, read_only=True, timeout=3), "SELECT count(*) FROM telemetry")
            waited = time.monotonic() - t0
            assert p.poll() is None, "the consolidation ended before the reader got in"
            out, _ = p.communicate(timeout=120)
        finally:
            p.kill()
    assert out.strip().splitlines()[-1] == "24"
    assert waited < 3
    assert 2 * 50 <= mid < 14 * 50 and mid % 50 == 0
    assert count(DuckDBManager(root, read_only=True), "SELECT count(*) FROM telemetry") == 14 * 50


def test_consolidator_killed_midway_then_rerun(root):
    for i in range(40):
        make_run(root, f"R{i:02d}", 20 + i)
    code = """
        import sys
        from flightlog.catalog import write as _catalog
        from flightlog import DuckDBManager
        _catalog._BATCH_FILES = 3
        def progress(done, total):
            print(done, total, flush=True)
            if done >= 12:
                import os, signal
                os.kill(os.getpid(), signal.SIGKILL)
        DuckDBManager(sys.argv[1]).consolidate(progress=progress)
    """
    proc = run_py(code, root)
    assert proc.returncode == -signal.SIGKILL
    assert "12 " in proc.stdout
    db = DuckDBManager(root)
    partial = count(db, "SELECT count(*) FROM _ingested_files")
    assert 12 <= partial < 80
    rep = db.consolidate()
    assert rep.files_added == 80 - partial
    assert count(db, "SELECT count(*) FROM telemetry") == sum(20 + i for i in range(40))
    assert count(db, "SELECT count(*) FROM (SELECT run_id, iter FROM telemetry GROUP BY ALL HAVING count(*) > 1)") == 0
    assert db.consolidate().files_added == 0


# --------------------------------------------------------------------------- queries


def test_query_params_are_bound(root):
    make_run(root, "A", 3)
    db = DuckDBManager(root)
    db.consolidate()
    evil = "A' OR '1'='1"
    assert db.query("SELECT * FROM runs WHERE run_id = ?", [evil]).fetchall() == []
    assert db.query("SELECT * FROM telemetry WHERE run_id = $id", {"id": evil}).fetchall() == []
    assert db.telemetry(run_ids=[evil]).fetchall() == []
    assert db.runs(flow_name="gd'; DROP TABLE runs; --").fetchall() == []
    assert count(db, "SELECT count(*) FROM runs") == 1
    r = db.query("SELECT run_id, count(*) AS n FROM telemetry WHERE run_id = ? GROUP BY 1;", ["A"])
    assert r.columns == ["run_id", "n"] and r.fetchone() == ("A", 3) and len(r) == 1
    assert r.df().to_dict("records") == [{"run_id": "A", "n": 3}]
    assert r.arrow().to_pylist() == [{"run_id": "A", "n": 3}]
    assert db.query("DESCRIBE telemetry").fetchall()
    with pytest.raises(ValueError, match="no column"):
        db.telemetry(columns=["E", 'x" FROM runs --'])


def test_query_is_read_only_and_releases_the_file(root):
    make_run(root, "A", 3)
    db = DuckDBManager(root)
    db.consolidate()
    import duckdb

    with pytest.raises(duckdb.Error):
        db.query("DELETE FROM runs")
    r = db.query("SELECT * FROM telemetry")
    con = duckdb.connect(str(root / "duckdb.db"))  # the result holds no lock on the catalog
    con.close()
    assert len(r.fetchall()) == 3


def test_compare_matches_numpy(root):
    rng = np.random.default_rng(7)
    series = {rid: rng.normal(size=n).cumsum() for rid, n in (("A", 200), ("B", 150), ("C", 90))}
    for rid, e in series.items():
        make_run(root, rid, len(e), energy=e)
    db = DuckDBManager(root)
    db.consolidate()
    out = db.compare(["B", "A", "C", "MISSING"], metric="E").to_dicts()
    assert [r["run_id"] for r in out] == ["B", "A", "C", "MISSING"]
    ref = series["B"]
    for r in out[:3]:
        e = series[r["run_id"]]
        assert r["rows"] == len(e) and r["iterations"] == len(e)
        assert r["first"] == e[0] and r["last"] == e[-1] and r["min"] == e.min()
        assert r["argmin_iter"] == int(np.argmin(e))
        assert r["wall_s"] == pytest.approx((len(e) - 1) * 2.0 / 1000)
        assert r["rows_per_s"] == pytest.approx(len(e) / r["wall_s"])
        assert r["delta_min"] == pytest.approx(e.min() - ref.min())
        assert r["delta_last"] == pytest.approx(e[-1] - ref[-1])
        assert r["delta_iterations"] == len(e) - len(ref)
        assert r["status"] == "finished" and r["flow_name"] == "gd"
    assert out[3]["rows"] == 0 and out[3]["min"] is None
    with pytest.raises(ValueError, match="no telemetry column"):
        db.compare(["A"], metric="nope")


# --------------------------------------------------------------------------- live


def test_live_during_a_run_no_double_count(root):
    db = DuckDBManager(root)
    tm = TelemetryManager(root, "gd", run_id="L", schema=SCHEMA, segment_rows=10, flush_interval=60)
    assert len(db.live("L")) == 0
    for k in range(5):
        tm.extend(iter=np.arange(k * 7, k * 7 + 7), t_wall_ms=np.zeros(7), E=np.ones(7))
        tm.flush()
        got = db.live("L")
        assert len(got) == (k + 1) * 7
        assert [r[0] for r in got.relation.select("iter").fetchall()] == list(range((k + 1) * 7))
    assert len(db.live("L", kind="events")) >= 1
    tm.close()  # merges the segments into telemetry.parquet
    assert len(db.live("L")) == 35
    assert not (root / "fda_run_L" / "segments").exists()


def test_live_when_merge_left_listed_segments(root):
    # telemetry.parquet listing segments that were not deleted yet must not be counted twice
    tm = TelemetryManager(root, "gd", run_id="M", schema=SCHEMA, segment_rows=10)
    tm.extend(iter=np.arange(30), t_wall_ms=np.zeros(30), E=np.ones(30))
    tm.flush()
    seg_dir = root / "fda_run_M" / "segments"
    saved = {p.name: p.read_bytes() for p in seg_dir.glob("telemetry-*.parquet")}
    assert len(saved) == 3
    tm.close()
    seg_dir.mkdir(exist_ok=True)
    for name, data in saved.items():
        (seg_dir / name).write_bytes(data)
    assert len(DuckDBManager(root).live("M")) == 30


def test_live_reads_a_segment_linked_as_the_final_file_once(root):
    # A close publishing its single segment links it to telemetry.parquet, then removes
    # the segment: a live() between the two sees one file under two names.
    tm = TelemetryManager(root, "gd", run_id="K", schema=SCHEMA, segment_rows=1000)
    tm.extend(iter=np.arange(12), t_wall_ms=np.zeros(12), E=np.ones(12))
    tm.close()
    run = root / "fda_run_K"
    seg_dir = run / "segments"
    seg_dir.mkdir(exist_ok=True)
    segment = seg_dir / "telemetry-00000001000001.parquet"
    os.link(run / "telemetry.parquet", segment)
    assert len(DuckDBManager(root).live("K")) == 12
    # Another file under a segment's name is another file (a copy, unlisted): read too.
    segment.unlink()
    segment.write_bytes((run / "telemetry.parquet").read_bytes())
    assert len(DuckDBManager(root).live("K")) == 24


def test_live_dev_run_across_compaction(root):
    make_run(root, "D1", 25, mode="dev", segment_rows=10)
    tm = TelemetryManager(root, "gd", run_id="D2", mode="dev", schema=SCHEMA, sampling=None, segment_rows=10)
    tm.extend(iter=np.arange(15), t_wall_ms=np.zeros(15), E=np.ones(15))
    tm.flush()
    db = DuckDBManager(root)
    assert len(db.live("D2")) == 15
    # The moment of a compaction: the compacted file is published, the parts it
    # lists are not deleted yet.
    parts_dir = root / "flows" / "gd" / "dev_telemetry"
    parts = sorted(str(p) for p in parts_dir.glob("part-*.parquet"))
    flightlog._core.merge_parquet(str(root / "flows" / "gd" / "dev_telemetry.parquet"), parts)
    assert len(db.live("D1")) == 25 and len(db.live("D2")) == 15
    tm.extend(iter=np.arange(15, 20), t_wall_ms=np.zeros(5), E=np.ones(5))
    tm.flush()
    got = db.live("D2")  # rows of the compacted file plus a new part
    assert [r[0] for r in got.relation.select("iter").fetchall()] == list(range(20))
    tm.close()
    (root / "flows" / "gd" / "dev_telemetry.parquet").unlink()  # (see test_recompaction_keeps_part_lists)
    flightlog.compact(root, "gd")
    assert not list(parts_dir.glob("part-*"))
    assert len(db.live("D2")) == 20 and len(db.live("D1")) == 25
    rep = db.consolidate()
    assert rep.files_skipped == []
    assert count(db, "SELECT count(*) FROM telemetry") == 45
    with pytest.raises(ValueError, match="no run"):
        db.live("NOPE")


# --------------------------------------------------------------------------- misc


def test_read_only_manager(root):
    with pytest.raises(FileNotFoundError):
        DuckDBManager(root, read_only=True).query("SELECT 1")
    make_run(root, "A", 3)
    DuckDBManager(root).consolidate()
    with DuckDBManager(root, read_only=True) as db:
        with pytest.raises(PermissionError):
            db.consolidate()
        assert count(db, "SELECT count(*) FROM telemetry") == 3
    with pytest.raises(ValueError, match="closed"):
        db.query("SELECT 1")


def test_report_and_progress(root):
    make_run(root, "A", 3)
    calls = []
    rep = DuckDBManager(root).consolidate(progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 2) and calls[-1] == (2, 2)
    assert "2 files, 3 telemetry rows, 3 event rows, 1 runs added" in str(rep) and rep.seconds > 0


def test_import_stays_light():
    proc = run_py(
        """
        import sys, flightlog
        db = flightlog.DuckDBManager("/nonexistent/root")
        assert "duckdb" not in sys.modules and "pyarrow" not in sys.modules, sorted(sys.modules)
        """
    )
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- creating duckdb.db


def test_the_database_file_appears_whole_or_not_at_all(root):
    """``duckdb.db`` is created under a temp name and published with a link: a writer
    killed while creating it (left its temp file) does not leave an unusable catalog."""
    make_run(root, "20250101_000000", 10)
    stale = root / ".duckdb.db.tmp-999999-0"
    stale.write_bytes(b"")  # what a writer killed mid-creation leaves behind
    DuckDBManager(root).consolidate()
    assert not stale.exists()
    assert not list(root.glob(".duckdb.db.tmp-*"))
    assert count(DuckDBManager(root, read_only=True), "SELECT count(*) FROM telemetry") == 10


def test_an_unusable_database_file_gets_an_error_that_says_how_to_rebuild(root):
    make_run(root, "20250101_000000", 10)
    (root / "duckdb.db").write_bytes(b"")  # an older version killed while creating it
    with pytest.raises(Exception, match=r"is empty, not a DuckDB database.*`flightlog consolidate`.*rebuilds it"):
        DuckDBManager(root, read_only=True).query("SELECT 1")
    # Derived data: consolidate rebuilds it from the run tree (issue 17), keeping the old file.
    report = DuckDBManager(root).consolidate()
    assert report.rebuilt is not None and "duckdb.db.unreadable.bak" in report.rebuilt
    assert (root / "duckdb.db.unreadable.bak").read_bytes() == b""
    assert count(DuckDBManager(root, read_only=True), "SELECT count(*) FROM telemetry") == 10


def test_a_consolidator_dying_right_after_publishing_duckdb_db_leaves_a_readable_catalog(root, child_env):
    # The moment CI once hit by chance: duckdb.db published, nothing consolidated yet.
    make_run(root, "20250101_000000", 500)
    code = """
        import os, sys
        from flightlog import DuckDBManager
        from flightlog import _core
        real_publish = _core.publish_bytes
        def publish_then_die(path, *args, **kwargs):
            size = real_publish(path, *args, **kwargs)
            if os.fspath(path).endswith("duckdb.db"):
                os._exit(9)
            return size
        _core.publish_bytes = publish_then_die
        DuckDBManager(sys.argv[1]).consolidate()
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(root)], env=child_env, timeout=120)
    assert proc.returncode == 9
    assert (root / "duckdb.db").exists() and not list(root.glob(".duckdb.db.tmp-*.wal"))
    reader = DuckDBManager(root, read_only=True)
    assert reader.runs().to_dicts() == []
    assert count(reader, "SELECT count(*) FROM telemetry") == 0
    DuckDBManager(root).consolidate()
    assert count(DuckDBManager(root, read_only=True), "SELECT count(*) FROM telemetry") == 500


def test_killing_the_first_consolidation_never_leaves_an_unusable_catalog(root, child_env):
    for i in range(4):
        make_run(root, f"2025010{i + 1}_000000", 2_000)
    code = """
        import sys
        from flightlog import DuckDBManager
        print("go", flush=True)
        DuckDBManager(sys.argv[1]).consolidate()
    """
    for attempt, delay in enumerate([0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]):
        for leftover in root.glob("duckdb.db*"):
            leftover.unlink()
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(root)], stdout=subprocess.PIPE, text=True, env=child_env
        )
        assert proc.stdout is not None and proc.stdout.readline() == "go\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        if (root / "duckdb.db").exists():
            # Whatever the kill interrupted, the file opens.
            DuckDBManager(root, read_only=True).exists()
            DuckDBManager(root, read_only=True).runs()
        DuckDBManager(root).consolidate()
        assert count(DuckDBManager(root, read_only=True), "SELECT count(*) FROM telemetry") == 8_000, attempt

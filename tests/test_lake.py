"""Beyond one machine: s3:// roots read through DuckDB httpfs, and DuckLake catalogs on PostgreSQL.

Real servers only (tests/conftest_servers.py): moto's S3 server and a throwaway
PostgreSQL cluster on loopback. Run trees are written by the real recorder on a
local root, then uploaded key for path to make an object-store root.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import flightlog
from conftest import run_together
from flightlog import CatalogUnavailableError, DuckDBManager, FlightlogError, Schema, TelemetryManager
from flightlog import Field as F

SCHEMA = Schema([F("iter", "i64"), F("t_wall_ms", "f64"), F("E", "f64")], version=3)
WIDE = Schema([F("iter", "i64"), F("t_wall_ms", "f64"), F("E", "f64"), F("grad_norm", "f64")], version=3)
LAKE_EXTENSIONS = ("httpfs", "ducklake", "postgres_scanner")


def require_lake() -> None:
    from conftest_servers import require_lake_extensions

    require_lake_extensions()


@pytest.fixture
def needs_lake():
    """The DuckDB extension wheels of flightlog[lake] (skip, or fail in CI, without them)."""
    require_lake()


def make_run(root, run_id, n, *, flow="gd", schema=SCHEMA, mode="run", wide=False):
    """A run of ``n`` rows (iter 0..n-1, E = 1/(iter+1)) and one CERT_PASS event, by the real recorder."""
    options = {}
    if mode != "run":
        options["sampling"] = None
        if mode == "tuner":
            options["trial_id"] = f"t-{run_id}"
    tm = TelemetryManager(root, flow, run_id=run_id, mode=mode, schema=WIDE if wide else schema, **options)
    it = np.arange(n, dtype=np.int64)
    columns = {"iter": it, "t_wall_ms": it * 2.0, "E": 1.0 / (it + 1.0)}
    if wide:
        columns["grad_norm"] = np.sqrt(it + 1.0)
    tm.extend(**columns)
    tm.event("CERT_PASS", {"gap": 0.5})
    tm.close()
    return tm


def build_tree(root: Path, runs: int = 4, dev: int = 2, tuner: int = 1) -> dict[str, int]:
    """Production runs, dev and tuner runs of one flow; returns {run_id: telemetry rows}."""
    rows = {}
    for i in range(runs):
        rows[f"R{i:02d}"] = 40 + i
        make_run(root, f"R{i:02d}", 40 + i)
    for i in range(dev):
        rows[f"D{i}"] = 10 + i
        make_run(root, f"D{i}", 10 + i, flow="devflow", mode="dev")
    for i in range(tuner):
        rows[f"T{i}"] = 7 + i
        make_run(root, f"T{i}", 7 + i, flow="tune", mode="tuner")
    return rows


def data_files(root: Path) -> int:
    """Parquet files the catalog must ingest: each run's telemetry and events file."""
    return sum(1 for p in root.rglob("*.parquet") if "lake" not in p.relative_to(root).parts)


def one(db, sql, params=None):
    return db.query(sql, params).fetchone()[0]


def check_exact(db, rows: dict[str, int]) -> None:
    """Every run's rows once; every file once in _ingested_files; one runs row per run."""
    per_run = dict(db.query("SELECT run_id, count(*) FROM telemetry GROUP BY run_id").fetchall())
    assert per_run == rows
    assert one(db, "SELECT count(*) - count(DISTINCT path) FROM _ingested_files") == 0
    assert one(db, "SELECT count(*) FROM runs") == len(rows)
    assert one(db, "SELECT count(DISTINCT run_id) FROM runs") == len(rows)
    # RUN_STARTED, CERT_PASS, RUN_FINISHED per run
    assert one(db, "SELECT count(*) FROM events") == 3 * len(rows)
    assert one(db, "SELECT count(*) FROM events WHERE event = 'CERT_PASS'") == len(rows)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "local"
    rows = build_tree(root)
    return root, rows


# --------------------------------------------------------------------------- s3 root, embedded catalog


def test_s3_root_with_local_duckdb_file(needs_lake, tree, tmp_path, s3_bucket):
    root, rows = tree
    s3_bucket.upload_tree(root, "prod/telemetry")
    url = s3_bucket.url("prod/telemetry")
    db = DuckDBManager(url, db_path=tmp_path / "cat" / "prod.duckdb", storage_options=s3_bucket.storage_options)
    assert str(db.root) == url
    rep = db.consolidate()
    assert rep.files_skipped == []
    assert rep.files_added == data_files(root)
    assert rep.runs_added == len(rows)
    assert rep.rows_added == sum(rows.values()) + 3 * len(rows)
    check_exact(db, rows)

    again = db.consolidate()
    assert (again.files_added, again.rows_added, again.runs_added, again.runs_updated) == (0, 0, 0, 0)
    assert again.files_skipped == []

    # The same answers as the local root gives.
    local = DuckDBManager(root, db_path=tmp_path / "local.duckdb")
    local.consolidate()
    sql = "SELECT run_id, flow_name, count(*), min(E), max(iter) FROM telemetry GROUP BY ALL ORDER BY 1"
    assert db.query(sql).fetchall() == local.query(sql).fetchall()
    paths = "SELECT path, kind, rows FROM _ingested_files ORDER BY path"
    assert db.query(paths).fetchall() == local.query(paths).fetchall()
    assert (
        db.query("SELECT run_id, status, path FROM runs ORDER BY 1").fetchall()
        == local.query("SELECT run_id, status, path FROM runs ORDER BY 1").fetchall()
    )

    # The query API over everything, and live() straight from the store.
    assert [r[0] for r in db.compare(["R00", "R03"]).fetchall()] == ["R00", "R03"]
    assert len(db.telemetry("D1")) == rows["D1"]
    assert len(db.live("R02")) == rows["R02"]
    assert len(db.live("T0")) == rows["T0"]
    assert len(db.live("R02", kind="events")) == 3

    # A new run uploaded later is picked up incrementally.
    more = tmp_path / "more"
    make_run(more, "R99", 5)
    s3_bucket.upload_tree(more, "prod/telemetry")
    rep = db.consolidate()
    assert (rep.files_added, rep.runs_added, rep.rows_added) == (2, 1, 5 + 3)
    assert one(db, "SELECT count(*) FROM telemetry WHERE run_id = 'R99'") == 5


def test_s3_settings_from_the_environment(needs_lake, tree, tmp_path, s3_bucket, monkeypatch):
    root, rows = tree
    s3_bucket.upload_tree(root, "")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("FLIGHTLOG_ROOT", s3_bucket.url())
    db = DuckDBManager(db_path=tmp_path / "env.duckdb")
    rep = db.consolidate()
    assert (rep.files_added, rep.files_skipped) == (data_files(root), [])
    check_exact(db, rows)


def test_s3_root_needs_a_local_db_path_or_a_catalog():
    with pytest.raises(ValueError, match="db_path"):
        DuckDBManager("s3://some-bucket/runs")
    with pytest.raises(ValueError, match="local file"):
        DuckDBManager("s3://some-bucket/runs", db_path="s3://some-bucket/duckdb.db")
    with pytest.raises(ValueError, match="bucket"):
        DuckDBManager("s3:///runs", db_path="x.duckdb")


# --------------------------------------------------------------------------- DuckLake on PostgreSQL


def lake(dsn: str) -> str:
    return f"ducklake:postgres:{dsn}"


def test_ducklake_catalog_with_local_root(needs_lake, tree, postgres_dsn):
    root, rows = tree
    db = DuckDBManager(root, catalog=lake(postgres_dsn))
    assert db.db_path is None and db.data_path == str(root / "lake") + "/"
    rep = db.consolidate()
    assert rep.files_skipped == []
    assert (rep.files_added, rep.runs_added) == (data_files(root), len(rows))
    assert rep.rows_added == sum(rows.values()) + 3 * len(rows)
    check_exact(db, rows)
    assert not (root / "duckdb.db").exists()  # no embedded file, no lock file
    assert not list(root.glob("*.lock"))

    again = db.consolidate()  # the lake/ data folder below the root is not a run
    assert (again.files_added, again.rows_added, again.runs_added, again.runs_updated) == (0, 0, 0, 0)
    assert again.files_skipped == []

    # Queries work as on the embedded catalog, from another manager too.
    reader = DuckDBManager(root, catalog=lake(postgres_dsn), read_only=True)
    assert [r["run_id"] for r in reader.runs(flow_name="gd").to_dicts()] == ["R00", "R01", "R02", "R03"]
    assert {r["status"] for r in reader.runs().to_dicts()} == {"finished"}
    cmp = reader.compare(["R00", "R02"]).to_dicts()
    assert [(c["run_id"], c["rows"], c["iterations"]) for c in cmp] == [("R00", 40, 40), ("R02", 42, 42)]
    assert cmp[1]["delta_iterations"] == 2
    assert len(reader.telemetry(["R01", "D0"])) == rows["R01"] + rows["D0"]
    assert [e[0] for e in reader.events("T0", names="CERT_PASS").fetchall()] == ["T0"]
    assert reader.query("SELECT count(*) FROM telemetry WHERE trial_id IS NOT NULL").fetchone() == (rows["T0"],)
    with pytest.raises(PermissionError):
        reader.consolidate()
    with pytest.raises(Exception, match="one read-only statement"):
        reader.query("DELETE FROM telemetry")
    assert len(reader.live("R01")) == rows["R01"]


def test_ducklake_schema_evolution_and_prune(needs_lake, tmp_path, postgres_dsn):
    root = tmp_path / "root"
    make_run(root, "A", 20)
    db = DuckDBManager(root, catalog=lake(postgres_dsn))
    db.consolidate()
    make_run(root, "B", 10, wide=True)  # a new column
    rep = db.consolidate()
    assert (rep.files_added, rep.files_skipped) == (2, [])
    assert db.query("SELECT run_id, count(grad_norm) FROM telemetry GROUP BY 1 ORDER BY 1").fetchall() == [
        ("A", 0),
        ("B", 10),
    ]
    import shutil

    shutil.rmtree(root / "fda_run_A")
    rep = db.consolidate(prune=True)
    assert rep.runs_pruned == 1
    assert db.query("SELECT DISTINCT run_id FROM telemetry").fetchall() == [("B",)]
    assert one(db, "SELECT count(*) FROM runs") == 1
    assert one(db, "SELECT count(*) FROM _ingested_files") == 2


def test_ducklake_with_root_and_data_on_s3(needs_lake, tree, s3_bucket, postgres_dsn):
    root, rows = tree
    s3_bucket.upload_tree(root, "fleet")
    url = s3_bucket.url("fleet")
    db = DuckDBManager(url, catalog=lake(postgres_dsn), storage_options=s3_bucket.storage_options)
    assert db.data_path == url + "/lake/"
    rep = db.consolidate()
    assert (rep.files_added, rep.files_skipped) == (data_files(root), [])
    check_exact(db, rows)
    # The lake's own files live in the bucket, beside the runs, and are not taken for runs.
    assert any(k.startswith("fleet/lake/") and k.endswith(".parquet") for k in s3_bucket.keys("fleet/lake/"))
    again = db.consolidate()
    assert (again.files_added, again.files_skipped) == (0, [])
    reader = DuckDBManager(url, catalog=lake(postgres_dsn), storage_options=s3_bucket.storage_options, read_only=True)
    assert one(reader, "SELECT sum(rows) FROM _ingested_files WHERE kind = 'telemetry'") == sum(rows.values())


def test_ducklake_local_root_with_data_on_s3(needs_lake, tmp_path, s3_bucket, postgres_dsn):
    root = tmp_path / "root"
    make_run(root, "A", 12)
    data = s3_bucket.url("lakedata") + "/"
    db = DuckDBManager(root, catalog=lake(postgres_dsn), data_path=data, storage_options=s3_bucket.storage_options)
    assert db.data_path == data
    assert db.consolidate().rows_added == 12 + 3
    assert s3_bucket.keys("lakedata/")  # rows beyond the inlining limit went to the bucket
    assert one(db, "SELECT count(*) FROM telemetry") == 12
    assert not (root / "lake").exists()


def test_read_only_manager_on_a_new_catalog(needs_lake, tmp_path, postgres_dsn):
    db = DuckDBManager(tmp_path, catalog=lake(postgres_dsn), read_only=True)
    with pytest.raises(FileNotFoundError, match="consolidate"):
        db.query("SELECT 1")
    DuckDBManager(tmp_path, catalog=lake(postgres_dsn)).consolidate()
    assert db.query("SELECT count(*) FROM runs").fetchone() == (0,)


def test_ducklake_in_a_duckdb_file(needs_lake, tree, tmp_path):
    root, rows = tree
    catalog = f"ducklake:{tmp_path / 'meta.ducklake'}"
    db = DuckDBManager(root, catalog=catalog, data_path=tmp_path / "lakedata")
    rep = db.consolidate()
    assert (rep.files_added, rep.files_skipped) == (data_files(root), [])
    check_exact(db, rows)
    assert (tmp_path / "meta.ducklake").exists()
    assert db.consolidate().files_added == 0


# --------------------------------------------------------------------------- the cached read session


@pytest.fixture(params=["postgres", "file"])
def any_lake(request, tmp_path):
    """A DuckLake catalog string: on PostgreSQL, or in a DuckDB file."""
    if request.param == "postgres":
        return lake(request.getfixturevalue("postgres_dsn"))
    return f"ducklake:{tmp_path / 'meta.ducklake'}"


def session_memory(db) -> int:
    """Bytes the manager's cached read session holds in DuckDB's buffer manager."""
    return db._lake_reads.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()[0] or 0


def test_reads_share_one_session_and_see_what_others_commit(needs_lake, tmp_path, any_lake, child_env):
    root = tmp_path / "root"
    make_run(root, "A", 20)
    writer = DuckDBManager(root, catalog=any_lake)
    writer.consolidate()
    reader = DuckDBManager(root, catalog=any_lake, read_only=True)
    assert one(reader, "SELECT count(*) FROM telemetry") == 20
    session = reader._lake_reads
    assert session is not None
    # Another manager commits new rows and a new column: the next read sees both.
    make_run(root, "B", 10, wide=True)
    assert writer.consolidate().files_added == 2
    per_run = "SELECT run_id, count(*), count(grad_norm) FROM telemetry GROUP BY 1 ORDER BY 1"
    assert reader.query(per_run).fetchall() == [("A", 20, 0), ("B", 10, 10)]
    assert [r["run_id"] for r in reader.runs().to_dicts()] == ["A", "B"]
    assert len(reader.telemetry("B", columns=["iter", "grad_norm"])) == 10
    assert reader._lake_reads is session  # one session, not one per call
    # A DuckDB-file catalog is attached only while a read runs: its file lock would keep
    # writers out (another process consolidates while this manager and a Result live).
    kept = reader.query("SELECT run_id FROM runs")
    assert session.attached == any_lake.startswith("ducklake:postgres:")
    make_run(root, "C", 5)
    child = subprocess.run(
        [sys.executable, "-c", CONSOLIDATE, str(root), any_lake, "{}", str(time.time())],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert json.loads(child.stdout.strip().splitlines()[-1])["files"] == 2
    assert dict(reader.query("SELECT run_id, count(*) FROM telemetry GROUP BY 1").fetchall()) == {
        "A": 20,
        "B": 10,
        "C": 5,
    }
    assert sorted(kept.fetchall()) == [("A",), ("B",)]  # a Result is a snapshot of its read


def test_results_free_their_rows_when_collected(needs_lake, tmp_path, any_lake):
    import gc

    root = tmp_path / "root"
    make_run(root, "A", 5)
    db = DuckDBManager(root, catalog=any_lake)
    db.consolidate()
    db.query("SELECT 1").fetchall()
    baseline = session_memory(db)
    big = "SELECT range AS i, random() AS x FROM range(2000000)"
    r = db.query(big)
    assert len(r) == 2_000_000
    assert session_memory(db) > baseline + 10_000_000
    del r
    gc.collect()
    assert session_memory(db) < baseline + 2_000_000
    for _ in range(20):  # a long-lived manager does not grow with the Results it has returned
        assert len(db.query(big)) == 2_000_000
    gc.collect()
    assert session_memory(db) < baseline + 2_000_000
    kept = db.query("SELECT i FROM range(3) t(i)")
    rel = kept.relation
    del kept
    gc.collect()
    assert rel.fetchall() == [(0,), (1,), (2,)]  # the relation keeps its rows alive


def test_reads_from_many_threads_at_once(needs_lake, tmp_path, any_lake):
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path / "root"
    rows = {f"R{i}": 10 + i for i in range(4)}
    for run_id, n in rows.items():
        make_run(root, run_id, n)
    DuckDBManager(root, catalog=any_lake).consolidate()
    db = DuckDBManager(root, catalog=any_lake, read_only=True)

    def read(i: int) -> tuple:
        run_id = f"R{i % 4}"
        return (
            len(db.telemetry(run_id)),
            db.compare([run_id]).to_dicts()[0]["rows"],
            one(db, "SELECT count(*) FROM events WHERE run_id = ?", [run_id]),
        )

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(read, range(48)))
    assert got == [(rows[f"R{i % 4}"], rows[f"R{i % 4}"], 3) for i in range(48)]
    assert db._lake_reads.users == 0


def test_close_releases_the_read_session(needs_lake, tmp_path, any_lake):
    root = tmp_path / "root"
    make_run(root, "A", 7)
    with DuckDBManager(root, catalog=any_lake) as db:
        db.consolidate()
        r = db.query("SELECT run_id, count(*) FROM telemetry GROUP BY 1")
        session = db._lake_reads
        assert session is not None and db.exists()
    assert db._lake_reads is None and not session.attached  # the catalog is let go
    assert r.fetchall() == [("A", 7)]  # Results already returned stay readable
    with pytest.raises(ValueError, match="closed"):
        db.query("SELECT 1")
    db.close()  # idempotent


# --------------------------------------------------------------------------- no catalog at all


def test_files_only_reads_run_files_without_a_catalog(tmp_path):
    root = tmp_path / "root"
    make_run(root, "A", 12)
    make_run(root, "D1", 6, flow="devflow", mode="dev")
    db = DuckDBManager(root, files_only=True)
    assert (db.files_only, db.read_only, db.db_path, db.catalog, db.data_path) == (True, True, None, None, None)
    assert repr(db) == f"DuckDBManager({str(root)!r}, files_only=True)"
    assert "files_only" in db.location
    assert not db.exists()
    assert len(db.live("A")) == 12
    assert len(db.live("D1")) == 6
    assert [e["event"] for e in db.live("A", kind="events").to_dicts()][1] == "CERT_PASS"
    for read in (
        lambda: db.query("SELECT 1"),
        db.runs,
        lambda: db.telemetry("A"),
        lambda: db.events("A"),
        lambda: db.compare(["A"]),
    ):
        with pytest.raises(FileNotFoundError, match="files_only"):
            read()
    with pytest.raises(PermissionError, match="files_only"):
        db.consolidate()
    assert sorted(p.name for p in root.iterdir()) == ["fda_run_A", "flows"]  # nothing written
    for other in ({"db_path": tmp_path / "x.db"}, {"catalog": "ducklake:x.ducklake"}, {"data_path": tmp_path}):
        with pytest.raises(ValueError, match="files_only"):
            DuckDBManager(root, files_only=True, **other)


def test_files_only_on_an_s3_root(needs_lake, tree, s3_bucket):
    root, rows = tree
    s3_bucket.upload_tree(root, "nocat")
    url = s3_bucket.url("nocat")
    with pytest.raises(ValueError, match="files_only"):
        DuckDBManager(url, storage_options=s3_bucket.storage_options)  # the error names the mode
    with DuckDBManager(url, files_only=True, storage_options=s3_bucket.storage_options) as db:
        assert str(db.root) == url and not db.exists()
        assert len(db.live("R02")) == rows["R02"]
        assert len(db.live("D1")) == rows["D1"]
        with pytest.raises(FileNotFoundError, match="files_only"):
            db.runs()
    assert not any(k.startswith("nocat/lake") for k in s3_bucket.keys("nocat/"))


# --------------------------------------------------------------------------- many consolidators at once

CONSOLIDATE = textwrap.dedent(
    """
    import json, sys, time
    from flightlog import DuckDBManager
    root, catalog, options, start = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
    db = DuckDBManager(root, catalog=catalog, storage_options=options or None, timeout=120)
    while time.time() < start:
        time.sleep(0.001)
    t0 = time.time()
    r = db.consolidate()
    print(json.dumps({"files": r.files_added, "rows": r.rows_added, "runs": r.runs_added,
                      "skipped": r.files_skipped, "t0": t0, "t1": time.time()}))
    """
)


def consolidate_at_once(n: int, root: str, catalog: str, options: dict[str, str] | None, child_env) -> list[dict]:
    start = time.time() + 3.0  # every child has imported flightlog and built its manager by then
    args = [sys.executable, "-c", CONSOLIDATE, root, catalog, json.dumps(options or {}), str(start)]
    results = [json.loads(out.strip().splitlines()[-1]) for out in run_together([args] * n, env=child_env)]
    # They really ran at the same time.
    assert max(r["t0"] for r in results) < min(r["t1"] for r in results)
    return results


@pytest.mark.slow
def test_two_processes_consolidate_into_one_ducklake_at_once(needs_lake, tmp_path, postgres_dsn, child_env):
    root = tmp_path / "root"
    rows = build_tree(root, runs=24, dev=6, tuner=2)
    results = consolidate_at_once(2, str(root), lake(postgres_dsn), None, child_env)
    assert all(r["skipped"] == [] for r in results)
    total_files = data_files(root)
    # Between them, every file exactly once: none lost, none twice.
    assert sum(r["files"] for r in results) == total_files
    assert sum(r["rows"] for r in results) == sum(rows.values()) + 3 * len(rows)
    assert sum(r["runs"] for r in results) == len(rows)
    db = DuckDBManager(root, catalog=lake(postgres_dsn))
    check_exact(db, rows)
    assert one(db, "SELECT count(*) FROM _ingested_files") == total_files
    again = db.consolidate()
    assert (again.files_added, again.rows_added, again.runs_added, again.runs_updated) == (0, 0, 0, 0)
    # A query across everything.
    summary = db.query(
        "SELECT r.flow_name, count(DISTINCT t.run_id), count(*) FROM telemetry t JOIN runs r USING (run_id) "
        "GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert summary == [
        ("devflow", 6, sum(10 + i for i in range(6))),
        ("gd", 24, sum(40 + i for i in range(24))),
        ("tune", 2, 7 + 8),
    ]


@pytest.mark.slow
def test_two_processes_consolidate_an_s3_root_at_once(needs_lake, tmp_path, s3_bucket, postgres_dsn, child_env):
    local = tmp_path / "local"
    rows = build_tree(local, runs=10, dev=3, tuner=1)
    flightlog.compact(local, "devflow")  # a compacted file, read by row ranges
    rows["D9"] = 4
    make_run(local, "D9", 4, flow="devflow", mode="dev")  # and a part beside it
    s3_bucket.upload_tree(local, "shared")
    url = s3_bucket.url("shared")
    results = consolidate_at_once(2, url, lake(postgres_dsn), s3_bucket.storage_options, child_env)
    assert all(r["skipped"] == [] for r in results)
    embedded = DuckDBManager(local, db_path=tmp_path / "embedded.duckdb")
    expected = embedded.consolidate()
    assert sum(r["files"] for r in results) == expected.files_added
    assert sum(r["rows"] for r in results) == expected.rows_added
    db = DuckDBManager(url, catalog=lake(postgres_dsn), storage_options=s3_bucket.storage_options)
    check_exact(db, rows)
    listing = "SELECT path, kind, rows, source FROM _ingested_files ORDER BY path"
    assert db.query(listing).fetchall() == embedded.query(listing).fetchall()


def test_ducklake_parts_and_compaction_never_double_count(needs_lake, tmp_path, postgres_dsn):
    root = tmp_path / "root"
    db = DuckDBManager(root, catalog=lake(postgres_dsn))
    make_run(root, "D1", 25, flow="gd", mode="dev")
    make_run(root, "D2", 25, flow="gd", mode="dev")
    assert db.consolidate().files_added == 4
    flightlog.compact(root, "gd")
    rep = db.consolidate()
    assert (rep.files_added, rep.rows_added, rep.files_skipped) == (0, 0, [])
    make_run(root, "D3", 25, flow="gd", mode="dev")  # compacted before the catalog saw it
    flightlog.compact(root, "gd")
    make_run(root, "D4", 5, flow="gd", mode="dev")  # a part not compacted
    rep = db.consolidate()
    assert (rep.files_added, rep.rows_added, rep.files_skipped) == (4, 25 + 5 + 2 * 3, [])
    got = db.query("SELECT run_id, count(*), count(DISTINCT iter) FROM telemetry GROUP BY 1 ORDER BY 1").fetchall()
    assert got == [("D1", 25, 25), ("D2", 25, 25), ("D3", 25, 25), ("D4", 5, 5)]
    assert db.consolidate().rows_added == 0


def test_an_emptied_guard_table_is_refilled(needs_lake, tmp_path, postgres_dsn):
    root = tmp_path / "root"
    make_run(root, "A", 5)
    db = DuckDBManager(root, catalog=lake(postgres_dsn))
    db.consolidate()
    with db._open_rw() as con:  # someone empties the guards by hand
        for i in range(8):
            con.execute(f"DELETE FROM _flightlog.guard_{i:02d}")
    make_run(root, "B", 6)
    make_run(root, "C", 7)
    rep = db.consolidate()
    assert (rep.files_added, rep.files_skipped) == (4, [])
    with db._open_rw() as con:
        for i in range(8):
            assert con.execute(f"SELECT count(*) FROM _flightlog.guard_{i:02d}").fetchone()[0] >= 1
    assert dict(db.query("SELECT run_id, count(*) FROM telemetry GROUP BY 1").fetchall()) == {"A": 5, "B": 6, "C": 7}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "catalog",
    [
        "postgres:dbname=x",
        "ducklake:",
        "ducklake:sqlite:/tmp/x.db",
        "ducklake:mysql:db=x",
        "ducklake:s3://b/x.ducklake",
    ],
)
def test_bad_catalog_strings_name_the_catalog_option(tmp_path, catalog):
    with pytest.raises(ValueError, match="catalog"):
        DuckDBManager(tmp_path, catalog=catalog)


def test_option_combinations(tmp_path):
    with pytest.raises(ValueError, match="db_path"):
        DuckDBManager(tmp_path, db_path=tmp_path / "x.db", catalog="ducklake:postgres:dbname=x")
    with pytest.raises(ValueError, match="data_path"):
        DuckDBManager(tmp_path, data_path=tmp_path / "data")
    with pytest.raises(TypeError, match="storage_options"):
        DuckDBManager(tmp_path, storage_options=["aws_region"])


def test_unreachable_postgres_is_a_clear_error_without_the_password(needs_lake, tmp_path):
    from conftest_servers import free_port

    port = free_port()  # nothing listens there
    db = DuckDBManager(tmp_path, catalog=f"ducklake:postgres:dbname=x host=127.0.0.1 port={port} password=hunter2")
    assert "hunter2" not in repr(db)
    make_run(tmp_path, "A", 3)
    with pytest.raises(CatalogUnavailableError) as info:
        db.consolidate()
    assert isinstance(info.value, FlightlogError) and isinstance(info.value, ConnectionError)
    assert "hunter2" not in str(info.value)
    assert f"port={port}" in str(info.value)
    uri = DuckDBManager(tmp_path, catalog=f"ducklake:postgres:postgresql://u:hunter2@127.0.0.1:{port}/x")
    with pytest.raises(CatalogUnavailableError) as info:
        uri.query("SELECT 1")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("what", ["s3", "lake"])
def test_missing_extension_names_the_extra(tmp_path, what, child_env):
    # A real interpreter in which the extension wheels cannot be found, and DuckDB's
    # own extension folder (under HOME) is empty: nothing to load, nothing downloaded.
    code = textwrap.dedent(
        f"""
        import sys
        for name in {LAKE_EXTENSIONS!r}:
            sys.modules["duckdb_extension_" + name] = None
        from flightlog import DuckDBManager
        if {what!r} == "s3":
            db = DuckDBManager("s3://bucket/runs", db_path=sys.argv[1] + "/x.duckdb",
                               storage_options={{"aws_endpoint": "http://127.0.0.1:9"}})
        else:
            db = DuckDBManager(sys.argv[1], catalog="ducklake:" + sys.argv[1] + "/m.ducklake")
        try:
            db.consolidate()
        except ImportError as e:
            print("IMPORTERROR", e)
        """
    )
    env = dict(child_env, HOME=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "IMPORTERROR" in out.stdout
    assert "pip install 'flightlog[lake]'" in out.stdout

"""DuckDBManager edge cases (issue 19): time-zone-aware results, column names that differ
only in case, prune after a rename, a run copied or renamed, symlinked files, a missing
root, compare's tolerance and metric, and query's single read-only statement.

Runs are written by the real recorder; only deliberately broken files are made by hand."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from flightlog import DuckDBManager, Field, Schema, TelemetryManager

SCHEMA = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64")], version=3)


def make_run(root: Path, run_id: str, n: int = 5, *, schema: Schema = SCHEMA, **columns: np.ndarray) -> None:
    with TelemetryManager(root, "gd", run_id=run_id, schema=schema) as tm:
        it = np.arange(n, dtype=np.int64)
        data = {"iter": it, "t_wall_ms": it * 2.0, "E": 1.0 / (it + 1.0)} if not columns else columns
        tm.extend(**data)


def rows_by_run(db: DuckDBManager) -> list[tuple[str, int]]:
    return db.query("SELECT run_id, count(*) FROM telemetry GROUP BY run_id ORDER BY run_id").fetchall()


def skipped(report, needle: str) -> list[tuple[str, str]]:
    return [s for s in report.files_skipped if needle in s[0]]


# --------------------------------------------------------------------------- item 10


@pytest.mark.parametrize("sql", ["select now() as t", "select current_timestamp as t"])
def test_time_zone_aware_results(tmp_path: Path, sql: str) -> None:
    make_run(tmp_path, "a")
    db = DuckDBManager(tmp_path)
    db.consolidate()
    (t,) = db.query(sql).fetchone()
    assert isinstance(t, _dt.datetime) and t.tzinfo is not None
    assert abs((t - _dt.datetime.now(_dt.UTC)).total_seconds()) < 300


def test_read_text_last_modified(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    db = DuckDBManager(tmp_path)
    db.consolidate()
    path = str(tmp_path / "fda_run_a" / "manifest.toml")
    rows = db.query("select filename, last_modified from read_text(?)", [path]).fetchall()
    assert rows[0][0] == path and rows[0][1].tzinfo is not None


# --------------------------------------------------------------------------- item 6


def test_columns_differing_in_case_do_not_block_later_files(tmp_path: Path) -> None:
    upper = Schema([Field("iter", "i64"), Field("E", "f64")])
    lower = Schema([Field("iter", "i64"), Field("e", "f64")])
    it = np.arange(3, dtype=np.int64)
    make_run(tmp_path, "up", schema=upper, iter=it, E=it * 1.0)
    db = DuckDBManager(tmp_path)
    db.consolidate()
    assert rows_by_run(db) == [("up", 3)]
    make_run(tmp_path, "low", schema=lower, iter=it, e=it * 1.0)
    make_run(tmp_path, "later", schema=upper, iter=it, E=it * 2.0)
    rep = db.consolidate()
    bad = skipped(rep, "fda_run_low/telemetry.parquet")
    assert bad and "case" in bad[0][1], rep.files_skipped
    assert rows_by_run(db) == [("later", 3), ("up", 3)]
    # and again: the conflicting file is skipped each time, nothing else is blocked
    make_run(tmp_path, "later2", schema=upper, iter=it, E=it * 3.0)
    rep = db.consolidate()
    assert skipped(rep, "fda_run_low/telemetry.parquet")
    assert rows_by_run(db) == [("later", 3), ("later2", 3), ("up", 3)]


def test_case_conflict_inside_one_batch(tmp_path: Path) -> None:
    upper = Schema([Field("iter", "i64"), Field("E", "f64")])
    lower = Schema([Field("iter", "i64"), Field("e", "f64")])
    it = np.arange(3, dtype=np.int64)
    make_run(tmp_path, "a_up", schema=upper, iter=it, E=it * 1.0)
    make_run(tmp_path, "b_low", schema=lower, iter=it, e=it * 1.0)
    db = DuckDBManager(tmp_path)
    rep = db.consolidate()
    assert skipped(rep, "fda_run_b_low/telemetry.parquet"), rep.files_skipped
    assert rows_by_run(db) == [("a_up", 3)]


# --------------------------------------------------------------------------- items 7 and 8


def test_renamed_run_folder_is_not_ingested_twice(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    db = DuckDBManager(tmp_path)
    db.consolidate()
    os.rename(tmp_path / "fda_run_a", tmp_path / "a_renamed")
    rep = db.consolidate()
    assert rows_by_run(db) == [("a", 5)]
    assert (rep.files_added, rep.rows_added, rep.runs_added, rep.files_skipped) == (0, 0, 0, [])
    # the bookkeeping follows the folder: one runs row, the files at their new paths
    assert db.query("select path from runs where run_id = 'a'").fetchall() == [("a_renamed",)]
    paths = sorted(r[0] for r in db.query("select path from _ingested_files").fetchall())
    assert paths == ["a_renamed/events.parquet", "a_renamed/telemetry.parquet"]
    assert db.consolidate().files_skipped == []


def test_copied_run_folder_is_ingested_once(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    shutil.copytree(tmp_path / "fda_run_a", tmp_path / "fda_run_a.bak")
    db = DuckDBManager(tmp_path)
    rep = db.consolidate()
    assert rows_by_run(db) == [("a", 5)]
    assert db.query("select count(*) from runs where run_id = 'a'").fetchone()[0] == 1
    dup = [s for s in rep.files_skipped if "same run" in s[1]]
    assert dup and "fda_run_a" in dup[0][1] and "fda_run_a.bak" in dup[0][0] + dup[0][1], rep.files_skipped


def test_prune_after_rename_keeps_the_run(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    make_run(tmp_path, "b")
    db = DuckDBManager(tmp_path)
    db.consolidate()
    os.rename(tmp_path / "fda_run_a", tmp_path / "a_renamed")
    rep = db.consolidate(prune=True)
    assert rows_by_run(db) == [("a", 5), ("b", 5)], rep
    assert rep.rows_added == 0 and rep.files_added == 0  # nothing counted that the same call deleted
    # the rows now belong to the new folder: deleting it prunes them
    shutil.rmtree(tmp_path / "a_renamed")
    rep = db.consolidate(prune=True)
    assert rows_by_run(db) == [("b", 5)]
    assert rep.runs_pruned == 1
    assert db.query("select count(*) from runs where run_id = 'a'").fetchone()[0] == 0


def test_prune_after_deleting_a_backup_copy_keeps_the_run(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    shutil.copytree(tmp_path / "fda_run_a", tmp_path / "fda_run_a.bak")
    db = DuckDBManager(tmp_path)
    db.consolidate()
    shutil.rmtree(tmp_path / "fda_run_a.bak")
    db.consolidate(prune=True)
    assert rows_by_run(db) == [("a", 5)]
    assert db.query("select count(*) from runs where run_id = 'a'").fetchone()[0] == 1
    # the original gone too: now the run is pruned
    shutil.rmtree(tmp_path / "fda_run_a")
    rep = db.consolidate(prune=True)
    assert rows_by_run(db) == [] and rep.runs_pruned == 1


# --------------------------------------------------------------------------- item 9


def test_symlinked_telemetry_file_is_skipped(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    make_run(tmp_path, "b")
    target = tmp_path / "fda_run_b" / "telemetry.parquet"
    target.unlink()
    target.symlink_to(Path("..") / "fda_run_a" / "telemetry.parquet")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.parquet"
    shutil.copy(tmp_path / "fda_run_a" / "events.parquet", outside)
    (tmp_path / "fda_run_b" / "events.parquet").unlink()
    (tmp_path / "fda_run_b" / "events.parquet").symlink_to(outside)
    db = DuckDBManager(tmp_path)
    rep = db.consolidate()
    assert rows_by_run(db) == [("a", 5)]
    for name in ("telemetry.parquet", "events.parquet"):
        bad = skipped(rep, f"fda_run_b/{name}")
        assert bad and "symbolic link" in bad[0][1], rep.files_skipped
    assert db.query("select count(*) from events where run_id = 'b'").fetchone()[0] == 0


def test_symlinked_manifest_is_skipped(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    (tmp_path / "fda_run_b").mkdir()
    (tmp_path / "fda_run_b" / "manifest.toml").symlink_to(tmp_path / "fda_run_a" / "manifest.toml")
    db = DuckDBManager(tmp_path)
    rep = db.consolidate()
    assert skipped(rep, "fda_run_b/manifest.toml")
    assert rows_by_run(db) == [("a", 5)]


def test_rows_written_disagreeing_with_the_file_is_skipped(tmp_path: Path) -> None:
    import tomli_w

    from flightlog import read_manifest

    make_run(tmp_path, "a")
    make_run(tmp_path, "b")
    m = read_manifest(tmp_path / "fda_run_b")
    m["counts"]["rows_written"] = 7
    (tmp_path / "fda_run_b" / "manifest.toml").write_text(tomli_w.dumps(m))
    db = DuckDBManager(tmp_path)
    rep = db.consolidate()
    bad = skipped(rep, "fda_run_b/telemetry.parquet")
    assert bad and "rows_written" in bad[0][1] and "7" in bad[0][1], rep.files_skipped
    assert rows_by_run(db) == [("a", 5)]


# --------------------------------------------------------------------------- item 15


# --------------------------------------------------------------------------- item 17


def test_query_runs_the_statement_as_is(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    db = DuckDBManager(tmp_path)
    db.consolidate()
    tables = {r[0] for r in db.query("show tables").fetchall()}
    assert tables == {"runs", "telemetry", "events", "_ingested_files"}
    assert db.query("select 1 as x, 2 as x").columns == ["x", "x"]
    assert db.query("select 1 as one; -- a comment").fetchall() == [(1,)]
    assert db.query("select 2 as two; ").fetchall() == [(2,)]
    assert db.query("pragma table_info('runs')").fetchone()[1] == "run_id"
    got = db.query("pivot (select run_id, status from runs) on status using count(*)").fetchall()
    assert got == [("a", 1)]
    assert db.query("select count(*) from telemetry where run_id = $r", {"r": "a"}).fetchone() == (5,)


@pytest.mark.parametrize(
    "sql",
    [
        "create table x as select 1",
        "insert into runs (run_id) values ('z')",
        "delete from telemetry",
        "copy runs to '/tmp/flightlog-should-not-exist.csv'",
        "attach ':memory:' as m2",
        "select 1; drop table runs",
        "pragma enable_profiling",
        "set threads = 1",
        "install httpfs",
        "export database '/tmp/flightlog-should-not-exist'",
        "checkpoint",
        "call enable_logging()",
    ],
)
def test_query_refuses_writes(tmp_path: Path, sql: str) -> None:
    make_run(tmp_path, "a")
    db = DuckDBManager(tmp_path)
    db.consolidate()
    with pytest.raises(duckdb.Error):
        db.query(sql)
    assert db.query("select count(*) from telemetry").fetchone() == (5,)
    assert not os.path.exists("/tmp/flightlog-should-not-exist.csv")


def test_missing_root_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    db = DuckDBManager(missing)  # constructing creates nothing and raises nothing
    with pytest.raises(FileNotFoundError, match="typo"):
        db.consolidate()
    with pytest.raises(FileNotFoundError, match="typo"):
        db.query("select 1")
    assert not missing.exists()


def test_compact_never_merges_a_symlinked_or_fifo_part(tmp_path: Path) -> None:
    """A part that is a symbolic link to another run's file was merged into the flow's
    compacted file (its rows then counted twice in the catalog); a FIFO part was left
    out silently. Both are now reported as skipped, and neither is opened."""
    import flightlog

    root = tmp_path / "root"
    with TelemetryManager(root, "f", run_id="d") as tm:
        for i in range(5):
            tm.log(iter=i, E=float(i))
    with TelemetryManager(root, "g", run_id="p", mode="dev") as tm:
        for i in range(3):
            tm.log(iter=i, E=1.0)
    parts = root / "flows" / "g" / "dev_telemetry"
    (parts / "part-link-000001.parquet").symlink_to(root / "fda_run_d" / "telemetry.parquet")
    os.mkfifo(parts / "part-fifo-000001.parquet")
    report = flightlog.compact(root, "g")
    assert report["telemetry"]["parts_merged"] == 1 and report["telemetry"]["rows"] == 3
    reasons = {Path(s["path"]).name: s["reason"] for s in report["telemetry"]["skipped"]}
    assert "symbolic link" in reasons["part-link-000001.parquet"]
    assert "FIFO" in reasons["part-fifo-000001.parquet"]
    assert (root / "fda_run_d" / "telemetry.parquet").exists()
    DuckDBManager(root).consolidate()
    counts = DuckDBManager(root).query("select run_id, count(*) from telemetry group by 1 order by 1").fetchall()
    assert counts == [("d", 5), ("p", 3)]

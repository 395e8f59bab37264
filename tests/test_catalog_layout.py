"""The catalog and the run layout: run folders named with a custom ``run_prefix``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from flightlog import DuckDBManager, Field, Schema, TelemetryManager

SCHEMA = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64")], version=3)


def make_run(root: Path, run_id: str, n: int, *, run_prefix: str, close: bool = True) -> TelemetryManager:
    tm = TelemetryManager(root, "gd", run_id=run_id, schema=SCHEMA, run_prefix=run_prefix)
    it = np.arange(n, dtype=np.int64)
    tm.extend(iter=it, t_wall_ms=it * 2.0, E=1.0 / (it + 1.0))
    if close:
        tm.close()
    return tm


def test_live_finds_runs_with_a_custom_run_prefix(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_run(root, "A", 5, run_prefix="exp_")
    running = make_run(root, "B", 3, run_prefix="exp_", close=False)
    running.flush()
    try:
        db = DuckDBManager(root, files_only=True)
        assert sorted(p.name for p in root.iterdir()) == ["exp_A", "exp_B"]
        assert db.live("A").fetchnumpy()["iter"].tolist() == [0, 1, 2, 3, 4]
        assert db.live("B").fetchnumpy()["iter"].tolist() == [0, 1, 2]
    finally:
        running.close()


def test_a_copied_run_folder_with_a_custom_run_prefix_keeps_the_original(tmp_path: Path) -> None:
    # The folder kept for a run with two folders is the one named after the run
    # (<prefix><run_id>), whatever the prefix; the copy is the one reported skipped.
    root = tmp_path / "root"
    make_run(root, "A", 5, run_prefix="exp_")
    shutil.copytree(root / "exp_A", root / "A.bak")  # sorts before exp_A
    db = DuckDBManager(root)
    report = db.consolidate()
    assert db.query("SELECT run_id, path FROM runs").fetchall() == [("A", "exp_A")]
    assert db.query("SELECT count(*) FROM telemetry").fetchone()[0] == 5
    skipped = [s for s in report.files_skipped if "same run" in s[1]]
    assert [s[0] for s in skipped] == ["A.bak"], report.files_skipped
    assert "from exp_A" in skipped[0][1]

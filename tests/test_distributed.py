"""Any engine that reads Parquet reads the run tree: Dask, with the run id taken
from the path (``fda_run_<id>/``) and, independently, from the ``run_id`` column,
agrees with DuckDBManager on every run's rows (docs/SCALE_OUT.md)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from flightlog import DuckDBManager, Field, Schema, TelemetryManager

dd = pytest.importorskip("dask.dataframe", reason="dask[dataframe] is in the test extra")

SCHEMA = Schema([Field("iter", "i64", nullable=False), Field("E", "f64", nullable=False)])


def test_dask_reads_the_run_tree_with_the_run_id_in_the_path(tmp_path):
    root = tmp_path / "root"
    expected = {}
    for k, n in enumerate([1000, 2500, 40]):
        with TelemetryManager(root, "solver", run_id=f"2026010{k}_000000", schema=SCHEMA) as tm:
            tm.extend(iter=np.arange(n), E=np.exp(-np.arange(n) / 100.0))
        expected[tm.run_id] = n

    # One task per run file; the run id comes from the folder name.
    files = sorted(str(p) for p in root.glob("fda_run_*/telemetry.parquet"))

    def load(path: str) -> pd.DataFrame:
        return pd.read_parquet(path).assign(path_run_id=re.search(r"fda_run_([^/]+)/telemetry\.parquet$", path)[1])

    df = dd.from_map(load, files)
    # The whole tree in one call reads the same rows.
    assert len(dd.read_parquet(files)) == sum(expected.values())
    per_run = df.groupby("path_run_id").agg({"iter": "count", "E": "min"}).compute()
    assert per_run["iter"].to_dict() == expected
    # The column and the path agree row by row.
    assert (df["path_run_id"] == df["run_id"]).all().compute()

    db = DuckDBManager(root)
    db.consolidate()
    sql = dict(db.query("SELECT run_id, min(E) FROM telemetry GROUP BY run_id").fetchall())
    assert set(sql) == set(expected)
    for rid, e_min in sql.items():
        assert per_run.loc[rid, "E"] == pytest.approx(e_min)

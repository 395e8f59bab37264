"""The dashboard's downsampling (flightlog._dashdata): min/max per pixel bucket computed by DuckDB,
from the catalog and straight from a run's durable Parquet files, on real runs.

The big-run path (above ``M4_MAX_ROWS`` rows, 2M) is exercised on a few hundred thousand rows
by lowering the threshold, with a small pixel width, so each bucket still holds thousands of rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flightlog import DuckDBManager, Enum, Field, Schema, TelemetryManager
from flightlog._dashdata import DashData

SCHEMA = Schema([Field("iter", "i64"), Field("E", "f64"), Field("phase", Enum(["RED", "AMBER", "GREEN"]))])


def _record(root: Path, iters: np.ndarray, spike_at: int, dip_at: int) -> tuple[str, np.ndarray]:
    n = len(iters)
    e = np.exp(-np.arange(n) / (n / 5))
    e[spike_at] = 1e6  # one row among n: a mean or a stride would hide it, min/max per bucket must not
    e[dip_at] = -3.0
    phase = np.where(np.arange(n) < n // 3, "RED", np.where(np.arange(n) < 2 * n // 3, "AMBER", "GREEN"))
    with TelemetryManager(root, "big", schema=SCHEMA, max_rows=n + 1) as tm:
        tm.extend(iter=iters, E=e, phase=phase)
        return tm.run_id, e


def _check_big(s: dict, iters: np.ndarray, spike_at: int, dip_at: int, buckets: int) -> None:
    n = len(iters)
    width = (iters[-1] - iters[0]) / (buckets - 1)
    assert s["rows"] == n and s["points"] <= 2 * buckets  # min and max per bucket, never the rows
    assert max(s["y"]) == 1e6 and min(s["y"]) == -3.0
    assert abs(s["x"][s["y"].index(1e6)] - iters[spike_at]) <= width
    assert abs(s["x"][s["y"].index(-3.0)] - iters[dip_at]) <= width
    # the bands: RED, AMBER, GREEN, each change within a pixel bucket of its true iter
    assert [p[2] for p in s["phases"]] == ["RED", "AMBER", "GREEN"]
    assert s["phases"][0][0] == iters[0] and s["phases"][-1][1] == iters[-1]
    assert abs(s["phases"][1][0] - iters[n // 3]) <= 2 * width
    assert abs(s["phases"][2][0] - iters[2 * n // 3]) <= 2 * width


@pytest.mark.parametrize("stride", [1, 10])  # every 10th iter recorded: buckets by iter, not by row
def test_a_one_row_spike_survives_min_max_downsampling_from_files_and_from_the_catalog(
    tmp_path: Path, monkeypatch, stride: int
) -> None:
    import flightlog._dashdata as dd

    monkeypatch.setattr(dd, "M4_MAX_ROWS", 1000)  # the path of runs above 2M rows, on 240k rows
    n, buckets = 240_000, 64
    iters = np.arange(n, dtype=np.int64) * stride
    rid, _ = _record(tmp_path, iters, spike_at=123_457, dip_at=200_001)

    s = DashData(tmp_path).series(rid, "E", buckets=buckets)
    assert s["source"] == "files"
    _check_big(s, iters, 123_457, 200_001, buckets)

    DuckDBManager(tmp_path).consolidate()
    c = DashData(tmp_path).series(rid, "E", buckets=buckets)
    assert c["source"] == "catalog"
    _check_big(c, iters, 123_457, 200_001, buckets)
    assert (c["x"], c["y"], c["phases"]) == (s["x"], s["y"], s["phases"])


def test_a_finished_run_not_consolidated_is_aggregated_from_its_files_without_copying_its_rows(
    tmp_path: Path, monkeypatch
) -> None:
    n = 50_000
    rid, _ = _record(tmp_path, np.arange(n, dtype=np.int64), spike_at=777, dip_at=40_000)

    real_live = DuckDBManager.live

    def live(self, run_id, kind="telemetry"):  # the events (a few rows) may be read so
        assert kind == "events", "the run's telemetry rows were copied through DuckDBManager.live()"
        return real_live(self, run_id, kind=kind)

    monkeypatch.setattr(DuckDBManager, "live", live)
    d = DashData(tmp_path)
    assert d.run(rid)["rows"] == n
    s = d.series(rid, "E", buckets=256)
    assert s["rows"] == n and s["source"] == "files" and max(s["y"]) == 1e6 and min(s["y"]) == -3.0


def test_small_runs_are_not_downsampled_and_read_the_same_from_files_and_catalog(tmp_path: Path) -> None:
    n = 500  # fewer rows than pixel buckets: every row is a point
    iters = np.arange(n, dtype=np.int64) * 3
    rid, e = _record(tmp_path, iters, spike_at=100, dip_at=200)
    s = DashData(tmp_path).series(rid, "E", buckets=800)
    assert s["x"] == iters.tolist()
    assert s["y"] == [float(f"{v:.7g}") for v in e]  # 7 significant digits on the wire
    DuckDBManager(tmp_path).consolidate()
    c = DashData(tmp_path).series(rid, "E", buckets=800)
    assert c["source"] == "catalog" and (c["x"], c["y"], c["phases"]) == (s["x"], s["y"], s["phases"])
    assert [p[2] for p in c["phases"]] == ["RED", "AMBER", "GREEN"]


def test_a_running_runs_chart_grows_with_each_durable_segment(tmp_path: Path) -> None:
    """The cached series of a run read from its files is keyed by the files: a new segment is read."""
    with TelemetryManager(tmp_path, "live", schema=SCHEMA) as tm:
        tm.extend(iter=np.arange(300, dtype=np.int64), E=np.ones(300), phase=np.array(["RED"] * 300))
        tm.flush()
        d = DashData(tmp_path)
        first = d.series(tm.run_id, "E", buckets=64)
        assert first["rows"] == 300 and first["source"] == "files"
        tm.extend(iter=np.arange(300, 700, dtype=np.int64), E=np.full(400, 2.0), phase=np.array(["GREEN"] * 400))
        tm.flush()
        again = d.series(tm.run_id, "E", buckets=64)
        assert again["rows"] == 700 and max(again["y"]) == 2.0
        assert [p[2] for p in again["phases"]] == ["RED", "GREEN"]
        assert d.run(tm.run_id)["rows"] == 700

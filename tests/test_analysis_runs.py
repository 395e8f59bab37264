"""The runs table's start and duration are computed once (``_analysis.run_start_and_duration``)
and the CLI (``runs_rows``) and the dashboard (``DashData.runs``) show the same values."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from flightlog import Field, Schema, TelemetryManager
from flightlog._analysis import run_start_and_duration, runs_rows
from flightlog._dashdata import DashData

SCHEMA = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64")])
NOW = _dt.datetime(2026, 1, 1, 0, 1, 0, tzinfo=_dt.UTC)


def test_duration_from_the_manifest() -> None:
    start = {"created_at": "2026-01-01T00:00:00Z"}
    finished = {**start, "finished_at": "2026-01-01T00:00:01.2345Z"}
    assert run_start_and_duration(finished, "finished", NOW) == (_dt.datetime(2026, 1, 1, tzinfo=_dt.UTC), 1.234)
    # Running: until now; crashed or failed without finished_at: unknown.
    assert run_start_and_duration(start, "running", NOW)[1] == 60.0
    assert run_start_and_duration(start, "crashed", NOW)[1] is None
    # A naive time is UTC; a time in another zone is converted.
    got = run_start_and_duration({"created_at": "2026-01-01T01:00:00+01:00"}, "running", NOW)
    assert got == (_dt.datetime(2026, 1, 1, tzinfo=_dt.UTC), 60.0)
    assert run_start_and_duration({}, "running", NOW) == (None, None)
    assert run_start_and_duration({"created_at": "yesterday"}, "running", NOW) == (None, None)


def test_cli_and_dashboard_runs_tables_agree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with TelemetryManager(root, "gd", schema=SCHEMA, params={"k": 1}) as tm:
        for i in range(20):
            tm.record(i, float(i), 1.0 / (i + 1))
    done = tm.run_id
    live = TelemetryManager(root, "gd", schema=SCHEMA, params={"k": 2})  # open: running by evidence
    try:
        live.record(0, 0.0, 1.0)
        live.flush()
        cols, rows = runs_rows(root)
        cli = {r[0]: dict(zip(cols, r, strict=True)) for r in rows}
        data = DashData(root)
        try:
            dash = {r["run_id"]: r for r in data.runs(limit=100)["rows"]}
        finally:
            data.close()
        assert set(cli) == set(dash) == {done, live.run_id}
        assert cli[done]["status"] == dash[done]["status"] == "finished"
        assert cli[done]["duration_s"] == dash[done]["duration_s"] is not None
        assert cli[done]["started"].isoformat() == dash[done]["started"]
        assert cli[live.run_id]["status"] == dash[live.run_id]["status"] == "running"
        # Both measured against their own "now": the later one is not shorter.
        assert 0 <= cli[live.run_id]["duration_s"] <= dash[live.run_id]["duration_s"]
    finally:
        live.close()

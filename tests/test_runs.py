"""Runs: TelemetryManager, run ids and folders, manifests, events, modes, recovery, compaction."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import flightlog
from conftest import run_together
from flightlog import Field, Schema, SchemaError, TelemetryManager, events, read_manifest, schemas
from flightlog.runs.compact import compact
from flightlog.runs.ids import claim_run_dir, resolve_root
from flightlog.runs.manager import UnitsWarning
from flightlog.runs.recover import recover
from flightlog.runs.status import run_status

PYTHON_DIR = str(Path(flightlog.__file__).resolve().parent.parent)
UNITS = {
    "phi_residual": {"unit": "1", "method": "||A x - b|| / ||b||"},
    "invariant_drift_max": {"unit": "J", "method": "max |E_t - E_0|"},
}
SIMPLE = Schema([Field("iter", "i64", nullable=False), Field("E", "f64", nullable=False)])


def cfs_row(i: int) -> dict:
    return dict(
        phase="RED" if i < 10 else "GREEN",
        iter=i,
        E=1.0 / (i + 1),
        grad_norm=0.5,
        eta_dd=0.1,
        gamma=1.0,
        alpha=0.01,
        phi_residual=1e-3,
        invariant_drift_max=0.0,
    )


def child_env(root: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PYTHON_DIR + os.pathsep + env.get("PYTHONPATH", "")
    if root is not None:
        env["FLIGHTLOG_ROOT"] = str(root)
    return env


def run_child(code: str, root: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(root),
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def events_of(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def no_temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".tmp-" in p.name]


# --------------------------------------------------------------------------- names and root

BAD_NAMES = ["", "a/b", "a\\b", "..", ".", "x\n", "x\x00y", "tab\there", "del\x7f", "c1\x85", "x" * 129]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("arg", ["flow_name", "run_id", "trial_id", "run_prefix"])
def test_bad_names_raise_before_touching_disk(tmp_path, arg, bad):
    root = tmp_path / "root"
    kwargs = {"flow_name": "ok", "run_id": None, "trial_id": None, "run_prefix": "fda_run_", arg: bad}
    flow = kwargs.pop("flow_name")
    with pytest.raises(ValueError, match=arg if arg != "run_prefix" else "run_prefix"):
        TelemetryManager(root, flow, schema=SIMPLE, **kwargs)
    assert not root.exists()


def test_non_str_name_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="flow_name"):
        TelemetryManager(tmp_path / "r", 42, schema=SIMPLE)  # type: ignore[arg-type]
    assert not (tmp_path / "r").exists()


def test_good_unusual_names_are_accepted(tmp_path):
    with TelemetryManager(tmp_path, "flow-1.v2 (ünïcode)", run_id="my..run", schema=SIMPLE) as tm:
        tm.event("any name: with spaces")
    assert tm.run_path.name == "fda_run_my..run"


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x\n", "y" * 129])
def test_bad_event_names(tmp_path, bad):
    with TelemetryManager(tmp_path, "f", schema=SIMPLE) as tm:
        with pytest.raises(ValueError, match="event name"):
            tm.event(bad)
    names = [e["event"] for e in events_of(tm.run_path / "events.parquet")]
    assert names == [events.RUN_STARTED, events.RUN_FINISHED]


def test_bad_options_raise_before_touching_disk(tmp_path):
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="mode"):
        TelemetryManager(root, "f", mode="prod")
    with pytest.raises(ValueError, match="trial_id"):
        TelemetryManager(root, "f", mode="tuner")
    with pytest.raises(TypeError, match="flush_intervall"):
        TelemetryManager(root, "f", flush_intervall=1.0)
    with pytest.raises(TypeError, match=r"params\.opt\[1\]"):
        TelemetryManager(root, "f", params={"opt": [1, object()]})
    assert not root.exists()


def test_root_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLIGHTLOG_ROOT", raising=False)
    assert resolve_root() == Path("telematry_cfs")
    assert (tmp_path / "telematry_cfs").is_dir()
    monkeypatch.setenv("FLIGHTLOG_ROOT", str(tmp_path / "env_root"))
    assert resolve_root() == tmp_path / "env_root"
    assert resolve_root(tmp_path / "arg") == tmp_path / "arg"
    with TelemetryManager(None, "f", schema=SIMPLE) as tm:
        pass
    assert tm.run_path.parent == tmp_path / "env_root"


def test_root_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        TelemetryManager(tmp_path / "file", "f", schema=SIMPLE)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_root_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            TelemetryManager(ro, "f", schema=SIMPLE)
        with pytest.raises(PermissionError, match="cannot create"):
            TelemetryManager(ro / "sub", "f", schema=SIMPLE)
    finally:
        ro.chmod(0o700)


# --------------------------------------------------------------------------- run ids


def test_run_ids_are_utc_and_suffixed(tmp_path):
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rid, path = claim_run_dir(tmp_path, "fda_run_")
    after = dt.datetime.now(dt.UTC)
    stamp = dt.datetime.strptime(rid[:15], "%Y%m%d_%H%M%S").replace(tzinfo=dt.UTC)
    assert before <= stamp <= after
    assert path == tmp_path / f"fda_run_{rid}" and path.is_dir()
    ids = [claim_run_dir(tmp_path, "fda_run_", "20250101_000000")[0] for _ in range(4)]
    assert ids == ["20250101_000000", "20250101_000000_2", "20250101_000000_3", "20250101_000000_4"]
    assert claim_run_dir(tmp_path, "other_", "20250101_000000")[0] == "20250101_000000"


def test_explicit_run_id_collision_gets_a_suffix(tmp_path):
    with TelemetryManager(tmp_path, "f", run_id="exp1", schema=SIMPLE) as a:
        pass
    with TelemetryManager(tmp_path, "f", run_id="exp1", schema=SIMPLE) as b:
        pass
    assert (a.run_id, b.run_id) == ("exp1", "exp1_2")
    assert read_manifest(b.run_path)["run_id"] == "exp1_2"


CONCURRENT_CHILD = """
import sys, time
from flightlog import TelemetryManager, Schema, Field
schema = Schema([Field("iter", "i64"), Field("E", "f64")])
start, mode, fixed = float(sys.argv[1]), sys.argv[2], sys.argv[3] == "fixed"
while time.time() < start:
    time.sleep(0.0005)
ids = []
for i in range(25):
    kw = {"trial_id": f"t{i}"} if mode == "tuner" else {}
    with TelemetryManager(None, "conc", "20250101_120000" if fixed else None, mode=mode, schema=schema, **kw) as tm:
        tm.log(iter=i, E=1.0)
    ids.append(tm.run_id)
print(" ".join(ids))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "fixed"), [("run", "fixed"), ("run", "clock"), ("dev", "fixed"), ("tuner", "clock")])
def test_eight_processes_25_runs_each_never_collide(tmp_path, mode, fixed):
    start = time.time() + 1.5
    args = [sys.executable, "-c", CONCURRENT_CHILD, str(start), mode, fixed]
    ids = [rid for out in run_together([args] * 8, env=child_env(tmp_path), timeout=120) for rid in out.split()]
    assert len(ids) == 200 and len(set(ids)) == 200
    if mode == "run":
        folders = [p for p in tmp_path.iterdir() if p.name.startswith("fda_run_")]
        assert len(folders) == 200
        for f in folders:
            m = read_manifest(f)
            assert m["status"] == "finished" and f.name == "fda_run_" + m["run_id"]
            assert pq.read_table(f / "telemetry.parquet").num_rows == 1
    else:
        runs = list((tmp_path / "flows" / "conc" / "runs").glob("*.toml"))
        assert len(runs) == 200
        parts = list((tmp_path / "flows" / "conc" / f"{mode}_telemetry").glob("part-*.parquet"))
        assert len(parts) == 200
        assert {read_manifest(r)["status"] for r in runs} == {"finished"}
    assert no_temp_files(tmp_path) == []


# --------------------------------------------------------------------------- a production run


def test_run_layout_manifest_and_events(tmp_path):
    with TelemetryManager(
        tmp_path,
        "gd_demo",
        schema=schemas.CFS_CORE,
        params={"lr": 0.01, "sizes": (3, 4), "skip": None},
        tags={"team": "numerics"},
        units=UNITS,
        flush_interval=0.05,
    ) as tm:
        assert tm.manifest["status"] == "running"
        on_disk = read_manifest(tm.run_path)
        assert on_disk["status"] == "running" and on_disk["provenance"]["pid"] == os.getpid()
        for i in range(500):
            tm.log(**cfs_row(i))
        row = {**cfs_row(500), "t_wall_ms": tm.recorder.now_ms()}
        tm.record(*[row.get(name) for name in schemas.CFS_CORE.names if name not in ("run_id", "flow_name")])
        tm.event(events.CERT_PASS, {"gap": 0.12})
        tm.flush()
        assert run_status(read_manifest(tm.run_path), tm.run_path) == "running"
    assert sorted(os.listdir(tm.run_path)) == ["events.parquet", "manifest.toml", "telemetry.parquet"]
    m = read_manifest(tm.run_path)
    assert m == tm.manifest
    assert m["schema_version"] == 3 and m["mode"] == "run" and m["flow_name"] == "gd_demo"
    assert m["run_id"] == tm.run_id and "trial_id" not in m
    assert m["status"] == "finished" and "error_type" not in m
    created = dt.datetime.fromisoformat(m["created_at"])
    finished = dt.datetime.fromisoformat(m["finished_at"])
    assert created.tzinfo is not None and created.utcoffset() == dt.timedelta(0) and created <= finished
    assert m["params"] == {"lr": 0.01, "sizes": [3, 4]}
    assert m["tags"] == {"team": "numerics"} and m["units"] == UNITS
    prov = m["provenance"]
    for key in ("host", "pid", "user", "argv", "cwd", "python", "platform", "flightlog_version", "numpy_version"):
        assert key in prov
    assert prov["flightlog_version"] == flightlog.__version__
    assert m["sampling"] == {"policy": "all", "max_rows": 1_000_000}
    counts = m["counts"]
    assert counts["rows_offered"] == counts["rows_written"] == 501
    assert counts["rows_sampled_out"] == counts["rows_dropped"] == counts["rows_lost"] == 0
    assert counts["segments"] >= 1 and counts["events"] == 3
    assert set(m["cost"]) == {"flush_secs", "bytes_written", "producer_stalls"}
    assert [(f["path"], f["kind"]) for f in m["files"]] == [
        ("telemetry.parquet", "telemetry"),
        ("events.parquet", "events"),
    ]
    for f in m["files"]:
        assert f["bytes"] == (tm.run_path / f["path"]).stat().st_size
        assert f["rows"] == pq.ParquetFile(tm.run_path / f["path"]).metadata.num_rows
    assert Schema.from_dict(m["schema"]) == schemas.CFS_CORE

    table = pq.read_table(tm.run_path / "telemetry.parquet")
    assert table.num_rows == 501
    assert set(table["run_id"].to_pylist()) == {tm.run_id}
    assert set(table["flow_name"].to_pylist()) == {"gd_demo"}
    assert table["iter"].to_pylist() == list(range(501))
    evs = events_of(tm.run_path / "events.parquet")
    assert [e["event"] for e in evs] == [events.RUN_STARTED, events.CERT_PASS, events.RUN_FINISHED]
    assert json.loads(evs[1]["payload"]) == {"gap": 0.12} and evs[1]["iter"] == 500
    assert json.loads(evs[2]["payload"]) == {"status": "finished"}
    assert {e["run_id"] for e in evs} == {tm.run_id}


def test_duckdb_reads_the_run(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    with TelemetryManager(tmp_path, "f", schema=SIMPLE) as tm:
        for i in range(10):
            tm.record(i, float(i))
    con = duckdb.connect()
    rows = con.execute(
        f"select run_id, flow_name, sum(E) from '{tm.run_path}/telemetry.parquet' group by all"
    ).fetchall()
    assert rows == [(tm.run_id, "f", 45.0)]


def test_user_schema_gets_constant_fields(tmp_path):
    with TelemetryManager(tmp_path, "f", mode="tuner", trial_id="t7", schema=SIMPLE) as tm:
        assert tm.recorder.schema.names == ("run_id", "flow_name", "trial_id", "iter", "E")
        tm.record(1, 2.0)
        with pytest.raises(SchemaError):
            tm.log(iter=2, E=3.0, run_id="forged")
    m = read_manifest(tm.manifest_path)
    assert m["trial_id"] == "t7" and m["mode"] == "tuner"
    part = tm.run_path / m["files"][0]["path"].replace("../", "")
    assert pq.read_table(part).to_pylist() == [
        {"run_id": tm.run_id, "flow_name": "f", "trial_id": "t7", "iter": 1, "E": 2.0}
    ]


def test_constant_field_of_wrong_type_is_rejected(tmp_path):
    bad = Schema([Field("run_id", "i64"), Field("E", "f64")])
    with pytest.raises(SchemaError, match="run_id"):
        TelemetryManager(tmp_path / "r", "f", schema=bad)
    assert not (tmp_path / "r").exists()


def test_hot_methods_are_native(tmp_path):
    with TelemetryManager(tmp_path, "f", schema=SIMPLE) as tm:
        for name in ("log", "record", "extend"):
            method = getattr(tm, name)
            assert type(method).__name__ == "builtin_function_or_method", name
            assert method.__self__ is tm.recorder._native


def test_units_warning(tmp_path):
    with pytest.warns(UnitsWarning, match="phi_residual, invariant_drift_max"):
        TelemetryManager(tmp_path, "f", schema=schemas.CFS_CORE).close()
    with pytest.warns(UnitsWarning, match="invariant_drift_max") as record:
        TelemetryManager(tmp_path, "f", schema=schemas.CFS_CORE, units={"phi_residual": "1"}).close()
    assert "phi_residual," not in str(record[0].message)
    assert issubclass(UnitsWarning, UserWarning)


def test_payload_must_be_json(tmp_path):
    with TelemetryManager(tmp_path, "f", schema=SIMPLE) as tm:
        with pytest.raises(TypeError, match="JSON"):
            tm.event("E", {"x": object()})
        tm.event("NUMPY_OK", {"x": [1.5, float("nan")]})


def test_close_is_idempotent_and_events_after_close_fail(tmp_path):
    tm = TelemetryManager(tmp_path, "f", schema=SIMPLE)
    tm.close()
    tm.close()
    assert tm.status == "finished"
    with pytest.raises(flightlog.FlightlogError, match="closed"):
        tm.event("LATE")


def test_exception_in_with_block_marks_failed_and_keeps_rows(tmp_path):
    class Diverged(RuntimeError):
        pass

    with pytest.raises(Diverged, match="energy blew up"):
        with TelemetryManager(tmp_path, "f", schema=SIMPLE, flush_interval=10.0) as tm:
            for i in range(42):
                tm.record(i, float(i))
            raise Diverged("energy blew up at iter 41")
    m = read_manifest(tm.run_path)
    assert m["status"] == "failed"
    assert m["error_type"].endswith("Diverged") and m["error_message"] == "energy blew up at iter 41"
    assert m["counts"]["rows_written"] == 42
    assert pq.read_table(tm.run_path / "telemetry.parquet").num_rows == 42
    last = events_of(tm.run_path / "events.parquet")[-1]
    assert last["event"] == events.RUN_FINISHED
    assert json.loads(last["payload"])["status"] == "failed"


def test_explicit_failed_close(tmp_path):
    tm = TelemetryManager(tmp_path, "f", schema=SIMPLE)
    tm.close("failed", error=ValueError("bad step"))
    m = read_manifest(tm.run_path)
    assert (m["status"], m["error_type"], m["error_message"]) == ("failed", "ValueError", "bad step")
    with pytest.raises(ValueError, match="status"):
        TelemetryManager(tmp_path, "g", schema=SIMPLE).close("crashed")


def test_budget_event_once_and_warns(tmp_path):
    with pytest.warns(flightlog._errors.RowBudgetWarning):
        with TelemetryManager(tmp_path, "f", schema=SIMPLE, max_rows=10) as tm:
            for i in range(25):
                tm.record(i, 0.0)
    m = read_manifest(tm.run_path)
    assert m["counts"]["rows_written"] == 10 and m["counts"]["rows_over_budget"] == 15
    assert m["sampling"]["max_rows"] == 10
    names = [e["event"] for e in events_of(tm.run_path / "events.parquet")]
    assert names.count(events.ROW_BUDGET_EXCEEDED) == 1


def test_unlimited_budget(tmp_path):
    with TelemetryManager(tmp_path, "f", schema=SIMPLE, max_rows=None) as tm:
        tm.record(0, 0.0)
    assert read_manifest(tm.run_path)["sampling"] == {"policy": "all"}


# --------------------------------------------------------------------------- inferred schema


def test_inferred_schema_fills_constants(tmp_path):
    with TelemetryManager(tmp_path, "lazy", params={"a": 1}) as tm:
        assert tm.recorder is None
        tm.event("BEFORE_ROWS", {"k": 1})
        tm.log(iter=0, E=1.5, phase="RED")
        assert type(tm.log).__name__ == "builtin_function_or_method"
        tm.log(iter=1, E=0.5, phase="GREEN")
        tm.record(2, 0.25, "GREEN")
    table = pq.read_table(tm.run_path / "telemetry.parquet")
    assert table.column_names == ["run_id", "flow_name", "iter", "E", "phase"]
    assert table["iter"].to_pylist() == [0, 1, 2] and set(table["flow_name"].to_pylist()) == {"lazy"}
    evs = events_of(tm.run_path / "events.parquet")
    assert [e["event"] for e in evs] == [events.RUN_STARTED, "BEFORE_ROWS", events.RUN_FINISHED]
    assert 0 <= evs[0]["t_wall_ms"] <= evs[1]["t_wall_ms"] <= evs[2]["t_wall_ms"]
    assert read_manifest(tm.run_path)["schema"]["fields"][0]["name"] == "run_id"


def test_inferred_schema_record_before_log_is_an_error(tmp_path):
    with TelemetryManager(tmp_path, "lazy") as tm:
        with pytest.raises(SchemaError, match="log"):
            tm.record(1, 2.0)


def test_run_without_rows_still_has_both_files(tmp_path):
    with TelemetryManager(tmp_path, "empty") as tm:
        tm.event("NOTHING_TO_DO")
    assert pq.read_table(tm.run_path / "telemetry.parquet").num_rows == 0
    assert [e["event"] for e in events_of(tm.run_path / "events.parquet")] == [
        events.RUN_STARTED,
        "NOTHING_TO_DO",
        events.RUN_FINISHED,
    ]
    assert read_manifest(tm.run_path)["counts"]["rows_written"] == 0


def test_inferred_cfs_fields_warn_about_units(tmp_path):
    with TelemetryManager(tmp_path, "lazy") as tm:
        with pytest.warns(UnitsWarning, match="phi_residual"):
            tm.log(iter=0, phi_residual=0.1)


# --------------------------------------------------------------------------- dev and tuner


def test_dev_mode_parts_sampling_and_flow_manifest(tmp_path):
    with TelemetryManager(tmp_path, "flow", mode="dev", schema=SIMPLE) as tm:
        for i in range(5000):
            tm.record(i, float(i))
    flow = tmp_path / "flows" / "flow"
    assert tm.run_path == flow and tm.manifest_path == flow / "runs" / f"{tm.run_id}.toml"
    m = read_manifest(tm.manifest_path)
    assert m["mode"] == "dev" and m["status"] == "finished"
    assert m["sampling"] == {"policy": "keep_first_then_every", "keep_first": 1000, "every": 10}
    assert m["counts"]["rows_offered"] == 5000
    assert m["counts"]["rows_written"] == 1000 + 400 and m["counts"]["rows_sampled_out"] == 3600
    kinds = {f["kind"] for f in m["files"]}
    assert kinds == {"telemetry", "events"}
    rows = 0
    for f in m["files"]:
        p = (tm.manifest_path.parent / f["path"]).resolve()
        assert p.parent.name == ("dev_telemetry" if f["kind"] == "telemetry" else "dev_events")
        assert p.name.startswith(f"part-{tm.run_id}-")
        if f["kind"] == "telemetry":
            rows += pq.ParquetFile(p).metadata.num_rows
    assert rows == 1400
    iters = pq.read_table(flow / "dev_telemetry").column("iter").to_pylist()
    assert iters[:1000] == list(range(1000)) and iters[1000:1003] == [1000, 1010, 1020]
    fm = read_manifest(flow)
    assert fm["flow_name"] == "flow" and fm["modes"] == ["dev"]
    assert Schema.from_json(fm["schema"]).names == ("run_id", "flow_name", "iter", "E")
    assert "created_at" in fm and "updated_at" in fm
    assert not (tmp_path / "fda_run_").exists() and [p.name for p in tmp_path.iterdir()] == ["flows"]


def test_sampling_can_be_changed(tmp_path):
    with TelemetryManager(tmp_path, "flow", mode="dev", schema=SIMPLE, sampling=(5, 2)) as tm:
        for i in range(15):
            tm.record(i, 0.0)
    assert read_manifest(tm.manifest_path)["counts"]["rows_written"] == 5 + 5
    with TelemetryManager(tmp_path, "flow", mode="dev", schema=SIMPLE, sampling=None) as tm:
        for i in range(1500):
            tm.record(i, 0.0)
    assert read_manifest(tm.manifest_path)["counts"]["rows_written"] == 1500


def test_tuner_requires_trial_id_and_makes_it_a_column(tmp_path):
    with pytest.raises(ValueError, match="trial_id"):
        TelemetryManager(tmp_path, "tune", mode="tuner", schema=schemas.CFS_CORE, units=UNITS)
    for trial in ("a", "b"):
        with TelemetryManager(
            tmp_path, "tune", mode="tuner", trial_id=trial, schema=schemas.CFS_CORE, units=UNITS
        ) as tm:
            for i in range(3):
                tm.log(**cfs_row(i))
    table = pq.read_table(tmp_path / "flows" / "tune" / "tuner_telemetry")
    assert sorted(set(table["trial_id"].to_pylist())) == ["a", "b"]
    assert table.num_rows == 6


def test_flow_manifest_is_updated_under_concurrency(tmp_path):
    code = """
    from flightlog import TelemetryManager, Schema, Field
    for i in range(10):
        with TelemetryManager(None, "shared", mode="dev", schema=Schema([Field("x", "f64")])) as tm:
            tm.record(1.0)
    """
    run_together([[sys.executable, "-c", textwrap.dedent(code)]] * 4, env=child_env(tmp_path), timeout=120)
    fm = read_manifest(tmp_path / "flows" / "shared")
    assert fm["flow_name"] == "shared" and fm["modes"] == ["dev"]
    assert len(list((tmp_path / "flows" / "shared" / "runs").glob("*.toml"))) == 40


# --------------------------------------------------------------------------- evidence and recovery

KILL_CHILD = """
import os, sys, time
from flightlog import TelemetryManager, Schema, Field
mode = sys.argv[1]
schema = Schema([Field("iter", "i64"), Field("E", "f64")])
kw = {"trial_id": "t1"} if mode == "tuner" else {}
tm = TelemetryManager(None, "crashy", mode=mode, schema=schema, sampling=None, flush_interval=30.0, **kw)
for i in range(1234):
    tm.record(i, float(i))
tm.event("CERT_PASS", {"gap": 0.5})
tm.flush()
for i in range(1234, 1300):
    tm.record(i, float(i))
tm.flush()
for i in range(1300, 1400):
    tm.record(i, float(i))  # not flushed: in the spool, salvaged by recover
print(tm.run_id, tm.manifest_path, flush=True)
time.sleep(600)
"""


def start_and_kill(tmp_path: Path, mode: str) -> tuple[str, Path]:
    p = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, mode],
        env=child_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline().split()
        assert line, p.stderr.read()
        run_id, mpath = line[0], Path(line[1])
        m = read_manifest(mpath)
        assert m["status"] == "running"
        target = mpath.parent if mode == "run" else mpath
        assert run_status(m, target) == "running"
        rep = recover(tmp_path)
        assert rep.recovered == [] and rep.live == [str(target)]
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()
    return run_id, mpath


def test_sigkill_mid_run_then_recover(tmp_path):
    run_id, mpath = start_and_kill(tmp_path, "run")
    run_dir = mpath.parent
    m = read_manifest(run_dir)
    assert m["status"] == "running"
    assert run_status(m, run_dir) == "crashed"
    assert (run_dir / "segments").is_dir() and not (run_dir / "telemetry.parquet").exists()

    rep = recover(tmp_path)
    assert [r["run_id"] for r in rep.recovered] == [run_id] and rep.errors == []
    r = rep.recovered[0]
    assert r["previous_status"] == "running" and r["status"] == "crashed"
    # Every row whose record() returned: 1300 flushed, 100 from the spool.
    assert r["telemetry_rows"] == 1400 and r["event_rows"] == 2 and r["salvaged_rows"] == 100
    m = read_manifest(run_dir)
    assert m["status"] == "crashed" and "ended without closing" in m["error_message"]
    assert m["counts"]["rows_written"] == 1400 and m["counts"]["events"] == 2
    assert [f["path"] for f in m["files"]] == ["telemetry.parquet", "events.parquet"]
    assert sorted(os.listdir(run_dir)) == ["events.parquet", "manifest.toml", "telemetry.parquet"]
    assert no_temp_files(tmp_path) == []
    table = pq.read_table(run_dir / "telemetry.parquet")
    assert table["iter"].to_pylist() == list(range(1400))
    assert [e["event"] for e in events_of(run_dir / "events.parquet")] == [events.RUN_STARTED, events.CERT_PASS]

    # idempotent
    again = recover(tmp_path)
    assert again.recovered == [] and again.errors == []
    assert read_manifest(run_dir) == m


@pytest.mark.parametrize("mode", ["dev", "tuner"])
def test_sigkill_dev_run_then_recover(tmp_path, mode):
    run_id, mpath = start_and_kill(tmp_path, mode)
    assert run_status(read_manifest(mpath), mpath) == "crashed"
    assert run_status(read_manifest(mpath), mpath.parent.parent) == "crashed"
    rep = recover(tmp_path)
    assert [r["run_id"] for r in rep.recovered] == [run_id]
    m = read_manifest(mpath)
    assert m["status"] == "crashed"
    assert m["counts"]["rows_written"] == 1400 and m["counts"]["events"] == 2
    parts = sorted((mpath.parent.parent / f"{mode}_telemetry").glob(f"part-{run_id}-*.parquet"))
    assert [f["path"] for f in m["files"] if f["kind"] == "telemetry"] == [
        f"../{mode}_telemetry/{p.name}" for p in parts
    ]
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in parts) == 1400
    assert recover(tmp_path).recovered == []


def test_evidence_from_another_host(tmp_path):
    run_dir = tmp_path / "fda_run_x"
    (run_dir / "segments").mkdir(parents=True)
    m = {"run_id": "x", "mode": "run", "status": "running", "provenance": {"host": "elsewhere.example", "pid": 1}}
    flightlog.write_manifest(run_dir, m)
    assert run_status(m, run_dir, stale_after=60) == "running"
    old = time.time() - 3600
    for p in (run_dir / "manifest.toml", run_dir / "segments", run_dir):
        os.utime(p, (old, old))
    assert run_status(m, run_dir, stale_after=60) == "crashed"
    assert run_status(m, run_dir, stale_after=7200) == "running"
    (run_dir / "segments" / "telemetry-000001.parquet").write_bytes(b"")  # fresh evidence of life
    assert run_status(m, run_dir, stale_after=60) == "running"


def test_reused_pid_is_not_alive(tmp_path):
    prov = flightlog.runs.manifest.provenance()
    alive = {"status": "running", "mode": "run", "provenance": prov}
    assert run_status(alive, tmp_path) == "running"
    if "pid_start_ticks" in prov:
        reused = {"status": "running", "mode": "run", "provenance": {**prov, "pid_start_ticks": 1}}
        assert run_status(reused, tmp_path) == "crashed"
    rebooted = {"status": "running", "mode": "run", "provenance": {**prov, "boot_id": "another-boot"}}
    if "boot_id" in prov:
        assert run_status(rebooted, tmp_path) == "crashed"
    assert run_status({"status": "finished"}, tmp_path) == "finished"
    assert run_status({}, tmp_path) == "unknown"


def test_unclosed_run_is_closed_at_exit(tmp_path):
    ok = run_child(
        """
        from flightlog import TelemetryManager, Schema, Field
        tm = TelemetryManager(None, "f", schema=Schema([Field("x", "f64")]))
        tm.record(1.0)
        print(tm.run_path)
        """,
        tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    m = read_manifest(Path(ok.stdout.strip()))
    assert m["status"] == "finished" and m["counts"]["rows_written"] == 1

    bad = run_child(
        """
        from flightlog import TelemetryManager, Schema, Field
        tm = TelemetryManager(None, "f", schema=Schema([Field("x", "f64")]))
        tm.record(1.0)
        print(tm.run_path, flush=True)
        raise KeyError("missing config")
        """,
        tmp_path,
    )
    assert bad.returncode == 1
    m = read_manifest(Path(bad.stdout.strip()))
    assert m["status"] == "failed" and m["error_type"] == "KeyError"


# --------------------------------------------------------------------------- compaction


def make_dev_runs(root: Path, n: int, rows: int, flow: str = "c") -> None:
    for r in range(n):
        with TelemetryManager(
            root, flow, mode="dev", schema=SIMPLE, sampling=None, segment_rows=max(rows // 3, 1)
        ) as tm:
            for i in range(rows):
                tm.record(i, float(r))


def total_rows(folder: Path, compacted: Path) -> int:
    listed = set()
    total = 0
    if compacted.exists():
        kv = dict(flightlog._core.parquet_kv(str(compacted)))
        listed = set(json.loads(kv.get("flightlog.segments", "[]")))
        total += pq.ParquetFile(compacted).metadata.num_rows
    for p in folder.glob("part-*.parquet"):
        if p.name not in listed:
            total += pq.ParquetFile(p).metadata.num_rows
    return total


def test_compact_merges_parts_and_lists_them(tmp_path):
    make_dev_runs(tmp_path, 3, 100)
    flow = tmp_path / "flows" / "c"
    parts = sorted(p.name for p in (flow / "dev_telemetry").glob("part-*.parquet"))
    assert len(parts) >= 3
    rep = compact(tmp_path, "c")
    assert rep["telemetry"]["parts_merged"] == len(parts) and rep["telemetry"]["rows"] == 300
    assert rep["events"]["rows"] == 6
    out = flow / "dev_telemetry.parquet"
    assert pq.read_table(out).num_rows == 300
    kv = dict(flightlog._core.parquet_kv(str(out)))
    assert json.loads(kv["flightlog.segments"]) == parts
    assert list((flow / "dev_telemetry").glob("part-*")) == []
    assert pq.read_table(flow / "dev_events.parquet").num_rows == 6

    make_dev_runs(tmp_path, 2, 50)
    rep = compact(tmp_path, "c")
    assert rep["telemetry"]["rows"] == 400 and pq.read_table(out).num_rows == 400
    assert sorted(pq.read_table(out)["iter"].to_pylist()) == sorted(list(range(100)) * 3 + list(range(50)) * 2)
    # nothing new: nothing changes
    assert compact(tmp_path, "c")["telemetry"]["parts_merged"] == 0
    assert pq.read_table(out).num_rows == 400
    with pytest.raises(FileNotFoundError):
        compact(tmp_path, "nope")
    with pytest.raises(ValueError):
        compact(tmp_path, "c", which="run")


def test_compact_leftovers_after_a_crash_are_removed(tmp_path):
    make_dev_runs(tmp_path, 2, 30)
    flow = tmp_path / "flows" / "c"
    parts = sorted((flow / "dev_telemetry").glob("part-*.parquet"))
    # A compaction that published the merged file and died before deleting the parts.
    flightlog._core.merge_parquet(str(flow / "dev_telemetry.parquet"), [str(p) for p in parts])
    assert all(p.exists() for p in parts)
    assert total_rows(flow / "dev_telemetry", flow / "dev_telemetry.parquet") == 60
    rep = recover(tmp_path)
    assert rep.leftover_parts_removed == len(parts)
    assert not any(p.exists() for p in parts)
    assert pq.read_table(flow / "dev_telemetry.parquet").num_rows == 60


def test_compact_skips_parts_with_another_schema(tmp_path):
    make_dev_runs(tmp_path, 1, 10)
    with TelemetryManager(tmp_path, "c", mode="dev", schema=Schema([Field("other", "str")])) as tm:
        tm.record("x")
    rep = compact(tmp_path, "c")
    assert rep["telemetry"]["rows"] == 10 and len(rep["telemetry"]["skipped"]) == 1
    assert "schema differs" in rep["telemetry"]["skipped"][0]["reason"]
    assert len(list((tmp_path / "flows" / "c" / "dev_telemetry").glob("part-*"))) == 1


COMPACT_CHILD = """
import sys
from flightlog.runs.compact import compact
compact(None, "k")
"""


@pytest.mark.slow
def test_kill_during_compact_never_loses_or_duplicates_rows(tmp_path):
    make_dev_runs(tmp_path, 12, 600, flow="k")
    flow = tmp_path / "flows" / "k"
    expected = total_rows(flow / "dev_telemetry", flow / "dev_telemetry.parquet")
    assert expected == 12 * 600
    for delay in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5):
        p = subprocess.Popen([sys.executable, "-c", COMPACT_CHILD], env=child_env(tmp_path))
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert total_rows(flow / "dev_telemetry", flow / "dev_telemetry.parquet") == expected
        make_dev_runs(tmp_path, 1, 100, flow="k")
        expected += 100
    compact(tmp_path, "k")
    assert pq.read_table(flow / "dev_telemetry.parquet").num_rows == expected
    assert list((flow / "dev_telemetry").glob("part-*")) == []
    assert no_temp_files(flow) == []


# --------------------------------------------------------------------------- throughput


@pytest.mark.slow
def test_runs_per_second(tmp_path, monkeypatch):
    real_fsync = os.fsync
    calls = []

    def counting_fsync(fd):
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    n = 50
    t0 = time.perf_counter()
    for i in range(n):
        with TelemetryManager(tmp_path, "speed", mode="tuner", trial_id=f"t{i}", schema=SIMPLE) as tm:
            tm.record(i, 0.0)
    rate = n / (time.perf_counter() - t0)
    print(f"tuner runs started+closed: {rate:.0f}/s")
    # Python side: the running manifest (file + folder) and the final one (file + folder);
    # the flow manifest is written once, by the first run.
    assert len(calls) <= 4 * n + 2
    assert rate > 5  # disk-bound (fsync); the >= 200/s target is checked by the benchmark


@pytest.mark.parametrize("mode", ["run", "dev"])
def test_recorder_that_cannot_start_leaves_nothing_behind(tmp_path, mode):
    with pytest.raises(ValueError):
        TelemetryManager(tmp_path, "f", mode=mode, schema=SIMPLE, compression="bogus")
    assert [p for p in tmp_path.iterdir() if p.name.startswith("fda_run_")] == []
    assert list((tmp_path / "flows").rglob("runs/*.toml")) == []
    with pytest.raises(ValueError, match="every"):
        TelemetryManager(tmp_path / "never", "f", mode=mode, schema=SIMPLE, sampling=(10, 0))
    assert not (tmp_path / "never").exists()


def test_buffered_event_keeps_an_explicit_time(tmp_path):
    with TelemetryManager(tmp_path, "lazy") as tm:
        tm.event("AT_42", t_wall_ms=42.0)
        tm.log(x=1.0)
    evs = {e["event"]: e for e in events_of(tm.run_path / "events.parquet")}
    assert evs["AT_42"]["t_wall_ms"] == 42.0


def test_recover_on_empty_or_missing_root(tmp_path):
    rep = recover(tmp_path / "missing")
    assert rep.recovered == [] and rep.errors == [] and not (tmp_path / "missing").exists()
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "fda_run_broken").mkdir()
    (tmp_path / "fda_run_broken" / "manifest.toml").write_text("status = [")
    rep = recover(tmp_path)
    assert rep.recovered == [] and len(rep.errors) == 1 and "not valid TOML" in rep.errors[0]["error"]
    assert "recovered 0 run(s)" in str(rep)


def _short_schema() -> Schema:
    return Schema([Field("iter", "i64", nullable=False), Field("E", "f64")])


def test_short_close_fsyncs_the_run_folder_before_placing_the_final_manifest(tmp_path, monkeypatch):
    """A short run's close leaves the final files' folder fsync to the final manifest's
    publish, which runs it before the manifest's rename (issue 13)."""
    from flightlog import _core

    calls: list[tuple[str, object]] = []
    real = _core.publish_bytes

    def spy(path, data, create_only=False, after=None, durable=True):
        calls.append((os.path.basename(os.fspath(path)), after, durable))
        return real(path, data, create_only, after, durable)

    monkeypatch.setattr(_core, "publish_bytes", spy)
    with TelemetryManager(tmp_path, "f", run_id="r1", schema=_short_schema()) as tm:
        tm.log(iter=0, E=1.0)
    # The start manifest, whose fsyncs the recorder's first file pays.
    assert calls[0] == ("manifest.toml", None, False)
    assert calls[-1][0] == "manifest.toml" and os.fspath(calls[-1][1]) == os.fspath(tm.run_path)
    m = read_manifest(tm.run_path)
    assert m["status"] == "finished" and {f["path"] for f in m["files"]} == {"telemetry.parquet", "events.parquet"}


def test_short_close_whose_final_manifest_fails_still_fsyncs_the_folder(tmp_path, monkeypatch):
    from flightlog import WriteError, _core
    from flightlog.runs import finish

    synced: list[str] = []
    real_sync = finish.fsync_folder
    monkeypatch.setattr(finish, "fsync_folder", lambda d: (synced.append(os.fspath(d)), real_sync(d)))
    real = _core.publish_bytes

    def failing(path, data, create_only=False, after=None, durable=True):
        if after is not None:
            raise OSError(28, "No space left on device (injected)", os.fspath(path))
        return real(path, data, create_only, after, durable)

    monkeypatch.setattr(_core, "publish_bytes", failing)
    tm = TelemetryManager(tmp_path, "f", run_id="r1", schema=_short_schema())
    tm.log(iter=0, E=1.0)
    with pytest.raises(WriteError, match="final manifest"):
        tm.close()
    assert synced == [os.fspath(tm.run_path)]
    assert pq.read_table(tm.run_path / "telemetry.parquet").num_rows == 1
    assert read_manifest(tm.run_path)["status"] == "running"  # recover finalises it

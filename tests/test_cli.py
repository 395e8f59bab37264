"""The ``flightlog`` command line, run as a real subprocess against a root made by the tests
(the quick demo, a dev flow, a crashed run), and in-process through ``main([...])``."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, follow_tail
from flightlog.cli import main

PYTHON = sys.executable
UNITS = {"phi_residual": {"unit": "1", "method": "m"}, "invariant_drift_max": {"unit": "1", "method": "m"}}


def cli(*args: str, root: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120):
    """Run ``python -m flightlog.cli ARGS`` and return the CompletedProcess."""
    argv = [PYTHON, "-m", "flightlog.cli", *args]
    if root is not None:
        argv += ["--root", str(root)]
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", FLIGHTLOG_PLAIN="1")
    full_env.pop("FLIGHTLOG_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root made by `flightlog demo --quick` plus a dev flow with two runs."""
    base = tmp_path_factory.mktemp("cli") / "root"
    proc = cli("demo", "--quick", root=base, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert "convergence plot" in out and "duckdb.db" in out and "comparison" in out
    assert (base / "duckdb.db").exists()
    w, h = png_size(base / "convergence.png")
    assert w >= 800 and h >= 400
    assert (base / "convergence.png").stat().st_size > 20_000

    import numpy as np

    from flightlog import Field, Schema, TelemetryManager

    schema = Schema([Field("iter", "i64"), Field("E", "f64"), Field("t_wall_ms", "f64")])
    for lr in (0.1, 0.2):
        with TelemetryManager(base, "devflow", mode="dev", schema=schema, params={"lr": lr}, sampling=None) as tm:
            it = np.arange(500)
            tm.extend(iter=it, E=np.exp(-lr * it), t_wall_ms=it * 0.01)
    return base


def demo_runs(root: Path) -> list[dict]:
    proc = cli("runs", "--format", "json", root=root)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------- runs, show, query


def test_runs_json_and_csv(root: Path) -> None:
    runs = demo_runs(root)
    demo = [r for r in runs if r["flow_name"].startswith("quadratic_")]
    assert len(demo) == 6
    assert list(runs[0]) == [
        "run_id",
        "flow_name",
        "mode",
        "status",
        "outcome",
        "started",
        "duration_s",
        "rows",
        "final_E",
        "min_E",
    ]
    assert sorted(r["status"] for r in demo).count("failed") == 1
    # The flow's outcome beside the recording's status (issue 14): the diverged run, and
    # started with its time zone.
    assert {r["outcome"] for r in demo if r["status"] == "failed"} == {"diverged"}
    assert all(r["started"].endswith("+00:00") for r in runs)
    assert all(r["rows"] > 0 for r in demo)
    assert all(r["min_E"] is not None for r in demo)
    proc = cli("runs", "--format", "csv", "--flow", "quadratic_nesterov", root=root)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}
    proc = cli("runs", "--status", "failed", root=root)
    assert proc.returncode == 0 and "failed" in proc.stdout and "finished" not in proc.stdout
    proc = cli("runs", "--since", "1h", "--format", "json", root=root)
    assert len(json.loads(proc.stdout)) == len(runs)
    assert json.loads(cli("runs", "--since", "2999-01-01", "--format", "json", root=root).stdout) == []


def test_runs_table_in_process(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "quadratic_gd" in out and "run_id" in out and "failed" in out


def test_root_from_environment(root: Path) -> None:
    proc = cli("runs", "--format", "json", env={"FLIGHTLOG_ROOT": str(root)})
    assert proc.returncode == 0 and len(json.loads(proc.stdout)) >= 6


def test_show(root: Path) -> None:
    failed = next(r for r in demo_runs(root) if r["status"] == "failed")
    proc = cli("show", failed["run_id"], root=root)
    assert proc.returncode == 0, proc.stderr
    assert "DivergenceError" in proc.stdout and "CERT_FAIL" in proc.stdout and "phi_residual" in proc.stdout
    data = json.loads(cli("show", failed["run_id"], "--format", "json", root=root).stdout)
    assert data["run"]["status"] == "failed"
    assert data["run"]["units"]["phi_residual"]["unit"] == "1"
    assert {c["column"] for c in data["columns"]} >= {"E", "iter", "phase"}
    assert [e["event"] for e in data["events"]] == ["RUN_STARTED", "CERT_FAIL", "RUN_FINISHED"]
    cols = list(csv.DictReader(io.StringIO(cli("show", failed["run_id"], "--format", "csv", root=root).stdout)))
    assert any(c["column"] == "E" for c in cols)


def test_show_by_prefix_and_dev_run(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = next(r for r in demo_runs(root) if r["flow_name"] == "devflow")
    assert main(["show", dev["run_id"], "--root", str(root), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run"]["mode"] == "dev" and data["run"]["params"] == {"lr": 0.1}


def test_query_formats_and_params(root: Path) -> None:
    sql = "SELECT flow_name, count(*) AS n FROM telemetry WHERE iter < $k GROUP BY flow_name ORDER BY flow_name"
    data = json.loads(cli("query", sql, "--param", "k=10", "--format", "json", root=root).stdout)
    assert data == [{"flow_name": "quadratic_gd", "n": 40}, {"flow_name": "quadratic_nesterov", "n": 20}]
    rows = list(csv.reader(io.StringIO(cli("query", sql, "--param", "k=10", "--format", "csv", root=root).stdout)))
    assert rows == [["flow_name", "n"], ["quadratic_gd", "40"], ["quadratic_nesterov", "20"]]
    table = cli("query", sql, "--param", "k=10", root=root).stdout
    assert "quadratic_gd" in table and "40" in table


def test_query_non_finite_json_is_null(root: Path) -> None:
    data = json.loads(cli("query", "SELECT 'inf'::DOUBLE AS x, 1.5 AS y", "--format", "json", root=root).stdout)
    assert data == [{"x": None, "y": 1.5}]


# --------------------------------------------------------------------------- consolidate, compare, plot


def test_consolidate_is_idempotent(root: Path) -> None:
    proc = cli("consolidate", "--format", "json", root=root)
    assert proc.returncode == 0, proc.stderr
    first = json.loads(proc.stdout)
    assert first["files_added"] >= 2  # the dev flow's parts
    again = json.loads(cli("consolidate", "--format", "json", root=root).stdout)
    assert again["files_added"] == 0 and again["rows_added"] == 0
    proc = cli("consolidate", root=root)
    assert proc.returncode == 0 and "0 files" in proc.stdout


def test_compare(root: Path) -> None:
    cli("consolidate", root=root)
    runs = [r for r in demo_runs(root) if r["flow_name"].startswith("quadratic_")]
    ids = [r["run_id"] for r in runs]
    proc = cli(
        "compare",
        *ids,
        "--metric",
        "E",
        "--tol",
        "1e-6",
        "--params",
        "method,step_scale",
        "--format",
        "json",
        root=root,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [d["run_id"] for d in data] == ids
    assert {"first", "last", "min", "iterations", "wall_s", "iters_to_tol", "time_to_tol_s", "method"} <= set(data[0])
    failed = next(d for d in data if d["status"] == "failed")
    assert failed["iters_to_tol"] is None and failed["step_scale"] == 2.1
    fast = [d for d in data if d["method"] == "nesterov"]
    slow = [d for d in data if d["method"] == "gd" and d["status"] == "finished"]
    assert max(d["iters_to_tol"] for d in fast) < min(d["iters_to_tol"] for d in slow)
    table = cli("compare", *ids[:2], root=root)
    assert table.returncode == 0 and ids[0] in table.stdout


def test_compare_group_by(root: Path) -> None:
    proc = cli(
        "compare",
        "--flow",
        "quadratic_gd",
        "--flow",
        "quadratic_nesterov",
        "--group-by",
        "params.method",
        "--tol",
        "1e-6",
        "--format",
        "csv",
        root=root,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(proc.stdout))}
    assert set(rows) == {"gd", "nesterov"}
    # The diverged gd run (alpha*L = 2.1) is not pooled into the statistics: counted apart (issue 14).
    assert rows["gd"]["runs"] == "3" and rows["gd"]["excluded"] == "1" and rows["nesterov"]["runs"] == "2"
    assert "1 run(s) left out" in proc.stderr and "--include-failed" in proc.stderr
    assert rows["gd"]["reached_tol"] == "3"
    lo, mean, hi = (float(rows["nesterov"][k]) for k in ("best_ci95_lo", "best_mean", "best_ci95_hi"))
    assert lo <= mean <= hi
    proc = cli(
        "compare",
        "--flow",
        "quadratic_gd",
        "--group-by",
        "params.method",
        "--include-failed",
        "--format",
        "csv",
        root=root,
    )
    (gd,) = csv.DictReader(io.StringIO(proc.stdout))
    assert gd["runs"] == "4" and gd["excluded"] == "0" and "left out" not in proc.stderr


def test_compare_shows_the_outcome(root: Path) -> None:
    ids = [r["run_id"] for r in demo_runs(root) if r["flow_name"] == "quadratic_gd"]
    proc = cli("compare", *ids, "--format", "json", root=root)
    assert proc.returncode == 0, proc.stderr
    outcomes = [r["outcome"] for r in json.loads(proc.stdout)]
    assert outcomes.count("diverged") == 1 and "converged" in outcomes


def test_plot_png(root: Path, tmp_path: Path) -> None:
    ids = [r["run_id"] for r in demo_runs(root) if r["flow_name"].startswith("quadratic_")]
    out = tmp_path / "plot.png"
    proc = cli("plot", *ids, "--metric", "E", "--logy", "--logx", "-o", str(out), root=root)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 20_000
    assert png_size(out) == (1400, 800)
    out2 = tmp_path / "one.png"
    assert (
        main(
            [
                "plot",
                ids[0],
                "--metric",
                "grad_norm",
                "-o",
                str(out2),
                "--width",
                "800",
                "--height",
                "500",
                "--root",
                str(root),
            ]
        )
        == 0
    )
    assert png_size(out2) == (800, 500)


def test_plot_reads_unconsolidated_dev_run(root: Path, tmp_path: Path) -> None:
    from flightlog import Field, Schema, TelemetryManager

    schema = Schema([Field("iter", "i64"), Field("E", "f64")])
    # An explicit id: run ids are unique per flow, so an auto id (the start second) can be
    # the id of the fixture's last devflow run when this test runs alone, and `plot <id>`
    # is then (rightly) ambiguous.
    with TelemetryManager(root, "lateflow", mode="dev", schema=schema, sampling=None, run_id="late_dev_run") as tm:
        for i in range(200):
            tm.log(iter=i, E=1.0 / (i + 1))
    out = tmp_path / "late.png"
    proc = cli("plot", tm.run_id, "--logy", "-o", str(out), root=root)
    assert proc.returncode == 0, proc.stderr
    assert png_size(out)[0] == 1400


# --------------------------------------------------------------------------- tail, recover, compact


def _writer_script(root: Path, seconds: float, crash: bool) -> str:
    return textwrap.dedent(
        f"""
        import os, time
        from flightlog import TelemetryManager, Schema, Field
        schema = Schema([Field("iter", "i64"), Field("E", "f64")])
        tm = TelemetryManager({str(root)!r}, "writer", schema=schema, flush_interval=0.1)
        print(tm.run_id, flush=True)
        t0 = time.monotonic(); i = 0
        while time.monotonic() - t0 < {seconds}:
            tm.record(i, 1.0 / (i + 1)); i += 1
            if i % 200 == 0:
                time.sleep(0.01)
        tm.flush()
        if {crash}:
            os._exit(1)
        tm.close()
        """
    )


def test_tail_follows_a_running_run(root: Path, tmp_path: Path) -> None:
    # The writer records until the test has seen `tail` follow two of its segments: a
    # writer on a timer could finish before a slow-starting `tail` saw it running.
    stop = tmp_path / "stop-writer"
    script = textwrap.dedent(
        f"""
        import os, time
        from flightlog import TelemetryManager, Schema, Field
        schema = Schema([Field("iter", "i64"), Field("E", "f64")])
        tm = TelemetryManager({str(root)!r}, "writer", schema=schema, flush_interval=0.1)
        print(tm.run_id, flush=True)
        i = 0
        t0 = time.monotonic()
        while not os.path.exists({str(stop)!r}) and time.monotonic() - t0 < 60:
            tm.record(i, 1.0 / (i + 1)); i += 1
            if i % 200 == 0:
                time.sleep(0.01)
        tm.close()
        """
    )
    with subprocess.Popen([PYTHON, "-c", script], stdout=subprocess.PIPE, text=True) as writer:
        run_id = writer.stdout.readline().strip()
        argv = [
            PYTHON,
            "-m",
            "flightlog.cli",
            "tail",
            run_id,
            "--interval",
            "0.1",
            "--format",
            "json",
            "--root",
            str(root),
        ]
        status, lines, err = follow_tail(argv, {}, stop, lambda seen: sum("file" in x for x in seen) >= 2)
        writer.wait(timeout=60)
    assert status == 0, err
    assert lines[-1]["end"] is True and lines[-1]["status"] == "finished"
    segments = [x for x in lines if "file" in x]
    assert len(segments) >= 2, lines
    assert all(x["rows"] > 0 for x in segments)


def test_recover_crashed_run(root: Path) -> None:
    proc = subprocess.run([PYTHON, "-c", _writer_script(root, 0.3, True)], capture_output=True, text=True, timeout=60)
    run_id = proc.stdout.strip()
    status = {r["run_id"]: r["status"] for r in demo_runs(root)}
    assert status[run_id] == "crashed"  # by evidence, before recover
    proc = cli("recover", "--format", "json", root=root)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["run_id"] for r in report["recovered"]] == [run_id]
    again = json.loads(cli("recover", "--format", "json", root=root).stdout)
    assert again["recovered"] == []
    table = cli("recover", root=root)
    assert table.returncode == 0 and "recovered 0 run(s)" in table.stdout


def test_recover_a_folder_a_bare_recorder_left(tmp_path: Path) -> None:
    folder = tmp_path / "trial7"
    script = (
        "import os, sys\n"
        "from flightlog import Field, FlightRecorder, Schema\n"
        "rec = FlightRecorder(sys.argv[1], Schema([Field('i', 'i64', nullable=False)]))\n"
        "for i in range(1234):\n"
        "    rec.record(i)\n"
        "os._exit(3)  # dies without close: the rows are in the spool only\n"
    )
    assert subprocess.run([PYTHON, "-c", script, str(folder)], timeout=60).returncode == 3
    assert not (folder / "telemetry.parquet").exists()
    proc = cli("recover", str(folder), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [(r["path"], r["telemetry_rows"]) for r in report["recovered"]] == [(str(folder), 1234)]
    import pyarrow.parquet as pq

    assert pq.read_table(folder / "telemetry.parquet")["i"].to_pylist() == list(range(1234))
    proc = cli("recover", str(tmp_path / "no_such_thing"))
    assert proc.returncode != 0 and "neither an output file" in proc.stderr and "nor a run folder" in proc.stderr


def test_compact(root: Path) -> None:
    proc = cli("compact", "devflow", "--format", "json", root=root)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["telemetry"]["parts_merged"] == 2 and rep["telemetry"]["rows"] == 1000
    assert (root / "flows" / "devflow" / "dev_telemetry.parquet").exists()
    table = cli("compact", "devflow", root=root)
    assert table.returncode == 0 and "telemetry" in table.stdout


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["show", "nope"], ["no run 'nope'"]),
        (["tail", "nope"], ["no run 'nope'"]),
        (["compare", "nope"], ["no run 'nope'"]),
        (["plot", "nope", "-o", "x.png"], ["no run 'nope'"]),
        (["query", "SELEC 1"], ["Parser Error"]),
        (["query", "SELECT nope FROM runs"], ["nope"]),
        (["query", "SELECT * FROM nope_table"], ["nope_table"]),
        (["compare", "--flow", "quadratic_gd", "--metric", "nope"], ["no telemetry column 'nope'"]),
        (["compact", "nope"], ["no flow 'nope'"]),
        (["runs", "--since", "yesterday-ish"], ["--since"]),
        (["query", "SELECT 1", "--param", "novalue"], ["name=value"]),
    ],
)
def test_errors_are_one_line(root: Path, args: list[str], needles: list[str]) -> None:
    assert_one_line_error(cli(*args, root=root), *needles)


def test_unknown_plot_column(root: Path, tmp_path: Path) -> None:
    run_id = demo_runs(root)[0]["run_id"]
    proc = cli("plot", run_id, "--metric", "nope", "-o", str(tmp_path / "x.png"), root=root)
    assert_one_line_error(proc, "no telemetry column 'nope'")


def test_no_catalog(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()  # a root that exists (a missing one is its own error: test_cli_edges.py)
    assert_one_line_error(cli("query", "SELECT 1", root=tmp_path / "empty"), "no catalog", "consolidate")


def test_usage_error_exit_2() -> None:
    proc = cli("runs", "--format", "xml")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_locked_catalog(root: Path) -> None:
    import duckdb

    con = duckdb.connect(str(root / "duckdb.db"))  # a read-write holder in another process
    try:
        proc = cli("consolidate", "--timeout", "0.5", root=root)
    finally:
        con.close()
    assert_one_line_error(proc, "locked")


def _run_without(module: str, args: list[str]) -> subprocess.CompletedProcess:
    code = (
        f"import sys; sys.modules[{module!r}] = None; from flightlog.cli import main; raise SystemExit(main({args!r}))"
    )
    env = dict(os.environ)
    env.pop("FLIGHTLOG_PLAIN", None)
    return subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_missing_matplotlib_names_the_extra(root: Path, tmp_path: Path) -> None:
    run_id = demo_runs(root)[0]["run_id"]
    proc = _run_without("matplotlib", ["plot", run_id, "-o", str(tmp_path / "x.png"), "--root", str(root)])
    assert_one_line_error(proc, "flightlog[plot]")
    assert not (tmp_path / "x.png").exists()


def test_without_rich_plain_table(root: Path) -> None:
    proc = _run_without("rich", ["runs", "--root", str(root)])
    assert proc.returncode == 0, proc.stderr
    header, rule = proc.stdout.splitlines()[:2]
    assert header.split()[:4] == ["run_id", "flow_name", "mode", "status"]
    assert set(rule.replace(" ", "")) == {"-"}


def test_rich_table_in_process(root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.delenv("FLIGHTLOG_PLAIN", raising=False)
    assert main(["runs", "--root", str(root), "--flow", "quadratic_gd"]) == 0
    out = capsys.readouterr().out
    assert "─" in out and out.count("quadratic_gd") == 4


def test_in_process_error_returns_1(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "nope", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flightlog: error: no run 'nope'") and len(err.strip().splitlines()) == 1


def test_demo_in_process_without_plot(tmp_path: Path) -> None:
    from flightlog._demo import run_demo

    lines: list[str] = []
    t0 = time.perf_counter()
    res = run_demo(tmp_path / "r", quick=True, plot=False, out=lines.append, max_iter=400)
    assert time.perf_counter() - t0 < 60
    assert len(res.runs) == 6 and res.plot_path is None
    assert [r.status for r in res.runs].count("failed") == 1
    assert res.rows > 1000 and any("comparison" in line for line in lines)

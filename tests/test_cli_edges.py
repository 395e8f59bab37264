"""Edge cases of the ``flightlog`` command line (issue 19): FIFOs in run folders, bad
manifests, a mistyped --root, compare's --tol/--metric, query's wrapper. Every command
runs as a real subprocess in its own process group, bounded by a timeout that kills
the group (a hang fails the test instead of stalling the suite)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from flightlog import TelemetryManager

PYTHON = sys.executable


def cli(*args: str, root: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m flightlog.cli ARGS [--root ROOT]`` in a new session; on timeout the
    whole process group is killed and the test fails with what it printed."""
    argv = [PYTHON, "-m", "flightlog.cli", *args]
    if root is not None:
        argv += ["--root", str(root)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", FLIGHTLOG_PLAIN="1")
    env.pop("FLIGHTLOG_DEBUG", None)
    env.pop("FLIGHTLOG_ROOT", None)
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    ) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            pytest.fail(f"`flightlog {' '.join(args)}` hung for {timeout} s (killed); stderr: {err[-2000:]}")
        return subprocess.CompletedProcess(argv, p.returncode, out, err)


def make_runs(root: Path, *ids: str, n: int = 5) -> None:
    for rid in ids:
        with TelemetryManager(root, "gd", run_id=rid) as tm:
            for i in range(n):
                tm.log(iter=i, E=float(n - i), t_wall_ms=float(i))


def fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


# --------------------------------------------------------------------------- item 2: FIFOs


@pytest.mark.parametrize("name", ["telemetry.parquet", "manifest.toml"])
@pytest.mark.parametrize("command", ["consolidate", "runs", "show", "tail", "recover"])
def test_fifo_in_a_run_folder_never_hangs(tmp_path: Path, name: str, command: str) -> None:
    root = tmp_path / "root"
    make_runs(root, "a", "x")
    fifo(root / "fda_run_x" / name)
    target = "a" if command in ("show", "tail") else None
    args = [command] + ([target] if target else [])
    proc = cli(*args, root=root, timeout=30)
    assert "Traceback" not in proc.stderr
    if command == "consolidate":
        assert proc.returncode == 0, proc.stderr
        assert "fda_run_x/" + name in proc.stdout and "FIFO" in proc.stdout, proc.stdout
        # the lock is free again, and the good run is in the catalog
        q = cli("query", "select run_id, count(*) from telemetry group by run_id", "--format", "json", root=root)
        assert json.loads(q.stdout) == [{"run_id": "a", "count_star()": 5}]
    if command == "runs":
        assert proc.returncode == 0, proc.stderr
        assert "a" in proc.stdout
        if name == "manifest.toml":
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("x ")]
            assert line and "bad manifest" in line[0], proc.stdout
    if command in ("show", "tail"):
        assert proc.returncode == 0, proc.stderr
    if command == "recover" and name == "manifest.toml":
        assert "FIFO" in proc.stderr, proc.stderr


def test_fifo_is_refused_when_targeted(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_runs(root, "x")
    fifo(root / "fda_run_x" / "telemetry.parquet")
    for args in (["show", "x"], ["tail", "x"]):
        proc = cli(*args, root=root, timeout=30)
        assert "Traceback" not in proc.stderr
    fifo(root / "fda_run_x" / "manifest.toml")
    proc = cli("show", "x", root=root, timeout=30)
    assert_one_line_error(proc, "bad manifest", "FIFO")


# --------------------------------------------------------------------------- item 18: bad manifests


def test_runs_lists_bad_manifests(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_runs(root, "a", "b", "c")
    (root / "fda_run_b" / "manifest.toml").write_text('run_id = "b"\nstatus = "weird"\n')
    (root / "fda_run_c" / "manifest.toml").write_text("run_id = [\n")
    (root / "not_a_run").mkdir()  # no manifest at all: not a run, not listed
    proc = cli("runs", "--format", "json", root=root)
    assert proc.returncode == 0, proc.stderr
    got = {r["run_id"]: r["status"] for r in json.loads(proc.stdout)}
    assert got == {"a": "finished", "b": "bad manifest", "c": "bad manifest"}
    proc = cli("show", "c", root=root)
    assert_one_line_error(proc, "bad manifest", "not valid TOML")


# --------------------------------------------------------------------------- item 15: a missing root


@pytest.mark.parametrize(
    "args", [["consolidate"], ["runs"], ["query", "select 1"], ["recover"], ["show", "a"], ["compact", "gd"]]
)
def test_a_missing_root_is_an_error_and_is_not_created(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "typo"
    proc = cli(*args, root=missing)
    assert_one_line_error(proc, "no flightlog root", str(missing))
    assert not missing.exists()


def test_demo_still_creates_its_root(tmp_path: Path) -> None:
    root = tmp_path / "new"
    proc = cli("demo", "--quick", "--no-plot", root=root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (root / "duckdb.db").exists()


# --------------------------------------------------------------------------- items 10, 16, 17 through the CLI


@pytest.fixture(scope="module")
def consolidated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("edges") / "root"
    make_runs(root, "a", "b")
    proc = cli("consolidate", root=root)
    assert proc.returncode == 0, proc.stderr
    return root


def test_query_time_zone_aware(consolidated: Path) -> None:
    for sql in ("select now() as t", "select current_timestamp as t"):
        proc = cli("query", sql, "--format", "json", root=consolidated)
        assert proc.returncode == 0, proc.stderr
        (row,) = json.loads(proc.stdout)
        assert row["t"][:4].isdigit() and ("+" in row["t"][10:] or row["t"].endswith("Z")), row


@pytest.mark.parametrize("tol", ["nan", "inf", "-inf"])
def test_compare_rejects_non_finite_tol(consolidated: Path, tol: str) -> None:
    proc = cli("compare", "a", "b", f"--tol={tol}", root=consolidated)
    assert proc.returncode == 2 and "finite" in proc.stderr, proc.stderr


def test_compare_reserved_or_text_metric(consolidated: Path) -> None:
    proc = cli("compare", "a", "b", "--metric", "run_id", root=consolidated)
    assert_one_line_error(proc, "run_id", "reserved")
    assert "no telemetry column" not in proc.stderr
    proc = cli("compare", "a", "b", "--metric", "nope", root=consolidated)
    assert_one_line_error(proc, "no telemetry column 'nope'")


def test_query_is_run_as_is(consolidated: Path) -> None:
    proc = cli("query", "show tables", "--format", "json", root=consolidated)
    assert proc.returncode == 0, proc.stderr
    assert {r["name"] for r in json.loads(proc.stdout)} == {"runs", "telemetry", "events", "_ingested_files"}
    proc = cli("query", "select 1 as x, 2 as x", "--format", "csv", root=consolidated)
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == "x,x", proc.stdout + proc.stderr
    proc = cli("query", "select 1 as one; -- trailing comment", "--format", "csv", root=consolidated)
    assert proc.returncode == 0 and proc.stdout.split() == ["one", "1"], proc.stderr
    proc = cli(
        "query",
        "pivot (select run_id, status from runs) on status using count(*) order by run_id",
        "--format",
        "csv",
        root=consolidated,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["run_id,finished", "a,1", "b,1"]
    proc = cli("query", "delete from runs", root=consolidated)
    assert_one_line_error(proc, "read-only")

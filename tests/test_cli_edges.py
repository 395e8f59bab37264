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

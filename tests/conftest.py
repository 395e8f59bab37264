"""Shared fixtures. Tests run against the installed flightlog (the wheel in CI)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

# Real S3 (moto) and PostgreSQL servers for the scale-out tests (tests/test_lake.py).
from conftest_servers import postgres_cluster, postgres_dsn, s3_bucket, s3_server, seaweed_server  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    """``FLIGHTLOG_DUCKDB_LINE`` (set by ``make wheel-test``) names the DuckDB major version this
    run must test: a venv that resolved another one is an error, not a quiet pass."""
    line = os.environ.get("FLIGHTLOG_DUCKDB_LINE", "")
    if line:
        import duckdb

        if duckdb.__version__.split(".")[0] != line:
            raise pytest.UsageError(f"FLIGHTLOG_DUCKDB_LINE={line} but this venv has DuckDB {duckdb.__version__}")


@pytest.fixture(scope="session", autouse=True)
def _spool_dir_of_this_session(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Recorders on object stores spool to a local folder (by default under ~/.cache):
    this session's go to a folder of its own (child processes inherit it), so a spool
    a killed test child left can never be salvaged into another session's run."""
    os.environ["FLIGHTLOG_SPOOL_DIR"] = str(tmp_path_factory.mktemp("spool"))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A fresh run folder path (not yet created)."""
    return tmp_path / "run"


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for child Python processes: same interpreter and site-packages."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str, status: int | None = None) -> None:
    """A ``flightlog`` CLI run failed (exit ``status``; any non-zero one by default) with a
    one-line ``flightlog: error:`` message on stderr, no traceback, containing every needle
    (case-insensitive)."""
    failed = proc.returncode != 0 if status is None else proc.returncode == status
    assert failed, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("flightlog: error:"), err
    for n in needles:
        assert n.lower() in err.lower(), err


def run_together(
    commands: Sequence[Sequence[str]], *, env: dict[str, str] | None = None, timeout: float = 300
) -> list[str]:
    """Starts every command at once and waits for all of them; returns their stdouts, in
    order. A child that exits non-zero fails the test with the tail of its stderr.

    Every child is reaped and its pipes closed whatever happens: on a failure the others
    are killed, never left to be collected in a later test (where pytest reports their
    unclosed pipes as unraisable-exception warnings and fails that test instead)."""
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            )
            for cmd in commands
        ]
        stack.callback(lambda: [p.kill() for p in procs if p.poll() is None])  # runs before the waits
        outs = []
        for i, p in enumerate(procs):
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, f"child {i} of {len(procs)} exited {p.returncode}:\n{err[-3000:]}"
            outs.append(out)
        return outs


def follow_tail(
    argv: Sequence[str], env: dict[str, str], stop: Path, enough: Callable[[list[dict]], bool], timeout: float = 60
) -> tuple[int, list[dict], str]:
    """Runs ``flightlog tail`` (``argv``) and reads its JSON lines as they come; once
    ``enough(lines)`` holds it creates ``stop``, the file the writer under test watches
    before it closes its run. A writer on a timer instead could finish before a
    slow-starting ``tail`` saw it running (seen on a loaded machine). Returns the exit
    status, the lines and stderr."""
    import json

    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "FLIGHTLOG_PLAIN": "1", **env},
    )
    lines: list[dict] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(json.loads(line))
            if enough(lines):
                stop.touch()
        proc.wait(timeout=timeout)
    finally:
        stop.touch()
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    return proc.returncode, lines, err


def run_child_json(script: str, *args: str, timeout: float = 120.0) -> Any:
    """Runs ``python -c script args`` in its own process group and returns the JSON of
    its last stdout line. A hang is a failure: the group is killed at ``timeout``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"the scenario hung (killed after {timeout}s):\n{out}\n{err[-3000:]}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def strace_child(script: str, *, trace: str, paths: bool = False) -> str:
    """What ``python -c script`` asks the kernel (``strace -f -e trace=<trace>``; with
    ``paths``, file descriptors shown with their paths: ``-y``): strace's output. Skips
    the test where strace is missing or cannot trace (no ptrace)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    out = subprocess.run(
        ["strace", "-f", "-qq", *(["-y"] if paths else []), "-e", f"trace={trace}", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0 and "ptrace" in out.stderr:
        pytest.skip(f"strace cannot trace here: {out.stderr[-200:]}")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stderr

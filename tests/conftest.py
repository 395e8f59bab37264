"""Shared fixtures. Tests run against the installed flightlog (the wheel in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Real S3 (moto) and PostgreSQL servers for the scale-out tests (tests/test_lake.py).
from conftest_servers import postgres_cluster, postgres_dsn, s3_bucket, s3_server, seaweed_server  # noqa: F401


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

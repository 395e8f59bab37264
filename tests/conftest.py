"""Shared fixtures. Tests run against the installed flightlog (the wheel in CI)."""

from __future__ import annotations

import os
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

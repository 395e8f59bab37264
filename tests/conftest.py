"""Shared fixtures. Tests run against the installed flightlog (the wheel in CI)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


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

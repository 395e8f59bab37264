"""The hand-written stub `_core.pyi` matches the native module (mypy's stubtest)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_core_stub_matches_the_native_module() -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    result = subprocess.run([sys.executable, "-m", "mypy.stubtest", "flightlog._core"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

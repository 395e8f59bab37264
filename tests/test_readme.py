"""The README's 30-second example really runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has a Python example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr
    assert "GREEN" in result.stdout and "5100" in result.stdout


def test_readme_runs_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", blocks[1]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    assert ", 1000)]" in result.stdout
    assert list(tmp_path.glob("telematry_cfs/fda_run_*/telemetry.parquet"))


def test_readme_output_file_example_runs(tmp_path: Path) -> None:
    # The seed project's usage (a .parquet path, reads before close, overwrite, the manifest
    # writer), run twice: the README's examples are re-runnable.
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "telemetry.parquet" in b and "overwrite=True" in b)
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", example],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            # The example's tempfile.mkdtemp() folder lands in tmp_path, removed with it.
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n")[:3] == ["5", "5", "{'alpha': 0.1}"]

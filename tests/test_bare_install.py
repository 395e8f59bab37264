"""A bare ``pip install flightlog`` (no extras): every CLI command does its main job.

The optional extras (matplotlib, rich, pandas, pyarrow, polars) are made unimportable
in a child process by ``sys.modules[name] = None``: ``import name`` (and ``import
name.sub``) then raises ``ImportError`` exactly as for a package that is not installed.
Building a fresh venv from the wheel per test would take minutes; this keeps the
interpreter and site-packages of the tests and removes only the extras.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line_error

EXTRAS = ("matplotlib", "rich", "pandas", "pyarrow", "polars")

_BARE = f"""
import sys
for name in {EXTRAS!r}:
    sys.modules[name] = None  # `import name` raises ImportError, as when it is not installed
from flightlog.cli import main
code = main(sys.argv[1:])
leaked = sorted(m for m in {EXTRAS!r} if sys.modules.get(m) is not None)
assert not leaked, leaked
sys.exit(code)
"""


def bare_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BARE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("bare") / "root"
    return root, bare_cli("demo", "--quick", "--root", str(root))


def test_the_extras_really_are_missing_in_the_child() -> None:
    probe = _BARE.split("from flightlog")[0] + "import matplotlib\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr  # an ImportError subclass


def test_demo_without_extras_exits_0_and_says_the_plot_was_skipped(demo_root) -> None:
    root, proc = demo_root
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    skipped = [line for line in proc.stdout.splitlines() if "plot skipped" in line]
    assert skipped == ["convergence plot skipped: matplotlib is not installed (pip install 'flightlog[plot]')"]
    assert not (root / "convergence.png").exists()
    assert "convergence plot:" not in proc.stdout
    assert "demo done" in proc.stdout
    # the main job was done: runs recorded and consolidated into the catalog
    assert (root / "duckdb.db").is_file()
    assert len(list(root.glob("fda_run_*/telemetry.parquet"))) == 6


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_read_commands_without_extras_exit_0(demo_root, fmt: str) -> None:
    root, proc = demo_root
    assert proc.returncode == 0, proc.stderr
    ids = json.loads(bare_cli("--root", str(root), "--format", "json", "runs").stdout)
    run_ids = [r["run_id"] for r in ids]
    assert len(run_ids) == 6
    for args in (
        ["runs"],
        ["show", run_ids[0]],
        ["query", "SELECT run_id, min(E) AS e FROM telemetry GROUP BY run_id"],
        ["compare", run_ids[0], run_ids[1], "--metric", "E"],
        ["compare", "--flow", "quadratic_gd", "--group-by", "params.method", "--metric", "E"],
        ["consolidate"],
        ["tail", run_ids[0]],
        ["recover"],
    ):
        got = bare_cli("--root", str(root), "--format", fmt, *args)
        assert got.returncode == 0, (args, got.stderr)
        assert got.stdout.strip(), args
        assert "Traceback" not in got.stderr


def test_plot_without_matplotlib_is_a_one_line_hint(demo_root, tmp_path: Path) -> None:
    # `plot`'s main job is the figure: it fails, with the extra to install in one line.
    root, _proc = demo_root
    run_id = json.loads(bare_cli("--root", str(root), "--format", "json", "runs").stdout)[0]["run_id"]
    got = bare_cli("--root", str(root), "plot", run_id, "-o", str(tmp_path / "p.png"))
    assert_one_line_error(got, "matplotlib", "pip install 'flightlog[plot]'", status=1)
    assert not (tmp_path / "p.png").exists()

"""The CLI is a thin package that nothing imports (issue 13, point 3).

Analysis (``_analysis``) and rendering (``_render``) are library modules; the demo, the
plots, the report and the dashboard import those, never ``flightlog.cli``; run discovery
lives in ``runs/discover.py``. (``make lint`` checks every layer with import-linter; this
test says the same of the CLI from the suite.)"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "python" / "flightlog"
LIBRARY = ["_analysis", "_render", "_demo", "_plot", "_dashdata", "_report", "_ui"]
#: Modules of ``cli`` a library module may import: none.
ALLOWED_CLI_MODULES: set[str] = set()


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path`` (a module of the package)."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1])  # a module's package; an __init__'s is its folder too
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def _library_modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "cli" not in p.relative_to(PKG).parts[:1])


@pytest.mark.parametrize("path", _library_modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_outside_cli_imports_cli(path: Path) -> None:
    bad = [
        f"{path.name}:{line} imports {mod}"
        for line, mod in _imports(path)
        if (mod == "flightlog.cli" or mod.startswith("flightlog.cli."))
        and not any(mod == a or mod.startswith(a + ".") for a in ALLOWED_CLI_MODULES)
    ]
    assert not bad, bad


def test_library_modules_import_without_the_cli() -> None:
    """Importing the analysis, rendering and their consumers loads no part of ``flightlog.cli``."""
    code = (
        "import importlib, sys\n"
        f"for m in {LIBRARY!r}: importlib.import_module('flightlog.' + m)\n"
        "print(sorted(m for m in sys.modules if m == 'flightlog.cli' or m.startswith('flightlog.cli.')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_cli_modules_stay_small() -> None:
    """The CLI is thin: every module of the package, and the analysis and rendering
    modules, well under 800 lines."""
    paths = [*sorted((PKG / "cli").glob("*.py")), PKG / "_analysis.py", PKG / "_render.py"]
    sizes = {p.name: len(p.read_text().splitlines()) for p in paths}
    assert all(n < 800 for n in sizes.values()), sizes


def test_cli_and_library_imports_stay_light() -> None:
    """``import flightlog.cli`` (every ``flightlog`` command pays it) and the analysis and
    rendering modules import no DuckDB, pandas, pyarrow, matplotlib, numpy or rich."""
    code = (
        "import sys, flightlog.cli, flightlog.cli._parser, flightlog._analysis, flightlog._render\n"
        "print(sorted(m for m in ('duckdb', 'pandas', 'pyarrow', 'matplotlib', 'numpy', 'rich') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_entry_point_is_the_package_main() -> None:
    import tomllib

    project = tomllib.loads((PKG.parents[1] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["flightlog"] == "flightlog.cli:main"
    from flightlog.cli import main

    assert callable(main)

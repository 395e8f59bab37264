"""Packaging (issue 14, part 3): what the sdist carries, and that the installed
extension is the wheel flavour docs/PLATFORMS.md promises.

The builds themselves are checked by make targets (too slow for the suite):
``make wheel-check`` (auditwheel: manylinux_2_17) and ``make sdist-test`` (the sdist
installed with pip + Rust only into a fresh venv, then tests/smoke_install.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _maturin() -> str | None:
    """maturin beside this interpreter (the dev venv has it; the wheel venvs do not)."""
    here = Path(sys.executable).parent / "maturin"
    return str(here) if here.exists() else shutil.which("maturin")


@pytest.mark.skipif(_maturin() is None, reason="maturin not installed here (the sdist is built by make sdist-test)")
def test_sdist_carries_every_source_and_nothing_built(tmp_path: Path) -> None:
    """`pip install flightlog-*.tar.gz` builds from this file alone: every crate of the
    workspace, the lock file and the Python package must be in it, and nothing built
    (a stale .so or a venv) may ride along."""
    subprocess.run(
        [_maturin(), "sdist", "-o", str(tmp_path)], cwd=ROOT, check=True, capture_output=True, text=True, timeout=300
    )
    (sdist,) = tmp_path.glob("flightlog-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = {
        "pyproject.toml",
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "rust/flightlog-ring/Cargo.toml",
        "rust/flightlog-core/Cargo.toml",
        "rust/flightlog-core/src/claim.rs",
        "rust/flightlog-core/src/atomic_file.rs",
        "rust/flightlog-py/Cargo.toml",
        "rust/flightlog-py/src/fastcall.rs",
        "python/flightlog/__init__.py",
        "python/flightlog/_core.pyi",
        "python/flightlog/py.typed",
    }
    assert needed <= names, f"missing from the sdist: {sorted(needed - names)}"
    built = sorted(n for n in names if n.endswith((".so", ".pyd", ".whl")) or n.startswith((".venv", "target/")))
    assert not built, f"built files in the sdist: {built[:10]}"


def test_the_extension_is_built_for_this_interpreter_not_abi3() -> None:
    """The wheels are per CPython version (abi3 measured slower per row: docs/PLATFORMS.md).
    Under `make wheel-test` this is the installed wheel's extension; an abi3 build
    (`_core.abi3.so`) shipped by mistake fails here."""
    import importlib.machinery

    from flightlog import _core

    name = Path(_core.__file__).name
    assert name == "_core" + importlib.machinery.EXTENSION_SUFFIXES[0], (
        f"flightlog._core is {name}: not the extension of this interpreter "
        f"({importlib.machinery.EXTENSION_SUFFIXES[0]})"
    )

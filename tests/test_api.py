"""The public API: __all__ is complete and importable; `import flightlog` stays light."""

from __future__ import annotations

import subprocess
import sys

import flightlog


def test_all_names_resolve() -> None:
    for name in flightlog.__all__:
        assert getattr(flightlog, name) is not None, name
    assert sorted(flightlog.__all__) == sorted(set(flightlog.__all__))
    assert flightlog.__version__ == flightlog._core.__version__


def test_design_names_are_exported() -> None:
    expected = {
        "FlightRecorder", "TelemetryManager", "DuckDBManager", "write_manifest", "read_manifest", "recover",
        "compact", "Schema", "Field", "Enum", "schemas", "events", "FlightlogError", "SchemaError", "WriteError",
        "RecorderClosedError", "CatalogLockedError",
    }  # fmt: skip
    assert expected <= set(flightlog.__all__)


def test_exception_hierarchy() -> None:
    assert issubclass(flightlog.SchemaError, (flightlog.FlightlogError, ValueError))
    assert issubclass(flightlog.WriteError, (flightlog.FlightlogError, OSError))
    assert issubclass(flightlog.RecorderClosedError, RuntimeError)
    assert issubclass(flightlog.CatalogLockedError, TimeoutError)


def test_import_is_light() -> None:
    code = (
        "import sys, flightlog; heavy = {'duckdb', 'pandas', 'pyarrow', 'matplotlib', 'polars'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

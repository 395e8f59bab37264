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


def test_reports_and_managers_render_in_jupyter(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from flightlog import DuckDBManager, TelemetryManager, recover

    with TelemetryManager(tmp_path, "flow", params={"a": 1}) as tm:
        tm.log(i=1, x=0.5)
        assert "<table" in tm._repr_html_() and "flow" in tm._repr_html_()
    db = DuckDBManager(tmp_path)
    report = db.consolidate()
    assert "rows_added" in report._repr_html_()
    html = db.query("select run_id, count(*) as n from telemetry group by run_id")._repr_html_()
    assert "<th" in html and tm.run_id in html
    assert "recovered 0" in recover(tmp_path)._repr_html_()

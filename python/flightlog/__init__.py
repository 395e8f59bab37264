"""flightlog: a flight recorder for numeric code.

Record a row of telemetry on every iteration of an optimizer, solver or
simulation, cheaply enough to leave on; get crash-consistent Parquet in one
folder per run with a ``manifest.toml``; query every run with DuckDB.

>>> import flightlog, tempfile
>>> with flightlog.FlightRecorder(tempfile.mkdtemp()) as rec:
...     for i in range(3):
...         rec.log(iter=i, E=1.0 / (i + 1))
>>> rec.stats()["rows_written"]
3

``import flightlog`` stays light: DuckDB, pandas, pyarrow and matplotlib are
imported only by the functions that use them.
"""

from __future__ import annotations

from importlib import import_module

from . import events, schemas
from ._errors import (
    CatalogError,
    CatalogLockedError,
    CatalogUnavailableError,
    ConflictError,
    FlightlogError,
    ManifestError,
    RecorderClosedError,
    RowBudgetWarning,
    RunClaimedError,
    SchemaError,
    WriteError,
)
from ._recorder import FlightRecorder, Sampling
from ._schema import Enum, Field, Schema

# `typing` costs milliseconds at import; type checkers treat this name as typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .catalog import ConsolidationReport, DuckDBManager
    from .runs.compact import compact
    from .runs.manager import TelemetryManager, UnitsWarning
    from .runs.manifest import read_manifest, write_manifest
    from .runs.recover import recover

__version__: str = FlightRecorder._version()

__all__ = [
    "CatalogError",
    "CatalogLockedError",
    "CatalogUnavailableError",
    "ConflictError",
    "ConsolidationReport",
    "DuckDBManager",
    "Enum",
    "Field",
    "FlightRecorder",
    "FlightlogError",
    "ManifestError",
    "RecorderClosedError",
    "RowBudgetWarning",
    "RunClaimedError",
    "Sampling",
    "Schema",
    "SchemaError",
    "TelemetryManager",
    "UnitsWarning",
    "WriteError",
    "__version__",
    "compact",
    "events",
    "read_manifest",
    "recover",
    "schemas",
    "write_manifest",
]

# Loaded on first use so that `import flightlog` does not pay for them.
_LAZY = {
    "TelemetryManager": ".runs.manager",
    "DuckDBManager": ".catalog",
    "ConsolidationReport": ".catalog",
    "UnitsWarning": ".runs.manager",
    "read_manifest": ".runs.manifest",
    "write_manifest": ".runs.manifest",
    "recover": ".runs.recover",
    "compact": ".runs.compact",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flightlog' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

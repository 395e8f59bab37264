"""The DuckDB catalog: :class:`DuckDBManager` (the facade, :mod:`.manager`) consolidates every
run under a root into one catalog and answers SQL across runs. See :mod:`.manager` for the
tables and the guarantees."""

from __future__ import annotations

from .._errors import CatalogUnavailableError
from .manager import DuckDBManager
from .report import ConsolidationReport, Result
from .schema import FINAL_STATUSES, RESERVED_COLUMNS
from .sql import MetricError, check_metric, is_metric, is_numeric
from .version import VERSION_SUFFIX, CatalogUnreadable, read_catalog_version

__all__ = [
    "FINAL_STATUSES",
    "RESERVED_COLUMNS",
    "VERSION_SUFFIX",
    "CatalogUnavailableError",
    "CatalogUnreadable",
    "ConsolidationReport",
    "DuckDBManager",
    "MetricError",
    "Result",
    "check_metric",
    "is_metric",
    "is_numeric",
    "read_catalog_version",
]

"""What the manager's parts share: its attributes, and the error mapping of its public entry points."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._errors import CatalogError
from .._tree import HttpfsTree, LocalTree, ObjectPath
from .lake import _LakeSpec


class _ManagerBase:
    """The attributes of :class:`~flightlog.catalog.DuckDBManager` the parts of the manager use."""

    root: Path | ObjectPath
    files_only: bool
    read_only: bool
    timeout: float | None
    catalog: str | None
    db_path: Path | None
    data_path: str | None
    _lake: _LakeSpec | None
    _tree: LocalTree | HttpfsTree
    _closed: bool


def _catalog_io(method: Callable[..., Any]) -> Callable[..., Any]:
    """Public entry points: DuckDB's I/O errors (``duckdb.IOException``, including its
    ``HTTPException``: a wrong S3 secret, an unreadable ``duckdb.db``) become
    :class:`~flightlog.CatalogError`, message kept, the DuckDB error chained. Other
    DuckDB errors (bad SQL given to :meth:`DuckDBManager.query`) and flightlog's own
    and Python's documented errors pass through unchanged."""
    import functools

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        import duckdb

        try:
            return method(self, *args, **kwargs)
        except duckdb.IOException as e:
            text = str(e).strip()
            if self._lake is not None:
                text = self._lake.redact(text)
            raise CatalogError(f"{text} (catalog: {self._where}; root: {self.root})") from e

    return wrapper

"""What the manager's parts share: its attributes, and the error mapping of its public entry points."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from .._errors import CatalogError
from ..runs.views import HttpfsTree, LocalTree, ObjectPath

if TYPE_CHECKING:
    from .backend import CatalogBackend


class _ManagerBase:
    """The attributes of :class:`~flightlog.catalog.DuckDBManager` the parts of the manager use."""

    root: Path | ObjectPath
    files_only: bool
    read_only: bool
    timeout: float | None
    catalog: str | None
    db_path: Path | None
    data_path: str | None
    _backend: CatalogBackend
    _storage_overrides: dict[str, Any]
    _tree: LocalTree | HttpfsTree
    _closed: bool

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this DuckDBManager is closed")

    def _check_root(self) -> None:
        """A local root that does not exist is an error (a mistyped path), never created:
        only recorders create roots."""
        if isinstance(self.root, Path) and not self.root.is_dir():
            if self.root.exists():
                raise NotADirectoryError(errno.ENOTDIR, "the flightlog root is not a folder", str(self.root))
            raise FileNotFoundError(
                errno.ENOENT, "no flightlog root (a folder of runs) at this path; check the path", str(self.root)
            )


_M = TypeVar("_M", bound="_ManagerBase")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _catalog_io(method: Callable[Concatenate[_M, _P], _R]) -> Callable[Concatenate[_M, _P], _R]:
    """Public entry points: DuckDB's I/O errors (``duckdb.IOException``, including its
    ``HTTPException``: a wrong S3 secret, an unreadable ``duckdb.db``) become
    :class:`~flightlog.CatalogError`, message kept, the DuckDB error chained. Other
    DuckDB errors (bad SQL given to :meth:`DuckDBManager.query`) and flightlog's own
    and Python's documented errors pass through unchanged."""
    import functools

    def wrapper(self: _M, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        import duckdb

        try:
            return method(self, *args, **kwargs)
        except duckdb.IOException as e:
            text = str(e).strip()
            text = self._backend.redact(text)
            raise CatalogError(f"{text} (catalog: {self._backend.where}; root: {self.root})") from e

    functools.update_wrapper(wrapper, method)
    return wrapper

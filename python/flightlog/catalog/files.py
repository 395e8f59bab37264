"""No catalog (``files_only=True``): the manager reads the run files under the root and
nothing else; only :meth:`~flightlog.catalog.DuckDBManager.live` works."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from .backend import CatalogBackend
from .report import ConsolidationReport

if TYPE_CHECKING:
    from .ingest import _State


class FilesCatalog(CatalogBackend):
    """The run files, without a catalog."""

    @property
    def where(self) -> str:
        return "no catalog (files_only=True)"

    def describe(self, mode: str) -> str:
        return f"DuckDBManager({str(self.owner.root)!r}, files_only=True)"

    def exists(self) -> bool:
        return False

    def refuse_writes(self) -> None:
        raise PermissionError(
            f"DuckDBManager({str(self.owner.root)!r}, files_only=True) has no catalog to consolidate into; "
            "pass db_path= or catalog="
        )

    def consolidate(
        self,
        report: ConsolidationReport,
        load: Callable[[Any], _State],
        discover: Callable[[_State], Any],
        write: Callable[[Any, _State, Any], None],
    ) -> None:
        self.refuse_writes()

    def _no_catalog(self) -> NoReturn:
        raise FileNotFoundError(
            f"DuckDBManager({str(self.owner.root)!r}, files_only=True) has no catalog: it reads run files only "
            "(live()); query(), runs(), telemetry(), events() and compare() need db_path= or catalog="
        )

    def reader(self) -> Any:
        self._no_catalog()

    def open_rw(self, rebuild: ConsolidationReport | None = None) -> Any:
        self._no_catalog()

    def ensure_schema(self, con: Any) -> None:
        self._no_catalog()

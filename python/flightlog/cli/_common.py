"""What several commands share: the catalog options (``--catalog``/``--db`` and their
environment variables), opening the catalog, ``--since`` and the run ids of a command."""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .._analysis import CATALOG_ENV, DB_ENV, _needs_catalog, _parse_time, _require_catalog
from .._errors import RunNotFoundError
from ..runs.discover import _is_object_root, _root, find_run
from ._errors import CLIError

_SINCE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def _parse_since(text: str) -> _dt.datetime:
    m = _SINCE_RE.match(text)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=seconds)
    value = _parse_time(text)
    if value is None:
        raise CLIError(f"--since {text!r}: give a duration (30m, 2h, 3d, 1w) or an ISO date/time (2025-10-20)")
    return value


def _catalog_options(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(catalog, db_path)`` from ``--catalog``/``--db``, else ``$FLIGHTLOG_CATALOG``/``$FLIGHTLOG_DB``."""
    catalog, db_path = getattr(args, "catalog", None), getattr(args, "db", None)
    if catalog and db_path:
        raise CLIError(
            "--catalog and --db exclude each other: --db is the embedded DuckDB file, --catalog a DuckLake catalog"
        )
    if catalog or db_path:
        return catalog or None, db_path or None
    catalog, db_path = os.environ.get(CATALOG_ENV) or None, os.environ.get(DB_ENV) or None
    if catalog and db_path:
        raise CLIError(f"${CATALOG_ENV} and ${DB_ENV} are both set: unset one, or pass --catalog or --db")
    return catalog, db_path


def _open_catalog(args: argparse.Namespace, *, read_only: bool = True, required: bool = True) -> Any:
    """The :class:`~flightlog.DuckDBManager` of ``--root`` with ``--catalog``/``--db``.

    An ``s3://`` root without either has no catalog: with ``required`` that is an
    error; else the manager returned is a ``files_only`` one, which reads only the
    run files (``live``) and whose ``exists()`` is False."""
    from ..catalog import DuckDBManager

    root = _root(args.root, must_exist=False)  # the options are checked first, then the root
    catalog, db_path = _catalog_options(args)
    files_only = _is_object_root(root) and catalog is None and db_path is None
    if files_only and required:
        raise CLIError(_needs_catalog(str(root)))
    db: Any
    try:
        if files_only:
            db = DuckDBManager(root, timeout=args.timeout, files_only=True)
        else:
            db = DuckDBManager(root, db_path=db_path, read_only=read_only, timeout=args.timeout, catalog=catalog)
    except ValueError as e:  # say it in the CLI's words
        raise CLIError(str(e).replace("catalog=", "--catalog").replace("db_path=", "--db")) from None
    _root(args.root)  # a local root that does not exist is an error
    return db


def _ids_for(args: argparse.Namespace, db: Any) -> list[str]:
    known = _catalog_ids(db, args.runs)
    ids = [r if r in known else find_run(args.root, r).run_id for r in args.runs]
    for flow in getattr(args, "flow", None) or []:
        _require_catalog(db)
        found = [r[0] for r in db.runs(flow_name=flow).fetchall()]
        if not found:
            raise RunNotFoundError(f"no runs of flow {flow!r} in the catalog {db.location}")
        ids += found
    return list(dict.fromkeys(ids))


def _catalog_ids(db: Any, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` that the catalog has in ``runs`` (one query: each costs a catalog session)."""
    if not ids or not db.exists():
        return set()
    sql = "SELECT DISTINCT run_id FROM runs WHERE list_contains(?::VARCHAR[], run_id)"
    return {r[0] for r in db.query(sql, [list(ids)]).fetchall()}


class AddCommand(Protocol):
    """``add(name, func, help, uses_catalog=False, **kw)``: a subcommand running ``func``,
    with the common options (and the catalog ones when ``uses_catalog``); returns its parser."""

    def __call__(
        self,
        name: str,
        func: Callable[[argparse.Namespace], int],
        help: str,
        uses_catalog: bool = False,
        **kw: Any,
    ) -> argparse.ArgumentParser: ...


def _seconds(text: str) -> float:
    """argparse type of --timeout: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def _finite(text: str) -> float:
    """argparse type of --tol: a finite number (NaN would compare true with every value in DuckDB)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value

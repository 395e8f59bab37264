"""The ``flightlog`` argument parser: the common options; each command module adds its own
subcommands (``add_parsers``), in the order of ``flightlog --help``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .._analysis import _DEFAULT_TIMEOUT, CATALOG_ENV, DB_ENV
from .._render import FORMATS
from . import catalog, compare, demo, maintenance, runs, tail, ui
from ._common import _seconds


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(fmt: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--root",
        default=argparse.SUPPRESS,
        help="flightlog root: a folder or s3://bucket/prefix (default: $FLIGHTLOG_ROOT, else ./telematry_cfs)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=argparse.SUPPRESS,
        help=f"seconds to wait for a locked catalog (default {_DEFAULT_TIMEOUT:g})",
    )
    if fmt:
        p.add_argument("--format", choices=FORMATS, default=argparse.SUPPRESS, help="output format (default: table)")
    return p


def _catalog_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--catalog",
        metavar="CATALOG",
        help=f"a DuckLake catalog: ducklake:postgres:<dsn> or ducklake:<file> (default: ${CATALOG_ENV}, "
        "else the embedded DuckDB file)",
    )
    p.add_argument(
        "--db",
        metavar="PATH",
        help=f"the embedded DuckDB catalog file (default: ${DB_ENV}, else <root>/duckdb.db; "
        "an s3:// root has no default)",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``flightlog``."""
    from .. import __version__

    common = _common()
    catalog_opts = _catalog_args()
    parser = _Parser(
        prog="flightlog",
        description="flightlog: a flight recorder for numeric code. Runs, catalog, plots and the demo.",
        parents=[common],
        epilog="Start with `flightlog demo`. FLIGHTLOG_DEBUG=1 shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"flightlog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help: str, uses_catalog: bool = False, **kw: Any
    ) -> argparse.ArgumentParser:
        parents: list[Any] = [common, catalog_opts] if uses_catalog else [common]
        p = sub.add_parser(name, help=help, description=help, parents=parents, **kw)
        p.set_defaults(func=func)
        return p

    for module in (runs, catalog, compare, tail, maintenance, demo, ui):  # the order of `flightlog --help`
        module.add_parsers(add)
    return parser

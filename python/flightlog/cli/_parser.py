"""The ``flightlog`` argument parser: common options and one subcommand per command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .._analysis import _DEFAULT_TIMEOUT, CATALOG_ENV, DB_ENV
from .._render import FORMATS
from ._discovery import _finite, _seconds
from .catalog import cmd_consolidate, cmd_query
from .compare import _port, cmd_compare, cmd_plot, cmd_report, cmd_ui
from .demo import cmd_demo
from .maintenance import cmd_compact, cmd_recover
from .runs import cmd_runs, cmd_show
from .tail import cmd_tail


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
    catalog = _catalog_args()
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
        parents: list[Any] = [common, catalog] if uses_catalog else [common]
        p = sub.add_parser(name, help=help, description=help, parents=parents, **kw)
        p.set_defaults(func=func)
        return p

    p = add("runs", cmd_runs, "list runs (status by evidence: a dead running run shows as crashed)", True)
    p.add_argument("--flow", help="only this flow")
    p.add_argument(
        "--status",
        action="append",
        choices=["running", "finished", "failed", "crashed"],
        help="only runs with this status (repeatable)",
    )
    p.add_argument("--since", help="only runs started since: a duration (30m, 2h, 3d) or an ISO date/time")
    p.add_argument("--metric", default="E", help="metric for the final/min columns (default E)")
    p.add_argument("--limit", type=int, help="only the N most recent runs")

    p = add("show", cmd_show, "one run: manifest, per-column summary, events", True)
    p.add_argument("run", help="run id (or its folder name, or a unique prefix)")
    p.add_argument("--events", type=int, default=30, help="events to list in the table (default 30)")

    p = add("consolidate", cmd_consolidate, "ingest new immutable files into the catalog (duckdb.db)", True)
    p.add_argument("--prune", action="store_true", help="remove rows of runs whose folders are gone")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = add("query", cmd_query, "run SQL over the catalog (tables runs, telemetry, events, _ingested_files)", True)
    p.add_argument("sql", help="the SQL ('-' reads it from stdin)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind $NAME to VALUE (int, float, true/false/null, else text); repeatable",
    )

    p = add("compare", cmd_compare, "compare runs on a metric (per run, or per group with --group-by)", True)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids")
    p.add_argument("--flow", action="append", default=[], help="also every run of this flow (repeatable)")
    p.add_argument("--metric", "-m", default="E", help="telemetry column (default E); lower is better")
    p.add_argument("--tol", type=_finite, help="report iterations and seconds until metric <= TOL")
    p.add_argument("--group-by", help="params.NAME (or a runs column such as flow_name): aggregate per group")
    p.add_argument("--params", action="append", default=[], help="params to show as columns (a,b)")
    p.add_argument(
        "--include-failed",
        action="store_true",
        help="with --group-by: also pool runs that failed, crashed, are running or diverged (left out by default)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="also plot the runs")
    p.add_argument(
        "--logy", action=argparse.BooleanOptionalAction, default=None, help="log y axis for --plot (default: auto)"
    )

    p = add("plot", cmd_plot, "plot a metric of runs into a PNG (downsampled on read)", True)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids")
    p.add_argument("--flow", action="append", default=[], help="also every run of this flow (repeatable)")
    p.add_argument("--metric", "-m", default="E", help="telemetry column (default E)")
    p.add_argument("--x", default="iter", help="x column (default iter; e.g. t_wall_ms)")
    p.add_argument(
        "--logy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log y axis (default: log when the positive values span 3+ decades)",
    )
    p.add_argument("--logx", action="store_true", help="log x axis (symlog: iteration 0 stays visible)")
    p.add_argument("--params", action="append", help="params for the legend (default: those that differ)")
    p.add_argument("--title")
    p.add_argument("--width", type=int, default=1400, help="pixels (default 1400)")
    p.add_argument("--height", type=int, default=800, help="pixels (default 800)")
    p.add_argument("-o", "--output", default="flightlog-plot.png", help="PNG file (default flightlog-plot.png)")

    p = add("tail", cmd_tail, "follow a running run: a line per new durable segment; ends with the run")
    p.add_argument("run", help="run id")
    p.add_argument("--metric", "-m", default="E", help="metric to show (default E)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls (default 0.5)")
    p.add_argument("--for", dest="timeout_tail", type=float, help="stop following after this many seconds")

    p = add("recover", cmd_recover, "finalise crashed runs (merge segments, mark crashed)")
    p.add_argument(
        "file",
        nargs="?",
        metavar="FILE.parquet",
        help="finalise this output file of a bare FlightRecorder instead of the runs under --root",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        help="seconds without new files after which another host's running run counts as crashed",
    )

    p = add("compact", cmd_compact, "merge a flow's append-mode parts into one file")
    p.add_argument("flow", help="flow name")
    p.add_argument("--which", choices=["dev", "tuner"], default="dev", help="which parts (default dev)")

    p = add("demo", cmd_demo, "run the demo sweep, consolidate, compare and plot")
    p.add_argument("--quick", action="store_true", help="a small problem (seconds; for tests)")
    p.add_argument("--no-plot", action="store_true", help="skip the plot")
    p.add_argument("-o", "--output", help="plot file (default <root>/convergence.png)")
    p.add_argument("--n", type=int, help="problem dimension (default 100; quick 40)")
    p.add_argument("--kappa", type=float, help="condition number (default 5000; quick 200)")
    p.add_argument("--max-iter", type=int, help="iterations per run at most (default 120000; quick 5000)")

    p = add("report", cmd_report, "write runs' charts and comparison into one self-contained HTML file", True)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique prefixes)")
    p.add_argument("-o", "--output", help="HTML file (default <root>/report.html)")
    p.add_argument("--metric", "-m", action="append", help="only these metrics (repeatable, or a,b; default: all)")
    p.add_argument("--tol", type=_finite, help="compare: iterations and seconds until metric <= TOL")

    p = add("ui", cmd_ui, "serve a local web dashboard of the root (needs flightlog[ui]); prints its URL", True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=0, help="port (default 0: a free one, printed)")
    return parser

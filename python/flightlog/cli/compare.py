"""``flightlog compare``, ``plot``, ``report`` and ``ui``: the commands that compare and show runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._analysis import (
    _require_catalog,
    compare_rows,
    narrow_compare,
)
from .._render import _json_value, render
from .._render import emit as _emit
from ._common import AddCommand, _finite, _ids_for, _open_catalog
from ._errors import CLIError


def cmd_compare(args: argparse.Namespace) -> int:
    db = _open_catalog(args)
    _require_catalog(db)
    ids = _ids_for(args, db)
    params = [p for chunk in args.params for p in chunk.split(",") if p]
    cols, rows = compare_rows(
        db, ids, args.metric, tol=args.tol, params=params, group_by=args.group_by, include_failed=args.include_failed
    )
    if args.format == "table" and args.group_by is None:
        cols, rows = narrow_compare(cols, rows)
    _emit(render(cols, rows, args.format))
    if args.group_by is not None and not args.include_failed:
        n = sum(r[cols.index("excluded")] for r in rows)
        if n:
            _emit(
                f"flightlog: {n} run(s) left out of the statistics (failed, crashed, running or diverged: "
                "the 'excluded' column); --include-failed pools them",
                sys.stderr,
            )
    if args.plot:
        from .._plot import plot_runs

        info = plot_runs(db, ids, args.metric, args.plot, logy=args.logy, params=params or None)
        _emit(f"plot: {info['path']}", sys.stderr if args.format != "table" else None)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .._plot import plot_runs

    db = _open_catalog(args, required=False)
    ids = _ids_for(args, db)
    if not ids:
        raise CLIError("plot needs run ids (or --flow)")
    params = [p for chunk in args.params for p in chunk.split(",") if p] if args.params else None
    info = plot_runs(
        db,
        ids,
        args.metric,
        args.output,
        x=args.x,
        logy=args.logy,
        logx=args.logx,
        params=params,
        title=args.title,
        width=args.width,
        height=args.height,
    )
    return _wrote(
        args,
        info,
        f"wrote {info['path']}: {len(ids)} run(s), {info['rows']} rows drawn as {info['points']} points "
        f"in {info['seconds']:.2f} s",
    )


def _wrote(args: argparse.Namespace, info: dict[str, Any], line: str) -> int:
    """What a command that writes a file prints: ``info`` as JSON with ``--format json``, else ``line``."""
    _emit(json.dumps(_json_value(info), indent=1) if args.format == "json" else line)
    return 0


def add_parsers(add: AddCommand) -> None:
    """Registers the subcommands of this module (``add`` is :func:`~flightlog.cli._parser.build_parser`'s)."""
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

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
from ._common import _catalog_options, _ids_for, _open_catalog
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


def cmd_report(args: argparse.Namespace) -> int:
    from .._report import write_report

    catalog, db_path = _catalog_options(args)
    metrics = [m for chunk in args.metric for m in chunk.split(",") if m] if args.metric else None
    info = write_report(
        args.root,
        args.runs,
        args.output,
        metrics=metrics,
        db_path=db_path,
        catalog=catalog,
        timeout=args.timeout,
        tol=args.tol,
    )
    return _wrote(
        args,
        info,
        f"wrote {info['path']}: {len(info['runs'])} run(s), {len(info['metrics'])} chart(s) per run, "
        f"{info['bytes'] / 1e6:.2f} MB, self-contained (open it in a browser)",
    )


def _wrote(args: argparse.Namespace, info: dict[str, Any], line: str) -> int:
    """What a command that writes a file prints: ``info`` as JSON with ``--format json``, else ``line``."""
    _emit(json.dumps(_json_value(info), indent=1) if args.format == "json" else line)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from .._ui import serve

    catalog, db_path = _catalog_options(args)
    return serve(args.root, db_path=db_path, catalog=catalog, host=args.host, port=args.port, timeout=args.timeout)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535 (0: any free port), got {text!r}")
    return value

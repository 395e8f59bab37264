"""``flightlog report`` and ``flightlog ui``: runs shown to a person (a self-contained HTML
file, a local web dashboard)."""

from __future__ import annotations

import argparse

from ._common import AddCommand, _catalog_options, _finite
from .compare import _wrote


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


def add_parsers(add: AddCommand) -> None:
    """Registers the subcommands of this module (``add`` is :func:`~flightlog.cli._parser.build_parser`'s)."""
    p = add("report", cmd_report, "write runs' charts and comparison into one self-contained HTML file", True)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique prefixes)")
    p.add_argument("-o", "--output", help="HTML file (default <root>/report.html)")
    p.add_argument("--metric", "-m", action="append", help="only these metrics (repeatable, or a,b; default: all)")
    p.add_argument("--tol", type=_finite, help="compare: iterations and seconds until metric <= TOL")
    p = add("ui", cmd_ui, "serve a local web dashboard of the root (needs flightlog[ui]); prints its URL", True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=0, help="port (default 0: a free one, printed)")

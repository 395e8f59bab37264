"""``flightlog demo``."""

from __future__ import annotations

import argparse

from ..runs.discover import _is_object_root, _root
from ._common import AddCommand
from ._errors import CLIError


def cmd_demo(args: argparse.Namespace) -> int:
    from .._demo import run_demo

    if _is_object_root(_root(args.root, must_exist=False)):
        raise CLIError("demo writes to a local root; give --root a folder")
    plot: bool | str = False if args.no_plot else (args.output or True)
    run_demo(
        args.root, quick=args.quick, plot=plot, fmt=args.format, n=args.n, kappa=args.kappa, max_iter=args.max_iter
    )
    return 0


def add_parsers(add: AddCommand) -> None:
    """Registers the subcommands of this module (``add`` is :func:`~flightlog.cli._parser.build_parser`'s)."""
    p = add("demo", cmd_demo, "run the demo sweep, consolidate, compare and plot")
    p.add_argument("--quick", action="store_true", help="a small problem (seconds; for tests)")
    p.add_argument("--no-plot", action="store_true", help="skip the plot")
    p.add_argument("-o", "--output", help="plot file (default <root>/convergence.png)")
    p.add_argument("--n", type=int, help="problem dimension (default 100; quick 40)")
    p.add_argument("--kappa", type=float, help="condition number (default 5000; quick 200)")
    p.add_argument("--max-iter", type=int, help="iterations per run at most (default 120000; quick 5000)")

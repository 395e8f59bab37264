"""``flightlog demo``."""

from __future__ import annotations

import argparse

from ._discovery import _is_object_root, _root
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

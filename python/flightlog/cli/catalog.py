"""``flightlog consolidate`` and ``flightlog query``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from .._analysis import (
    _require_catalog,
)
from .._render import _json_value, render
from .._render import emit as _emit
from ._common import AddCommand, _open_catalog
from ._errors import CLIError


def cmd_consolidate(args: argparse.Namespace) -> int:
    db = _open_catalog(args, read_only=False)
    progress, finish = _progress_bar("consolidating", enabled=args.format == "table" and not args.quiet)
    try:
        report = db.consolidate(prune=args.prune, progress=progress)
    finally:
        finish()
    if report.rebuilt:
        _emit(f"flightlog: {report.rebuilt}", sys.stderr)
    if args.format == "json":
        _emit(json.dumps(_json_value(dataclasses.asdict(report)), indent=1))
    elif args.format == "csv":
        d = dataclasses.asdict(report)
        d["files_skipped"] = len(d["files_skipped"])
        _emit(render(list(d), [list(d.values())], "csv"))
    else:
        _emit(f"consolidated {db.root} into {db.location}: {report}")
        if report.files_skipped:
            _emit(render(["skipped", "reason"], [list(s) for s in report.files_skipped], "table"))
    return 0


def _progress_bar(what: str, enabled: bool) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A ``progress(done, total)`` callback drawing on stderr when it is a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None, lambda: None
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    except ImportError:
        state = {"last": 0.0}

        def plain(done: int, total: int) -> None:
            now = time.monotonic()
            if now - state["last"] > 0.2 or done == total:
                state["last"] = now
                print(f"\r{what}: {done}/{total} files", end="", file=sys.stderr, flush=True)

        return plain, lambda: print(file=sys.stderr) if state["last"] else None
    bar = Progress(
        f"[bold]{what}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(what, total=total)
        bar.update(task, completed=done, total=total)

    def finish() -> None:
        if task is not None:
            bar.stop()

    return update, finish


def _parse_param(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CLIError(f"--param {text!r}: use name=value (referenced as $name in the SQL)")
    for conv in (int, float):
        try:
            number = conv(value)
        except ValueError:
            continue
        if isinstance(number, float) and math.isinf(number) and "inf" not in value.lower():  # overflow, as 1e400
            raise CLIError(f"--param {text!r}: {value} is out of range of a 64-bit float (at most about 1.8e308)")
        return name, number
    return name, {"true": True, "false": False, "null": None}.get(value, value)


def cmd_query(args: argparse.Namespace) -> int:
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    db = _open_catalog(args)
    _require_catalog(db)
    params = dict(_parse_param(p) for p in args.param) or None
    res = db.query(sql, params)
    _emit(render(res.columns, res.fetchall(), args.format))
    return 0


def add_parsers(add: AddCommand) -> None:
    """Registers the subcommands of this module (``add`` is :func:`~flightlog.cli._parser.build_parser`'s)."""
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

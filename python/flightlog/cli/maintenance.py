"""``flightlog recover`` and ``flightlog compact``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .._render import _json_value, render
from .._render import emit as _emit
from ..runs.discover import _is_object_root, _root
from ._common import AddCommand
from ._errors import CLIError


def cmd_recover(args: argparse.Namespace) -> int:
    from ..runs.recover import recover
    from ..runs.status import DEFAULT_STALE_AFTER

    if args.file is not None:
        from .._recorder import is_output_file
        from .._s3 import is_object_url

        if not (is_output_file(args.file) or is_object_url(args.file) or os.path.isdir(args.file)):
            raise CLIError(
                f"{args.file}: neither an output file (a path ending in .parquet), an s3:// URL nor a run folder; "
                "the runs under a root are found with --root"
            )
        root: Any = args.file
    else:
        root = _root(args.root)
    report = recover(root, stale_after=args.stale_after if args.stale_after is not None else DEFAULT_STALE_AFTER)
    cols = [
        "run_id",
        "path",
        "flow_name",
        "mode",
        "previous_status",
        "status",
        "telemetry_rows",
        "event_rows",
        "segments_merged",
        "temp_files_removed",
    ]
    rows = [[r.get(c) for c in cols] for r in report.recovered]
    if args.format == "json":
        _emit(json.dumps(_json_value(report.as_dict()), indent=1))
    elif args.format == "csv":
        _emit(render(cols, rows, "csv"))
    else:
        if rows:
            _emit(render(cols, rows, "table"))
        for e in report.errors:
            _emit(f"could not recover {e.get('path')}: {e.get('error')}", sys.stderr)
        _emit(f"{report.root}: {report}")
    return 1 if report.errors else 0


def cmd_compact(args: argparse.Namespace) -> int:
    from ..runs.compact import compact

    root = _root(args.root)
    if _is_object_root(root):
        raise CLIError(
            f"compact works on local roots only; on {root} the parts stay where they are "
            "(`flightlog consolidate --db FILE` or `--catalog` reads them in place)"
        )
    rep = compact(root, args.flow, which=args.which)
    cols = ["kind", "path", "parts_merged", "rows", "bytes", "leftovers_removed", "skipped"]
    rows = [
        [
            k,
            rep[k]["path"],
            rep[k]["parts_merged"],
            rep[k]["rows"],
            rep[k]["bytes"],
            rep[k]["leftovers_removed"],
            len(rep[k].get("skipped") or []),
        ]
        for k in ("telemetry", "events")
    ]
    if args.format == "json":
        _emit(json.dumps(_json_value(rep), indent=1))
    else:
        _emit(render(cols, rows, args.format))
        if args.format == "table":
            for k in ("telemetry", "events"):
                for s in rep[k].get("skipped") or []:
                    _emit(f"kept {s['path']}: {s['reason']}", sys.stderr)
    return 0


def add_parsers(add: AddCommand) -> None:
    """Registers the subcommands of this module (``add`` is :func:`~flightlog.cli._parser.build_parser`'s)."""
    p = add("recover", cmd_recover, "finalise crashed runs (merge segments, mark crashed)")
    p.add_argument(
        "file",
        nargs="?",
        metavar="PATH",
        help="finalise this output file (FILE.parquet) or this run folder of a FlightRecorder instead of the runs "
        "under --root",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        help="seconds without new files after which another host's running run counts as crashed",
    )
    p = add("compact", cmd_compact, "merge a flow's append-mode parts into one file")
    p.add_argument("flow", help="flow name")
    p.add_argument("--which", choices=["dev", "tuner"], default="dev", help="which parts (default dev)")

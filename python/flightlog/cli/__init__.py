"""The ``flightlog`` command line.

::

    flightlog runs [--flow F] [--status S] [--since 2h|2025-10-20]
    flightlog show RUN
    flightlog consolidate [--prune]
    flightlog query "SELECT ..." [--param name=value ...]
    flightlog compare RUN... --metric E [--tol 1e-8] [--group-by params.X] [--params a,b] [--plot FILE]
    flightlog plot RUN... --metric E [--logy] [--logx] -o FILE.png
    flightlog tail RUN
    flightlog recover
    flightlog compact FLOW [--which dev|tuner]
    flightlog demo [--quick]
    flightlog report RUN... [-o report.html] [--metric E ...]
    flightlog ui [--host 127.0.0.1] [--port 0]

Every command takes ``--root`` (else ``$FLIGHTLOG_ROOT``, else ``./telematry_cfs``)
and, where the output is a table, ``--format table|csv|json``: ``csv`` has a
header row; ``json`` is a list of objects with the columns as keys, in order
(non-finite floats are ``null``; times are ISO 8601 text). ``tail --format json``
prints one JSON object per line.

The commands that use the catalog (``runs``, ``show``, ``consolidate``, ``query``,
``compare``, ``plot``) also take ``--db PATH`` (the embedded DuckDB file, default
``$FLIGHTLOG_DB``, else ``<root>/duckdb.db``) or ``--catalog CATALOG`` (a DuckLake
catalog, ``ducklake:postgres:<dsn>`` or ``ducklake:<file>``, default
``$FLIGHTLOG_CATALOG``; see docs/SCALE_OUT.md). An explicit option beats the other
one's environment variable.

The root may be an object store, ``s3://bucket/prefix`` (settings from the ``AWS_*``
environment: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...; needs
``pip install 'flightlog[lake]'``). There ``consolidate``, ``query`` and
``compare`` need ``--db`` or ``--catalog``; ``runs``, ``show``, ``tail`` and
``plot`` read the manifests and files in the bucket (and the catalog when given);
``recover`` finalises crashed runs in the bucket; ``compact`` and ``demo`` work on
local roots only.

Errors exit with status 1 (2 for bad usage) and one line on stderr;
``FLIGHTLOG_DEBUG=1`` shows the traceback instead. Tables use ``rich`` when it
is installed (``pip install 'flightlog[cli]'``) and plain text otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from .._analysis import _DEFAULT_TIMEOUT
from .._render import render
from ..runs.discover import RunRef, find_run, scan_runs
from ._errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, CLIError, RunNotFoundError, error_line

__all__ = ["CLIError", "RunNotFoundError", "RunRef", "find_run", "main", "render", "scan_runs"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flightlog`` command; returns the exit status."""
    from ._parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("root", None), ("format", "table"), ("timeout", _DEFAULT_TIMEOUT)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    if os.environ.get("FLIGHTLOG_DEBUG"):
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("flightlog: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `flightlog query ... | head`
        with contextlib.suppress(OSError):  # avoid a second error when Python flushes stdout at exit
            sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as exc:  # the CLI's contract: one line, no traceback
        print(f"flightlog: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR

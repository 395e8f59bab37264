"""Short runs: how many 10-row runs `TelemetryManager` starts and closes per second on a
local disk, and how many fsyncs each costs.

    python benches/bench_runs.py [--runs 300] [--rows 10] [--root DIR] [--out FILE]

* runs/s: ``--runs`` runs of ``--rows`` rows each (``iter`` + 3 f64 columns), each
  opened, filled with one ``extend`` and closed (manifest, final Parquet files);
* fsyncs per run: the same loop in a child process under
  ``strace -f -c -e trace=fsync,fdatasync`` (skipped, with a message, when strace is
  missing), divided by the runs it made.

``--root`` picks the disk (default: a temporary folder, usually the system disk).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_runs(root: Path, runs: int, rows: int) -> float:
    """Starts and closes ``runs`` runs of ``rows`` rows below ``root``; returns seconds."""
    import numpy as np

    from flightlog import Field, Schema, TelemetryManager

    schema = Schema([Field("iter", "i64", nullable=False)] + [Field(f, "f64") for f in ("E", "g", "h")])
    cols = {"iter": np.arange(rows), "E": np.ones(rows), "g": np.zeros(rows), "h": np.full(rows, 0.5)}
    t0 = time.perf_counter()
    for k in range(runs):
        with TelemetryManager(root, "bench", run_id=f"r{k:06d}", schema=schema, max_rows=None) as tm:
            tm.extend(**cols)
    return time.perf_counter() - t0


def fsyncs_per_run(root: Path, runs: int, rows: int) -> str:
    """fsync + fdatasync calls per run, counted by strace over a child making ``runs`` runs."""
    strace = shutil.which("strace")
    if strace is None:
        return "not measured: strace is not installed (apt-get install strace)"
    out = root / "strace.txt"
    child = [
        sys.executable,
        __file__,
        "--child",
        "--runs",
        str(runs),
        "--rows",
        str(rows),
        "--root",
        str(root / "strace-runs"),
    ]
    # Import and interpreter start fsync nothing; the count is the runs'.
    proc = subprocess.run(
        [strace, "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out), *child],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        return f"not measured: strace exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
    calls = 0
    for line in out.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)\s*$", line)
        if m:
            calls += int(m.group(1))
    return f"{calls / runs:.2f} ({calls} calls over {runs} runs)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rows", type=int, default=10)
    ap.add_argument("--root", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="append the Markdown section to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        make_runs(args.root, args.runs, args.rows)
        return
    base = args.root if args.root is not None else Path(tempfile.mkdtemp(prefix="flightlog-bench-runs-"))
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=base))
    try:
        make_runs(work / "warmup", 5, args.rows)
        secs = make_runs(work / "timed", args.runs, args.rows)
        fsyncs = fsyncs_per_run(work, min(args.runs, 50), args.rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "",
        f"## Short runs ({args.rows} rows each, local disk)",
        "",
        f"- runs started and closed per second: {args.runs / secs:.0f} ({args.runs} runs in {secs:.2f} s)",
        f"- fsync + fdatasync per run (strace -f -c): {fsyncs}",
        f"- disk: {base} ({os.uname().sysname})",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()

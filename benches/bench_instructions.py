"""Instructions per row of record() and log() over the no-op native call, by callgrind.

Wall-clock ratios on a shared VM move by tens of percent; instruction counts do not.
Each call is run N and 2N times in a child under ``valgrind --tool=callgrind
--separate-threads=yes``; the recording thread's instruction count of the 2N run minus
that of the N run, divided by N, is the cost of one loop iteration (the flusher thread is
counted apart and left out). The same loop calling the no-op builtin (same calling
convention, ``FlightRecorder._native._noop``) is the floor. PYTHONHASHSEED is fixed so
that dict probing costs the same in every child. The children leave with ``os._exit``
before ``close()``, whose merge would be counted on the recording thread.

    python benches/bench_instructions.py            # N = 100,000
    python benches/bench_instructions.py --n 50000

Prints, per call, instructions per row and the excess over the no-op. Needs valgrind
(Debian's ``valgrind`` package); says so and exits 0 without it.

``--cache`` also simulates the caches (callgrind ``--cache-sim=yes``, the host's L1 geometry)
while the solver loop of ``benches/peers/overhead.py`` records every iteration (n = 188: about
10 µs an iteration on this VM class), and prints what one ``record()`` costs inside the extension
module: instructions and L1 misses (instruction fetch, data read, data write). Between two rows
the loop's numpy work evicts the recorder's code and data from L1, so each cache line the row
path touches is a miss: in a solver these cost more than the instructions do.

``--background`` also counts what the recorder's own threads spend per row when one thread
records with the default settings and closes: the flusher (draining the rings into the spool's
chunks) and the encoder threads with the close (Parquet encoding, compression, publishing),
again as the difference between an N-row and a 2N-row child, per thread.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import os, sys, tempfile, pathlib
from flightlog import Field, FlightRecorder, Schema
FIELDS = ["t_wall_ms", "E", "grad_norm", "eta_dd", "gamma", "alpha", "phi_residual", "invariant_drift_max", "step_len"]
schema = Schema([Field("iter", "i64", nullable=False)] + [Field(f, "f64", nullable=False) for f in FIELDS])
mode, n = sys.argv[1], int(sys.argv[2])
rec = FlightRecorder(pathlib.Path(tempfile.mkdtemp()) / "r", schema, flush_interval=1000,
                     ring_capacity=1 << 22, on_full="drop")
def positional(f, n):
    a, b, c, d, e, g, h, k, m = (0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5)
    for i in range(n):
        f(i, a, b, c, d, e, g, h, k, m)
def keywords(f, n):
    a, b, c, d, e, g, h, k, m = (0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5)
    for i in range(n):
        f(iter=i, t_wall_ms=a, E=b, grad_norm=c, eta_dd=d, gamma=e, alpha=g, phi_residual=h,
          invariant_drift_max=k, step_len=m)
if mode == "log":
    keywords(rec.log, n)
else:
    positional(rec._native._noop if mode == "noop" else rec.record, n)
os._exit(0)
"""


BACKGROUND_CHILD = r"""
import sys, tempfile, pathlib
from flightlog import Field, FlightRecorder, Schema
FIELDS = ["t_wall_ms", "E", "grad_norm", "eta_dd", "gamma", "alpha", "phi_residual", "invariant_drift_max", "step_len"]
schema = Schema([Field("iter", "i64", nullable=False)] + [Field(f, "f64", nullable=False) for f in FIELDS])
n = int(sys.argv[1])
rec = FlightRecorder(pathlib.Path(tempfile.mkdtemp()) / "r", schema)
def loop(record):
    a, b, c, d, e, g, h, k, m = (0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5)
    for i in range(n):
        record(i, a, b, c, d, e, g, h, k, m)
loop(rec.record)
rec.close()
"""


def part_instructions(out: Path, part: int) -> int:
    """Instructions of callgrind thread ``part`` (1 is the main thread) in ``out``."""
    text = (out.parent / f"{out.name}-{part:02d}").read_text(errors="replace")
    m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    if m is None:
        raise RuntimeError(f"no instruction total in {out}-{part:02d}")
    return int(m.group(1))


def run_callgrind(out: Path, child: str, *args: str) -> None:
    """Runs ``child`` (Python source) with ``args`` under callgrind, one output part per thread
    (``out-01`` the main thread), with a fixed hash seed."""
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            child,
            *args,
        ],
        check=True,
        capture_output=True,
        # The child's recorder folder (tempfile.mkdtemp) goes under the caller's temporary
        # folder, removed with it: the child leaves by os._exit, spool and all.
        env={**os.environ, "PYTHONHASHSEED": "0", "TMPDIR": str(out.parent)},
    )


SOLVER_CHILD = r"""
import os, sys, pathlib, tempfile
sys.path.insert(0, sys.argv[1])
import overhead
from peer_flightlog import schema
from flightlog import FlightRecorder
n, iters = int(sys.argv[2]), int(sys.argv[3])
a, b, xs, alpha = overhead._problem(n)
rec = FlightRecorder(pathlib.Path(tempfile.mkdtemp()) / "r", schema())
gd = overhead._make_gd(True)
os.getppid()
gd(a, b, xs, alpha, iters, rec.record)
os.getpgrp()
os._exit(0)
"""

CACHE_EVENTS = ("Ir", "I1mr", "D1mr", "D1mw")


def extension_costs(out: Path) -> dict[str, int]:
    """Ir and L1 misses of the main thread inside flightlog's extension module, between the
    loop's markers (callgrind's first dump), summed over its functions by callgrind_annotate."""
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--show-percs=no", f"{out}.1-01"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    events = re.search(r"^Events shown:\s+(.*)$", text, re.M)
    if events is None:
        raise RuntimeError(f"no event list in callgrind_annotate's output for {out}")
    names = events.group(1).split()
    totals = dict.fromkeys(names, 0)
    for line in text.splitlines():
        if "flightlog/_core" not in line:
            continue
        costs = line.split("???:")[0].split() if "???:" in line else line.split()[: len(names)]
        for name, cost in zip(names, costs, strict=False):
            totals[name] += 0 if cost == "." else int(cost.replace(",", ""))
    return {k: totals[k] for k in CACHE_EVENTS}


def solver_cache_per_row(iters: int, tmp: Path) -> dict[str, float]:
    """Per ``record()`` in the solver loop (n = 188), inside the extension: the 2N-iteration
    child minus the N-iteration one, divided by N (the first row's registration cancels)."""
    peers = str(Path(__file__).resolve().parent / "peers")
    counts = []
    for k in (iters, 2 * iters):
        out = tmp / f"cg.solver.{k}"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--cache-sim=yes",
                "--separate-threads=yes",
                "--zero-before=getppid",
                "--dump-before=getpgrp",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-c",
                SOLVER_CHILD,
                peers,
                "188",
                str(k),
            ],
            check=True,
            capture_output=True,
            env={
                **os.environ,
                "PYTHONHASHSEED": "0",
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
                "TMPDIR": str(tmp),
            },
        )
        counts.append(extension_costs(out))
    return {k: (counts[1][k] - counts[0][k]) / iters for k in CACHE_EVENTS}


def background_per_row(n: int, tmp: Path) -> tuple[float, float]:
    """Instructions per row of the flusher thread and of every later thread (the encoders and
    the close's), recording 10 fields with the default settings: the 2N-row child minus the
    N-row one, divided by N. Valgrind numbers threads in the order they start (a number freed
    by a thread that ended is reused): 2 is the flusher, the encoders come after."""
    totals = []
    for k in (n, 2 * n):
        out = tmp / f"cg.background.{k}"
        run_callgrind(out, BACKGROUND_CHILD, str(k))
        parts = sorted(int(p.name.rsplit("-", 1)[1]) for p in tmp.glob(f"{out.name}-*"))
        flusher = part_instructions(out, 2)
        later = sum(part_instructions(out, p) for p in parts if p > 2)
        totals.append((flusher, later))
    return (totals[1][0] - totals[0][0]) / n, (totals[1][1] - totals[0][1]) / n


def per_row(mode: str, n: int, tmp: Path) -> float:
    counts = []
    for k in (n, 2 * n):
        out = tmp / f"cg.{mode}.{k}"
        run_callgrind(out, CHILD, mode, str(k))
        counts.append(part_instructions(out, 1))
    return (counts[1] - counts[0]) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="rows of the shorter run (default 100,000)")
    ap.add_argument(
        "--background",
        action="store_true",
        help="also count the flusher's and the encoders' instructions per row (default settings, with close)",
    )
    ap.add_argument(
        "--cache",
        action="store_true",
        help="also simulate the caches for record() in the 10 µs solver loop of benches/peers/overhead.py",
    )
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind not found: apt-get install valgrind to count instructions")
        return 0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        noop = per_row("noop", args.n, tmp)
        print(f"no-op call:   {noop:7.0f} instructions per loop iteration (the floor)")
        for mode in ("record", "log"):
            x = per_row(mode, args.n, tmp)
            print(f"{mode + '()':<13} {x:7.0f} instructions per row, {x - noop:5.0f} over the no-op")
        if args.cache:
            c = solver_cache_per_row(5_000, tmp)
            print(
                f"record() in the solver loop, inside the extension: {c['Ir']:.0f} instructions, "
                f"L1 misses: {c['I1mr']:.1f} instruction fetch, {c['D1mr']:.1f} data read, "
                f"{c['D1mw']:.1f} data write"
            )
        if args.background:
            # Whole segments (262,144 rows by default) in both children.
            rows = max(args.n, 300_000)
            flusher, encoders = background_per_row(rows, tmp)
            print(f"flusher thread {flusher:7.0f} instructions per row (draining the rings into the spool's chunks)")
            print(f"encoders+close {encoders:7.0f} instructions per row (Parquet, compression, publishing)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Two figures that need no peer: the call floor (micro-benchmark) and the overhead on a real numeric loop.

Overhead: gradient descent on an ill-conditioned quadratic (the demo's flow:
``f(x) = 1/2 x^T A x - b^T x``, ``kappa = 1e4``, recursive gradient, the
telemetry a solver computes anyway) with and without ``record()`` of every
iteration. The problem size is calibrated so one iteration takes about 10 µs and
about 100 µs. Blocks with and without recording alternate (ABBA) in one process
so that drift on a shared machine cancels; the figure is the median over pairs
of ``with / without - 1``, with its interquartile range. A third arm, the same
loop calling the recorder's native no-op with the same arguments, is the
control: what the call costs before any logger does anything with it.

Each block is timed twice: by the wall clock, and by the CPU time of the thread
running the loop (``time.thread_time``). The second leaves out the time the loop
spent descheduled (other processes, flightlog's own flusher on a busy core), which
is most of the block-to-block noise of a shared VM; the difference between the two
is time the loop waited (a full ring) or was descheduled. Beside the interquartile
range of the pairs (the spread, which more rounds do not narrow), the median's own 95%
confidence interval (distribution-free, from order statistics) says how well the
median is known, which more rounds do narrow.

Instructions: the same loop at the same two sizes (n taken from the wall-clock
calibration, passed to the child, not recalibrated) run in children under
``valgrind --tool=callgrind --separate-threads=yes``, as ``benches/bench_instructions.py``
does: the recording thread's instruction count for N and 2N iterations, differenced and
divided by N, for three arms: without the call, with ``record()``, with the native
no-op. The count is taken between two markers around the loop (``os.getppid()``, where
callgrind zeroes its counters, and ``os.getpgrp()``, where it dumps them): start-up
(imports, the problem's QR, the recorder's start) varies by millions of instructions
from run to run and would not cancel exactly; the difference removes the markers and
the loop's first iterations.
PYTHONHASHSEED is fixed, BLAS runs on one thread (so the numeric work is on the
counted thread), and the children leave with ``os._exit`` before ``close()``. The
flusher thread is counted apart and left out. Instruction counts do not move with the
machine's load, so they tell 1% from 2% where the clock cannot (repeated counts of
the same loop still differ by a few hundred instructions per iteration, up to about
0.3% of the 100 µs loop); but they count instructions, not cycles: cache misses, branch mispredictions and the
flusher thread's competition for the core are not in them, and BLAS may pick a
different kernel under valgrind than on the bare CPU.

    python benches/peers/overhead.py                      # both sizes, 81 rounds each, then callgrind (N = 5,000)
    python benches/peers/overhead.py --no-instructions    # the clocks only
    python benches/peers/overhead.py --smoke              # checks the harness runs (tiny N, 10 µs only)

Without valgrind (Debian's ``valgrind`` package) the instruction arm says so and is
skipped; the exit status stays 0.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GD_TEMPLATE = """
def _gd(A, b, x_star, alpha, iters, record):
    perf = _perf_counter
    sqrt = _sqrt
    n = b.shape[0]
    x = _zeros(n)
    g = A @ x - b
    g0 = sqrt(float(g @ g))
    bn = sqrt(float(b @ b))
    eta_dd = -0.25
    gamma = alpha * 1e4
    drift = 0.0
    t0 = perf()
    for k in range(iters):
        Ag = A @ g
        x -= alpha * g
        g -= alpha * Ag
        gn = sqrt(float(g @ g))
        rel = gn / g0
        E = 0.5 * float((x - x_star) @ g)
        phase = "RED" if rel > 1e-2 else ("AMBER" if rel > 1e-6 else "GREEN")
        t_ms = (perf() - t0) * 1000.0
{record}
    return E
"""


def _make_gd(with_record: bool) -> Any:
    import numpy as np

    line = "        record(k, t_ms, E, gn, eta_dd, gamma, alpha, gn / bn, drift, alpha * gn, phase)"
    src = GD_TEMPLATE.format(record=line if with_record else "")
    ns: dict[str, Any] = {"_perf_counter": time.perf_counter, "_sqrt": math.sqrt, "_zeros": np.zeros}
    exec(compile(src, "<gd>", "exec"), ns)
    return ns["_gd"]


def _problem(n: int, kappa: float = 1e4, seed: int = 0) -> tuple[Any, Any, Any, float]:
    import numpy as np

    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * np.geomspace(1.0, kappa, n)) @ q.T
    a = 0.5 * (a + a.T)
    b = rng.standard_normal(n)
    return a, b, np.linalg.solve(a, b), 1.0 / kappa


def _per_iter(gd: Any, prob: tuple[Any, Any, Any, float], iters: int, record: Any = None) -> float:
    return _timed(gd, prob, iters, record)[0]


def _timed(gd: Any, prob: tuple[Any, Any, Any, float], iters: int, record: Any = None) -> tuple[float, float]:
    """Seconds per iteration of ``iters`` iterations: by the wall clock, and in CPU
    time of this thread."""
    a, b, xs, alpha = prob
    t0, c0 = time.perf_counter(), time.thread_time()
    gd(a, b, xs, alpha, iters, record)
    return (time.perf_counter() - t0) / iters, (time.thread_time() - c0) / iters


def _median_ci(n: int, z: float = 1.96) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the order statistics bounding a distribution-free ~95%
    confidence interval of the median of ``n`` values (normal approximation of the
    binomial: ranks n/2 -+ z sqrt(n)/2)."""
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    return lo, min(n - 1, n - 1 - lo)


def _slowdown(median_key: str, quartile_prefix: str, pairs: list[tuple[float, float]]) -> dict[str, float]:
    """Median (``median_key``), quartiles (``{quartile_prefix}q1_pct``, ``..q3_pct``) and the
    median's 95% confidence interval (``{quartile_prefix}ci_lo_pct``, ``..ci_hi_pct``) over
    (without, with) pairs of ``with / without - 1``, in %."""
    ratios = sorted(b / a - 1.0 for a, b in pairs)
    lo, hi = _median_ci(len(ratios))
    return {
        median_key: statistics.median(ratios) * 100,
        f"{quartile_prefix}q1_pct": ratios[len(ratios) // 4] * 100,
        f"{quartile_prefix}q3_pct": ratios[(3 * len(ratios)) // 4] * 100,
        f"{quartile_prefix}ci_lo_pct": ratios[lo] * 100,
        f"{quartile_prefix}ci_hi_pct": ratios[hi] * 100,
    }


def calibrate(target_s: float, plain: Any) -> tuple[int, float]:
    """The problem size whose iteration time is nearest ``target_s`` (sizes grow by 1.25x)."""
    best = (8, math.inf, math.inf)
    n = 8
    while n <= 4096:
        prob = _problem(n)
        iters = max(50, int(0.05 / max(target_s, 1e-6)))
        t = min(_per_iter(plain, prob, iters) for _ in range(3))
        if abs(math.log(t / target_s)) < best[2]:
            best = (n, t, abs(math.log(t / target_s)))
        if t > target_s:
            break
        n = max(n + 1, int(n * 1.25))
    return best[0], best[1]


def overhead(smoke: bool, rounds: int | None = None, sizes: list[int] | None = None) -> dict[str, Any]:
    """The clocked arms (see the module doc). ``sizes``: the problem sizes n for the 10 µs and
    100 µs targets instead of calibrating them (a busy machine calibrates too small); one size
    runs the 10 µs target only."""
    from peer_flightlog import schema

    from flightlog import FlightRecorder

    plain, with_rec = _make_gd(False), _make_gd(True)
    # Enough ABBA rounds that the median's confidence interval tells 1% from 2% on a
    # noisy VM (the interquartile range is the spread of the pairs: more rounds do not
    # narrow it; the instruction arm below is the precise figure).
    rounds = rounds or (3 if smoke else 81)
    block_s = 0.02 if smoke else 0.25
    out: dict[str, Any] = {"rounds": rounds, "block_s": block_s, "calibrated": not sizes, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="flightlog-overhead-") as d:
        targets = (10e-6, 100e-6)[: len(sizes)] if sizes else (10e-6, 100e-6)
        for i, target in enumerate(targets):
            if sizes:
                n = sizes[i]
                t_iter = min(_per_iter(plain, _problem(n), max(50, int(0.05 / target))) for _ in range(3))
            else:
                n, t_iter = calibrate(target, plain)
            prob = _problem(n)
            iters = max(100, int(block_s / t_iter))
            rec = FlightRecorder(Path(d) / f"n{n}", schema())
            record, noop = rec.record, rec._native._noop
            _per_iter(plain, prob, iters)  # warm-up
            _per_iter(with_rec, prob, iters, record)
            _per_iter(with_rec, prob, iters, noop)
            # Three arms, in palindromic order (A C B, then B C A) so that drift
            # cancels: A without the call, B recording, C the control: the same
            # call with the same arguments to the recorder's native no-op, which
            # is what any logger's call costs before it does anything.
            pairs, controls = [], []
            for r in range(rounds):
                if r % 2 == 0:
                    a = _timed(plain, prob, iters)
                    c = _timed(with_rec, prob, iters, noop)
                    b = _timed(with_rec, prob, iters, record)
                else:
                    b = _timed(with_rec, prob, iters, record)
                    c = _timed(with_rec, prob, iters, noop)
                    a = _timed(plain, prob, iters)
                pairs.append((a, b))
                controls.append((a, c))
            rec.close()
            stats = rec.stats()
            size: dict[str, Any] = {
                "target_us": target * 1e6,
                "n": n,
                "iters_per_block": iters,
                "rows": stats["rows_written"],
                "stalls": stats["producer_stalls"],
            }
            for clock, k in (("", 0), ("cpu_", 1)):
                size |= _slowdown(f"{clock}control_pct", f"{clock}control_", [(a[k], c[k]) for a, c in controls])
                size |= _slowdown(f"{clock}slowdown_pct", clock, [(a[k], b[k]) for a, b in pairs])
                size |= {
                    f"{clock}without_us": statistics.median(a[k] for a, _ in pairs) * 1e6,
                    f"{clock}with_us": statistics.median(b[k] for _, b in pairs) * 1e6,
                }
            out["sizes"].append(size)
    out["blas_threads"] = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    return out


# The instruction arm's child: the same problem builder and loop as the timed arm,
# at the size it is given, for ITERS iterations of one arm; leaves before close().
# os.getppid() and os.getpgrp() just before and after the loop are markers: callgrind
# zeroes its counters at libc's getppid and dumps them at getpgrp, so the count is the
# loop's alone (imports, the problem's QR and the recorder's start vary by a few million
# instructions from run to run: threads, directory listings, hashed names).
INSTR_CHILD = r"""
import json, os, sys
from pathlib import Path
peers_dir, out_dir, arm, n, iters = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, peers_dir)
import overhead
from peer_flightlog import schema
from flightlog import FlightRecorder
a, b, xs, alpha = overhead._problem(n)
rec = FlightRecorder(Path(out_dir) / f"{arm}-{n}-{iters}", schema())
call = {"without": None, "record": rec.record, "noop": rec._native._noop}[arm]
gd = overhead._make_gd(call is not None)
os.getppid()
gd(a, b, xs, alpha, iters, call)
os.getpgrp()
st = rec.stats()
sys.stdout.write(json.dumps({"rows": st["rows_offered"], "stalls": st["producer_stalls"]}) + "\n")
sys.stdout.flush()
os._exit(0)
"""

INSTR_ARMS = ("without", "record", "noop")
BLAS_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _thread_instructions(out: Path) -> int:
    """Instructions of the main thread between the markers: callgrind's first dump
    (``--dump-before=getpgrp``), main thread's part (``.1-01``)."""
    part = out.parent / f"{out.name}.1-01"
    if not part.exists():
        raise RuntimeError(f"no dump {part}: callgrind did not see the getpgrp marker")
    text = part.read_text(errors="replace")
    m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    if m is None:
        raise RuntimeError(f"no instruction total in {part}")
    return int(m.group(1))


def _count(arm: str, n: int, iters: int, tmp: Path) -> tuple[int, dict[str, Any]]:
    """The recording thread's instructions for ``iters`` iterations of ``arm`` at size ``n``
    (between the markers), and what the child printed."""
    out = tmp / f"cg.{arm}.{n}.{iters}"
    work = tmp / f"rec.{arm}.{n}.{iters}"
    work.mkdir()
    p = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            "--zero-before=getppid",
            "--dump-before=getpgrp",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            INSTR_CHILD,
            str(Path(__file__).resolve().parent),
            str(work),
            arm,
            str(n),
            str(iters),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **BLAS_ONE_THREAD, "PYTHONHASHSEED": "0"},
    )
    if p.returncode != 0:
        raise RuntimeError(f"callgrind child {arm} n={n} iters={iters} failed: {p.stderr[-2000:]}")
    return _thread_instructions(out), json.loads(p.stdout.strip().splitlines()[-1])


def instructions(sizes: list[tuple[float, int]], iters_10us: int, jobs: int = 2, log: Any = None) -> dict[str, Any]:
    """Instructions per iteration of the recording thread, by callgrind, for each
    (target seconds, problem size n) in ``sizes`` and each arm: N and 2N iterations,
    differenced (the markers' own cost and the loop's first iterations cancel). N is
    ``iters_10us`` at a 10 µs target, scaled down in proportion for larger targets (the
    same work per child). ``jobs`` children run at once (counts do not depend on it).
    Returns ``{"skipped": reason}`` without valgrind."""
    import concurrent.futures

    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind not found (apt-get install valgrind to count instructions)"}
    res: dict[str, Any] = {"tool": "callgrind --separate-threads=yes", "sizes": []}
    with (
        tempfile.TemporaryDirectory(prefix="flightlog-overhead-instr-") as d,
        concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool,
    ):
        tmp = Path(d)
        plan = [(t, n, max(10, round(iters_10us * 10e-6 / t))) for t, n in sizes]
        futs = {
            (n, arm, k): pool.submit(_count, arm, n, k, tmp)
            for _, n, iters in plan
            for arm in INSTR_ARMS
            for k in (iters, 2 * iters)
        }
        for target, n, iters in plan:
            size: dict[str, Any] = {"target_us": target * 1e6, "n": n, "iters": iters}
            for arm in INSTR_ARMS:
                (c1, _), (c2, info) = (futs[(n, arm, k)].result() for k in (iters, 2 * iters))
                size[arm] = (c2 - c1) / iters
                if arm == "record":  # rows offered to the recorder in the 2N run, and stalls on a full ring
                    size["rows"], size["stalls"] = info["rows"], info["stalls"]
                if log is not None:
                    log(f"  instructions {target * 1e6:.0f} us (n={n}) {arm}: {size[arm]:,.0f} per iteration")
            for arm in ("record", "noop"):
                size[f"{arm}_excess"] = size[arm] - size["without"]
                size[f"{arm}_pct"] = size[f"{arm}_excess"] / size["without"] * 100
            res["sizes"].append(size)
    return res


def floor(smoke: bool) -> dict[str, Any]:
    """Fixed-argument micro-benchmark of the call itself, net of an empty loop, interleaved rounds."""
    from peer_flightlog import schema

    from flightlog import FlightRecorder

    n = 20_000 if smoke else 1_000_000
    rounds = 3 if smoke else 15
    with tempfile.TemporaryDirectory(prefix="flightlog-floor-") as d:
        rec = FlightRecorder(Path(d) / "floor", schema())
        noop, record, log = rec._native._noop, rec.record, rec.log

        def py_noop(*args: Any) -> None:
            return None

        def time_positional(fn: Any) -> float:
            a, b, c, e, f, g, h, k, m = (0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5)
            p = "RED"
            t0 = time.perf_counter()
            for i in range(n):
                fn(i, a, b, c, e, f, g, h, k, m, p)
            return time.perf_counter() - t0

        def time_log() -> float:
            a, b, c, e, f, g, h, k, m = (0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5)
            p = "RED"
            t0 = time.perf_counter()
            for i in range(n):
                log(
                    iter=i,
                    t_wall_ms=a,
                    E=b,
                    grad_norm=c,
                    eta_dd=e,
                    gamma=f,
                    alpha=g,
                    phi_residual=h,
                    invariant_drift_max=k,
                    step_len=m,
                    phase=p,
                )
            return time.perf_counter() - t0

        def time_empty() -> float:
            t0 = time.perf_counter()
            for _i in range(n):
                pass
            return time.perf_counter() - t0

        cases = {
            "empty": time_empty,
            "py_noop": lambda: time_positional(py_noop),
            "noop": lambda: time_positional(noop),
            "record": lambda: time_positional(record),
            "log": time_log,
        }
        raw: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for k, fn in cases.items():
                raw[k].append(fn() / n * 1e9)
        rec.close()
    empty = statistics.median(raw["empty"])
    res: dict[str, Any] = {"n": n, "rounds": rounds, "empty_ns": empty}
    for k, xs in raw.items():
        if k != "empty":
            net = [x - empty for x in xs]
            res[k] = {"median": statistics.median(net), "min": min(net), "max": max(net)}
    return res


def print_clocks(ov: dict[str, Any]) -> None:
    print(f"{ov['rounds']} ABBA rounds of {ov['block_s']} s blocks; BLAS threads: {ov['blas_threads']}")
    for s in ov["sizes"]:
        print(
            f"{s['target_us']:.0f} us target (n={s['n']}): wall {s['without_us']:.2f} -> {s['with_us']:.2f} us/iter, "
            f"{s['slowdown_pct']:+.2f}% (q1..q3 {s['q1_pct']:+.2f}..{s['q3_pct']:+.2f}%, median's 95% CI "
            f"{s['ci_lo_pct']:+.2f}..{s['ci_hi_pct']:+.2f}%); thread CPU "
            f"{s['cpu_without_us']:.2f} -> {s['cpu_with_us']:.2f} us/iter, {s['cpu_slowdown_pct']:+.2f}% "
            f"(q1..q3 {s['cpu_q1_pct']:+.2f}..{s['cpu_q3_pct']:+.2f}%, median's 95% CI "
            f"{s['cpu_ci_lo_pct']:+.2f}..{s['cpu_ci_hi_pct']:+.2f}%); {s['rows']:,} rows, {s['stalls']} stalls"
        )
        print(
            f"  control (the same call to a no-op): wall {s['control_pct']:+.2f}% "
            f"(q1..q3 {s['control_q1_pct']:+.2f}..{s['control_q3_pct']:+.2f}%), thread CPU "
            f"{s['cpu_control_pct']:+.2f}% (q1..q3 {s['cpu_control_q1_pct']:+.2f}..{s['cpu_control_q3_pct']:+.2f}%)"
        )


def print_instructions(ins: dict[str, Any]) -> None:
    if "skipped" in ins:
        print(f"instructions: skipped: {ins['skipped']}")
        return
    print(
        f"instructions per iteration of the recording thread ({ins['tool']}, N and 2N iterations differenced; "
        "instructions, not cycles: cache misses and the flusher thread's competition for the core are not in them)"
    )
    for s in ins["sizes"]:
        print(
            f"{s['target_us']:.0f} us target (n={s['n']}, N={s['iters']:,}): without {s['without']:,.0f}, "
            f"record() {s['record']:,.0f} ({s['record_excess']:+,.0f}, {s['record_pct']:+.2f}%), "
            f"no-op {s['noop']:,.0f} ({s['noop_excess']:+,.0f}, {s['noop_pct']:+.2f}%); "
            f"{s['rows']:,} rows offered in the 2N run, {s['stalls']} stalls"
        )


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="flightlog's overhead on a numeric loop (see the module doc)")
    ap.add_argument("--smoke", action="store_true", help="tiny blocks and N: checks the harness runs")
    ap.add_argument("--rounds", type=int, help="ABBA rounds per size (default 81; smoke 3)")
    ap.add_argument(
        "--n",
        type=lambda v: [int(x) for x in v.split(",")],
        help="problem sizes for the 10 us and 100 us targets, e.g. 188,571, instead of calibrating "
        "(one size: the 10 us target only)",
    )
    ap.add_argument("--no-instructions", action="store_true", help="skip the callgrind arm (the clocks only)")
    ap.add_argument(
        "--instr-n",
        type=int,
        help="iterations N of the shorter callgrind child at 10 us per iteration, scaled down for 100 us "
        "(default 5,000; smoke 100)",
    )
    ap.add_argument("--instr-jobs", type=int, default=2, help="callgrind children at once (default 2)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args()
    if args.n is not None and not 1 <= len(args.n) <= 2:
        ap.error(f"--n takes one or two sizes (10 us, then 100 us), got {len(args.n)}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for k, v in BLAS_ONE_THREAD.items():
        os.environ.setdefault(k, v)
    ov = overhead(args.smoke, args.rounds, args.n)
    print_clocks(ov)
    if not args.no_instructions:
        n = args.instr_n or (100 if args.smoke else 5_000)
        # Smoke: the 10 µs size only (each callgrind child spends ~15 s starting Python and numpy).
        sizes = [(s["target_us"] * 1e-6, s["n"]) for s in ov["sizes"]][: 1 if args.smoke else None]
        ov["instructions"] = instructions(sizes, n, args.instr_jobs, log=lambda m: print(m, flush=True))
        print_instructions(ov["instructions"])
    if args.json:
        args.json.write_text(json.dumps(ov, indent=1))


if __name__ == "__main__":
    main()

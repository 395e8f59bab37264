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
is time the loop waited (a full ring) or was descheduled.

    python benches/peers/overhead.py            # both sizes, 41 pairs each
    python benches/peers/overhead.py --smoke    # checks the harness runs
"""

from __future__ import annotations

import math
import os
import statistics
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


def _slowdown(median_key: str, quartile_prefix: str, pairs: list[tuple[float, float]]) -> dict[str, float]:
    """Median (``median_key``) and quartiles (``{quartile_prefix}q1_pct``, ``..q3_pct``) over
    (without, with) pairs of ``with / without - 1``, in %."""
    ratios = sorted(b / a - 1.0 for a, b in pairs)
    return {
        median_key: statistics.median(ratios) * 100,
        f"{quartile_prefix}q1_pct": ratios[len(ratios) // 4] * 100,
        f"{quartile_prefix}q3_pct": ratios[(3 * len(ratios)) // 4] * 100,
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


def overhead(smoke: bool) -> dict[str, Any]:
    from peer_flightlog import schema

    from flightlog import FlightRecorder

    plain, with_rec = _make_gd(False), _make_gd(True)
    # Enough ABBA pairs that the interquartile range tells 1% from 2% on a noisy VM.
    rounds = 3 if smoke else 41
    block_s = 0.02 if smoke else 0.25
    out: dict[str, Any] = {"rounds": rounds, "block_s": block_s, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="flightlog-overhead-") as d:
        for target in (10e-6, 100e-6):
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


def main() -> None:
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="flightlog's overhead on a numeric loop (see the module doc)")
    ap.add_argument("--smoke", action="store_true", help="tiny blocks: checks the harness runs")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    ov = overhead(args.smoke)
    print(f"{ov['rounds']} ABBA pairs of {ov['block_s']} s blocks; BLAS threads: {ov['blas_threads']}")
    for s in ov["sizes"]:
        print(
            f"{s['target_us']:.0f} us target (n={s['n']}): wall {s['without_us']:.2f} -> {s['with_us']:.2f} us/iter, "
            f"{s['slowdown_pct']:+.2f}% (q1..q3 {s['q1_pct']:+.2f}..{s['q3_pct']:+.2f}%); thread CPU "
            f"{s['cpu_without_us']:.2f} -> {s['cpu_with_us']:.2f} us/iter, {s['cpu_slowdown_pct']:+.2f}% "
            f"(q1..q3 {s['cpu_q1_pct']:+.2f}..{s['cpu_q3_pct']:+.2f}%); {s['rows']:,} rows, {s['stalls']} stalls"
        )
        print(
            f"  control (the same call to a no-op): wall {s['control_pct']:+.2f}% "
            f"(q1..q3 {s['control_q1_pct']:+.2f}..{s['control_q3_pct']:+.2f}%), thread CPU "
            f"{s['cpu_control_pct']:+.2f}% (q1..q3 {s['cpu_control_q1_pct']:+.2f}..{s['cpu_control_q3_pct']:+.2f}%)"
        )


if __name__ == "__main__":
    main()

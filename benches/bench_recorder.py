"""Recorder benchmarks: every figure is a ratio against a baseline measured in the
same run, on the same machine (shared and noisy: read ratios, not absolutes).

    python benches/bench_recorder.py [--quick] [--out benches/RESULTS.md]

Baselines:
* the call floor: ``_noop(*values)``, a native builtin bound to the same recorder
  with ``record``'s calling convention (METH_FASTCALL: CPython's argument array,
  no tuple) that takes the same positional arguments and does nothing;
* what users write by hand: append tuples to a list, then ``pyarrow`` builds a
  table, ``pq.write_table`` and ``fsync``;
* ``pq.write_table`` of the same numpy arrays with the same compression (for ``extend``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
FIELDS = ["t_wall_ms", "E", "grad_norm", "eta_dd", "gamma", "alpha", "phi_residual", "invariant_drift_max", "step_len"]


def schema():  # type: ignore[no-untyped-def]
    from flightlog import Field, Schema

    return Schema([Field("iter", "i64", nullable=False)] + [Field(f, "f64", nullable=False) for f in FIELDS])


def median_of(fn, repeats: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    xs = [fn() for _ in range(repeats)]
    return statistics.median(xs), min(xs), max(xs)


def time_loop(call, n: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds for n calls of call(i, 10 values...) minus an empty loop."""
    vals = (0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5)
    a, b, c, d, e, f, g, h, k = vals
    t0 = time.perf_counter()
    for _ in range(n):
        pass
    empty = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n):
        call(i, a, b, c, d, e, f, g, h, k)
    return time.perf_counter() - t0 - empty


def paced_ns(call, n: int, burst: int, pause_s: float) -> float:  # type: ignore[no-untyped-def]
    """ns per call of about ``n`` calls as ``time_loop`` times them, in bursts of ``burst``
    calls with a pause of ``pause_s`` after each (left out of the time)."""
    bursts = max(1, n // burst)
    total = 0.0
    for _ in range(bursts):
        total += time_loop(call, burst)
        time.sleep(pause_s)
    return total / (bursts * burst) * 1e9


#: Calls per burst, and the pause after each, of the paced call-cost measure.
BURST = 10_000
BURST_PAUSE_S = 0.004


def bench_call_costs(tmp: Path, n: int, repeats: int) -> dict[str, float]:
    from flightlog import FlightRecorder

    rec = FlightRecorder(tmp / "calls", schema(), flush_interval=0.2)
    noop = rec._native._noop
    record = rec.record
    log = rec.log

    res = {}
    res["noop_ns"] = median_of(lambda: time_loop(noop, n) / n * 1e9, repeats)
    res["record_ns"] = median_of(lambda: time_loop(record, n) / n * 1e9, repeats)

    def time_log() -> float:
        # The same values as `time_loop` passes, in locals, by keyword.
        a, b, c, d, e, f, g, h, k = 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5
        t0 = time.perf_counter()
        for _ in range(n):
            pass
        empty = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n):
            log(
                iter=i,
                t_wall_ms=a,
                E=b,
                grad_norm=c,
                eta_dd=d,
                gamma=e,
                alpha=f,
                phi_residual=g,
                invariant_drift_max=h,
                step_len=k,
            )
        return (time.perf_counter() - t0 - empty) / n * 1e9

    res["log_ns"] = median_of(time_log, repeats)

    # The same calls in bursts of BURST, each followed by a short pause in which the
    # writer threads catch up: what a call costs a loop the recorder keeps up with (a
    # solver). Flat out (above), the caller also waits for the encoder, which on two
    # cores publishes fewer rows a second than one thread records, and shares the cores
    # with it.
    stalls_before = rec.stats()["producer_stalls"]
    res["noop_burst_ns"] = median_of(lambda: paced_ns(noop, n, BURST, BURST_PAUSE_S), repeats)
    res["record_burst_ns"] = median_of(lambda: paced_ns(record, n, BURST, BURST_PAUSE_S), repeats)
    res["stalls_during_bursts"] = rec.stats()["producer_stalls"] - stalls_before
    rec.close()
    res["stalls_during_calls"] = rec.stats()["producer_stalls"] - res["stalls_during_bursts"]
    return res


def fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Calls per burst, and the pause after each, of the first-lap measure: about 200k rows a
#: second, a fast solver's pace.
LAP_BURST = 256
LAP_PAUSE_S = 0.001
#: The ring's capacity in that measure: the default.
LAP_RING = 65_536


def bench_first_lap(tmp: Path, rows: int, rounds: int) -> dict[str, Any]:
    """``record()`` ns/call over a new recorder's first ``rows`` rows after the first (which
    registers the thread and maps its ring: timed apart, in µs), and over as many rows once its
    ring has gone round once, both in bursts of ``LAP_BURST`` calls with a pause after each. The
    first lap of a ring is the first write to each of its pages: on a disk filesystem a page
    fault each unless the flusher has faulted them in ahead."""
    from flightlog import FlightRecorder

    first, later, registration = [], [], []
    for r in range(rounds):
        rec = FlightRecorder(tmp / f"lap-{r}", schema(), ring_capacity=LAP_RING)
        # The thread's first row registers it (maps its ring): timed apart.
        t0 = time.perf_counter()
        rec.record(-1, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5)
        registration.append((time.perf_counter() - t0) * 1e6)
        first.append(paced_ns(rec.record, rows, LAP_BURST, LAP_PAUSE_S))
        time_loop(rec.record, LAP_RING)
        # The flusher drains what that lap left in the ring before the pace resumes.
        rec.flush()
        later.append(paced_ns(rec.record, rows, LAP_BURST, LAP_PAUSE_S))
        rec.close()
    return {
        "rows": rows,
        "registration_us": statistics.median(registration),
        "first_ns": (statistics.median(first), min(first), max(first)),
        "later_ns": (statistics.median(later), min(later), max(later)),
    }


def bench_end_to_end(tmp: Path, n: int, repeats: int) -> dict[str, tuple[float, float, float]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flightlog import FlightRecorder

    vals = (0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5)
    counter = iter(range(10**9))

    def flightlog_run() -> float:
        d = tmp / f"e2e-{next(counter)}"
        t0 = time.perf_counter()
        rec = FlightRecorder(d, schema())
        record = rec.record
        a, b, c, dd, e, f, g, h, k = vals
        for i in range(n):
            record(i, a, b, c, dd, e, f, g, h, k)
        rec.close()
        return time.perf_counter() - t0

    def baseline_run() -> float:
        d = tmp / f"base-{next(counter)}"
        d.mkdir()
        t0 = time.perf_counter()
        rows = []
        append = rows.append
        a, b, c, dd, e, f, g, h, k = vals
        for i in range(n):
            append((i, a, b, c, dd, e, f, g, h, k))
        cols = list(zip(*rows, strict=True))
        table = pa.table({name: pa.array(col) for name, col in zip(["iter", *FIELDS], cols, strict=True)})
        pq.write_table(table, d / "t.parquet", compression="zstd")
        fsync_path(d / "t.parquet")
        fsync_path(d)
        return time.perf_counter() - t0

    return {"flightlog_s": median_of(flightlog_run, repeats), "baseline_s": median_of(baseline_run, repeats)}


def bench_extend(tmp: Path, n: int, repeats: int) -> dict[str, tuple[float, float, float]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flightlog import FlightRecorder

    rng = np.random.default_rng(0)
    cols = {"iter": np.arange(n, dtype=np.int64)} | {f: rng.standard_normal(n) for f in FIELDS}
    counter = iter(range(10**9))

    def flightlog_run() -> float:
        d = tmp / f"ext-{next(counter)}"
        t0 = time.perf_counter()
        with FlightRecorder(d, schema()) as rec:
            rec.extend(**cols)
        return time.perf_counter() - t0

    def baseline_run() -> float:
        d = tmp / f"extbase-{next(counter)}"
        d.mkdir()
        t0 = time.perf_counter()
        pq.write_table(pa.table(cols), d / "t.parquet", compression="zstd")
        fsync_path(d / "t.parquet")
        fsync_path(d)
        return time.perf_counter() - t0

    return {"flightlog_s": median_of(flightlog_run, repeats), "pyarrow_s": median_of(baseline_run, repeats)}


def bench_sustained(tmp: Path, seconds: float, rate: float) -> dict[str, float]:
    """A producer paced at `rate` rows/s (blocks of 10k rows via extend)."""
    from flightlog import FlightRecorder

    block = 10_000
    cols = {"iter": np.arange(block, dtype=np.int64)} | {f: np.full(block, 0.5) for f in FIELDS}
    rec = FlightRecorder(tmp / "sustained", schema())
    t0 = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - t0) < seconds:
        if sent < rate * elapsed:
            rec.extend(**cols)
            sent += block
        else:
            time.sleep(0.0005)
    rec.flush()
    wall = time.perf_counter() - t0
    stats = rec.stats()
    rec.close()
    return {
        "offered_rows_per_s": sent / wall,
        "flusher_rows_per_s": stats["rows_written"] / max(stats["flush_secs"], 1e-9),
        "flusher_mb_per_s": stats["bytes_written"] / 1e6 / max(stats["flush_secs"], 1e-9),
        "flusher_busy_fraction": stats["flush_secs"] / wall,
        "producer_stalls": stats["producer_stalls"],
        "blocks": sent // block,
        "rows": stats["rows_written"],
    }


RSS_CHILD = textwrap.dedent(
    """
    import json, sys, threading, time, numpy as np
    from pathlib import Path
    mode, n, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    fields = {fields!r}
    import flightlog, pyarrow, pyarrow.parquet  # imported before the baseline RSS

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    # Sample the resident set every 5 ms: ru_maxrss would include import-time peaks.
    peak = [0.0]
    done = threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.005)
    # The producer's own input block (10 columns x 100,000 rows, 8 MB) exists before the
    # baseline, as in the extend() RSS measure: the growth is what the recorder holds.
    block = 100_000
    cols = {{f: np.full(block, 0.5) for f in fields}}
    iters = np.arange(block)
    base = rss_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if mode == "flightlog":
        rec = flightlog.FlightRecorder(out, flightlog.Schema(
            [flightlog.Field("iter", "i64", nullable=False)] + [flightlog.Field(f, "f64", nullable=False) for f in fields]))
        for _ in range(0, n, block):
            rec.extend(iter=iters, **cols)
            iters += block  # in place: the next block's iteration numbers
        rec.close()
    else:
        rows = []
        for i in range(n):
            rows.append((i, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5))
        out.mkdir()
        t = pyarrow.table({{k: list(c) for k, c in zip(["iter"] + fields, zip(*rows))}})
        pyarrow.parquet.write_table(t, out / "t.parquet")
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss_mb())
    print(json.dumps({{"peak_growth_mb": peak[0] - base}}))
    """
).format(fields=FIELDS)


def bench_rss(tmp: Path, n_flightlog: int, n_baseline: int) -> dict[str, float]:
    def run(mode: str, n: int) -> float:
        out = subprocess.run(
            [sys.executable, "-c", RSS_CHILD, mode, str(n), str(tmp / f"rss-{mode}")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return float(json.loads(out)["peak_growth_mb"])

    return {
        "flightlog_rows": n_flightlog,
        "flightlog_growth_mb": run("flightlog", n_flightlog),
        "baseline_rows": n_baseline,
        "baseline_growth_mb": run("baseline", n_baseline),
    }


EXTEND_RSS_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import flightlog
    n, out = int(sys.argv[1]), sys.argv[2]
    a, b = np.ones(n), np.arange(n, dtype=np.float64)  # touched: part of the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    schema = flightlog.Schema([flightlog.Field("a", "f64"), flightlog.Field("b", "f64")])
    with flightlog.FlightRecorder(out, schema) as rec:
        rec.extend(a=a, b=b)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (peak - base) / 1024, "input_mb": (a.nbytes + b.nbytes) / 2**20}))
    """
)


def bench_extend_rss(tmp: Path, n: int) -> dict[str, float]:
    """Peak RSS growth (ru_maxrss) of one extend() of 2 f64 columns x n rows, in a
    fresh process, against the size of the input arrays."""
    out = subprocess.run(
        [sys.executable, "-c", EXTEND_RSS_CHILD, str(n), str(tmp / "extend-rss")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {"rows": n, **json.loads(out)}


def bench_scaling(tmp: Path, rows: int) -> dict[str, float]:
    """log() ns per row against an enum's labels and per key against a schema's width
    (keys out of schema order). Both should be flat."""
    from flightlog import Enum, Field, FlightRecorder, Schema

    def best(call, n: int) -> float:  # type: ignore[no-untyped-def]
        xs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            xs.append(time.perf_counter() - t0)
        return min(xs) / n * 1e9

    out = {}
    for labels in (10, 100_000):
        names = [f"L{i}" for i in range(labels)]
        label = names[-1]
        schema = Schema([Field("iter", "i64"), Field("phase", Enum(names))])
        with FlightRecorder(tmp / f"enum{labels}", schema, ring_capacity=1024, on_full="drop") as rec:
            log = rec.log
            out[f"enum_{labels}_ns_row"] = best(lambda log=log, label=label: log(iter=1, phase=label), rows)
    for width in (10, 1000):
        names = [f"f{i}" for i in range(width)]
        kwargs = {n: 0.5 for n in reversed(names)}
        with FlightRecorder(
            tmp / f"w{width}", Schema([Field(n, "f64") for n in names]), ring_capacity=64, on_full="drop"
        ) as rec:
            log = rec.log
            out[f"fields_{width}_ns_key"] = (
                best(lambda log=log, kwargs=kwargs: log(**kwargs), max(10, rows // width)) / width
            )
    return out


def bench_threads(tmp: Path, rows_per_thread: int, threads: int = 8) -> dict[str, float]:
    """`threads` Python threads record into one recorder (each into its own ring
    in the spool): the aggregate rate, and a check of the file: every thread's
    rows exactly once and in its order. Also the spool's size while recording."""
    import threading

    import pyarrow.parquet as pq

    from flightlog import Field, FlightRecorder, Schema

    schema = Schema([Field("tid", "i64"), Field("seq", "i64")] + [Field(f"x{i}", "f64") for i in range(8)])
    path = tmp / "threads"
    rec = FlightRecorder(path, schema)
    record = rec.record
    start = threading.Barrier(threads + 1)
    spool_bytes = 0

    def producer(t: int) -> None:
        start.wait()
        for i in range(rows_per_thread):
            record(t, i, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5)

    ts = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    secs = time.perf_counter() - t0
    spool = path / ".flightlog.spool"
    spool_bytes = sum(f.stat().st_size for f in spool.rglob("*") if f.is_file())
    rec.close()
    table = pq.read_table(path / "telemetry.parquet", columns=["tid", "seq"])
    tid, seq = table["tid"].to_numpy(), table["seq"].to_numpy()
    exact = True
    for t in range(threads):
        mine = seq[tid == t]
        exact &= len(mine) == rows_per_thread and bool((mine == range(rows_per_thread)).all())
    return {
        "threads": threads,
        "rows": threads * rows_per_thread,
        "rows_per_s": threads * rows_per_thread / secs,
        "exact_in_order": float(exact),
        "spool_mb": spool_bytes / 2**20,
    }


def bench_import(repeats: int) -> dict[str, float]:
    # As an installed package is imported: from cached bytecode (pip compiles it
    # at install; PYTHONDONTWRITEBYTECODE would make every run compile again).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def once(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        return time.perf_counter() - t0

    once("import flightlog")  # writes the bytecode cache if it is missing
    bare = statistics.median(once("pass") for _ in range(repeats))
    imp = statistics.median(once("import flightlog") for _ in range(repeats))
    return {"import_ms": (imp - bare) * 1e3}


def wheel_size() -> float | None:
    wheels = sorted((HERE.parent / "dist").glob("flightlog-*.whl"), key=lambda p: p.stat().st_mtime)
    return wheels[-1].stat().st_size / 2**20 if wheels else None


def fmt3(t: tuple[float, float, float], unit: str, scale: float = 1.0) -> str:
    m, lo, hi = (x * scale for x in t)
    if unit == "s" and hi < 1.0:
        # Sub-second times in ms: "0.1 s (0.1..0.1)" hides a 20% difference.
        return fmt3((m, lo, hi), "ms", 1e3)
    return f"{m:.1f} {unit} ({lo:.1f}..{hi:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness runs (CI smoke)")
    ap.add_argument("--out", type=Path, default=None, help="write a Markdown report here")
    args = ap.parse_args()
    q = args.quick
    n_calls = 20_000 if q else 1_000_000
    repeats = 3 if q else 5
    n_e2e = 20_000 if q else 1_000_000
    n_ext = 100_000 if q else 10_000_000
    import flightlog

    lines = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        calls = bench_call_costs(tmp, n_calls, repeats)
        lap = bench_first_lap(tmp, 2_048 if q else 16_384, 3 if q else 5)
        e2e = bench_end_to_end(tmp, n_e2e, repeats)
        ext = bench_extend(tmp, n_ext, 3 if not q else 2)
        sus = bench_sustained(tmp, 1.0 if q else 5.0, 2_000_000)
        rss = bench_rss(tmp, 200_000 if q else 50_000_000, 100_000 if q else 1_000_000)
        xrss = bench_extend_rss(tmp, 200_000 if q else 20_000_000)
        scal = bench_scaling(tmp, 2_000 if q else 20_000)
        thr = bench_threads(tmp, 5_000 if q else 250_000)
    imp = bench_import(3 if q else 9)
    rec_ratio = calls["record_ns"][0] / calls["noop_ns"][0]
    burst_ratio = calls["record_burst_ns"][0] / calls["noop_burst_ns"][0]
    log_ratio = calls["log_ns"][0] / calls["record_ns"][0]
    lap_ratio = lap["first_ns"][0] / lap["later_ns"][0]
    e2e_ratio = e2e["baseline_s"][0] / e2e["flightlog_s"][0]
    ext_ratio = ext["pyarrow_s"][0] / ext["flightlog_s"][0]
    ws = wheel_size()
    lines += [
        "# flightlog recorder benchmarks",
        "",
        f"Generated by `make bench` (`python benches/bench_recorder.py`) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())};"
        f" {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, flightlog {flightlog.__version__}."
        + (" **Quick mode (tiny sizes): figures are not meaningful.**" if q else ""),
        "Medians of repeats (min..max); ratios are against baselines measured in the same run.",
        "",
        "| measure | flightlog | baseline | ratio | target |",
        "|---|---|---|---|---|",
        f"| `record()` 1 i64 + 9 f64, in-loop ns/call (net of empty loop) | {fmt3(calls['record_ns'], 'ns')} | no-op native call {fmt3(calls['noop_ns'], 'ns')} | {rec_ratio:.2f}x floor | ≤ 2x |",
        f"| `record()` as above, in bursts of {BURST:,} calls with a {BURST_PAUSE_S * 1e3:.0f} ms pause after each (the writer keeps up: a solver's loop) | {fmt3(calls['record_burst_ns'], 'ns')} | no-op native call, same bursts {fmt3(calls['noop_burst_ns'], 'ns')} | {burst_ratio:.2f}x floor | ≤ 2x |",
        f"| `record()` as above over a new recorder's first {lap['rows']:,} rows after the thread's first (its ring's first lap: the first write to each page; the first row, which maps the ring, took {lap['registration_us']:.0f} µs), in bursts of {LAP_BURST} calls with a {LAP_PAUSE_S * 1e3:.0f} ms pause after each | {fmt3(lap['first_ns'], 'ns')} | the same recorder once its ring has gone round, same bursts {fmt3(lap['later_ns'], 'ns')} | {lap_ratio:.2f}x | ≤ 2x |",
        f"| `log(**10 fields)` ns/call | {fmt3(calls['log_ns'], 'ns')} | `record()` | {log_ratio:.2f}x record | ≤ 1.3x |",
        f"| {n_e2e:,} rows via `record()` then `close()`, to a durable file | {fmt3(e2e['flightlog_s'], 's')} | list of tuples → pyarrow `write_table` + fsync {fmt3(e2e['baseline_s'], 's')} | {e2e_ratio:.2f}x faster | ≥ 10x |",
        f"| {thr['threads']} threads `record()` into one recorder, {thr['rows']:,} rows | {thr['rows_per_s'] / 1e6:.2f} M rows/s aggregate; per-thread counts exact and in order: {'yes' if thr['exact_in_order'] else '**NO**'} | | | exact, in order |",
        f"| spool on disk while {thr['threads']} threads record | {thr['spool_mb']:.0f} MiB | | | ring per thread + chunks of drained rows |",
        f"| `extend()` 10 columns x {n_ext:,} rows to a durable file (zstd) | {fmt3(ext['flightlog_s'], 's')} | pyarrow `write_table` of the same arrays + fsync {fmt3(ext['pyarrow_s'], 's')} | {ext_ratio:.2f}x | ≥ 1x |",
        f"| peak RSS growth recording {rss['flightlog_rows']:,} rows | {rss['flightlog_growth_mb']:.1f} MiB | list of tuples, {rss['baseline_rows']:,} rows: {rss['baseline_growth_mb']:.1f} MiB ({rss['baseline_growth_mb'] / rss['baseline_rows'] * rss['flightlog_rows']:.0f} MiB extrapolated to {rss['flightlog_rows']:,}) | | ≤ 64 MiB, flat |",
        f"| peak RSS growth of one `extend()` of 2 f64 columns x {xrss['rows']:,} rows (ru_maxrss) | {xrss['growth_mb']:.1f} MiB | the input arrays: {xrss['input_mb']:.0f} MiB | {xrss['growth_mb'] / xrss['input_mb']:.3f}x the input | flat (chunks) |",
        f"| `log()` with a 100,000-label enum, ns/row | {scal['enum_100000_ns_row']:.0f} ns | 10 labels: {scal['enum_10_ns_row']:.0f} ns | {scal['enum_100000_ns_row'] / scal['enum_10_ns_row']:.2f}x | flat |",
        f"| `log()` of 1,000 fields out of order, ns/key | {scal['fields_1000_ns_key']:.0f} ns | 10 fields: {scal['fields_10_ns_key']:.0f} ns | {scal['fields_1000_ns_key'] / scal['fields_10_ns_key']:.2f}x | flat |",
        f"| `import flightlog` | {imp['import_ms']:.1f} ms over a bare interpreter | | | ≤ 30 ms |",
        f"| wheel size | {ws:.2f} MiB |"
        if ws is not None
        else "| wheel size | (no wheel in dist/: run `make wheel`) |",
        "",
        "Sustained flusher (default settings, a producer paced at 2M rows/s in blocks of 10k via `extend`):",
        "",
        f"- offered {sus['offered_rows_per_s'] / 1e6:.2f} M rows/s for {sus['rows']:,} rows; producer stalls: {sus['producer_stalls']} (in {sus['blocks']} blocks);",
        f"- the flusher thread encodes and publishes {sus['flusher_rows_per_s'] / 1e6:.2f} M rows/s ({sus['flusher_mb_per_s']:.0f} MB/s of zstd Parquet) while busy; busy {sus['flusher_busy_fraction'] * 100:.0f}% of the wall time.",
        f"- producer stalls during the 1M-call loops above: {calls['stalls_during_calls']}; during the bursts: {calls['stalls_during_bursts']}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_section(args.out, text)


#: Where the part of RESULTS.md this bench does not write begins: the notes read with its
#: table, then the other benches' sections.
KEPT_FROM = "\nReading the recorder table"


def write_section(out: Path, text: str) -> None:
    """Writes the generated figures to ``out``, keeping what follows them there (from
    ``KEPT_FROM`` on): `make bench` replaces this bench's figures, not the whole file."""
    try:
        old = out.read_text()
    except FileNotFoundError:
        old = ""
    kept = old.find(KEPT_FROM)
    out.write_text(text.rstrip("\n") + "\n" + (old[kept:] if kept >= 0 else ""))


if __name__ == "__main__":
    main()

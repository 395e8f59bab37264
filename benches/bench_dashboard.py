"""Dashboard benchmark: time to the first chart of a 10M-row run, and the demo's report size.

    python benches/bench_dashboard.py [--rows 10000000] [--out benches/RESULTS.md]

- A run of ``--rows`` rows (iter, E with one spike, grad_norm, phase) recorded with ``extend``
  and consolidated. "First chart" is what the run page asks for before it can draw: the run
  (``/api/run/<id>``) then its first metric's series (``/api/run/<id>/series?metric=E``),
  timed over HTTP through Starlette's TestClient (the app of ``flightlog ui``, in process) with
  a fresh data layer each time (no cache), median of 5, next to DuckDB's own min/max per bucket
  over the same catalog on a fresh connection (the ratio is what a loaded machine leaves
  comparable). The answer holds a few thousand points, never the rows.
- The same for the run before it is consolidated (read from its durable files, as for a running
  run), once, next to DuckDB's own min/max per bucket over the run's Parquet file.
- ``flightlog demo`` (the default sweep, not ``--quick``) and the size of its ``report.html``.

``--out`` replaces this benchmark's section of the file (the others are left as they are).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SECTION = "## Dashboard: `flightlog ui` / `flightlog report`, `python benches/bench_dashboard.py`"


def make_run(root: Path, rows: int) -> str:
    from flightlog import Enum, Field, Schema, TelemetryManager

    schema = Schema(
        [
            Field("iter", "i64"),
            Field("E", "f64"),
            Field("grad_norm", "f64"),
            Field("phase", Enum(["RED", "AMBER", "GREEN"])),
        ]
    )
    it = np.arange(rows, dtype=np.int64)
    e = np.exp(-it / (rows / 30))
    e[rows // 3] = 1e3  # a spike that min/max per bucket keeps
    phase = np.where(it < rows // 4, "RED", np.where(it < rows // 2, "AMBER", "GREEN"))
    with TelemetryManager(root, "big", schema=schema, max_rows=rows + 1) as tm:
        chunk = 1_000_000
        for a in range(0, rows, chunk):
            tm.extend(
                iter=it[a : a + chunk],
                E=e[a : a + chunk],
                grad_norm=np.sqrt(e[a : a + chunk]),
                phase=phase[a : a + chunk],
            )
        tm.event("CERT_PASS", {"gap": 1e-9})
        return tm.run_id


def first_chart(root: Path, rid: str) -> tuple[float, int, int]:
    from starlette.testclient import TestClient

    from flightlog._dashdata import DashData
    from flightlog._ui import make_app

    data = DashData(root)
    try:
        with TestClient(make_app(data)) as c:
            t0 = time.perf_counter()
            run = c.get(f"/api/run/{rid}")
            s = c.get(
                f"/api/run/{rid}/series",
                params={"metric": run.json()["metrics"][0] if "E" not in run.json()["metrics"] else "E"},
            )
            dt = time.perf_counter() - t0
            assert s.status_code == 200, s.text
            body = s.json()
            return dt, body["points"], len(s.content)
    finally:
        data.close()


def duckdb_baseline(src: str, files: bool = False) -> float:
    """DuckDB's own min and max of E per pixel bucket of iter over the same data, on a fresh
    connection (as the dashboard opens the catalog anew for each read): the floor the
    dashboard's downsampling is compared with, in the same run and under the same load."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        t0 = time.perf_counter()
        if files:
            rel = f"read_parquet({src!r})"
        else:
            con.execute(f"ATTACH {src!r} AS c (READ_ONLY)")
            rel = "c.telemetry"
        con.execute(
            f"SELECT ((iter - 0) * 799 / 1e7::DOUBLE)::USMALLINT AS b, min(E), max(E) FROM {rel} GROUP BY b"
        ).fetchall()
        return time.perf_counter() - t0
    finally:
        con.close()


def write_section(out: Path, lines: list[str]) -> None:
    text = out.read_text() if out.exists() else ""
    start = text.find(SECTION)
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + text[end + 1 :] if end >= 0 else text[:start]
    out.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-demo", action="store_true", help="skip the demo report")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import duckdb

    from flightlog import DuckDBManager

    # DuckDB's Python client imports pandas at its first query with parameters (about 1 s on this
    # machine): a server pays that once, at its first request; not counted in any figure here.
    duckdb.connect().execute("SELECT ?", [1]).fetchall()
    with tempfile.TemporaryDirectory(prefix="bench-dash-") as tmp:
        root = Path(tmp) / "root"
        t0 = time.perf_counter()
        rid = make_run(root, args.rows)
        t_rec = time.perf_counter() - t0
        live_base = min(duckdb_baseline(str(f), files=True) for f in [*root.glob("*/telemetry.parquet")] * 3)
        live_dt, live_pts, _ = first_chart(root, rid)  # not consolidated: from its files
        t0 = time.perf_counter()
        DuckDBManager(root).consolidate()
        t_cons = time.perf_counter() - t0
        runs, bases = [], []
        for _ in range(args.repeat):  # interleaved: both see the same load
            bases.append(duckdb_baseline(str(root / "duckdb.db")))
            runs.append(first_chart(root, rid))
        times = [r[0] for r in runs]
        med = statistics.median(times)
        base = statistics.median(bases)
        points, size = runs[0][1], runs[0][2]
        print(f"recorded {args.rows:,} rows in {t_rec:.1f} s, consolidated in {t_cons:.1f} s", file=sys.stderr)
        demo_line = None
        if not args.no_demo:
            from flightlog._demo import run_demo

            droot = Path(tmp) / "demo"
            t0 = time.perf_counter()
            res = run_demo(droot, plot=True, out=None)
            t_demo = time.perf_counter() - t0
            rep = res.report_path
            assert rep is not None
            demo_line = (
                f"| `flightlog demo` report (6 runs, {res.rows:,} rows, every numeric field charted, "
                f"data embedded) | {rep.stat().st_size / 1e6:.2f} MB | demo with report in {t_demo:.1f} s | < 2 MB |"
            )
    load = os.getloadavg()
    lines = [
        SECTION,
        "",
        f"Machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) "
        "at the end of the run (other processes shared the cores).",
        "",
        "| measure | result | note | target |",
        "|---|---|---|---|",
        f"| first chart of a {args.rows / 1e6:g}M-row run (catalog): run + first series over HTTP, median of {args.repeat} "
        f"| {med * 1e3:.0f} ms (min {min(times) * 1e3:.0f}, max {max(times) * 1e3:.0f}) "
        f"| {points} points, {size / 1e3:.0f} kB of JSON (min/max per pixel bucket in DuckDB) | < 1 s |",
        f"| DuckDB alone: min(E), max(E) per bucket over the catalog, fresh connection, median of {args.repeat} "
        f"| {base * 1e3:.0f} ms | ratio first chart / this: {med / base:.1f}x | |",
        f"| the same run before consolidation (read from its durable files, as a running run), once "
        f"| {live_dt * 1e3:.0f} ms | {live_pts} points | |",
        f"| DuckDB alone: min(E), max(E) per bucket over the run's Parquet file, best of 3 "
        f"| {live_base * 1e3:.0f} ms | ratio: {live_dt / live_base:.1f}x | |",
    ]
    if demo_line:
        lines.append(demo_line)
    lines += [
        "",
        "Reading: the series is one aggregate over the run's `iter` and metric columns (min and max",
        "per pixel bucket above 2M rows, M4 below: a spike among 10M rows stays visible), the phase of",
        "each bucket that of its last row; a run not in the catalog is aggregated straight",
        "from its durable Parquet files (`read_parquet([...])`, no copy of its rows). The rest of the",
        "first chart is the run page's small reads, each opening the catalog anew. Figures move with",
        "the load of the shared machine; the ratios to DuckDB's own aggregate much less.",
    ]
    print("\n".join(lines))
    if args.out:
        write_section(args.out, lines)


if __name__ == "__main__":
    main()

"""Catalog benchmarks: DuckDBManager.consolidate against DuckDB's own bulk load, in
the same run, on the same files.

    python benches/bench_catalog.py [--runs 1000] [--rows 10000] [--out FILE]

* full consolidation of N runs x M rows (10 columns) vs ``CREATE TABLE AS SELECT *
  FROM read_parquet(glob, union_by_name=true)`` into a fresh database file;
* a second consolidate with nothing new;
* ``min(E)`` per run on the consolidated table vs straight over the Parquet files.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

FIELDS = ["E", "grad_norm", "eta_dd", "gamma", "alpha", "phi_residual", "invariant_drift_max", "step_len"]


UNITS = {"phi_residual": "1 (synthetic)", "invariant_drift_max": "1 (synthetic)"}


def make_runs(root: Path, runs: int, rows: int) -> float:
    from flightlog import Field, Schema, TelemetryManager

    schema = Schema(
        [Field("iter", "i64", nullable=False), Field("t_wall_ms", "f64", nullable=False)]
        + [Field(f, "f64", nullable=False) for f in FIELDS]
    )
    rng = np.random.default_rng(0)
    cols = {"iter": np.arange(rows), "t_wall_ms": np.arange(rows) * 0.01} | {f: rng.random(rows) for f in FIELDS}
    t0 = time.perf_counter()
    for k in range(runs):
        with TelemetryManager(root, "bench", run_id=f"r{k:05d}", schema=schema, max_rows=None, units=UNITS) as tm:
            tm.extend(**cols)
    return time.perf_counter() - t0


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def emit(lines: list[str], out: Path | None) -> None:
    """Prints a Markdown section (``lines``) and appends it to ``out`` (``--out``) when given."""
    text = "\n".join(lines)
    print(text)
    if out:
        with out.open("a") as f:
            f.write(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=None, help="append a Markdown section to this file")
    args = ap.parse_args()
    import duckdb

    from flightlog import DuckDBManager

    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "root"
        make_s = make_runs(root, args.runs, args.rows)
        glob = str(root / "fda_run_*" / "telemetry.parquet")

        def baseline() -> None:
            con = duckdb.connect(str(Path(d) / "baseline.db"))
            con.execute(f"CREATE TABLE telemetry AS SELECT * FROM read_parquet('{glob}', union_by_name = true)")
            con.close()

        base_s, _ = timed(baseline)
        db = DuckDBManager(root)
        full_s, report = timed(db.consolidate)
        again_s, again = timed(db.consolidate)
        n_telemetry = db.query("SELECT count(*) FROM telemetry").fetchall()[0][0]
        assert n_telemetry == args.runs * args.rows, report
        assert again.rows_added == 0 and again.files_added == 0, again
        table_s, r1 = timed(lambda: db.query("SELECT run_id, min(E) FROM telemetry GROUP BY run_id").fetchall())
        con = duckdb.connect()
        files_s, r2 = timed(
            lambda: con.execute(
                f"SELECT regexp_extract(filename, 'fda_run_[^/]+'), min(E) FROM read_parquet('{glob}', filename = true) GROUP BY 1"
            ).fetchall()
        )
        assert len(r1) == len(r2) == args.runs
    total = args.runs * args.rows
    lines = [
        "",
        f"## Catalog: {args.runs:,} runs x {args.rows:,} rows (10 columns), `python benches/bench_catalog.py`",
        "",
        "| measure | flightlog | baseline in the same run | ratio | target |",
        "|---|---|---|---|---|",
        f"| full `consolidate()` ({total:,} rows, {args.runs * 2:,} files + manifests) | {full_s:.2f} s | "
        f"DuckDB `CREATE TABLE AS read_parquet(glob, union_by_name)` into a file: {base_s:.2f} s | "
        f"{full_s / base_s:.2f}x | <= 1.5x |",
        f"| `consolidate()` again, nothing new | {again_s:.2f} s | | | <= 1 s |",
        f"| `min(E)` per run | on the table: {table_s * 1e3:.0f} ms | over the Parquet files: {files_s * 1e3:.0f} ms | "
        f"{files_s / table_s:.1f}x faster | |",
        f"| writing the runs with `TelemetryManager` (context) | {make_s:.1f} s, {args.runs / make_s:.0f} runs/s | | | |",
        "",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()

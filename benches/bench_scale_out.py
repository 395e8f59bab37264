"""Scale-out benchmarks: the same workloads on a local root and on an S3 root, and
consolidation into the local ``duckdb.db`` vs a DuckLake catalog on PostgreSQL.

    python benches/bench_scale_out.py [--runs 100] [--rows 10000] [--record-rows 1000000] [--out FILE]

The S3 server is moto's, in this process on loopback, and PostgreSQL is a
throwaway cluster from Debian's package (both as in the tests): the figures say
what flightlog's object-store and DuckLake paths cost on this machine, not what
a remote S3 or PostgreSQL adds (network round trips dominate there).

* runs started, filled (``extend``) and closed per second, local vs S3;
* ``record()`` in a loop: the producer's cost per row, local vs S3 (the flusher
  thread does the uploads, so the hot loop should not notice), and the time to
  durable after ``close()``;
* ``consolidate()`` of the same tree into ``duckdb.db`` vs DuckLake on PostgreSQL
  (data files local).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_catalog import emit, make_runs, timed  # noqa: E402


def record_loop(root: str | Path, rows: int) -> tuple[float, float]:
    """Seconds in the ``record()`` loop, and until durable (``close()`` returned)."""
    from flightlog import Field, Schema, TelemetryManager

    schema = Schema([Field("iter", "i64", nullable=False)] + [Field(f"x{i}", "f64", nullable=False) for i in range(8)])
    tm = TelemetryManager(root, "loop", schema=schema, max_rows=None)
    record = tm.record
    t0 = time.perf_counter()
    for i in range(rows):
        record(i, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    loop = time.perf_counter() - t0
    tm.close()
    return loop, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--record-rows", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=None, help="append a Markdown section to this file")
    args = ap.parse_args()

    from moto.server import ThreadedMotoServer

    from conftest_servers import ACCESS, Bucket, PostgresCluster, pg_bindir
    from flightlog import DuckDBManager

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for k, v in {**ACCESS, "aws_endpoint": endpoint}.items():
        os.environ[k.upper()] = v
    Bucket.create(endpoint, "bench")
    lines = [
        "",
        "## Scale-out: local root vs S3 (moto on loopback), `python benches/bench_scale_out.py`",
        "",
        "| measure | S3 root | local root, same run | ratio | note |",
        "|---|---|---|---|---|",
    ]
    try:
        with tempfile.TemporaryDirectory() as d:
            local = Path(d) / "root"
            local_s = make_runs(local, args.runs, args.rows)
            s3_s = make_runs("s3://bench/runs", args.runs, args.rows)  # type: ignore[arg-type]
            lines.append(
                f"| {args.runs} runs x {args.rows:,} rows (`TelemetryManager` + `extend`) | {s3_s:.2f} s, "
                f"{args.runs / s3_s:.0f} runs/s | {local_s:.2f} s, {args.runs / local_s:.0f} runs/s | "
                f"{s3_s / local_s:.2f}x | per run: 2 manifest puts, 2 final objects |"
            )
            loop_local, durable_local = record_loop(Path(d) / "loop", args.record_rows)
            loop_s3, durable_s3 = record_loop("s3://bench/loop", args.record_rows)
            lines.append(
                f"| `record()` x {args.record_rows:,} (1 i64 + 8 f64), in the loop | "
                f"{loop_s3 / args.record_rows * 1e9:.0f} ns/row | {loop_local / args.record_rows * 1e9:.0f} ns/row | "
                f"{loop_s3 / loop_local:.2f}x | uploads happen on the flusher thread |"
            )
            lines.append(
                f"| ... until durable (`close()` returned) | {durable_s3:.2f} s | {durable_local:.2f} s | "
                f"{durable_s3 / durable_local:.2f}x | |"
            )

            bindir = pg_bindir()
            if bindir is None:
                lines.append("| DuckLake consolidation | skipped: no PostgreSQL server binaries | | | |")
            else:
                with PostgresCluster.start(bindir, Path(d) / "pg") as pg:
                    dsn = pg.create_database("bench_lake")
                    file_db = DuckDBManager(local)
                    file_s, rep = timed(file_db.consolidate)
                    lake = DuckDBManager(local, catalog=f"ducklake:postgres:{dsn}", data_path=str(Path(d) / "lake"))
                    lake_s, lrep = timed(lake.consolidate)
                    # Telemetry rows plus two events (RUN_STARTED, RUN_FINISHED) per run.
                    assert rep.rows_added == lrep.rows_added == args.runs * (args.rows + 2), (rep, lrep)
                    again_s, again = timed(lake.consolidate)
                    assert again.rows_added == 0
                    sql = "SELECT run_id, min(E) FROM telemetry GROUP BY 1"
                    q_file, r1 = timed(lambda: file_db.query(sql).fetchall())
                    # A fresh manager's first query loads the DuckDB extensions; the
                    # manager keeps that session, so later queries skip it.
                    reader = DuckDBManager(local, catalog=f"ducklake:postgres:{dsn}", read_only=True)
                    q_first, r2 = timed(lambda: reader.query(sql).fetchall())
                    q_lake = statistics.median(timed(lambda: reader.query(sql).fetchall())[0] for _ in range(5))
                    q_file = statistics.median(
                        [q_file] + [timed(lambda: file_db.query(sql).fetchall())[0] for _ in range(4)]
                    )
                    assert sorted(r1) == sorted(r2)
                    lines.append(
                        f"| `consolidate()` of the local tree: DuckLake on PostgreSQL vs `duckdb.db` | {lake_s:.2f} s | "
                        f"{file_s:.2f} s | {lake_s / file_s:.2f}x | {args.runs * args.rows:,} rows, "
                        f"{args.runs * 2} files; again with nothing new: {again_s:.2f} s |"
                    )
                    lines.append(
                        f"| `min(E)` per run (median of 5) | DuckLake: {q_lake * 1e3:.0f} ms | `duckdb.db`: "
                        f"{q_file * 1e3:.0f} ms | {q_lake / q_file:.2f}x | a new manager's first query: "
                        f"{q_first * 1e3:.0f} ms (loads the extensions) |"
                    )
    finally:
        server.stop()
    lines.append("")
    emit(lines, args.out)


if __name__ == "__main__":
    main()

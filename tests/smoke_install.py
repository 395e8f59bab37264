"""Smoke test of an installed flightlog (a wheel or the sdist): import, record 1000
rows, close, read them back. Run by `make sdist-test` / `make wheel-test` and the
release workflow from outside the source tree, so it imports the installed package:

    python tests/smoke_install.py

Needs only what a bare `pip install flightlog` brings (numpy, DuckDB). Exits non-zero
with a message on any mismatch. Not collected by pytest (no `test_` prefix).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main() -> int:
    import duckdb

    import flightlog
    from flightlog import Field, FlightRecorder, Schema

    where = Path(flightlog.__file__).resolve().parent
    if (where.parents[1] / "tests" / "smoke_install.py").exists():
        print(f"smoke: imported flightlog from the source tree {where}, not an installed copy", file=sys.stderr)
        return 2
    schema = Schema([Field("iter", "i64", nullable=False), Field("E", "f64", nullable=False)])
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        with FlightRecorder(run, schema) as rec:
            for i in range(1000):
                rec.record(i, 0.5 * i)
        # fetchall: DuckDB 2 relations have no fetchone().
        ((count, total, top),) = duckdb.sql(
            f"select count(*), sum(E), max(iter) from '{run / 'telemetry.parquet'}'"
        ).fetchall()
    if (count, total, top) != (1000, 0.5 * sum(range(1000)), 999):
        print(
            f"smoke: read back {(count, total, top)}, expected (1000, {0.5 * sum(range(1000))}, 999)", file=sys.stderr
        )
        return 1
    core = Path(flightlog._core.__file__).name
    print(f"smoke: flightlog {flightlog.__version__} ({core}) recorded and read back 1000 rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())

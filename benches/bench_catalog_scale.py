"""Listing and consolidating many tiny runs (issue 17, part 2).

    python benches/bench_catalog_scale.py [--runs 10000] [--big] [--out FILE]

Builds a root of N tiny finished runs (10,000 by default; ``--big`` adds 100,000),
then measures, in the same process and on the same files:

* a full ``flightlog consolidate`` of the root, against DuckDB's own
  ``CREATE TABLE AS SELECT * FROM read_parquet([...])`` over the same telemetry files
  into a fresh database file (the target is <= 1.5x);
* ``flightlog consolidate`` with nothing new (target <= 2 s at 100,000 runs);
* ``flightlog runs`` with a consolidated catalog (target <= 1 s at 100,000 runs), and
  the same listing by evidence only (every manifest read, as before the catalog fast path);
* ``flightlog runs`` after 1% of the runs were added since the consolidation, and the
  consolidation of that 1%.

Every ``flightlog`` timing is the command in a new process, as a user runs it.

The runs are real: one run is recorded by :class:`flightlog.TelemetryManager`, and its
folder is copied N times with a fresh run id. Run ids and times have the same length
as the template's, so the copies are the recorder's own bytes with only the id (in the
Parquet data, statistics and key-value metadata, and in the manifest) and the
manifest's times changed; Parquet files carry no page checksums that this would break.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE_ID = "20250101_000000"
START = 1735689600  # 2025-01-01T00:00:00Z


def run_id(k: int) -> str:
    """Run id number ``k``: a UTC start time, one second apart (same length as TEMPLATE_ID)."""
    return time.strftime("%Y%m%d_%H%M%S", time.gmtime(START + k))


def record_template(scratch: Path) -> Path:
    """One real tiny run (10 rows, 2 events) recorded by flightlog; returns its folder."""
    from flightlog import TelemetryManager

    with TelemetryManager(scratch, "scale", run_id=TEMPLATE_ID, params={"lr": 0.1, "seed": 0}) as tm:
        for i in range(10):
            tm.log(iter=i, t_wall_ms=float(i), E=1.0 / (i + 1))
    return scratch / f"fda_run_{TEMPLATE_ID}"


def make_runs(root: Path, template: Path, first: int, count: int) -> float:
    """Copies ``template`` as runs ``first .. first+count-1`` under ``root``; returns seconds."""
    t0 = time.perf_counter()
    old = TEMPLATE_ID.encode()
    files = {p.name: p.read_bytes() for p in template.iterdir() if p.is_file() and not p.name.startswith(".")}
    manifest = files.pop("manifest.toml").decode()
    created = manifest.split('created_at = "', 1)[1].split('"', 1)[0]
    finished = manifest.split('finished_at = "', 1)[1].split('"', 1)[0]
    root.mkdir(parents=True, exist_ok=True)
    for k in range(first, first + count):
        rid = run_id(k)
        new = rid.encode()
        folder = root / f"fda_run_{rid}"
        os.mkdir(folder)
        for name, data in files.items():
            with open(folder / name, "wb") as f:
                f.write(data.replace(old, new))
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(START + k))
        text = (
            manifest.replace(TEMPLATE_ID, rid)
            .replace(f'created_at = "{created}"', f'created_at = "{t}.000Z"')
            .replace(f'finished_at = "{finished}"', f'finished_at = "{t}.140Z"')
        )
        with open(folder / "manifest.toml", "w") as f:
            f.write(text)
    return time.perf_counter() - t0


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _installed_env() -> dict[str, str]:
    """The environment of a user's ``flightlog`` command: the package's bytecode compiled
    (``pip install`` compiles it; a checkout run with PYTHONDONTWRITEBYTECODE would compile
    some 40 modules in every command, ~0.1 s)."""
    import compileall

    import flightlog

    compileall.compile_dir(os.path.dirname(flightlog.__file__), quiet=1)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


_ENV: dict[str, str] | None = None


def cli(*argv: str) -> tuple[float, str]:
    """Runs the ``flightlog ARGV`` command (a new process: interpreter start and imports
    included, as a user sees it); returns (seconds, stdout)."""
    global _ENV
    if _ENV is None:
        _ENV = _installed_env()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "flightlog.cli", *argv], capture_output=True, text=True, env=_ENV)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"flightlog {' '.join(argv)} exited {p.returncode}: {p.stderr}")
    return elapsed, p.stdout


def measure(scratch: Path, template: Path, n: int) -> list[str]:
    import duckdb

    root = scratch / f"root{n}"
    make_s = make_runs(root, template, 0, n)
    files = sorted(str(p / "telemetry.parquet") for p in root.iterdir())

    def baseline() -> None:
        con = duckdb.connect(str(scratch / f"baseline{n}.db"))
        con.execute("CREATE TABLE telemetry AS SELECT * FROM read_parquet(?, union_by_name = true)", [files])
        con.close()

    base_s, _ = timed(baseline)
    full_s, _ = cli("consolidate", "--root", str(root), "--format", "json")
    again_s, _ = cli("consolidate", "--root", str(root), "--format", "json")
    runs_s, out = cli("runs", "--root", str(root), "--format", "csv")
    table_s, _ = cli("runs", "--root", str(root))
    listed = out.count("\n") - 1
    from flightlog.runs.discover import _runs_by_evidence

    evid_s, refs = timed(lambda: _runs_by_evidence(root))
    new = max(1, n // 100)
    make_runs(root, template, n, new)
    runs_new_s, out_new = cli("runs", "--root", str(root), "--format", "csv")
    again_new_s, _ = cli("consolidate", "--root", str(root), "--format", "json")
    assert listed == n and out_new.count("\n") - 1 == n + new, (listed, n)
    assert len(refs) == n
    return [
        f"| {n:,} | {make_s:.0f} | {full_s:.1f} | {base_s:.1f} | {full_s / base_s:.1f}x | {again_s:.2f} "
        f"| {runs_s:.2f} | {table_s:.2f} | {runs_new_s:.2f} | {again_new_s:.1f} | {evid_s:.1f} |"
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--big", action="store_true", help="also 100,000 runs (a few minutes)")
    ap.add_argument("--out", type=Path, default=None, help="append the Markdown table to this file")
    args = ap.parse_args()
    sizes = [args.runs] + ([100_000] if args.big else [])
    lines = [
        "| runs | make (s) | consolidate (s) | DuckDB CTAS (s) | ratio | consolidate, nothing new (s) "
        "| `runs --format csv` (s) | `runs` (table) (s) | `runs`, 1% new (s) | consolidate the 1% (s) "
        "| listing by evidence, in process (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="flightlog-scale-") as d:
        scratch = Path(d)
        template = record_template(scratch / "template")
        for n in sizes:
            lines += measure(scratch, template, n)
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()

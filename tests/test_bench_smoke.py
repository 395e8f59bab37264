"""The peer benchmark harness (benches/peers/run.py) still runs: smoke mode, tiny N.

flightlog always runs; every peer library that is installed runs too, the others
are skipped by the harness with a printed reason. The figures are meaningless at
this size; what is checked is that the harness produces its table and that
flightlog's rows come back intact (also after kill -9 at half the run).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benches" / "peers" / "run.py"

pytestmark = pytest.mark.skipif(not RUN.exists(), reason="benches/peers is not part of this checkout")


def run_bench(script: Path, tmp_path: Path, out_name: str, *args: str) -> tuple[str, str]:
    """Runs ``python SCRIPT ARGS --out tmp_path/out_name`` in ``tmp_path``; asserts it succeeds and
    returns (the Markdown it wrote, its stdout)."""
    out = tmp_path / out_name
    p = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out.read_text(), p.stdout


@pytest.mark.slow
def test_peer_harness_smoke(tmp_path: Path) -> None:
    text, stdout = run_bench(RUN, tmp_path, "PEERS.md", "--smoke", "--workdir", str(tmp_path / "work"))
    assert "| peer | version | N | ns/step |" in text
    lines: dict[str, str] = {}
    for line in text.splitlines():  # the main table comes first
        if line.startswith("| "):
            lines.setdefault(line.split("|")[1].strip(), line)
    for name in ("flightlog-record", "flightlog-log", "flightlog-manager-log", "flightlog-extend"):
        assert name in lines, text
        assert "20,000 ✓" in lines[name], lines[name]
    # Killed at step 10,000 of 20,000: whatever was published before is readable and checked.
    assert "of 10,001 readable" in lines["flightlog-record"]
    assert "## Overhead on a real numeric loop" in text
    # Both clocks, and the control arm (the same call to a no-op) beside the recording arm.
    assert "slowdown (thread CPU)" in text and "control: no-op call (wall)" in text
    overhead = text.split("## Overhead on a real numeric loop", 1)[1]
    assert "| 10 µs |" in overhead and "| 100 µs |" in overhead
    assert "## Call floor" in text
    # Peers whose package is missing are listed as skipped, never silently dropped.
    for line in stdout.splitlines():
        if line.startswith("skip "):
            assert line.split()[1].rstrip(":") in text


SCALE_OUT = Path(__file__).resolve().parents[1] / "benches" / "bench_scale_out.py"


@pytest.mark.slow
@pytest.mark.skipif(not SCALE_OUT.exists(), reason="benches/ is not part of this checkout")
def test_scale_out_bench_smoke(tmp_path: Path, postgres_cluster: object) -> None:
    # postgres_cluster: skips (or fails under FLIGHTLOG_REQUIRE_SERVERS=1) without PostgreSQL binaries.
    from conftest_servers import require_lake_extensions

    require_lake_extensions()  # the bench reads S3 and writes DuckLake through the lake extensions
    text, _ = run_bench(SCALE_OUT, tmp_path, "RESULTS.md", "--runs", "4", "--rows", "500", "--record-rows", "5000")
    assert "## Scale-out: local root vs S3" in text
    assert "`consolidate()` of the local tree: DuckLake on PostgreSQL" in text
    assert "runs/s" in text and "ns/row" in text


RECORDER_BENCH = Path(__file__).resolve().parents[1] / "benches" / "bench_recorder.py"


def test_recorder_bench_replaces_only_its_own_figures(tmp_path: Path) -> None:
    """`make bench` writes the recorder figures into RESULTS.md, which also holds the notes
    read with them and the other benches' sections: those survive a regeneration."""
    out = tmp_path / "RESULTS.md"
    kept = "\nReading the recorder table (notes kept by hand)\n\n## Catalog: another bench's section\n"
    out.write_text("# flightlog recorder benchmarks\n\nold figures\n" + kept)
    p = subprocess.run(
        [sys.executable, str(RECORDER_BENCH), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    text = out.read_text()
    assert "old figures" not in text
    assert text.startswith("# flightlog recorder benchmarks\n")
    assert "| `record()` 1 i64 + 9 f64" in text
    assert text.endswith(kept) and text.count("Reading the recorder table") == 1


RUNS_BENCH = Path(__file__).resolve().parents[1] / "benches" / "bench_runs.py"


@pytest.mark.skipif(not RUNS_BENCH.exists(), reason="benches/ is not part of this checkout")
def test_runs_bench_reports_disk_ram_and_filesystem(tmp_path: Path) -> None:
    """The short-runs bench prints the rate on disk with its CPU split (runs one after another,
    then in two threads), the same loop in RAM
    (flightlog's own ceiling), and which filesystem the disk was, so a slow figure can be
    told apart from a slow disk."""
    text, _ = run_bench(RUNS_BENCH, tmp_path, "RESULTS.md", "--runs", "5", "--root", str(tmp_path / "runs"))
    lines = {line.split(":", 1)[0]: line for line in text.splitlines() if line.startswith("- ")}
    on_disk = lines["- runs started and closed per second, one after another"]
    assert "(5 runs in" in on_disk and "CPU per run" in on_disk and "system" in on_disk, text
    side_by_side = lines[
        "- the same runs in 2 threads of one process (trials side by side; each run's fsyncs then overlap another's work)"
    ]
    assert "(5 runs in" in side_by_side and "CPU per run" in side_by_side, text
    ram = lines["- one after another in RAM (/dev/shm, no disk)"]
    assert "(5 runs in" in ram or "not measured (no /dev/shm)" in ram, text
    disk = lines["- disk"]
    assert disk.startswith(f"- disk: {tmp_path / 'runs'}: "), text
    assert "unknown" in disk or " on " in disk, text
    # The bench cleans up after itself: no run is left in the folder it was given.
    assert not any((tmp_path / "runs").rglob("manifest.toml"))

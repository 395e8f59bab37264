"""The spool (issue 12) seen from Python: what recovery does with what a killed
recorder left in `.flightlog.spool/`."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import flightlog
from flightlog import read_manifest

CHILD = textwrap.dedent(
    """
    import sys
    from flightlog import Field, Schema, TelemetryManager
    schema = Schema([Field("iter", "i64"), Field("phase", "str")])
    tm = TelemetryManager(sys.argv[1], "spooled", schema=schema, flush_interval=3600.0)
    for i in range(500):
        tm.record(i, "GREEN" if i % 2 else "RED")
    tm.event("HALFWAY", {"i": 500})
    print(tm.run_path, flush=True)
    sys.stdin.read()
    """
)


def kill_child_after_recording(root: Path) -> Path:
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as p:
        try:
            assert p.stdout is not None
            run = Path(p.stdout.readline().strip())
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
    return run


def test_rows_never_flushed_are_salvaged_with_their_strings_and_events(tmp_path: Path) -> None:
    run = kill_child_after_recording(tmp_path)
    assert (run / ".flightlog.spool").is_dir() and not (run / "segments").exists()
    rep = flightlog.recover(tmp_path)
    assert [r["salvaged_rows"] for r in rep.recovered] == [500], rep
    table = pq.read_table(run / "telemetry.parquet")
    assert table["iter"].to_pylist() == list(range(500))
    assert table["phase"].to_pylist() == ["GREEN" if i % 2 else "RED" for i in range(500)]
    events = pq.read_table(run / "events.parquet")["event"].to_pylist()
    assert "HALFWAY" in events
    assert not (run / ".flightlog.spool").exists()
    assert read_manifest(run)["counts"]["rows_written"] == 500
    assert flightlog.recover(tmp_path).recovered == []


def test_an_empty_spool_folder_is_no_reason_to_recover_again(tmp_path: Path) -> None:
    # What a close killed between removing its spool and the folder that held it leaves.
    run = kill_child_after_recording(tmp_path)
    assert len(flightlog.recover(tmp_path).recovered) == 1
    (run / ".flightlog.spool").mkdir()
    assert flightlog.recover(tmp_path).recovered == []
    m = read_manifest(run)
    assert m["status"] == "crashed"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread fault counts are Linux's")
def test_the_recording_threads_first_writes_to_its_ring_find_the_pages_faulted_in(tmp_path: Path) -> None:
    """A ring's pages are spool-file pages: the first write to each is a page fault (the kernel
    allocates, zeroes and maps it, counted as a major fault), several microseconds on the
    recording thread. The flusher faults them in ahead of the producer instead: once it has
    seen the thread's pace, the rows that follow fault nothing on the thread."""
    import mmap
    import os
    import resource

    # The control: where the filesystem keeps allocated pages in memory (tmpfs), a first write
    # to one is a minor fault, as the interpreter's own allocations make: nothing to tell apart.
    control = tmp_path / "control"
    with open(control, "wb+") as f:
        os.posix_fallocate(f.fileno(), 0, 64 << 12)
        with mmap.mmap(f.fileno(), 64 << 12) as m:
            m.madvise(mmap.MADV_RANDOM)  # as a ring is mapped: no readahead
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_majflt
            for page in range(64):
                m[page << 12] = 1
            if resource.getrusage(resource.RUSAGE_THREAD).ru_majflt - before < 32:
                pytest.skip(f"first writes to an allocated page of a file under {tmp_path} are not major faults")

    schema = flightlog.Schema(
        [flightlog.Field("iter", "i64", nullable=False)]
        + [flightlog.Field(f"x{k}", "f64", nullable=False) for k in range(9)]
    )
    rec = flightlog.FlightRecorder(tmp_path / "run", schema)
    values = [0.5] * 9
    for i in range(500):
        rec.record(i, *values)
    # A look of the flusher (it looks every 20 ms) sees those 500 rows go by, and faults in
    # the pages of twice as many, and some, ahead. One look is enough, and it has 15 chances.
    time.sleep(0.3)
    before = resource.getrusage(resource.RUSAGE_THREAD)
    for i in range(500, 1500):
        rec.record(i, *values)
    after = resource.getrusage(resource.RUSAGE_THREAD)
    rec.close()
    # 1,000 rows of 96 bytes cross 24 pages of the ring; a cold ring faults on each.
    assert after.ru_majflt - before.ru_majflt <= 2
    assert pq.read_table(tmp_path / "run" / "telemetry.parquet").num_rows == 1500

"""A process records through a run, forks a child that inherits the live recorder
(its spool rings are ``MAP_SHARED``), and is killed with SIGKILL at a seeded
moment after the fork. The child tries ``record()``/``extend()``/``event()``/
``close()`` (all refused) and then exits at once (``os._exit``), exits normally
(``sys.exit``: exit hooks and interpreter finalisation run), or is still alive
when the parent dies. ``recover`` (run while such a child lives: it holds no
claim) must publish every row and event whose call returned in the parent,
once, in order, and nothing the child tried.

What returned is known exactly: the parent stores, in a memory-mapped file outside
the run folder, how many rows and events it began and how many returned, after
each call returned.
"""

from __future__ import annotations

import mmap
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import flightlog

CHILD = textwrap.dedent(
    """
    import mmap, os, random, sys, time
    import numpy as np
    from flightlog import Field, Schema, TelemetryManager

    root, prog_path, seed, exit_how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    P = memoryview(mmap.mmap(os.open(prog_path, os.O_RDWR), 4096)).cast("q")
    rng = random.Random(seed)
    schema = Schema([Field("who", "i64", nullable=False), Field("seq", "i64", nullable=False)])
    tm = TelemetryManager(root, "forked", schema=schema, flush_interval=rng.choice([0.01, 0.05]),
                          ring_capacity=rng.choice([64, 512]), segment_rows=rng.choice([200, 2000]))
    rows = events = 0

    def record(n):
        global rows
        for _ in range(n):
            P[0] = rows + 1
            tm.record(1, rows)
            rows += 1
            P[1] = rows

    def event():
        global events
        P[2] = events + 1
        tm.event("PARENT", {"n": events})
        events += 1
        P[3] = events

    record(rng.randrange(1, 3000))
    event()
    pid = os.fork()
    if pid == 0:
        for call in (lambda: tm.record(2, -1), lambda: tm.log(who=2, seq=-2), lambda: tm.event("CHILD"),
                     lambda: tm.extend(who=np.full(3, 2), seq=np.arange(-10, -7)), tm.flush, tm.close):
            try:
                call()
            except Exception:
                pass
        if exit_how == "os_exit":
            os._exit(0)
        if exit_how == "sys_exit":
            sys.exit(0)
        time.sleep(600)
        os._exit(0)
    P[4] = pid
    if exit_how != "linger":
        os.waitpid(pid, 0)
    P[5] = 1  # forked (and the child exited, unless it lingers)
    while True:
        record(rng.randrange(1, 500))
        event()
        time.sleep(rng.choice([0.0, 0.002]))
    """
)


@pytest.mark.parametrize("exit_how", ["os_exit", "sys_exit", "linger"])
@pytest.mark.parametrize("seed", range(2))
def test_parent_killed_after_a_fork_loses_nothing(tmp_path: Path, exit_how: str, seed: int) -> None:
    root = tmp_path / "root"
    prog = tmp_path / "progress"
    prog.write_bytes(b"\0" * 4096)
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(prog), str(seed), exit_how])
    fd = os.open(prog, os.O_RDONLY)
    m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)
    words = memoryview(m).cast("q")
    child = 0
    try:
        deadline = time.monotonic() + 20
        while words[5] != 1:
            assert p.poll() is None, "the recording process died"
            assert time.monotonic() < deadline, "the recording process never forked"
            time.sleep(0.005)
        child = int(words[4])
        time.sleep(random.Random(seed).uniform(0.0, 0.3))
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    begun, returned, ev_begun, ev_returned = (int(words[i]) for i in range(4))
    words.release()
    m.close()
    os.close(fd)
    try:
        rep = flightlog.recover(root)
        assert not rep.errors and not rep.live, rep
        assert len(rep.recovered) == 1, rep
    finally:
        if exit_how == "linger" and child:
            os.kill(child, signal.SIGKILL)
    run = Path(rep.recovered[0]["path"])
    t = pq.read_table(run / "telemetry.parquet")
    assert set(t["who"].to_pylist()) == {1}, "a row the child tried is in the file"
    seqs = t["seq"].to_pylist()
    assert seqs == list(range(len(seqs))), "rows twice, out of order or with holes"
    assert returned <= len(seqs) <= begun
    ev = pq.read_table(run / "events.parquet")["event"].to_pylist()
    assert "CHILD" not in ev
    assert ev_returned <= ev.count("PARENT") <= ev_begun
    assert flightlog.read_manifest(run)["counts"]["rows_written"] == len(seqs)
    assert flightlog.recover(root).recovered == []

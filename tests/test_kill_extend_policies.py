"""``kill -9`` of a run recording numpy blocks with ``extend()`` (blocks smaller
and larger than the ring), under ``on_full="block"``, ``on_full="drop"`` and a
``max_rows`` budget, at a seeded moment; then ``flightlog.recover``.

What returned is known exactly: the child writes, in a memory-mapped file
outside the run folder (the page cache keeps it through the kill), per thread
how many rows it had begun to offer and how many rows' calls returned (each
counter stored *after* the call returned), and the recorder's drop and budget
counters read after that return, tagged with the returned count they belong to
(a kill can land between the return and the copy of the counters).

After recovery, per thread: every row is one the thread offered, with its own
values (no torn row), at most once, in order; every row of a returned
``extend()``/``record()`` is there unless the recorder counted it dropped or over
budget; a returned over-budget call left its ``ROW_BUDGET_EXCEEDED`` event; the
manifest's counts are the files' (pyarrow and DuckDB agree); a second
recover changes nothing.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

import flightlog
from flightlog import read_manifest

SLOT_WORDS = 8
# Per-thread words (slot tid, tid >= 1); slot 0 is the header.
BEGUN, RETURNED, DROPPED, OVER_BUDGET, EV_BEGUN, EV_RETURNED, COUNTERS_AT = range(7)
H_STARTED = 0

CHILD = textwrap.dedent(
    """
    import mmap, os, random, sys, threading, time
    import numpy as np
    from flightlog import Field, Schema, TelemetryManager

    root, prog_path, seed, scenario = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    fd = os.open(prog_path, os.O_RDWR)
    P = memoryview(mmap.mmap(fd, 4096)).cast("q")
    W = 8

    def check(tid, seq):
        return (seq * 2654435761 + tid * 97) % 2147483647

    rng = random.Random(seed)
    ring = rng.choice([64, 256])
    opts = dict(flush_interval=rng.choice([0.01, 0.05]), segment_rows=rng.choice([300, 3000]),
                ring_capacity=ring)
    if scenario == "block":
        opts.update(on_full="block", max_rows=10**9)
    elif scenario == "drop":
        opts.update(on_full="drop", max_rows=10**9)
    else:
        opts.update(on_full=rng.choice(["block", "drop"]), max_rows=rng.choice([500, 2000, 5000]))
    schema = Schema([Field("tid", "i64", nullable=False), Field("seq", "i64", nullable=False),
                     Field("check", "i64", nullable=False), Field("x", "f64")])
    tm = TelemetryManager(root, "killext", schema=schema, **opts)
    stats = tm.recorder.stats

    def extender(tid):
        r = random.Random(seed * 31 + tid)
        s = tid * W
        done = 0
        k = 0
        while True:
            n = r.choice([1, 7, ring // 2, ring, 3 * ring + 5, 2000])
            seq = np.arange(done, done + n, dtype=np.int64)
            P[s + 0] = done + n
            tm.extend(tid=np.full(n, tid, dtype=np.int64), seq=seq, check=check(tid, seq), x=seq * 0.5)
            done += n
            P[s + 1] = done
            st = stats()
            P[s + 2] = st["rows_dropped"]
            P[s + 3] = st["rows_over_budget"]
            P[s + 6] = done
            k += 1
            if k % 5 == 0:
                P[s + 4] = P[s + 4] + 1
                tm.event("BLOCK", {"tid": tid, "n": int(P[s + 4])})
                P[s + 5] = P[s + 4]
            if r.random() < 0.3:
                time.sleep(r.choice([0.0005, 0.005]))

    def recorder_row_by_row(tid):
        r = random.Random(seed * 31 + tid)
        s = tid * W
        done = 0
        while True:
            P[s + 0] = done + 1
            tm.record(tid, done, check(tid, done), done * 0.5)
            done += 1
            P[s + 1] = done
            st = stats()
            P[s + 2] = st["rows_dropped"]
            P[s + 3] = st["rows_over_budget"]
            P[s + 6] = done
            if done % 50 == 0:
                time.sleep(r.choice([0.001, 0.004]))

    body = recorder_row_by_row if scenario == "budget" else extender
    # One thread under "drop" and a budget: the recorder's counters are then this
    # thread's, so the rows it counted dropped or over budget are known exactly, and the
    # call that saw a row refused over budget is the one that logged ROW_BUDGET_EXCEEDED
    # (another thread's may still be logging it).
    tids = (1, 2) if scenario == "block" else (1,)
    threads = [threading.Thread(target=body, args=(t,), daemon=True) for t in tids]
    for t in threads:
        t.start()
    P[0] = 1
    time.sleep(3600)
    """
)


def _run_and_kill(root: Path, prog: Path, seed: int, scenario: str) -> list[list[int]]:
    prog.write_bytes(b"\0" * 4096)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(prog), str(seed), scenario], env=env, stderr=subprocess.PIPE
    )
    fd = os.open(prog, os.O_RDONLY)
    m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)
    words = memoryview(m).cast("q")
    try:
        deadline = time.monotonic() + 20
        while words[H_STARTED] != 1 or words[1 * SLOT_WORDS + RETURNED] == 0:
            assert p.poll() is None, "the child died"
            assert time.monotonic() < deadline, "the child never started recording"
            time.sleep(0.005)
        time.sleep(random.Random(seed).uniform(0.0, 0.6))
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.stderr is not None
        err = p.stderr.read().decode()
        p.stderr.close()
    assert "Traceback" not in err, err
    snap = [[int(words[t * SLOT_WORDS + w]) for w in range(SLOT_WORDS)] for t in range(3)]
    words.release()
    m.close()
    os.close(fd)
    return snap


def _check(tid: np.ndarray, seq: np.ndarray) -> np.ndarray:
    return (seq * 2654435761 + tid * 97) % 2147483647


def _verify(root: Path, snap: list[list[int]], scenario: str) -> None:
    rep = flightlog.recover(root)
    assert not rep.errors, rep.errors
    assert len(rep.recovered) == 1, rep
    run = Path(rep.recovered[0]["path"])
    assert not (run / ".flightlog.spool").exists()
    table = pq.read_table(run / "telemetry.parquet")
    tids = table["tid"].to_numpy()
    seqs = table["seq"].to_numpy()
    checks = table["check"].to_numpy()
    xs = table["x"].to_numpy()
    assert (checks == _check(tids, seqs)).all(), "a row holds values no call gave it (torn)"
    assert (xs == seqs * 0.5).all(), "a row holds values no call gave it (torn)"
    for t in (1, 2):
        s = snap[t]
        mine = seqs[tids == t]
        assert (np.diff(mine) > 0).all(), f"thread {t}: rows out of order or twice"
        assert mine.size == 0 or mine[-1] < s[BEGUN], f"thread {t}: a row never offered is in the file"
        returned = int((mine < s[RETURNED]).sum())
        # Rows the recorder counted dropped / over budget, read after the call returned
        # and before the next one began (one thread: all of them among its returned rows).
        excused = s[DROPPED] + s[OVER_BUDGET]
        # The kill may land after the last call returned but before its counters were
        # copied (COUNTERS_AT still names the call before): the fate of that last call's
        # rows is then unknown to the harness, and only they may be missing.
        unknown = s[RETURNED] - s[COUNTERS_AT]
        assert s[RETURNED] - excused - unknown <= returned <= s[RETURNED] - excused, (
            f"thread {t}: {s[RETURNED]} rows returned, {excused} counted dropped or over budget "
            f"after {s[COUNTERS_AT]} of them, {returned} in the file"
        )
        if scenario == "block":
            assert (mine[: s[RETURNED]] == np.arange(min(s[RETURNED], mine.size))).all()
            assert mine.size >= s[RETURNED]
    ev = pq.read_table(run / "events.parquet").to_pylist()
    names = [e["event"] for e in ev]
    if scenario == "budget":
        assert tids.size <= 5000
        if snap[1][OVER_BUDGET]:
            assert names.count("ROW_BUDGET_EXCEEDED") == 1, names
    else:
        for t in (1, 2):
            got = sorted(
                json.loads(e["payload"])["n"]
                for e in ev
                if e["event"] == "BLOCK" and json.loads(e["payload"])["tid"] == t
            )
            assert got == list(range(1, len(got) + 1)), f"thread {t}: events twice or with holes: {got}"
            assert snap[t][EV_RETURNED] <= len(got) <= snap[t][EV_BEGUN]
    m = read_manifest(run)
    assert m["status"] == "crashed"
    assert m["counts"]["rows_written"] == tids.size
    files = {f["kind"]: f["rows"] for f in m["files"]}
    assert files == {"telemetry": tids.size, "events": len(ev)}
    # An independent reader; `execute` (not a relation's `fetchone`, gone in DuckDB 2).
    with duckdb.connect() as con:
        n = con.execute(f"select count(*) from read_parquet('{run / 'telemetry.parquet'}')").fetchone()
    assert n is not None and n[0] == tids.size
    again = flightlog.recover(root)
    assert again.recovered == [] and not again.errors


SEEDS = {"block": range(4), "drop": range(4), "budget": range(4)}


@pytest.mark.parametrize(("scenario", "seed"), [(sc, s) for sc, seeds in SEEDS.items() for s in seeds])
def test_kill_while_extending_then_recover(tmp_path: Path, scenario: str, seed: int) -> None:
    root = tmp_path / "root"
    root.mkdir()
    snap = _run_and_kill(root, tmp_path / "progress", 1000 * seed + len(scenario), scenario)
    _verify(root, snap, scenario)

"""Crash campaign: child processes recording (several threads, events, short flush
interval) are killed with SIGKILL at random moments — while recording/flushing,
during the merge at close, during compaction and during consolidation — then
``recover`` + ``consolidate`` must leave:

- zero unreadable ``*.parquet`` files (checked *before* recovery, as a crash leaves them);
- zero duplicated rows (every row carries a unique ``(tid, seq)``);
- **0 rows lost whose call returned**: every row (and event) whose ``record()``,
  ``log()``, ``extend()`` or ``event()`` returned before the kill is in the final
  files after ``recover``, once (the spool keeps what no segment holds yet);
- per producer thread, the rows form a prefix (no holes, so in order);
- valid manifests whose counts match the data;
- the same counts after a further compaction and consolidation.

The loss (rows whose call returned but that are not in the files, and seconds
between the newest recorded row and the kill) is measured for kills that land
while recording: it must be 0 rows.

The child counts what it offered and what a returned ``flush()`` covered in a
shared ``mmap``: the page cache survives SIGKILL, so the parent reads the exact
counters of the dead process. Each counter is one aligned 8-byte store, which a kill
leaves either old or new, followed by a copy; the parent checks every counter against
its copy before it trusts them (see :func:`_read_counters`).

Sizes: ``FLIGHTLOG_CRASH_RUNS`` kills in CI (default 40); the stress size
(``FLIGHTLOG_CRASH_STRESS_RUNS``, default 200) runs only with
``FLIGHTLOG_STRESS=1``. ``benches/reliability_report.py`` reuses
:func:`run_campaign` and writes the figures into ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import os
import random
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

# How the child writes its counters into the shared file (see _read_counters for the layout).
COUNTERS_CODE = r"""
import mmap, os
COPY = 256  # slot of the second copy of slot 0

def open_counters(path):
    fd = os.open(path, os.O_RDWR)
    return memoryview(mmap.mmap(fd, 4096)).cast("q")

def put(ctr, slot, v):
    # One aligned 8-byte store each: memoryview converts the value, then copies its 8
    # bytes at once, so a SIGKILL leaves the old or the new value. (struct.pack_into
    # zeroed the bytes first and stored them one by one: a kill in between left 0.)
    ctr[slot] = v
    ctr[COPY + slot] = v
"""

CHILD = (
    COUNTERS_CODE
    + r"""
import random, sys, threading, time
import numpy as np
from flightlog import DuckDBManager, Field, Schema, TelemetryManager, compact

root, target, seed, ctr_path, record_secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
rng = random.Random(seed)
NSTREAMS = 4  # streams 0-2: threads of the "run" run; stream 3: a thread of a "dev" run
ctr = open_counters(ctr_path)
# per stream s at slot 4*s: rows offered, rows durable (a flush() covering them returned), events offered, events durable

def phase(name):
    print("PHASE", name, repr(time.time()), flush=True)

schema = Schema([Field("tid", "i64", nullable=False), Field("seq", "i64", nullable=False),
                 Field("t", "f64", nullable=False), Field("x", "f64", nullable=False),
                 Field("label", "str", nullable=False)])
phase("start")
tm_run = TelemetryManager(root, "crash", schema=schema, flush_interval=0.02, segment_rows=4096, max_rows=None)
tm_dev = TelemetryManager(root, "crash", mode="dev", schema=schema, flush_interval=0.02, segment_rows=4096, sampling=None)
print("RUN", tm_run.run_id, tm_dev.run_id, flush=True)
offered = [0] * NSTREAMS
ev_offered = [0] * NSTREAMS
stop = threading.Event()
LABELS = [f"L{i}" for i in range(7)]

def producer(s):
    tm = tm_run if s < 3 else tm_dev
    seq = 0
    r = random.Random(seed * 10 + s)
    while not stop.is_set():
        n = r.randint(20, 200)
        if s == 2:  # bulk path
            for start in range(seq, seq + n, 64):
                k = min(64, seq + n - start)
                tm.extend(tid=np.full(k, s), seq=np.arange(start, start + k), t=np.full(k, time.time()),
                          x=np.random.rand(k), label=[LABELS[(start + j) % 7] for j in range(k)])
                offered[s] = start + k
                put(ctr, 4 * s, start + k)
        elif s == 0:  # keyword path
            for i in range(seq, seq + n):
                tm.log(tid=s, seq=i, t=time.time(), x=i * 0.5, label=LABELS[i % 7])
                offered[s] = i + 1
                put(ctr, 4 * s, i + 1)
        else:  # positional path
            for i in range(seq, seq + n):
                tm.record(s, i, time.time(), i * 0.5, LABELS[i % 7])
                offered[s] = i + 1
                put(ctr, 4 * s, i + 1)
        seq += n
        tm.event("TICK", {"tid": s, "k": ev_offered[s], "seq": seq})
        ev_offered[s] += 1
        put(ctr, 4 * s + 2, ev_offered[s])
        time.sleep(r.random() * 0.002)

threads = [threading.Thread(target=producer, args=(s,), daemon=True) for s in range(NSTREAMS)]
phase("record")
for t in threads:
    t.start()
deadline = time.monotonic() + record_secs
while time.monotonic() < deadline:
    snap, ev_snap = list(offered), list(ev_offered)
    tm_run.flush()
    tm_dev.flush()
    for s in range(NSTREAMS):  # every row and event offered before the flushes is durable now
        put(ctr, 4 * s + 1, snap[s])
        put(ctr, 4 * s + 3, ev_snap[s])
    time.sleep(rng.random() * 0.03)
stop.set()
for t in threads:
    t.join()
phase("close")  # every offered row is durable once close() returned (the parent saw "PHASE compact")
tm_run.close()
tm_dev.close()
phase("compact")
compact(root, "crash", "dev")
phase("consolidate")
DuckDBManager(root).consolidate()
phase("done")
"""
)

SCHEMA_STREAMS = 4
# The counters file: 4096 bytes of native int64 slots. Slot 4*s + k for stream s holds
# k=0 rows offered, k=1 rows durable, k=2 events offered, k=3 events durable; slot
# COPY + i (bytes 2048..2176) holds a second copy of slot i, written just after it. The
# rest is a canary pattern, checked after the kill.
COUNTER_SLOTS = 4 * SCHEMA_STREAMS
COPY_SLOT = 256
CTR_NAMES = ("rows offered", "rows durable", "events offered", "events durable")
CANARY = b"\xab\xcd\xef\x01\x23\x45\x67\x89"
CANARY_RANGES = ((COUNTER_SLOTS * 8, COPY_SLOT * 8), ((COPY_SLOT + COUNTER_SLOTS) * 8, 4096))
assert f"COPY = {COPY_SLOT} " in COUNTERS_CODE
PHASES = ("record", "close", "compact", "consolidate")
# How long the child records when the kill targets a later phase.
RECORD_SECS = (0.25, 0.6)


@dataclasses.dataclass
class KillOutcome:
    seed: int
    target: str
    phase: str  # phase the child was in when killed ("done" if it finished first)
    files_checked: int = 0
    temp_files: int = 0
    leftover_segments: int = 0
    rows: int = 0
    events: int = 0
    duplicates: int = 0
    missing_durable: int = 0
    holes: int = 0
    manifests_checked: int = 0
    runs_without_rows: int = 0  # crashed runs killed before their first durable row
    loss_rows: int | None = None
    loss_secs: float | None = None
    # The child's counters and their copies as read after the kill (see _read_counters).
    counters: list[tuple[int, ...]] = dataclasses.field(default_factory=list)
    copies: list[tuple[int, ...]] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class CampaignResult:
    outcomes: list[KillOutcome]
    seconds: float
    phase_secs: dict[str, float]

    @property
    def kills(self) -> int:
        return len(self.outcomes)

    def by_phase(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.phase] = out.get(o.phase, 0) + 1
        return out

    def total(self, name: str) -> int:
        return sum(getattr(o, name) for o in self.outcomes)

    @property
    def failures(self) -> list[str]:
        return [f"seed {o.seed} ({o.phase}): {f}" for o in self.outcomes for f in o.failures]

    def loss(self) -> tuple[list[int], list[float]]:
        rows = [o.loss_rows for o in self.outcomes if o.loss_rows is not None]
        secs = [o.loss_secs for o in self.outcomes if o.loss_secs is not None]
        return rows, secs


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("FLIGHTLOG_ROOT", None)
    return env


def _reader(proc: subprocess.Popen[str], lines: list[tuple[float, str]], cond: threading.Condition) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        with cond:
            lines.append((time.time(), line.rstrip("\n")))
            cond.notify_all()
    with cond:
        lines.append((time.time(), "EOF"))
        cond.notify_all()


def _phases(lines: list[tuple[float, str]]) -> list[tuple[str, float]]:
    out = []
    for _, line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "PHASE":
            out.append((parts[1], float(parts[2])))
    return out


def fresh_counters() -> bytes:
    data = bytearray(4096)
    for lo, hi in CANARY_RANGES:
        data[lo:hi] = CANARY * ((hi - lo) // len(CANARY))
    return bytes(data)


def spawn(root: Path, target: str, seed: int, record_secs: float) -> tuple[subprocess.Popen[str], Path]:
    ctr = root.parent / f"{root.name}.ctr"
    ctr.write_bytes(fresh_counters())
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), target, str(seed), str(ctr), str(record_secs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    return proc, ctr


def calibrate(base: Path) -> dict[str, float]:
    """One run to completion (no kill): validates the no-crash path and measures phase lengths."""
    root = base / "calibration"
    proc, ctr = spawn(root, "none", 1, sum(RECORD_SECS) / 2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    lines = [(0.0, line) for line in out.splitlines()]
    phases = _phases(lines)
    secs = {name: phases[i + 1][1] - t for i, (name, t) in enumerate(phases[:-1])}
    outcome = verify(root, ctr, seed=1, target="none", phase="done", t_kill=None)
    assert not outcome.failures, outcome.failures
    return secs


def one_kill(
    base: Path, seed: int, target: str, phase_secs: dict[str, float], *, at_start: bool = False
) -> KillOutcome:
    """Kills a child at a random moment of phase ``target`` (``at_start``: as soon as
    the parent sees the phase begin) and verifies what it left."""
    rng = random.Random(seed)
    root = base / f"k{seed:05d}"
    record_secs = 5.0 if target == "record" else rng.uniform(*RECORD_SECS)
    proc, ctr = spawn(root, target, seed, record_secs)
    lines: list[tuple[float, str]] = []
    cond = threading.Condition()
    reader = threading.Thread(target=_reader, args=(proc, lines, cond), daemon=True)
    reader.start()
    if target == "record":
        delay = rng.uniform(0.05, 1.2)
    elif at_start:
        delay = 0.0
    else:
        # The calibration run measured the phase once; on a loaded machine it may have
        # taken several times longer than it does now, and such kills land in a later
        # phase. The at_start kills still hit this one.
        delay = rng.uniform(0.0, max(phase_secs.get(target, 0.2), 0.01) * 0.8)
    marker = f"PHASE {target} "
    t_kill = None
    try:
        with cond:
            ok = cond.wait_for(lambda: any(ln.startswith(marker) or ln == "EOF" for _, ln in lines), timeout=120)
        if ok and not any(ln == "EOF" for _, ln in lines):
            time.sleep(delay)
            t_kill = time.time()
            proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None and t_kill is None:
            t_kill = time.time()
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join(timeout=10)
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
        assert proc.stdout is not None
        proc.stdout.close()
    phases = _phases(lines)
    phase = phases[-1][0] if phases else "start"
    if proc.returncode not in (-signal.SIGKILL, 0):
        o = KillOutcome(seed, target, phase)
        o.failures.append(f"child exited with {proc.returncode}: {err[-2000:]}")
        return o
    if phase == "done":
        t_kill = None
    return verify(root, ctr, seed=seed, target=target, phase=phase, t_kill=t_kill)


def _read_counters(ctr: Path) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[str]]:
    """(counters, copies, problems): per stream the four counters and their copies.

    Each counter has one writer thread (stream s's producer writes its offered
    counters, the main thread every durable one), which writes the counter, then
    its copy. A kill can only land inside one write per thread, so per writer at
    most one counter differs from its copy, and then only by that write's step."""
    data = ctr.read_bytes()
    problems = []
    want = fresh_counters()
    if any(data[lo:hi] != want[lo:hi] for lo, hi in CANARY_RANGES):
        bad = [i for lo, hi in CANARY_RANGES for i in range(lo, hi) if data[i] != want[i]]
        problems.append(f"counters canary damaged at bytes {bad[:32]}")
    slots = struct.unpack_from(f"={COPY_SLOT + COUNTER_SLOTS}q", data)
    counters = [tuple(slots[4 * s : 4 * s + 4]) for s in range(SCHEMA_STREAMS)]
    copies = [tuple(slots[COPY_SLOT + 4 * s : COPY_SLOT + 4 * s + 4]) for s in range(SCHEMA_STREAMS)]
    in_flight: dict[str, list[str]] = {}
    for s in range(SCHEMA_STREAMS):
        for k, name in enumerate(CTR_NAMES):
            value, copy = counters[s][k], copies[s][k]
            if value == copy:
                continue
            what = f"stream {s}: {name} counter {value} but its copy says {copy}"
            in_flight.setdefault("main" if k in (1, 3) else f"producer {s}", []).append(what)
            # The copy is written after the counter, and offered counters grow by one
            # call: a row or an event, or an extend() block of up to 64 rows.
            step = {0: 64, 2: 1}.get(k)
            if copy > value or (step is not None and value - copy > step):
                problems.append(f"{what}: a torn or lost counter write?")
    for writer, diffs in in_flight.items():
        if len(diffs) > 1:
            problems.append(f"{writer} was inside {len(diffs)} counter writes at once: {'; '.join(diffs)}")
    return counters, copies, problems


def _real_skips(root: Path, skipped: list[tuple[str, str]], o: KillOutcome | None) -> list[tuple[str, str]]:
    """The files consolidate skipped, less the data files of a crashed run that never had
    one: a kill before the run's first durable row leaves a crashed run whose manifest
    lists no files, and consolidate reports its telemetry.parquet/events.parquet as
    "missing in a crashed run" (as it should; nothing is lost). Such runs are counted."""
    from flightlog import read_manifest

    real = []
    for rel, reason in skipped:
        path = root / rel
        if reason == "missing in a crashed run" and path.name in ("telemetry.parquet", "events.parquet"):
            m = read_manifest(path.parent / "manifest.toml")
            listed = [f.get("path") for f in m.get("files") or []]
            if m.get("status") == "crashed" and path.name not in listed:
                if o is not None and path.name == "telemetry.parquet":
                    o.runs_without_rows += 1
                continue
        real.append((rel, reason))
    return real


def verify(root: Path, ctr: Path, *, seed: int, target: str, phase: str, t_kill: float | None) -> KillOutcome:
    import pyarrow.parquet as pq

    from flightlog import DuckDBManager, compact, read_manifest, recover

    o = KillOutcome(seed, target, phase)
    fail = o.failures.append
    counters, copies, problems = _read_counters(ctr)
    o.counters, o.copies = counters, copies
    o.failures.extend(problems)

    # 1. What the crash left, before any recovery: every *.parquet is complete.
    for f in glob.glob(str(root / "**" / "*.parquet"), recursive=True):
        o.files_checked += 1
        try:
            pq.read_table(f)
        except Exception as e:
            fail(f"unreadable {f}: {type(e).__name__}: {e}")
    for f in glob.glob(str(root / "**" / ".*"), recursive=True):
        if ".tmp-" in os.path.basename(f):
            o.temp_files += 1
    o.leftover_segments = len(glob.glob(str(root / "fda_run_*" / "segments" / "*.parquet")))
    # 2. Recover, then consolidate.
    rep = recover(root)
    if rep.errors:
        fail(f"recover errors: {rep.errors}")
    if rep.live:
        fail(f"recover saw live runs after the kill: {rep.live}")
    again = recover(root)
    if again.recovered or again.errors:
        fail(f"recover is not idempotent: {again}")
    for f in glob.glob(str(root / "**" / "*"), recursive=True):
        name = os.path.basename(f)
        if ".tmp-" in name and not name.startswith(".duckdb"):
            fail(f"temp file left after recover: {f}")
    if glob.glob(str(root / "fda_run_*" / "segments")):
        fail("segments/ left after recover")
    db = DuckDBManager(root, timeout=60)
    cons = db.consolidate()
    if skipped := _real_skips(root, cons.files_skipped, o):
        fail(f"consolidate skipped files: {skipped}")

    def columns(table: str) -> list[str]:
        # A catalog holds a kind's columns only once a file of it was ingested: a kill
        # before the first durable row leaves a telemetry (or events) table of run_id,
        # flow_name and schema_version alone, and nothing in it.
        cols = list(db.query(f"SELECT * FROM {table} LIMIT 0").columns)
        if cols == ["run_id", "flow_name", "schema_version"]:
            (n,) = db.query(f"SELECT count(*) FROM {table}").fetchone()
            if n:
                fail(f"{table}: {n} rows but no columns of the schema")
        return cols

    def catalog_counts() -> dict[tuple[str, int], tuple[int, int, int, float]]:
        if "tid" not in columns("telemetry"):
            return {}
        rows = db.query(
            "SELECT run_id, tid, count(*), count(DISTINCT seq), coalesce(max(seq) + 1, 0), max(t) "
            "FROM telemetry GROUP BY ALL"
        ).fetchall()
        return {(r[0], int(r[1])): (int(r[2]), int(r[3]), int(r[4]), float(r[5])) for r in rows}

    def event_counts() -> dict[tuple[str, int], tuple[int, int]]:
        if "payload" not in columns("events"):
            return {}
        rows = db.query(
            "SELECT run_id, CAST(json_extract(payload, '$.tid') AS BIGINT) AS tid, count(*), "
            "count(DISTINCT json_extract(payload, '$.k')) FROM events WHERE event = 'TICK' GROUP BY ALL"
        ).fetchall()
        return {(r[0], int(r[1])): (int(r[2]), int(r[3])) for r in rows}

    counts = catalog_counts()
    evcounts = event_counts()
    runs = {
        r[0]: (r[1], r[2], r[3], r[4])
        for r in db.query("SELECT run_id, mode, status, rows_written, events FROM runs").fetchall()
    }
    run_ids = {m: rid for rid, (m, *_rest) in runs.items()}

    # 3. Per stream: no duplicates, no holes, every durable row present, nothing invented.
    newest_t = 0.0
    lost = 0
    for s, (offered, durable, ev_offered, ev_durable) in enumerate(counters):
        rid = run_ids.get("run" if s < 3 else "dev")
        if rid is None:
            if offered:
                fail(f"stream {s}: {offered} rows whose call returned, but no run in the catalog")
            continue
        n, distinct, top, tmax = counts.get((rid, s), (0, 0, 0, 0.0))
        o.rows += n
        if n != distinct:
            o.duplicates += n - distinct
            fail(f"stream {s}: {n - distinct} duplicated rows")
        if top != n:
            o.holes += top - n
            fail(f"stream {s}: holes: max seq + 1 = {top}, rows = {n}")
        # Every row whose call returned: the counter is written after the call
        # returns (a kill in between leaves one row more than counted, never less).
        want = offered
        if n < want:
            o.missing_durable += want - n
            fail(f"stream {s}: {want - n} rows whose call returned are missing ({n} < {want}; {durable} flushed)")
        if n > offered + 64:
            fail(f"stream {s}: {n} rows, but only {offered} were offered")
        if s < 3:
            newest_t = max(newest_t, tmax)
            lost += max(0, offered - n)
        en, edistinct = evcounts.get((rid, s), (0, 0))
        o.events += en
        if en != edistinct:
            o.duplicates += en - edistinct
            fail(f"stream {s}: {en - edistinct} duplicated events")
        if en < ev_offered:
            fail(f"stream {s}: {ev_offered - en} events whose call returned are missing ({ev_durable} flushed)")
    if phase == "record" and t_kill is not None and "run" in run_ids:
        o.loss_rows = lost
        o.loss_secs = max(0.0, t_kill - newest_t) if newest_t else None

    # 4. Manifests: valid, final, and their counts match the data.
    manifests = [*root.glob("fda_run_*/manifest.toml"), *root.glob("flows/*/runs/*.toml")]
    for mpath in manifests:
        o.manifests_checked += 1
        try:
            m = read_manifest(mpath)
        except Exception as e:
            fail(f"manifest {mpath} unreadable: {e}")
            continue
        rid = m.get("run_id")
        if m.get("status") not in ("finished", "crashed"):
            fail(f"manifest {mpath}: status {m.get('status')!r}")
        written = (m.get("counts") or {}).get("rows_written")
        have = sum(v[0] for k, v in counts.items() if k[0] == rid)
        if written != have:
            fail(f"manifest {mpath}: rows_written {written} but {have} rows in the catalog")
        if m.get("mode") == "run":
            for f in m.get("files") or []:
                p = mpath.parent / f["path"]
                if not p.exists():
                    fail(f"manifest {mpath} lists missing {f['path']}")
                elif pq.ParquetFile(p).metadata.num_rows != f["rows"]:
                    fail(f"manifest {mpath}: {f['path']} rows differ")
    if len(manifests) != len(runs):
        fail(f"{len(manifests)} manifests but {len(runs)} runs in the catalog")

    # 5. A further compaction and consolidation change no count.
    if (root / "flows" / "crash").is_dir():
        compact(root, "crash", "dev")
        c2 = db.consolidate()
        if skipped := _real_skips(root, c2.files_skipped, None):
            fail(f"consolidate after compact skipped files: {skipped}")
        if catalog_counts() != counts:
            fail("counts changed after compaction + consolidation")
        if event_counts() != evcounts:
            fail("event counts changed after compaction + consolidation")
    return o


def run_campaign(
    n: int,
    base: Path,
    *,
    seed: int = 0,
    workers: int = 2,
    progress: Any = None,
) -> CampaignResult:
    """``n`` kills, targets cycling over the phases (record twice as often)."""
    t0 = time.perf_counter()
    base.mkdir(parents=True, exist_ok=True)
    phase_secs = calibrate(base)
    targets = ["record", "close", "record", "compact", "consolidate"]
    # Every fourth kill of each later phase lands as soon as that phase begins, so every
    # phase is hit however long the calibration measured it (_check asserts that).
    jobs = [(seed * 100_000 + i + 2, targets[i % len(targets)], i // len(targets) % 4 == 0) for i in range(n)]
    outcomes: list[KillOutcome] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one_kill, base, s, t, phase_secs, at_start=a) for s, t, a in jobs]
        for fut in concurrent.futures.as_completed(futures):
            outcomes.append(fut.result())
            if progress is not None:
                progress(len(outcomes), n)
    outcomes.sort(key=lambda o: o.seed)
    return CampaignResult(outcomes, time.perf_counter() - t0, phase_secs)


def summary(result: CampaignResult) -> str:
    rows, secs = result.loss()
    text = (
        f"{result.kills} kills {result.by_phase()} in {result.seconds:.0f} s; files checked "
        f"{result.total('files_checked')}, duplicates {result.total('duplicates')}, rows lost whose call "
        f"returned {result.total('missing_durable')}"
    )
    if rows:
        text += f"; rows lost per kill while recording: max {max(rows)}"
    if secs:
        text += f", secs median {statistics.median(secs):.3f} max {max(secs):.3f}"
    return text


def _check(result: CampaignResult, n: int) -> None:
    assert result.kills == n
    assert not result.failures, "\n".join(result.failures[:20])
    assert result.total("duplicates") == 0
    assert result.total("missing_durable") == 0
    phases = result.by_phase()
    # Every kind of moment was hit at least once (the sizes make this near certain).
    for p in PHASES:
        assert phases.get(p, 0) >= 1 or n < 10, phases
    rows, secs = result.loss()
    assert rows and secs
    # Nothing whose call returned is lost, whenever the kill lands.
    assert max(rows) == 0, rows
    # The newest row in the files is the one recorded just before the kill.
    assert statistics.median(secs) < 0.5, secs


def test_crash_campaign(tmp_path: Path) -> None:
    n = int(os.environ.get("FLIGHTLOG_CRASH_RUNS", "40"))
    result = run_campaign(n, tmp_path, seed=int(os.environ.get("FLIGHTLOG_CRASH_SEED", "0")))
    print(summary(result))
    _check(result, n)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FLIGHTLOG_STRESS") != "1", reason="stress size: set FLIGHTLOG_STRESS=1")
def test_crash_campaign_stress(tmp_path: Path) -> None:
    n = int(os.environ.get("FLIGHTLOG_CRASH_STRESS_RUNS", "200"))
    result = run_campaign(n, tmp_path, seed=7)
    print(summary(result))
    _check(result, n)


# A child that writes counters as the campaign's child does (a producer thread: rows,
# and now and then an event; the main thread: the durable counters), as fast as it can.
COUNTER_WRITER = (
    COUNTERS_CODE
    + r"""
import sys, threading
ctr = open_counters(sys.argv[1])

def producer():
    i = 0
    while True:
        i += 1
        put(ctr, 4, i)
        if i % 50 == 0:
            put(ctr, 6, i // 50)

threading.Thread(target=producer, daemon=True).start()
print("go", flush=True)
j = 0
while True:
    j += 1
    put(ctr, 5, j)
    put(ctr, 7, j)
"""
)


def test_counter_writes_are_whole_when_sigkill_lands(tmp_path: Path) -> None:
    """Found by the campaign's self-check ("offered counter 0 but its copy says 38833",
    about once in 250 kills): struct.pack_into zeroes its 8 bytes, converts the value,
    then stores it byte by byte, so a SIGKILL in between left a counter at 0 (or a
    prefix of its bytes). The child now writes each counter with one aligned 8-byte
    store, which a kill cannot split.

    A child writes counters flat out. SIGSTOP freezes all its threads at an instruction
    boundary, just where a SIGKILL would have left them, so each stop is a kill we can
    look at and resume: 1,000 of them at random moments, then a real SIGKILL. Every
    counter and its copy must agree, up to the one write in flight per thread."""
    rng = random.Random(12)
    ctr = tmp_path / "counters"
    ctr.write_bytes(fresh_counters())
    proc = subprocess.Popen([sys.executable, "-I", "-c", COUNTER_WRITER, str(ctr)], stdout=subprocess.PIPE, text=True)
    problems: list[str] = []
    stops = 1000
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "go\n"
        for _ in range(stops):
            time.sleep(rng.uniform(0.0, 0.001))  # a random moment of the writes, not a synchronisation
            proc.send_signal(signal.SIGSTOP)
            _, status = os.waitpid(proc.pid, os.WUNTRACED)  # returns once every thread is stopped
            assert os.WIFSTOPPED(status), status
            problems += _read_counters(ctr)[2]
            proc.send_signal(signal.SIGCONT)
        proc.kill()
        assert proc.wait(timeout=30) == -signal.SIGKILL
        counters, _copies, found = _read_counters(ctr)
        problems += found
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert counters[1][0] > 0 and counters[1][1] > 0, counters  # both threads did write
    assert not problems, f"{len(problems)} problems in {stops} stops and a kill: {problems[:10]}"


def test_kill_before_the_first_durable_row_verifies(tmp_path: Path) -> None:
    """Found by the campaign on a loaded machine: a child killed after it opened both
    runs but before any row was durable made verify() raise (the catalog's telemetry
    table has no ``tid`` column before a telemetry file is ingested), failing the whole
    campaign, and the crashed run's data files that never existed counted as "skipped".
    The child dies deterministically right after opening its runs, as the campaign's
    child does before its threads start."""
    child = (
        CHILD.split('phase("start")')[0]
        + r"""
tm_run = TelemetryManager(root, "crash", schema=schema, flush_interval=0.02, segment_rows=4096, max_rows=None)
tm_dev = TelemetryManager(root, "crash", mode="dev", schema=schema, flush_interval=0.02, segment_rows=4096, sampling=None)
os.kill(os.getpid(), 9)
"""
    )
    root = tmp_path / "k0"
    ctr = root.parent / "k0.ctr"
    ctr.write_bytes(fresh_counters())
    proc = subprocess.run(
        [sys.executable, "-c", child, str(root), "record", "1", str(ctr), "1"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    o = verify(root, ctr, seed=1, target="record", phase="record", t_kill=time.time())
    assert not o.failures, o.failures
    assert (o.rows, o.events, o.runs_without_rows) == (0, 0, 1)
    assert o.manifests_checked == 2


def test_run_and_dev_runs_of_one_flow_started_together_get_distinct_ids(tmp_path: Path) -> None:
    """Found by the campaign: a run-folder run and a dev run of the same flow started in
    the same second shared a run id, so the catalog (keyed by run_id, flow_name) mixed
    their rows. Ids are now unique per flow across modes."""
    from flightlog import DuckDBManager, TelemetryManager

    ids = []
    for modes in (("run", "dev"), ("dev", "run"), ("tuner", "run")):
        for mode in modes:
            extra = {"trial_id": "t"} if mode == "tuner" else {}
            with TelemetryManager(tmp_path, "f", "20250101_000000", mode=mode, **extra) as tm:
                tm.log(i=1)
            ids.append(tm.run_id)
    assert len(set(ids)) == len(ids), ids
    db = DuckDBManager(tmp_path)
    db.consolidate()
    assert db.query("SELECT count(*), count(DISTINCT (run_id, flow_name)) FROM runs").fetchone() == (6, 6)

"""Hostile but legal use of the flusher's drain (column-by-column blocks of 256 ring
slots, the wrap-around as two runs, each row moved into a chunk of the spool before its
slot is freed).

Every row carries ``(tid, seq)`` and values that are a pure function of them
(:func:`row_values`, the same code in the child processes): nulls, strings (empty and
non-ASCII), enums, bools, ``i64`` extremes, NaN with payloads, ``-0.0``, infinities,
``f32`` subnormals. The checks are exact: per thread, the rows are ``seq`` 0..n-1 in
file order (nothing lost, duplicated or reordered), and every value is bit-exact. The
final file is read by pyarrow and by DuckDB independently and the two are compared.
"""

from __future__ import annotations

import math
import mmap
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flightlog
from flightlog import Enum, Field, FlightRecorder, RecorderClosedError, Schema

# The values of row (tid, seq), shared with the child processes (exec'd there too).
GEN = r"""
import struct

FIELDS = ["tid", "seq", "a", "b", "s", "e", "flag", "f", "u"]
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

def _f64(bits):
    return struct.unpack("<d", struct.pack("<Q", bits))[0]

# NaNs with distinct payloads (quiet), -0.0, infinities, the smallest subnormal, the max.
F64_SPECIAL = [_f64(0x7FF8000000000001), _f64(0xFFF8DEADBEEF0001), -0.0, float("inf"),
               float("-inf"), 5e-324, 1.7976931348623157e308, _f64(0x7FF80000000ABCDE)]
I64_SPECIAL = [I64_MIN, I64_MAX, -1, 0, I64_MIN + 1, I64_MAX - 1]
STRS = ["", "a", "\u00e9t\u00e9", "\u65e5\u672c", "x" * 300, "tab\there", "nul\x00byte"]

def _h(tid, seq):
    return (seq * 2654435761 + tid * 40503 + 12345) % 2147483647

def row_values(tid, seq):
    h = _h(tid, seq)
    a = None if h % 7 == 0 else (F64_SPECIAL[h % 8] if h % 3 == 0 else seq * 0.25 - tid)
    b = None if h % 5 == 0 else (I64_SPECIAL[h % 6] if h % 4 == 0 else seq * 1000003 - tid)
    s = None if h % 11 == 0 else (STRS[h % 7] if h % 2 else "t%d-%d" % (tid, h % 53))
    e = None if h % 13 == 0 else ("RED", "AMBER", "GREEN")[h % 3]
    flag = None if h % 17 == 0 else bool(h & 8)
    f = None if h % 9 == 0 else [-0.0, float("inf"), 1e-45, 3.0e38, seq * 0.5][h % 5]
    # High cardinality: a string no row had before, every other row.
    u = None if h % 19 == 0 else ("%d:%d" % (tid, seq) if h % 2 else "same")
    return (tid, seq, a, b, s, e, flag, f, u)
"""
_GEN_NS: dict = {}
exec(GEN, _GEN_NS)  # the parent's copy of the children's code
FIELDS: list[str] = _GEN_NS["FIELDS"]
row_values = _GEN_NS["row_values"]

SCHEMA = Schema(
    [
        Field("tid", "i64", nullable=False),
        Field("seq", "i64", nullable=False),
        Field("a", "f64"),
        Field("b", "i64"),
        Field("s", "str"),
        Field("e", Enum(["RED", "AMBER", "GREEN"])),
        Field("flag", "bool"),
        Field("f", "f32"),
        Field("u", "str"),
    ]
)


def f64_bits(v: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", v))[0]


def f32_bits(v: float) -> int:
    return struct.unpack("<I", struct.pack("<f", v))[0]


def columns_for(tid: int, seqs: range) -> dict[str, list]:
    """extend() columns of rows (tid, seq) for seq in seqs (lists, with None as null)."""
    rows = [row_values(tid, k) for k in seqs]
    return {name: [r[i] for r in rows] for i, name in enumerate(FIELDS)}


def emit(rec: FlightRecorder, tid: int, start: int, n: int, how: str) -> None:
    """Records rows start..start+n of thread tid by record(), log() or extend()."""
    if how == "extend":
        cols = columns_for(tid, range(start, start + n))
        pick = random.Random(start).random()
        if n and pick < 0.3:
            # numpy columns for the non-null ones: the array path.
            cols["tid"] = np.full(n, tid, dtype=np.int64)
            cols["seq"] = np.arange(start, start + n, dtype=np.int64)
        elif n and pick < 0.6:
            # Strided and reversed views, a broadcast column.
            cols["tid"] = np.broadcast_to(np.int64(tid), (n,))
            cols["seq"] = np.arange(start + n - 1, start - 1, -1, dtype=np.int64)[::-1]
            # A masked array: masked entries are nulls.
            f = cols["f"]
            cols["f"] = np.ma.masked_array([0.0 if v is None else v for v in f], mask=[v is None for v in f])
        rec.extend(**cols)
    elif how == "log":
        for k in range(start, start + n):
            v = row_values(tid, k)
            kw = {name: x for name, x in zip(FIELDS, v, strict=True) if x is not None}
            rec.log(**kw)
    else:
        for k in range(start, start + n):
            rec.record(*row_values(tid, k))


def _same(col: str, got, want) -> bool:
    if want is None or got is None:
        return got is None and want is None
    if col == "a":
        return f64_bits(got) == f64_bits(want)
    if col == "f":
        return f32_bits(got) == f32_bits(want)
    return got == want and type(got) is type(want)


def check_table(table: pa.Table, counts: dict[int, tuple[int, int]], *, holes: bool = False) -> None:
    """Per thread t with counts[t] == (lo, hi): its rows are seq 0..m-1 in file order
    with lo <= m <= hi, each with exactly the values row_values gives; no other rows.
    With ``holes`` (rows dropped by on_full="drop"): strictly increasing seqs below hi."""
    tids = table.column("tid").to_numpy()
    seqs = table.column("seq").to_numpy()
    assert set(np.unique(tids).tolist()) <= set(counts), "rows of a thread that never recorded"
    for t, (lo, hi) in counts.items():
        mine = seqs[tids == t]
        if holes:
            assert (np.diff(mine) > 0).all(), f"thread {t}: rows reordered or twice"
            assert mine.size == 0 or (mine[0] >= 0 and mine[-1] < hi), f"thread {t}: a row never offered"
            continue
        assert (mine == np.arange(mine.size)).all(), (
            f"thread {t}: rows lost, duplicated or reordered (first bad index "
            f"{int(np.argmax(mine != np.arange(mine.size)))} of {mine.size})"
        )
        assert lo <= mine.size <= hi, f"thread {t}: {mine.size} rows, expected {lo}..{hi}"
    cols = {name: table.column(name).to_pylist() for name in FIELDS}
    for i in range(table.num_rows):
        want = row_values(int(tids[i]), int(seqs[i]))
        for j, name in enumerate(FIELDS):
            assert _same(name, cols[name][i], want[j]), (
                f"row {i} (tid {tids[i]}, seq {seqs[i]}) column {name}: {cols[name][i]!r} != {want[j]!r}"
            )


def check_duckdb_agrees(path: Path, table: pa.Table) -> None:
    """DuckDB reads the same file on its own: same rows, in the same order, same values
    (NaN-ness and the sign of zero for floats; DuckDB may canonicalise NaN payloads)."""
    with duckdb.connect() as con:
        got = con.execute(
            "select tid, seq, a, b, s::varchar, e::varchar, flag, f, u::varchar "
            f"from read_parquet('{path}', file_row_number=true) order by file_row_number"
        ).fetchall()
    assert len(got) == table.num_rows
    cols = [table.column(name).to_pylist() for name in FIELDS]
    for i, row in enumerate(got):
        for j, v in enumerate(row):
            w = cols[j][i]
            if isinstance(w, float) and v is not None:
                if math.isnan(w):
                    assert math.isnan(v), (i, j, v, w)
                else:
                    assert v == w and math.copysign(1, v) == math.copysign(1, w), (i, j, v, w)
            else:
                assert v == w, f"duckdb row {i} col {FIELDS[j]}: {v!r} != pyarrow {w!r}"


def read_final(run: Path) -> pa.Table:
    path = run / "telemetry.parquet"
    table = pq.read_table(path)
    check_duckdb_agrees(path, table)
    return table


# ---------------------------------------------------------------------------------------
# One thread: every ring capacity x segment size x call mix that straddles 256 and the wrap


SIZES = [1, 2, 3, 127, 255, 256, 257, 511, 512, 513, 1000]


@pytest.mark.parametrize(
    ("ring", "segment"),
    [
        (2, 1),
        (2, 257),
        (3, 255),
        (255, 256),
        (256, 257),
        (257, 256),
        (511, 1),
        (511, 509),
        (1000, 255),
        (1000, 4099),
        (4, 262144),
    ],
)
def test_one_thread_grid_exact(tmp_path: Path, ring: int, segment: int) -> None:
    rng = random.Random(ring * 7919 + segment)
    total_budget = 2500 if segment > 1 else 700  # a segment a row is a file a row
    done = 0
    with FlightRecorder(
        tmp_path / "run",
        SCHEMA,
        ring_capacity=ring,
        segment_rows=segment,
        flush_interval=rng.choice([0.001, 0.02, 60.0]),
    ) as rec:
        while done < total_budget:
            n = rng.choice([*SIZES, ring, ring + 1, 2 * ring - 1, segment, segment + 1])
            n = min(n, total_budget - done)
            how = rng.choice(["extend", "extend", "record", "log"])
            emit(rec, 0, done, n, how)
            done += n
            if rng.random() < 0.05:
                # A read in the middle: a flush, and every row so far counted.
                assert len(rec) == done
    st = rec.stats()
    assert st["rows_offered"] == done
    assert st["rows_written"] == done
    assert st["rows_dropped"] == st["rows_lost"] == 0
    table = read_final(tmp_path / "run")
    assert table.num_rows == done
    check_table(table, {0: (done, done)})


# ---------------------------------------------------------------------------------------
# Many threads, different rates, early exits, late starts


def _producer(rec: FlightRecorder, tid: int, total: int, seed: int, start_gate=None) -> None:
    rng = random.Random(seed)
    if start_gate is not None:
        start_gate.wait()
    done = 0
    while done < total:
        n = min(total - done, rng.choice([1, 1, 3, 255, 256, 257, 64, 700]))
        emit(rec, tid, done, n, rng.choice(["extend", "record", "log"]))
        done += n
        if rng.random() < 0.1:
            time.sleep(rng.choice([0.0, 0.0005, 0.002]))


@pytest.mark.parametrize(("ring", "segment", "flush"), [(4, 257, 0.001), (256, 1000, 0.05), (512, 263, 30.0)])
def test_many_threads_exact(tmp_path: Path, ring: int, segment: int, flush: float) -> None:
    rng = random.Random(ring + segment)
    totals = {t: rng.choice([0, 1, 255, 256, 257, 900, 2500, 4000]) for t in range(1, 15)}
    totals[1] = 4000
    late = threading.Event()
    with FlightRecorder(
        tmp_path / "run", SCHEMA, ring_capacity=ring, segment_rows=segment, flush_interval=flush
    ) as rec:
        threads = [
            threading.Thread(target=_producer, args=(rec, t, n, 1000 * t + ring, late if t >= 12 else None))
            for t, n in totals.items()
        ]
        for th in threads:
            th.start()
        # The late ones start after the first thread's rows are in flight.
        threads[0].join()
        late.set()
        for th in threads:
            th.join()
    st = rec.stats()
    total = sum(totals.values())
    assert st["rows_written"] == st["rows_offered"] == total
    table = read_final(tmp_path / "run")
    assert table.num_rows == total
    check_table(table, {t: (n, n) for t, n in totals.items()})


def test_segments_spanning_pending_chunks_are_exact(tmp_path: Path) -> None:
    """Segments larger than the flusher's pending chunks (16,384 rows each, built into
    one batch each and refilled once written): 8 threads, 40,000-row segments, so each
    segment is three chunks, while a string field gets a value no row had before every
    other row (its dictionary grows inside every segment). Every row exact, once, in
    order per thread; each segment is one row group of the final file."""
    totals = {t: 12_000 for t in range(1, 9)}
    with FlightRecorder(tmp_path / "run", SCHEMA, ring_capacity=4096, segment_rows=40_000, flush_interval=30.0) as rec:
        threads = [threading.Thread(target=_producer, args=(rec, t, n, 77 * t)) for t, n in totals.items()]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    st = rec.stats()
    assert st["rows_written"] == st["rows_offered"] == 96_000
    meta = pq.ParquetFile(tmp_path / "run" / "telemetry.parquet").metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert groups == [40_000, 40_000, 16_000], groups
    table = read_final(tmp_path / "run")
    check_table(table, {t: (n, n) for t, n in totals.items()})


def test_short_lived_threads_reuse_lanes(tmp_path: Path) -> None:
    """Hundreds of threads come and go (up to 16 at once): retired lanes are freed once
    drained and claimed again while their slots may still hold unpublished rows."""
    rng = random.Random(77)
    totals = {t: rng.choice([1, 2, 5, 255, 257, 600]) for t in range(400)}
    sem = threading.Semaphore(16)

    def run(t: int) -> None:
        try:
            _producer(rec, t, totals[t], t)
        finally:
            sem.release()

    with FlightRecorder(tmp_path / "run", SCHEMA, ring_capacity=8, segment_rows=301, flush_interval=0.003) as rec:
        threads = []
        for t in totals:
            sem.acquire()
            th = threading.Thread(target=run, args=(t,))
            th.start()
            threads.append(th)
        for th in threads:
            th.join()
    table = read_final(tmp_path / "run")
    assert table.num_rows == sum(totals.values())
    check_table(table, {t: (n, n) for t, n in totals.items()})


def test_close_races_producers(tmp_path: Path) -> None:
    """close() while 10 threads record flat out: every row whose call returned is in the
    file, at most the call in flight more, per thread in order, no duplicates."""
    begun = dict.fromkeys(range(10), 0)
    returned = dict.fromkeys(range(10), 0)
    started = threading.Barrier(11)

    def run(t: int) -> None:
        rng = random.Random(t)
        started.wait()
        while True:
            n = rng.choice([1, 255, 256, 257, 17])
            how = rng.choice(["extend", "record"]) if n > 1 else "log"
            begun[t] = returned[t] + n
            try:
                emit(rec, t, returned[t], n, how)
            except RecorderClosedError:
                return
            returned[t] += n

    rec = FlightRecorder(tmp_path / "run", SCHEMA, ring_capacity=16, segment_rows=257, flush_interval=0.001)
    threads = [threading.Thread(target=run, args=(t,)) for t in range(10)]
    for th in threads:
        th.start()
    started.wait()
    deadline = time.monotonic() + 10
    while sum(returned.values()) < 20000 and time.monotonic() < deadline:
        time.sleep(0.005)
    rec.close()
    for th in threads:
        th.join()
    assert sum(returned.values()) > 0
    table = read_final(tmp_path / "run")
    check_table(table, {t: (returned[t], begun[t]) for t in range(10)})


# ---------------------------------------------------------------------------------------
# Layout corners: more than 64 stored fields (two validity words), constants in between


def test_two_validity_words_and_constants_exact(tmp_path: Path) -> None:
    """70 nullable fields (validity bits in two words) with constant columns between
    them: nulls at slots 0, 62, 63, 64, 65 and 69 in patterns that change every row,
    across blocks of 256 and the ring's wrap."""
    names = [f"x{i}" for i in range(70)]
    fields = [Field("seq", "i64", nullable=False)]
    constants = {}
    for i, name in enumerate(names):
        fields.append(Field(name, "f64" if i % 2 else "i64"))
        if i in (10, 40):
            fields.append(Field(f"c{i}", "str", nullable=False))
            constants[f"c{i}"] = f"const-{i}"
    schema = Schema(fields)

    def value(k: int, i: int):
        if (k * 31 + i * 17) % (3 + i % 5) == 0 or (i in (62, 63, 64, 65, 69) and (k >> (i % 7)) & 1):
            return None
        return k * 0.5 + i if i % 2 else k * 100 + i

    n = 3 * 257 + 5
    rows = [[k] + [value(k, i) for i in range(70)] for k in range(n)]
    with FlightRecorder(
        tmp_path / "run", schema, ring_capacity=128, segment_rows=263, flush_interval=0.002, constants=constants
    ) as rec:
        k = 0
        rng = random.Random(5)
        while k < n:
            m = min(n - k, rng.choice([1, 255, 256, 257, 130]))
            if m == 1:
                rec.record(*rows[k])
            else:
                cols = {"seq": [r[0] for r in rows[k : k + m]]}
                for i, name in enumerate(names):
                    cols[name] = [r[i + 1] for r in rows[k : k + m]]
                rec.extend(**cols)
            k += m
    table = pq.read_table(tmp_path / "run" / "telemetry.parquet")
    assert table.column("seq").to_pylist() == list(range(n))
    for i, name in enumerate(names):
        assert table.column(name).to_pylist() == [r[i + 1] for r in rows], name
    for c, v in constants.items():
        assert table.column(c).to_pylist() == [v] * n
    with duckdb.connect() as con:
        nulls = con.execute(
            f"select count(*) filter (where x63 is null), count(*) filter (where x64 is null), "
            f"count(*) filter (where x69 is null) from read_parquet('{tmp_path / 'run' / 'telemetry.parquet'}')"
        ).fetchone()
    assert nulls == tuple(sum(r[i + 1] is None for r in rows) for i in (63, 64, 69))


def test_drop_policy_keeps_order_and_counts(tmp_path: Path) -> None:
    """on_full="drop" with a ring of 2 and 6 threads: what is kept is in order and exact,
    and written + dropped == offered."""
    totals = dict.fromkeys(range(6), 3000)
    with FlightRecorder(
        tmp_path / "run", SCHEMA, ring_capacity=2, segment_rows=256, flush_interval=0.001, on_full="drop"
    ) as rec:
        threads = [threading.Thread(target=_producer, args=(rec, t, n, t)) for t, n in totals.items()]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    st = rec.stats()
    assert st["rows_offered"] == sum(totals.values())
    assert st["rows_written"] + st["rows_dropped"] == st["rows_offered"]
    table = read_final(tmp_path / "run")
    assert table.num_rows == st["rows_written"]
    # Drops leave holes: check order, uniqueness and values per thread instead of a prefix.
    tids = table.column("tid").to_numpy()
    seqs = table.column("seq").to_numpy()
    for t in totals:
        mine = seqs[tids == t]
        assert (np.diff(mine) > 0).all(), f"thread {t}: rows reordered or twice"
    cols = {name: table.column(name).to_pylist() for name in FIELDS}
    for i in range(table.num_rows):
        want = row_values(int(tids[i]), int(seqs[i]))
        for j, name in enumerate(FIELDS):
            assert _same(name, cols[name][i], want[j]), (i, name)


# ---------------------------------------------------------------------------------------
# kill -9 while recording flat out with small rings (slots freed and refilled often)

PROGRESS_WORDS = 8192  # word 0: started; word 1: tids spawned; words 2t, 2t+1: begun, returned

CHILD = GEN + textwrap.dedent(
    r"""
    import mmap, os, random, sys, threading, time
    import numpy as np
    from flightlog import Enum, Field, FlightRecorder, Schema

    run, prog, seed, ring, segment, flush, mode = sys.argv[1:8]
    seed, ring, segment, flush = int(seed), int(ring), int(segment), float(flush)
    fd = os.open(prog, os.O_RDWR)
    P = memoryview(mmap.mmap(fd, 8 * 8192)).cast("q")
    schema = Schema([
        Field("tid", "i64", nullable=False), Field("seq", "i64", nullable=False), Field("a", "f64"),
        Field("b", "i64"), Field("s", "str"), Field("e", Enum(["RED", "AMBER", "GREEN"])),
        Field("flag", "bool"), Field("f", "f32"), Field("u", "str"),
    ])
    rec = FlightRecorder(run, schema, ring_capacity=ring, segment_rows=segment, flush_interval=flush,
                         on_full="drop" if mode == "drop" else "block")

    def body(t, total):
        r = random.Random(seed * 100003 + t)
        done = 0
        while done < total:
            n = min(total - done, r.choice([1, 1, 2, 255, 256, 257, ring, ring + 1, 1000]))
            how = "extend" if n > 2 else r.choice(["record", "log"])
            P[2 * t] = done + n  # begun
            if how == "extend":
                rows = [row_values(t, k) for k in range(done, done + n)]
                cols = {name: [row[i] for row in rows] for i, name in enumerate(FIELDS)}
                cols["seq"] = np.arange(done, done + n, dtype=np.int64)
                rec.extend(**cols)
            elif how == "log":
                for k in range(done, done + n):
                    rec.log(**{name: x for name, x in zip(FIELDS, row_values(t, k)) if x is not None})
            else:
                for k in range(done, done + n):
                    rec.record(*row_values(t, k))
            done += n
            P[2 * t + 1] = done  # returned
            if t % 5 == 4 and r.random() < 0.01:
                time.sleep(0.002)  # a slower thread

    r = random.Random(seed)
    if mode == "churn":
        # Threads come and go, 12 at a time: lanes retire, are freed and claimed again.
        live = []
        t = 1
        while t < 4000:
            live = [th for th in live if th.is_alive()]
            if len(live) < 12:
                P[1] = t
                th = threading.Thread(target=body, args=(t, r.choice([1, 3, 256, 700, 2000, 5000])), daemon=True)
                th.start()
                live.append(th)
                t += 1
                P[0] = 1
            else:
                time.sleep(0.0005)
    else:
        P[1] = 6
        for t in range(1, 6):
            threading.Thread(target=body, args=(t, 10**12), daemon=True).start()
        P[0] = 1
    time.sleep(3600)
    """
)

KILLS = [
    # seed, ring, segment, flush, mode
    (1, 2, 257, 0.001, "flat"),
    (2, 4, 1000, 0.01, "flat"),
    (3, 256, 4099, 0.05, "flat"),
    (4, 257, 255, 0.002, "flat"),
    (5, 512, 20000, 0.5, "flat"),
    (6, 1000, 3001, 60.0, "flat"),
    (7, 16, 256, 0.001, "flat"),
    (8, 256, 262144, 60.0, "flat"),
    (9, 8, 263, 0.003, "churn"),
    (10, 256, 4096, 0.05, "churn"),
    (11, 64, 70000, 60.0, "churn"),
    (12, 4, 257, 0.001, "drop"),
    (13, 256, 30000, 0.2, "drop"),
]


@pytest.mark.parametrize(("seed", "ring", "segment", "flush", "mode"), KILLS)
def test_kill_recording_flat_out_then_recover(
    tmp_path: Path, seed: int, ring: int, segment: int, flush: float, mode: str
) -> None:
    run = tmp_path / "run"
    prog = tmp_path / "progress"
    prog.write_bytes(b"\0" * 8 * PROGRESS_WORDS)
    args = [str(run), str(prog), str(seed), str(ring), str(segment), str(flush), mode]
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], stderr=subprocess.PIPE, env=dict(os.environ, PYTHONWARNINGS="ignore")
    )
    fd = os.open(prog, os.O_RDONLY)
    m = mmap.mmap(fd, 8 * PROGRESS_WORDS, prot=mmap.PROT_READ)
    words = memoryview(m).cast("q")
    chunks: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        rng = random.Random(seed)
        # Record at least a few rings' worth, until a chunk shows, then a seeded while more.
        want_rows = 20 * max(ring, 256)
        kill_after = rng.uniform(0.0, 0.4)
        t0 = None
        while True:
            assert p.poll() is None, "the child died"
            assert time.monotonic() < deadline, "the child never got going, or never drained into a chunk"
            chunks |= {q.name for q in run.glob(".flightlog.spool/*/chunk-*.cols")}
            returned = sum(words[2 * t + 1] for t in range(1, words[1] + 1))
            if words[0] == 1 and returned >= want_rows and chunks:
                t0 = t0 or time.monotonic()
                if time.monotonic() - t0 >= kill_after:
                    break
            time.sleep(0.002)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.stderr is not None
        err = p.stderr.read().decode()
        p.stderr.close()
    assert "Traceback" not in err and "panic" not in err, err
    counts = {t: (int(words[2 * t + 1]), int(words[2 * t])) for t in range(1, words[1] + 1)}
    words.release()
    m.close()
    os.close(fd)
    rep = flightlog.recover(tmp_path)  # no manifest: the dead claim holder (this host) says it died
    assert not rep.errors, rep.errors
    assert [Path(r["path"]) for r in rep.recovered] == [run], rep
    assert not (run / ".flightlog.spool").exists()
    table = read_final(run)
    check_table(table, counts, holes=mode == "drop")
    again = flightlog.recover(tmp_path, stale_after=0)
    assert again.recovered == [] and not again.errors


# ---------------------------------------------------------------------------------------
# Reads and flushes racing the producers


def test_flush_and_reads_mid_run_see_every_returned_row(tmp_path: Path) -> None:
    """While 6 threads record into small rings, a reader thread snapshots each thread's
    returned count, then calls flush() / to_arrow(): rows_written covers every row
    returned before the call, and the table read holds, per thread, a prefix in order
    at least that long, with exact values."""
    n_threads = 6
    returned = dict.fromkeys(range(n_threads), 0)
    stop = threading.Event()
    problems: list[str] = []

    def produce(t: int) -> None:
        rng = random.Random(t)
        done = 0
        while not stop.is_set() and done < 12000:
            n = rng.choice([1, 2, 255, 256, 257, 31])
            emit(rec, t, done, n, "extend" if n > 2 else rng.choice(["record", "log"]))
            done += n
            returned[t] = done

    rec = FlightRecorder(tmp_path / "run", SCHEMA, ring_capacity=64, segment_rows=1000, flush_interval=5.0)
    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    try:
        for k in range(9):
            before = dict(returned)
            if k % 3 == 2:
                table = pa.table(rec.to_arrow())
                try:
                    check_table(table, {t: (before[t], 10**9) for t in range(n_threads)})
                except AssertionError as e:  # pragma: no cover - reported below
                    problems.append(f"read {k}: {e}")
            else:
                rec.flush()
                written = rec.stats()["rows_written"]
                if written < sum(before.values()):
                    problems.append(f"flush {k}: {written} rows written < {sum(before.values())} returned before it")
            time.sleep(0.01)
    finally:
        stop.set()
        for th in threads:
            th.join()
        rec.close()
    assert not problems, problems
    table = read_final(tmp_path / "run")
    check_table(table, {t: (returned[t], returned[t]) for t in range(n_threads)})


BAD = {"tid": "x", "seq": 1.5, "a": "nan?", "b": 2**64, "s": 7, "e": "PURPLE", "flag": "yes", "f": object(), "u": b"x"}


def test_rejected_calls_between_rows_leave_nothing_behind(tmp_path: Path) -> None:
    """Half the calls are refused (a bad value after nulls in earlier fields, by record,
    log and extend): a refused row's partly filled slot, nulls included, never leaks
    into the next row, across a ring of 4 wrapping every few rows."""
    rng = random.Random(1)
    refused = 0
    n = 3000
    with FlightRecorder(tmp_path / "run", SCHEMA, ring_capacity=4, segment_rows=7, flush_interval=0.001) as rec:
        for k in range(n):
            if rng.random() < 0.5:
                v = list(row_values(0, k))
                j = rng.randrange(2, len(FIELDS))
                v[2:j] = [None] * (j - 2)
                v[j] = BAD[FIELDS[j]]
                how = rng.choice(["record", "log", "extend"])
                with pytest.raises((TypeError, ValueError, OverflowError)):
                    if how == "record":
                        rec.record(*v)
                    elif how == "log":
                        rec.log(**dict(zip(FIELDS, v, strict=True)))
                    else:
                        rec.extend(**{name: [x] for name, x in zip(FIELDS, v, strict=True)})
                refused += 1
            emit(rec, 0, k, 1, rng.choice(["record", "log"]))
    assert refused > 1000
    st = rec.stats()
    assert st["rows_written"] == n
    table = read_final(tmp_path / "run")
    check_table(table, {0: (n, n)})


def test_drained_rows_are_committed_in_a_chunk_exactly(tmp_path: Path) -> None:
    """Rows the flusher drained are in a chunk file of the spool before their ring slots
    are freed: its header commits exactly the rows drained, each row's tag holds its lane
    and ring position, and each word column holds the rows' own words (the drain's
    column-by-column copy reads the slots right)."""
    ring = 1024
    n = ring // 4 + 1
    run = tmp_path / "run"
    with FlightRecorder(run, SCHEMA, ring_capacity=ring, segment_rows=10**6, flush_interval=60.0) as rec:
        emit(rec, 3, 0, n, "record")
        deadline = time.monotonic() + 20
        while True:
            chunks = list(run.glob(".flightlog.spool/*/chunk-*.cols"))
            words = np.fromfile(chunks[0], dtype="<u8") if chunks else np.zeros(8, dtype="<u8")
            if int(words[3]) == n:  # the flusher drains every 20 ms
                break
            assert time.monotonic() < deadline, f"{n} rows were never committed to a chunk"
            time.sleep(0.005)
        assert len(chunks) == 1
        assert words[:4].tobytes()[:8] == b"FLCHUNK2"
        width = len(FIELDS) + 1  # one word a field, one validity word
        capacity = int(words[2])
        assert int(words[1]) == width and capacity >= n
        columns = words[8 : 8 + (1 + width) * capacity].reshape(1 + width, capacity)[:, :n]
        tags = columns[0]
        assert ((tags >> 48) == tags[0] >> 48).all(), "one lane"
        assert (tags & ((1 << 48) - 1)).tolist() == list(range(n))
        recs = columns[1:].T
        assert recs[:, 0].tolist() == [3] * n  # tid
        assert recs[:, 1].tolist() == list(range(n))  # seq
        for k, r in enumerate(recs):
            v = row_values(3, k)
            validity = int(r[width - 1])
            assert bool(validity & (1 << 2)) == (v[2] is not None), k
            if v[2] is not None:
                assert int(r[2]) == f64_bits(v[2]), k
            assert bool(validity & (1 << 3)) == (v[3] is not None), k
            if v[3] is not None:
                assert int(r[3]) == v[3] % 2**64, k
        # The producer may now wrap over the released slots: nothing lost at close.
        emit(rec, 3, n, 3 * ring + 7, "extend")
    total = n + 3 * ring + 7
    assert not (run / ".flightlog.spool").exists()
    table = read_final(run)
    check_table(table, {3: (total, total)})


def test_a_spool_that_cannot_hold_a_ring_or_a_chunk_is_counted_in_stats(tmp_path: Path) -> None:
    """A ring or chunk the spool cannot make (names taken by folders here; on a real
    machine, a full disk) is kept in memory: counted in ``stats()["spool_errors"]``, and
    every row still reaches the final file."""
    run = tmp_path / "run"
    with FlightRecorder(run, SCHEMA, flush_interval=60.0) as rec:
        assert rec.stats()["spool_errors"] == 0
        (spool,) = run.glob(".flightlog.spool/*/")
        (spool / "lane-000.ring").mkdir()
        (spool / "chunk-000000.cols").mkdir()
        emit(rec, 1, 0, 500, "record")
        rec.flush()
        assert rec.stats()["spool_errors"] == 2
    table = read_final(run)
    check_table(table, {1: (500, 500)})

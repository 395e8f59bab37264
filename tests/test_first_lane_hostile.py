"""Hostile (but legal) use of the first-lane fast path (issue 12, session 22): the thread
that owns lane 0 finds it by ``pthread_self()``, the producer's cursor lives in the
lane, the owner word is cleared when the registration drops, and a nested offer on
the same thread is refused.

* many short-lived threads, one after another (thread ids reused by the OS) and
  overlapping, with and without the main thread recording: every row once, each
  thread's rows in order, exact stats;
* the first recording thread exits while others keep recording, and a newcomer
  takes lane 0 over;
* os.fork() after recording from the main thread and from a non-main thread (also
  forking from the thread that owns lane 0): the child's record()/log()/extend()
  raise, the parent's run keeps every row;
* close() racing recording threads: a row whose record() returned is in the file,
  a row that raised RecorderClosedError is not;
* kill -9 of a child recording from threads that come and go, then recover();
* two or three recorders used alternately by the same threads while some close;
* values whose conversion calls back into the recorder (not an offer in progress:
  no error);
* rings in anonymous memory (the spool cannot hold a ring file: RLIMIT_FSIZE);
* a fork Python's at-fork hooks do not see (libc fork() through ctypes): the child is
  refused too (the core's own pthread_atfork handler; before it, the child's rows
  overwrote the parent's in the shared ring, silently).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import flightlog
from conftest import run_child_json
from flightlog import Field, FlightRecorder, RecorderClosedError, Schema

SCHEMA = Schema([Field("iter", "i64", nullable=False), Field("x", "f64", nullable=False)])
K = 1_000_000  # iter = thread * K + sequence


def _iters(path: Path) -> list[int]:
    return pq.read_table(path / "telemetry.parquet")["iter"].to_pylist()


def _check_rows(iters: list[int], expected: dict[int, int]) -> None:
    """Every thread ``t`` has exactly rows ``0..expected[t]``, once, in file order."""
    expected = {t: n for t, n in expected.items() if n}
    assert len(iters) == len(set(iters)), "duplicated rows"
    seen: dict[int, list[int]] = defaultdict(list)
    for it in iters:
        seen[it // K].append(it % K)
    assert set(seen) == set(expected), (sorted(seen), sorted(expected))
    for t, n in expected.items():
        assert seen[t] == list(range(n)), f"thread {t}: {len(seen[t])} rows of {n}, or out of order"


def _record(rec: FlightRecorder, t: int, n: int, *, log: bool = False, start: int = 0) -> None:
    for i in range(start, start + n):
        if log:
            rec.log(iter=t * K + i, x=float(i))
        else:
            rec.record(t * K + i, float(i))


def _stats_exact(rec: FlightRecorder, n: int) -> None:
    s = rec.stats()
    assert s["rows_offered"] == n, s
    assert s["rows_written"] == n, s
    assert s["rows_dropped"] == 0 and s["rows_lost"] == 0, s


@pytest.mark.parametrize("main_records", [False, True])
@pytest.mark.parametrize("capacity", [8, 64])
def test_short_lived_threads_in_turn_and_overlapping_keep_every_row_once_in_order(
    tmp_path: Path, main_records: bool, capacity: int
) -> None:
    rec = FlightRecorder(tmp_path / "run", SCHEMA, ring_capacity=capacity, flush_interval=0.002, segment_rows=500)
    expected: dict[int, int] = {}
    t = 1
    if main_records:
        _record(rec, 0, 100)
        expected[0] = 100
    # One after another: a new thread often gets the id (pthread_t) of the one joined.
    for _ in range(40):
        th = threading.Thread(target=_record, args=(rec, t, 200), kwargs={"log": t % 3 == 0})
        th.start()
        th.join()
        expected[t] = 200
        t += 1
    if main_records:
        _record(rec, 0, 100, start=100)  # the main thread kept lane 0 throughout
        expected[0] = 200
    # Overlapping, in waves, with the main thread recording in between.
    for wave in range(6):
        threads = []
        for _ in range(5):
            threads.append(threading.Thread(target=_record, args=(rec, t, 300), kwargs={"log": wave % 2 == 1}))
            expected[t] = 300
            t += 1
        for th in threads:
            th.start()
        if main_records:
            _record(rec, 0, 50, start=expected[0])
            expected[0] += 50
        for th in threads:
            th.join()
    rec.close()
    total = sum(expected.values())
    _stats_exact(rec, total)
    _check_rows(_iters(tmp_path / "run"), expected)


def test_the_first_thread_exits_while_others_record_and_a_newcomer_takes_lane_0(tmp_path: Path) -> None:
    rec = FlightRecorder(tmp_path / "run", SCHEMA, ring_capacity=8, flush_interval=0.002)
    go_on = threading.Event()
    first_done = threading.Event()
    expected: dict[int, int] = {}

    def first() -> None:  # the first thread to record: owns lane 0
        _record(rec, 1, 500)
        first_done.set()

    def steady(t: int) -> None:
        i = 0
        while not go_on.is_set() or i < 2000:
            rec.record(t * K + i, 0.0)
            i += 1
        expected[t] = i

    a = threading.Thread(target=first)
    a.start()
    assert first_done.wait(20)
    others = [threading.Thread(target=steady, args=(t,)) for t in (2, 3)]
    for th in others:
        th.start()
    a.join()
    expected[1] = 500
    # Newcomers one after another (one of them takes lane 0 once it is drained and freed).
    for t in range(10, 30):
        th = threading.Thread(target=_record, args=(rec, t, 300))
        th.start()
        th.join()
        expected[t] = 300
    go_on.set()
    for th in others:
        th.join()
    _record(rec, 99, 300)  # the main thread, last
    expected[99] = 300
    rec.close()
    _stats_exact(rec, sum(expected.values()))
    _check_rows(_iters(tmp_path / "run"), expected)


FORK_CHILD = textwrap.dedent(
    """
    import json, os, sys, threading
    import numpy as np
    import pyarrow.parquet as pq
    import flightlog
    from flightlog import Field, FlightRecorder, Schema
    K = 1_000_000
    mode = sys.argv[2]
    schema = Schema([Field("iter", "i64", nullable=False), Field("x", "f64", nullable=False)])
    rec = FlightRecorder(sys.argv[1], schema, ring_capacity=8, flush_interval=0.002)
    n = {}

    def rec_n(t, k):
        for i in range(n.get(t, 0), n.get(t, 0) + k):
            rec.record(t * K + i, float(i))
        n[t] = n.get(t, 0) + k

    def child_tries():
        # In the child: every producer call refuses; os._exit with a code saying which failed.
        bad = 0
        for i, call in enumerate((
            lambda: rec.record(777 * K, 0.0),
            lambda: rec.log(iter=777 * K + 1, x=0.0),
            lambda: rec.extend(iter=np.array([777 * K + 2]), x=np.array([0.0])),
            lambda: rec.record(777 * K + 3, 0.0),
        )):
            try:
                call()
                bad |= 1 << i
            except flightlog.FlightlogError:
                pass
            except BaseException:
                bad |= 1 << (i + 4)
        # A thread of the child (it may get the pthread_t of a parent thread that owned a lane).
        res = []
        def in_thread():
            try:
                rec.record(778 * K, 0.0)
                res.append("recorded")
            except flightlog.FlightlogError:
                res.append("refused")
        th = threading.Thread(target=in_thread)
        th.start(); th.join()
        if res != ["refused"]:
            bad |= 1 << 8
        # A recorder of the child's own works, from its main thread (same key as the
        # parent's forking thread) and from a new thread.
        own = FlightRecorder(sys.argv[1] + "-child", schema, ring_capacity=8, flush_interval=0.002)
        for i in range(100):
            own.record(i, 0.0)
        th = threading.Thread(target=lambda: [own.record(1000 + i, 0.0) for i in range(100)])
        th.start(); th.join()
        own.close()
        got = sorted(pq.read_table(sys.argv[1] + "-child/telemetry.parquet")["iter"].to_pylist())
        if got != list(range(100)) + list(range(1000, 1100)):
            bad |= 1 << 9
        os._exit(bad)

    def fork_and_check():
        pid = os.fork()
        if pid == 0:
            try:
                child_tries()
            finally:
                os._exit(99)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    codes = []
    if mode == "main-owns":
        rec_n(0, 300)                       # main takes lane 0
        th = threading.Thread(target=rec_n, args=(1, 300)); th.start(); th.join()
        codes.append(fork_and_check())
    elif mode == "thread-owns":
        th = threading.Thread(target=rec_n, args=(1, 300)); th.start(); th.join()  # lane 0, then freed
        held = threading.Event(); release = threading.Event()
        def owner():
            rec_n(2, 300); held.set(); release.wait(); rec_n(2, 300)
        th2 = threading.Thread(target=owner); th2.start(); held.wait()
        rec_n(0, 300)
        codes.append(fork_and_check())
        release.set(); th2.join()
    elif mode == "fork-from-owner":
        # The thread that owns lane 0 forks: the child's only thread has its pthread_t.
        def owner():
            rec_n(3, 300)
            codes.append(fork_and_check())
            rec_n(3, 300)
        th = threading.Thread(target=owner); th.start(); th.join()
        rec_n(0, 300)
    rec_n(0, 100)                           # the parent goes on after the fork
    rec.close()
    iters = pq.read_table(sys.argv[1] + "/telemetry.parquet")["iter"].to_pylist()
    print(json.dumps({"codes": codes, "n": n, "iters": iters, "stats": rec.stats()}))
    """
)


@pytest.mark.parametrize("mode", ["main-owns", "thread-owns", "fork-from-owner"])
def test_a_forked_child_is_refused_and_the_parents_rows_all_land(tmp_path: Path, mode: str) -> None:
    out = run_child_json(FORK_CHILD, str(tmp_path / "run"), mode, timeout=60)
    assert out["codes"] == [0], out["codes"]  # every check in the child passed (bit mask of failures)
    expected = {int(t): k for t, k in out["n"].items()}
    _check_rows(out["iters"], expected)
    assert out["stats"]["rows_offered"] == out["stats"]["rows_written"] == sum(expected.values())


def _record_until_closed(
    rec: FlightRecorder, t: int, started: threading.Barrier, returned: dict[int, int], errors: list[BaseException]
) -> None:
    started.wait()
    i = 0
    try:
        while True:
            rec.record(t * K + i, 0.0)
            i += 1
    except RecorderClosedError:
        pass
    except BaseException as e:
        errors.append(e)
    returned[t] = i


@pytest.mark.parametrize("capacity", [8, 1024])
def test_close_racing_recording_threads_keeps_exactly_the_rows_whose_call_returned(
    tmp_path: Path, capacity: int
) -> None:
    for attempt in range(4):
        run = tmp_path / f"run{attempt}"
        rec = FlightRecorder(run, SCHEMA, ring_capacity=capacity, flush_interval=0.001)
        returned: dict[int, int] = {}
        errors: list[BaseException] = []
        started = threading.Barrier(5)
        # Thread 1 usually records first (lane 0), the rest join in.
        threads = [
            threading.Thread(target=_record_until_closed, args=(rec, t, started, returned, errors)) for t in range(1, 5)
        ]
        for th in threads:
            th.start()
        started.wait()
        # Close once the threads have recorded a little: no timing assumption, just progress.
        while rec.stats()["rows_offered"] < 2000 * (attempt + 1) and all(th.is_alive() for th in threads):
            pass
        rec.close()
        for th in threads:
            th.join()
        assert errors == []
        _stats_exact(rec, sum(returned.values()))
        _check_rows(_iters(run), returned)


KILL_CHILD = textwrap.dedent(
    """
    import sys, threading
    from flightlog import Field, FlightRecorder, Schema
    K = 1_000_000
    schema = Schema([Field("iter", "i64", nullable=False), Field("x", "f64", nullable=False)])
    rec = FlightRecorder(sys.argv[1], schema, ring_capacity=int(sys.argv[2]), flush_interval=float(sys.argv[3]))
    lock = threading.Lock()

    def say(t, i):
        with lock:
            sys.stdout.write(f"{t} {i}\\n"); sys.stdout.flush()

    def rec_n(t, k, every=50):
        for i in range(k):
            rec.record(t * K + i, float(i))
            if i % every == every - 1 or i == k - 1:
                say(t, i)

    # Threads that come and go on lane 0 and beside it, then a few that never stop.
    for t in range(1, 8):
        th = threading.Thread(target=rec_n, args=(t, 300)); th.start(); th.join()
    rec_n(0, 200)
    def forever(t):
        i = 0
        while True:
            rec.record(t * K + i, float(i))
            if i % 50 == 49:
                say(t, i)
            i += 1
    for t in (10, 11, 12):
        threading.Thread(target=forever, args=(t,), daemon=True).start()
    t = 20
    while True:                 # short-lived threads keep coming while the others record
        th = threading.Thread(target=rec_n, args=(t, 100)); th.start(); th.join()
        t += 1
    """
)


@pytest.mark.parametrize(("capacity", "flush_interval"), [(8, 0.002), (4096, 3600.0)])
def test_kill_9_of_a_child_recording_from_threads_then_recover_keeps_every_returned_row(
    tmp_path: Path, capacity: int, flush_interval: float
) -> None:
    run = tmp_path / "run"
    last: dict[int, int] = {}
    with subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(run), str(capacity), str(flush_interval)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as p:
        assert p.stdout is not None
        watchdog = threading.Timer(60, p.kill)  # a hung child fails the test instead of hanging it
        watchdog.start()
        try:
            for line in p.stdout:
                t, i = map(int, line.split())
                last[t] = max(last.get(t, -1), i)
                if sum(1 for t in last if t >= 20) >= 15 and all(last.get(t, -1) >= 500 for t in (10, 11, 12)):
                    break
        finally:
            p.send_signal(signal.SIGKILL)
            rest, err = p.communicate()
            watchdog.cancel()
    for line in rest.splitlines():  # what the child printed before the kill also returned
        if line.strip():
            t, i = map(int, line.split())
            last[t] = max(last.get(t, -1), i)
    assert p.returncode == -signal.SIGKILL, err[-2000:]
    rep = flightlog.recover(run)
    assert len(rep.recovered) == 1, rep
    iters = _iters(run)
    assert len(iters) == len(set(iters)), "duplicated rows"
    by_thread: dict[int, list[int]] = defaultdict(list)
    for it in iters:
        by_thread[it // K].append(it % K)
    for t, i in last.items():
        got = by_thread.get(t, [])
        assert got[: i + 1] == list(range(i + 1)), f"thread {t}: rows up to {i} returned, file has {len(got)}"
    for t, got in by_thread.items():  # in order and gapless (a row in the file had all its predecessors)
        assert got == list(range(len(got))), f"thread {t} out of order or with a gap"


def test_threads_alternating_between_recorders_that_open_and_close(tmp_path: Path) -> None:
    names = ["A", "B", "C", "D"]
    recs: dict[str, FlightRecorder] = {}
    expected: dict[str, dict[int, int]] = {n: defaultdict(int) for n in names}
    lock = threading.Lock()
    phase_go = [threading.Event() for _ in range(4)]
    phase_done = [threading.Barrier(4) for _ in range(4)]
    errors: list[BaseException] = []

    # Phases: 0 A; 1 A and B alternately; 2 (A closed) B alone; 3 B and C (B's lane 0
    # owner registers with C, dropping A's registration) then D by a new thread.
    plan = {0: ["A"], 1: ["A", "B"], 2: ["B"], 3: ["B", "C"]}

    def worker(t: int) -> None:
        seq: dict[str, int] = defaultdict(int)
        try:
            for ph in range(4):
                phase_go[ph].wait()
                targets = plan[ph]
                for i in range(300):
                    n = targets[(i + t) % len(targets)]
                    recs[n].record(t * K + seq[n], 0.0)
                    seq[n] += 1
                with lock:
                    for n in targets:
                        expected[n][t] = seq[n]
                phase_done[ph].wait()
        except BaseException as e:
            errors.append(e)
            for b in phase_done:
                b.abort()

    recs["A"] = FlightRecorder(tmp_path / "A", SCHEMA, ring_capacity=8, flush_interval=0.002)
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(1, 4)]
    for th in threads:
        th.start()
    phase_go[0].set()
    phase_done[0].wait()
    recs["B"] = FlightRecorder(tmp_path / "B", SCHEMA, ring_capacity=8, flush_interval=0.002)
    phase_go[1].set()
    phase_done[1].wait()
    recs["A"].close()
    phase_go[2].set()
    phase_done[2].wait()
    recs["C"] = FlightRecorder(tmp_path / "C", SCHEMA, ring_capacity=8, flush_interval=0.002)
    phase_go[3].set()
    phase_done[3].wait()
    for th in threads:
        th.join()
    assert errors == []
    recs["D"] = FlightRecorder(tmp_path / "D", SCHEMA, ring_capacity=8, flush_interval=0.002)
    th = threading.Thread(target=_record, args=(recs["D"], 7, 300))
    th.start()
    th.join()
    expected["D"][7] = 300
    _record(recs["B"], 9, 100)  # the main thread, into B and C, after the workers ended
    _record(recs["C"], 9, 100)
    expected["B"][9] = expected["C"][9] = 100
    for n in ["B", "C", "D"]:
        recs[n].close()
    for n in names:
        _stats_exact(recs[n], sum(expected[n].values()))
        _check_rows(_iters(tmp_path / n), dict(expected[n]))


def test_a_value_whose_conversion_records_into_the_same_recorder_is_no_nested_offer(tmp_path: Path) -> None:
    rec = FlightRecorder(tmp_path / "run", SCHEMA, ring_capacity=8, flush_interval=0.002)
    order: list[int] = []

    class Sneaky:
        def __init__(self, i: int) -> None:
            self.i = i

        def __float__(self) -> float:
            rec.record(2 * K + self.i, 0.0)  # converted before the outer row is offered
            order.append(self.i)
            return 0.5

        def __index__(self) -> int:
            rec.log(iter=3 * K + self.i, x=1.0)
            return 1 * K + self.i

    def body() -> None:
        for i in range(200):
            rec.record(1 * K + i, Sneaky(i))
        for i in range(200, 400):
            rec.record(Sneaky(i), 0.0)

    body()  # the main thread owns lane 0
    th = threading.Thread(target=body)  # another lane, through the thread-local list
    th.start()
    th.join()
    rec.close()
    iters = _iters(tmp_path / "run")
    assert sorted(iters) == sorted(
        [K + i for i in range(400)] * 2 + [2 * K + i for i in range(200)] * 2 + [3 * K + i for i in range(200, 400)] * 2
    )
    _stats_exact(rec, 1600)
    # The extend() path, same recorder, with values that record while converted.
    rec2 = FlightRecorder(tmp_path / "run2", SCHEMA, ring_capacity=8, flush_interval=0.002)
    rec2.record(0, 0.0)
    rec2.extend(iter=np.arange(1, 101), x=np.zeros(100))
    rec2.record(101, 0.0)
    rec2.close()
    assert _iters(tmp_path / "run2") == list(range(102))


def test_many_recorders_opened_and_closed_by_one_long_lived_thread(tmp_path: Path) -> None:
    """The main thread owns lane 0 of each recorder in turn; its thread-local list drops
    the closed ones' registrations as it registers with the next. A helper thread takes
    lane 1, exits, and the next recorder's lane 0 is the main thread's again."""
    for k in range(30):
        run = tmp_path / f"r{k}"
        rec = FlightRecorder(run, SCHEMA, ring_capacity=8, flush_interval=0.002)
        expected = {0: 50}
        if k % 2:
            th = threading.Thread(target=_record, args=(rec, 1, 50))
            th.start()
            th.join()
            expected[1] = 50
        _record(rec, 0, 50)
        if k % 3 == 0:
            th = threading.Thread(target=_record, args=(rec, 2, 50))
            th.start()
            th.join()
            expected[2] = 50
        rec.close()
        _stats_exact(rec, sum(expected.values()))
        _check_rows(_iters(run), expected)


def test_the_row_checker_rejects_a_duplicate_a_gap_and_a_swap() -> None:
    with pytest.raises(AssertionError):
        _check_rows([0, 0], {0: 1})
    with pytest.raises(AssertionError):
        _check_rows([0, 2], {0: 3})
    with pytest.raises(AssertionError):
        _check_rows([1, 0], {0: 2})
    _check_rows([K, 0, K + 1, 1], {0: 2, 1: 2})


NO_SPOOL_FILE_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, threading
    import pyarrow.parquet as pq
    from flightlog import Field, FlightRecorder, Schema
    K = 1_000_000
    # A ring file of 1<<16 rows cannot be created under this limit (EFBIG; Python
    # ignores SIGXFSZ): every lane's ring is anonymous memory. Segments stay small.
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
    schema = Schema([Field("iter", "i64", nullable=False), Field("x", "f64", nullable=False)])
    rec = FlightRecorder(sys.argv[1], schema, ring_capacity=1 << 16, flush_interval=0.002, segment_rows=2000)
    n = {}
    def rec_n(t, k):
        for i in range(n.get(t, 0), n.get(t, 0) + k):
            rec.record(t * K + i, 0.0)
        n[t] = n.get(t, 0) + k
    rec_n(0, 500)
    spool = [e.name for e in os.scandir(sys.argv[1] + "/.flightlog.spool") if e.is_dir()]
    lanes = [f for d in spool for f in os.listdir(sys.argv[1] + "/.flightlog.spool/" + d) if f.startswith("lane-")]
    for t in range(1, 15):
        th = threading.Thread(target=rec_n, args=(t, 300)); th.start()
        if t % 2:
            th.join()
        else:
            rec_n(0, 100); th.join()
    rec_n(0, 100)
    rec.close()
    iters = pq.read_table(sys.argv[1] + "/telemetry.parquet")["iter"].to_pylist()
    print(json.dumps({"lane_files": lanes, "n": n, "iters": iters, "stats": rec.stats()}))
    """
)


def test_rings_in_anonymous_memory_when_the_spool_cannot_hold_them_lose_nothing(tmp_path: Path) -> None:
    out = run_child_json(NO_SPOOL_FILE_CHILD, str(tmp_path / "run"), timeout=60)
    assert out["lane_files"] == []  # the fallback was taken
    expected = {int(t): k for t, k in out["n"].items()}
    _check_rows(out["iters"], expected)
    assert out["stats"]["rows_offered"] == out["stats"]["rows_written"] == sum(expected.values())
    assert out["stats"]["rows_lost"] == 0


UNSEEN_FORK_CHILD = textwrap.dedent(
    """
    import ctypes, json, os, sys
    import pyarrow.parquet as pq
    from flightlog import Field, FlightRecorder, Schema
    K = 1_000_000
    schema = Schema([Field("iter", "i64", nullable=False), Field("x", "f64", nullable=False)])
    rec = FlightRecorder(sys.argv[1], schema, ring_capacity=1024, flush_interval=3600.0)
    for i in range(100):
        rec.record(i, 0.0)
    r, w = os.pipe()
    pid = ctypes.CDLL(None).fork()       # libc's fork: Python's at-fork hooks do not run
    if pid == 0:
        os.close(r)
        try:
            for i in range(5):
                rec.record(777 * K + i, 1.0)
            os.write(w, b"recorded")
        except Exception:
            os.write(w, b"refused")
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    said = os.read(r, 100).decode()
    rec.flush()
    for i in range(100, 200):
        rec.record(i, 0.0)
    rec.close()
    iters = pq.read_table(sys.argv[1] + "/telemetry.parquet")["iter"].to_pylist()
    print(json.dumps({"child": said, "iters": iters}))
    """
)


def test_a_fork_the_python_hooks_do_not_see_is_still_refused(tmp_path: Path) -> None:
    out = run_child_json(UNSEEN_FORK_CHILD, str(tmp_path / "run"), timeout=60)
    assert out["child"] == "refused", out["child"]
    assert out["iters"] == list(range(200))

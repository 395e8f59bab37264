"""Hostile (but legal) use of the events-only spool of f095bbb: events recorded
before an inferred schema's first ``log()`` are in a spool once ``event()``
returns; ``recover`` publishes them after a kill, and the recorder adopts that
spool when its first row gives it a schema.

* seeded ``kill -9`` of children that record early events (stamped and with an
  explicit ``t_wall_ms``), then rows and events from 1-3 threads racing the
  first ``log()``; some children kill themselves a few milliseconds into that
  first ``log()`` (the adoption). What returned is known exactly through a
  memory-mapped progress file outside the root (each counter stored after its
  call returned, "begun" counters before it): after ``recover`` every returned
  row/event is in the files exactly once, in order, with sane times, the
  manifest's counts are the files', and a second ``recover`` changes nothing.
  Run, dev and tuner modes (append-mode parts), an object-store root (moto),
  an output file, and a kill during ``close()`` of a run that never logged;
* thread races: ``event()`` against the first ``log()``, two first ``log()`` calls,
  ``close()`` against ``event()``;
* ``os.fork()`` after an early event;
* ``recover`` on a live pending run, ``event()`` after ``close()``, odd payloads;
* the clock across the first ``log()``, and calls on runs closed before their first row.

Scenarios that could hang run in a child process under a timeout. The pass
found six defects, all fixed (a deadlock of ``event()`` or a second first
``log()`` against the first on a bare recorder, a forked child's early event
written into its parent's spool, non-finite event times lost on a kill, a
replacing output file half-replaced after a kill before its first row, early
events accepted in a folder holding a dead recording's spool, and ``now_ms()``
jumping back at the first ``log()``: the recorder's clock now starts when the
pending recorder is made); a later pass fixed ``flush()`` of a bare recorder
closed without a schema (silent) and closed runs answering ``log()`` with
"unknown field".
"""

from __future__ import annotations

import itertools
import json
import math
import mmap
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import flightlog
from conftest import run_child_json
from flightlog import read_manifest

FLOW = "hostile"
SLOT = 8  # words per slot of the progress file; slot 0 is the header, slot t is thread t
# Header words.
H_STARTED, H_EARLY_BEGUN, H_EARLY_RETURNED, H_N_EARLY = 0, 1, 2, 3
# Per-thread words.
ROWS_BEGUN, ROWS_RETURNED, EV_BEGUN, EV_RETURNED = 0, 1, 2, 3

CHILD = textwrap.dedent(
    """
    import mmap, os, random, signal, sys, threading, time
    from flightlog import TelemetryManager

    root, prog_path, seed, mode, kill = sys.argv[1:6]
    seed = int(seed)
    fd = os.open(prog_path, os.O_RDWR)
    P = memoryview(mmap.mmap(fd, 4096)).cast("q")
    rng = random.Random(seed)
    nthreads = 1 + seed % 3
    n_early = rng.randint(1, 40)
    P[3] = n_early
    # Every row kept (dev/tuner runs sample by default): the accounting is exact.
    kw = {"trial_id": f"t{seed}", "sampling": None} if mode == "tuner" else {"sampling": None}
    tm = TelemetryManager(root, "hostile", mode=mode, flush_interval=rng.choice([0.005, 0.05, 3600.0]),
                          segment_rows=rng.choice([7, 1000]), **kw)
    P[0] = 1
    for k in range(n_early):
        P[1] = k + 1
        if k % 3 == 2:
            tm.event("EARLY", {"k": k, "s": "\\u00e9\\U0001F680"}, t_wall_ms=-1000.0 - k)
        else:
            tm.event("EARLY", {"k": k, "nan": float("nan")})
        P[2] = k + 1
        if rng.random() < 0.2:
            time.sleep(0.001)

    def body(tid, go):
        r = random.Random(seed * 31 + tid)
        s = tid * 8
        rows = evs = 0
        go.wait()
        while True:
            P[s + 0] = rows + 1
            tm.log(tid=tid, seq=rows, x=rows * 0.5)
            rows += 1
            P[s + 1] = rows
            if r.random() < 0.3:
                P[s + 2] = evs + 1
                if evs % 4 == 3:
                    tm.event("EV", {"tid": tid, "k": evs}, t_wall_ms=1e6 + evs)
                else:
                    tm.event("EV", {"tid": tid, "k": evs})
                evs += 1
                P[s + 3] = evs
            if r.random() < 0.02:
                time.sleep(0.001)

    go = threading.Barrier(nthreads + 1)
    threads = [threading.Thread(target=body, args=(t, go), daemon=True) for t in range(1, nthreads + 1)]
    for t in threads:
        t.start()
    if kill == "self":
        # A kill a few milliseconds into the first log(): the adoption of the spool,
        # the first row, the first rows of the other threads.
        delay = rng.uniform(*rng.choice([(0.0, 0.002), (0.0, 0.006), (0.006, 0.03)]))
        def killer():
            go.wait()
            time.sleep(delay)
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=killer, daemon=True).start()
        go.wait()
    else:
        go.wait()
    time.sleep(3600)
    """
)


def _spools(root: Path) -> list[Path]:
    """Every spool folder (``.flightlog.spool``, ``.part-<run>-flightlog.spool``) under root."""
    return [Path(d) / n for d, dirs, _ in os.walk(root) for n in dirs if n.endswith("flightlog.spool")]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            st = os.stat(Path(d) / f)
            out[os.path.relpath(Path(d) / f, root)] = (st.st_size, st.st_mtime_ns)
    return out


def _run_files(root: Path, mode: str, run: dict[str, Any]) -> tuple[list[Path], list[Path], dict[str, Any]]:
    """(telemetry files, event files, manifest) of a recovered run, found on disk (not
    through the manifest)."""
    if mode == "run":
        path = Path(run["path"])
        tel = [p for p in [path / "telemetry.parquet"] if p.exists()]
        ev = [p for p in [path / "events.parquet"] if p.exists()]
        return tel, ev, read_manifest(path)
    flow = root / "flows" / FLOW
    part = f"part-{run['run_id']}-"
    tel = sorted(p for p in (flow / f"{mode}_telemetry").glob(f"{part}*.parquet"))
    ev = sorted(p for p in (flow / f"{mode}_events").glob(f"{part}*.parquet"))
    return tel, ev, read_manifest(flow / "runs" / f"{run['run_id']}.toml")


def _kill_child(root: Path, prog: Path, seed: int, mode: str, kill: str) -> list[list[int]]:
    prog.write_bytes(b"\0" * 4096)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(prog), str(seed), mode, kill],
        env=env,
        stderr=subprocess.PIPE,
    )
    fd = os.open(prog, os.O_RDONLY)
    m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)
    words = memoryview(m).cast("q")
    try:
        if kill == "self":
            p.wait(timeout=30)
        else:
            deadline = time.monotonic() + 30
            while words[H_STARTED] != 1:
                assert p.poll() is None, "the child died"
                assert time.monotonic() < deadline, "the child never started"
                time.sleep(0.001)
            # From before the first early event returned to well into the threads' rows.
            time.sleep(random.Random(seed).choice([0.0, 0.002, 0.01, 0.03, 0.1, 0.25]))
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.stderr is not None
        err = p.stderr.read().decode()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL, (p.returncode, err[-3000:])
    assert "Traceback" not in err, err
    snap = [[int(words[t * SLOT + w]) for w in range(SLOT)] for t in range(4)]
    words.release()
    m.close()
    os.close(fd)
    return snap


def _verify_after_kill(root: Path, snap: list[list[int]], mode: str, recover: Any) -> dict[str, int]:
    rep = recover()
    assert not rep.errors, rep.errors
    assert len(rep.recovered) == 1 and not rep.live, rep
    run = rep.recovered[0]
    assert _spools(root) == [], "recover left a spool"
    tel_files, ev_files, manifest = _run_files(root, mode, run)
    rows = [r for f in tel_files for r in pq.read_table(f).to_pylist()]
    events = [e for f in ev_files for e in pq.read_table(f).to_pylist()]
    assert all(e["run_id"] == run["run_id"] for e in events)

    names = [e["event"] for e in events]
    assert names[0] == "RUN_STARTED" and names.count("RUN_STARTED") == 1, names[:5]
    assert "RUN_FINISHED" not in names
    assert set(names) <= {"RUN_STARTED", "EARLY", "EV"}, set(names)

    head = snap[0]
    early = [json.loads(e["payload"]) | {"t": e["t_wall_ms"]} for e in events if e["event"] == "EARLY"]
    ks = [p["k"] for p in early]
    assert ks == list(range(len(ks))), f"early events twice, with holes or out of order: {ks}"
    assert head[H_EARLY_RETURNED] <= len(ks) <= head[H_EARLY_BEGUN], (head, len(ks))
    for p in early:
        if p["k"] % 3 == 2:
            assert p["t"] == -1000.0 - p["k"] and p["s"] == "\u00e9\U0001f680", p
        else:
            assert p["nan"] == "NaN" and math.isfinite(p["t"]), p

    # Stamped times (no explicit t_wall_ms) follow the order of the events, across the
    # adoption (one clock, from the manager's pending recorder's creation).
    stamped = [
        e["t_wall_ms"]
        for e in events
        if e["event"] == "RUN_STARTED"
        or (e["event"] == "EARLY" and json.loads(e["payload"])["k"] % 3 != 2)
        or (e["event"] == "EV" and json.loads(e["payload"])["k"] % 4 != 3)
    ]
    assert all(a <= b for a, b in itertools.pairwise(stamped)), stamped

    n_rows = n_ev = 0
    for tid in (1, 2, 3):
        s = snap[tid]
        seqs = [r["seq"] for r in rows if r["tid"] == tid]
        assert seqs == list(range(len(seqs))), f"thread {tid}: rows twice, with holes or out of order"
        assert s[ROWS_RETURNED] <= len(seqs) <= s[ROWS_BEGUN], (tid, s, len(seqs))
        assert all(r["x"] == r["seq"] * 0.5 for r in rows if r["tid"] == tid)
        evk = [
            (p["k"], e["t_wall_ms"])
            for e in events
            if e["event"] == "EV" and (p := json.loads(e["payload"]))["tid"] == tid
        ]
        assert [k for k, _ in evk] == list(range(len(evk))), f"thread {tid}: events twice or with holes: {evk}"
        assert s[EV_RETURNED] <= len(evk) <= s[EV_BEGUN], (tid, s, len(evk))
        assert all(t == 1e6 + k for k, t in evk if k % 4 == 3)
        n_rows += len(seqs)
        n_ev += len(evk)
    assert len(rows) == n_rows, "a row of no thread"
    if rows or n_ev:
        # The first log() began after every early event returned.
        assert len(ks) == head[H_N_EARLY]
    for r in rows:
        assert r["run_id"] == run["run_id"] and r["flow_name"] == FLOW

    assert manifest["status"] == "crashed"
    assert manifest["counts"]["rows_written"] == len(rows)
    assert manifest["counts"]["events"] == len(events)
    files: dict[str, int] = {}
    for f in manifest["files"]:
        files[f["kind"]] = files.get(f["kind"], 0) + f["rows"]
    assert files.get("telemetry", 0) == len(rows) and files.get("events", 0) == len(events), (files, manifest)
    assert run["telemetry_rows"] == len(rows) and run["event_rows"] == len(events), run

    before = _snapshot(root)
    again = recover()
    assert again.recovered == [] and not again.errors and not again.live, again
    assert _snapshot(root) == before, "a second recover changed files"
    return {"early": len(ks), "rows": len(rows), "events": len(events)}


KILLS = [
    # (mode, seed, kill): "self" kills itself a few ms into the first log() (the
    # adoption); "parent" kills at a seeded moment from the parent.
    *[("run", s, "self") for s in range(8)],
    *[("run", s, "parent") for s in range(100, 108)],
    ("dev", 200, "self"),
    ("dev", 201, "parent"),
    ("tuner", 300, "self"),
    ("tuner", 302, "parent"),
]


@pytest.mark.parametrize(("mode", "seed", "kill"), KILLS)
def test_killed_around_the_first_log_then_recover(tmp_path: Path, mode: str, seed: int, kill: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    snap = _kill_child(root, tmp_path / "progress", seed, mode, kill)
    got = _verify_after_kill(root, snap, mode, lambda: flightlog.recover(root))
    assert got["events"] >= 1  # RUN_STARTED at least


# --------------------------------------------------------------------------- thread races


def _run_child(script: str, *args: str, timeout: float = 30.0) -> Any:
    """Runs ``script`` in its own process group; a hang is a failure (killed at ``timeout``)."""
    return run_child_json(script, *args, timeout=timeout)


MANAGER_RACE = textwrap.dedent(
    """
    import json, sys, threading
    import pyarrow.parquet as pq
    from flightlog import TelemetryManager
    root = sys.argv[1]
    out = []
    for trial in range(8):
        tm = TelemetryManager(root, "race", flush_interval=0.01)
        tm.event("EARLY", {"k": -1})
        go = threading.Barrier(3)
        stop = threading.Event()
        returned = {"spam": 0, "logs": [0, 0]}

        def spam():
            go.wait()
            while not stop.is_set() or returned["spam"] < 50:
                tm.event("SPAM", {"k": returned["spam"]})
                returned["spam"] += 1

        def logger(i):
            go.wait()
            for j in range(200):
                tm.log(who=i, j=j)
                returned["logs"][i] += 1

        ts = [threading.Thread(target=spam)] + [threading.Thread(target=logger, args=(i,)) for i in (0, 1)]
        for t in ts:
            t.start()
        for t in ts[1:]:
            t.join()
        stop.set()
        ts[0].join()
        tm.close()
        ev = pq.read_table(tm.run_path / "events.parquet").to_pylist()
        rows = pq.read_table(tm.run_path / "telemetry.parquet").to_pylist()
        out.append({"returned": returned, "names": [e["event"] for e in ev],
                    "spam": [json.loads(e["payload"])["k"] for e in ev if e["event"] == "SPAM"],
                    "rows": [[r["who"], r["j"]] for r in rows],
                    "spool": (tm.run_path / ".flightlog.spool").exists()})
    print(json.dumps(out))
    """
)


def test_event_threads_race_the_first_logs_of_a_lazy_run(tmp_path: Path) -> None:
    """One thread spams event() while two threads race the first log() (the adoption of
    the spool): every event that returned is in the file once, in order, and every row."""
    for trial in _run_child(MANAGER_RACE, str(tmp_path)):
        names = trial["names"]
        assert names[:2] == ["RUN_STARTED", "EARLY"] and names[-1] == "RUN_FINISHED", names[:3]
        assert trial["spam"] == list(range(trial["returned"]["spam"]))
        assert len(names) == 3 + trial["returned"]["spam"]
        for who in (0, 1):
            assert [j for w, j in trial["rows"] if w == who] == list(range(200))
        assert len(trial["rows"]) == 400 and trial["returned"]["logs"] == [200, 200]
        assert not trial["spool"]


BARE_RACE = textwrap.dedent(
    """
    import json, sys, threading
    import pyarrow.parquet as pq
    from flightlog import FlightRecorder
    root, kind = sys.argv[1], sys.argv[2]
    out = []
    for trial in range(5):
        rec = FlightRecorder(f"{root}/r{trial}", flush_interval=3600.0)
        rec.event("EARLY")
        go = threading.Barrier(2)
        stop = threading.Event()
        n = [0]

        def spam():
            go.wait()
            while not stop.is_set():
                rec.event("SPAM", {"k": n[0]})
                n[0] += 1

        def first_log(i):
            go.wait()
            rec.log(who=i)

        if kind == "event":
            t = threading.Thread(target=spam)
            t.start()
            go.wait()
            rec.log(who=0)
            stop.set()
            t.join()
        else:
            ts = [threading.Thread(target=first_log, args=(i,)) for i in (0, 1)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        rec.close()
        ev = pq.read_table(f"{root}/r{trial}/events.parquet").to_pylist()
        out.append({"n": n[0], "names": [e["event"] for e in ev],
                    "rows": pq.read_table(f"{root}/r{trial}/telemetry.parquet").num_rows})
    print(json.dumps(out))
    """
)


def test_a_bare_recorder_event_racing_its_first_log(tmp_path: Path) -> None:
    for trial in _run_child(BARE_RACE, str(tmp_path), "event", timeout=5):
        assert trial["names"][0] == "EARLY" and trial["names"].count("SPAM") == trial["n"]
        assert trial["rows"] == 1


def test_two_threads_racing_the_first_log_of_a_bare_recorder(tmp_path: Path) -> None:
    for trial in _run_child(BARE_RACE, str(tmp_path), "log", timeout=5):
        assert trial["names"] == ["EARLY"] and trial["rows"] == 2


CLOSE_RACE = textwrap.dedent(
    """
    import json, random, sys, threading, time
    import pyarrow.parquet as pq
    from flightlog import FlightlogError, TelemetryManager, read_manifest
    root = sys.argv[1]
    out = []
    for trial in range(8):
        tm = TelemetryManager(root, "closerace", flush_interval=0.01)
        returned, raised = [0], []
        go = threading.Barrier(2)

        def spam():
            go.wait()
            while True:
                try:
                    tm.event("SPAM", {"k": returned[0]})
                except FlightlogError as e:
                    raised.append(type(e).__name__ + ": " + str(e))
                    return
                returned[0] += 1

        t = threading.Thread(target=spam)
        t.start()
        go.wait()
        time.sleep(random.Random(trial).choice([0.0, 0.0005, 0.002, 0.01]))
        tm.close()
        t.join()
        after = {}
        for name, call in {"event": lambda: tm.event("LATE"), "log": lambda: tm.log(x=1.0)}.items():
            try:
                call()
                after[name] = "no error"
            except FlightlogError as e:
                after[name] = type(e).__name__
        ev = pq.read_table(tm.run_path / "events.parquet").to_pylist()
        m = read_manifest(tm.run_path)
        out.append({"returned": returned[0], "raised": raised, "after": after,
                    "names": [e["event"] for e in ev],
                    "spam": [json.loads(e["payload"])["k"] for e in ev if e["event"] == "SPAM"],
                    "rows": pq.read_table(tm.run_path / "telemetry.parquet").num_rows,
                    "status": m["status"], "counts": m["counts"],
                    "spool": (tm.run_path / ".flightlog.spool").exists()})
    print(json.dumps(out))
    """
)


def test_close_racing_event_before_the_first_log(tmp_path: Path) -> None:
    """close() (which gives the pending recorder the constants-only schema) while another
    thread records events: every event that returned is written once, in order, before
    RUN_FINISHED; the others raised "closed"; nothing is left behind."""
    for trial in _run_child(CLOSE_RACE, str(tmp_path)):
        names = trial["names"]
        assert names[0] == "RUN_STARTED" and names[-1] == "RUN_FINISHED", names
        assert trial["spam"] == list(range(trial["returned"])), trial
        assert len(names) == 2 + trial["returned"]
        assert len(trial["raised"]) == 1 and "is closed" in trial["raised"][0], trial["raised"]
        assert trial["after"]["event"] == "FlightlogError" and trial["after"]["log"] != "no error", trial["after"]
        assert trial["rows"] == 0 and trial["status"] == "finished"
        counts = trial["counts"]
        assert counts["rows_written"] == 0 and counts["events"] == len(names), counts
        assert not trial["spool"]


def test_a_bare_recorder_closed_without_a_schema_refuses_later_calls(tmp_path: Path) -> None:
    rec = flightlog.FlightRecorder(tmp_path / "rec", flush_interval=3600.0)
    rec.event("EARLY", {"é": "🚀"})
    rec.event("EARLY2", None, t_wall_ms=5.0)
    with pytest.warns(RuntimeWarning, match="2 event"):
        rec.close()
    assert os.listdir(tmp_path / "rec") == [], "the spool and the claim are gone"
    with pytest.raises(flightlog.RecorderClosedError):
        rec.event("LATE")
    with pytest.raises(flightlog.RecorderClosedError):
        rec.log(x=1.0)
    rec.close()  # idempotent, no second warning
    # The folder is free for a new recording, whose early events are its own.
    with flightlog.FlightRecorder(tmp_path / "rec", flush_interval=3600.0) as again:
        again.event("AGAIN")
        again.log(x=2.0)
    assert pq.read_table(tmp_path / "rec" / "events.parquet")["event"].to_pylist() == ["AGAIN"]


# --------------------------------------------------------------------------- fork

FORK_MANAGER = textwrap.dedent(
    """
    import json, os, sys
    import pyarrow.parquet as pq
    from flightlog import FlightlogError, TelemetryManager
    root = sys.argv[1]
    tm = TelemetryManager(root, "forked", flush_interval=3600.0)
    tm.event("PARENT_EARLY", {"k": 0})
    tm.event("PARENT_EARLY", {"k": 1}, t_wall_ms=-3.0)
    spool = tm.run_path / ".flightlog.spool"
    before = {p.name: sorted(os.listdir(p)) for p in spool.iterdir()}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        seen = {}
        for name, call in {"event": lambda: tm.event("CHILD_ON_PARENT"), "log": lambda: tm.log(x=9.0)}.items():
            try:
                call()
                seen[name] = "no error"
            except FlightlogError as e:
                seen[name] = str(e)
        # The child's own run, lazy as well: its early events go to its own spool.
        with TelemetryManager(root, "forked", flush_interval=3600.0) as mine:
            mine.event("CHILD_EARLY")
            mine.log(x=1.0)
            mine.event("CHILD_LATE")
        tm.close()  # the parent's run: does nothing here
        seen["child_run"] = str(mine.run_path)
        os.write(w, json.dumps(seen).encode())
        os.close(w)
        sys.exit(0)  # exit hooks and finalisers run: they must leave the parent's spool alone
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    _, status = os.waitpid(pid, 0)
    after = {p.name: sorted(os.listdir(p)) for p in spool.iterdir()} if spool.is_dir() else None
    tm.event("PARENT_MID")
    tm.log(x=2.0)
    tm.event("PARENT_LATE")
    tm.close()
    child = json.loads(data)
    ev = pq.read_table(tm.run_path / "events.parquet").to_pylist()
    cev = pq.read_table(os.path.join(child["child_run"], "events.parquet")).to_pylist()
    print(json.dumps({"status": status, "child": child, "before": before, "after": after,
                      "names": [e["event"] for e in ev], "t": [e["t_wall_ms"] for e in ev],
                      "rows": pq.read_table(tm.run_path / "telemetry.parquet")["x"].to_pylist(),
                      "child_names": [e["event"] for e in cev],
                      "child_rows": pq.read_table(os.path.join(child["child_run"], "telemetry.parquet"))["x"].to_pylist(),
                      "spool_left": spool.exists(), "parent": str(tm.run_path)}))
    """
)


def test_fork_after_an_early_event_leaves_the_parents_spool_and_events_alone(tmp_path: Path) -> None:
    out = _run_child(FORK_MANAGER, str(tmp_path))
    assert out["status"] == 0
    assert "forked child" in out["child"]["event"] and "forked child" in out["child"]["log"], out["child"]
    assert out["before"] == out["after"] and len(out["before"]) == 1, (out["before"], out["after"])
    assert out["names"] == ["RUN_STARTED", "PARENT_EARLY", "PARENT_EARLY", "PARENT_MID", "PARENT_LATE", "RUN_FINISHED"]
    t = out["t"]
    assert t[2] == -3.0 and t[0] <= t[1] <= t[3] <= t[4] <= t[5], t
    assert out["rows"] == [2.0] and not out["spool_left"]
    assert out["child_names"] == ["RUN_STARTED", "CHILD_EARLY", "CHILD_LATE", "RUN_FINISHED"]
    assert out["child_rows"] == [1.0]
    assert out["parent"] != out["child"]["child_run"]


FORK_BARE = textwrap.dedent(
    """
    import json, os, signal, sys
    from flightlog import FlightlogError, FlightRecorder
    path = sys.argv[1]
    rec = FlightRecorder(path, flush_interval=3600.0)
    rec.event("PARENT_EARLY")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            rec.event("CHILD")
            seen = "no error"
        except FlightlogError as e:
            seen = str(e)
        os.write(w, json.dumps(seen).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 65536)
    os.waitpid(pid, 0)
    rec.event("PARENT_LATE")
    print(json.dumps({"child": json.loads(data)}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_forked_childs_event_on_a_pending_bare_recorder(tmp_path: Path) -> None:
    path = tmp_path / "rec"
    proc = subprocess.run(
        [sys.executable, "-c", FORK_BARE, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    child = json.loads(proc.stdout.strip().splitlines()[-1])["child"]
    rep = flightlog._core.recover_run_dir(str(path))
    names = pq.read_table(path / "events.parquet")["event"].to_pylist()
    assert rep["salvaged_events"] == len(names)
    # The parent's events only, as with a started recorder (tests/test_fork.py).
    assert names == ["PARENT_EARLY", "PARENT_LATE"], names
    assert "forked child" in child, child


# --------------------------------------------------------------------------- recover on a live run


@pytest.mark.parametrize("mode", ["run", "dev", "tuner"])
def test_recover_leaves_a_live_pending_run_and_its_spool_alone(tmp_path: Path, mode: str) -> None:
    kw: dict[str, Any] = {"trial_id": "t1"} if mode == "tuner" else {}
    tm = flightlog.TelemetryManager(tmp_path, FLOW, mode=mode, flush_interval=3600.0, **kw)
    tm.event("EARLY", {"k": 0})
    spools = _spools(tmp_path)
    assert len(spools) == 1
    (inst,) = list(spools[0].iterdir())
    meta = json.loads((inst / "meta.json").read_text())
    assert meta["schema_json"] == "" and (inst / "events.log").exists(), meta
    log_before = (inst / "events.log").read_bytes()
    # Another process, as `flightlog recover` would run.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, flightlog; r = flightlog.recover(sys.argv[1]); "
            "print(json.dumps({'recovered': r.recovered, 'live': r.live, 'errors': r.errors}))",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rep["recovered"] == [] and not rep["errors"] and len(rep["live"]) == 1, rep
    inproc = flightlog.recover(tmp_path)
    assert inproc.recovered == [] and len(inproc.live) == 1, inproc
    assert _spools(tmp_path) == spools and (inst / "events.log").read_bytes() == log_before
    assert not list(tmp_path.rglob("*events*.parquet")), "nothing published for a live run"
    tm.event("EARLY", {"k": 1})
    tm.log(x=1.0)
    tm.close()
    events = [
        e for f in sorted(tmp_path.rglob("*.parquet")) if "events" in str(f) for e in pq.read_table(f).to_pylist()
    ]
    assert [e["event"] for e in events] == ["RUN_STARTED", "EARLY", "EARLY", "RUN_FINISHED"]
    assert [json.loads(e["payload"])["k"] for e in events[1:3]] == [0, 1]
    assert _spools(tmp_path) == []
    assert flightlog.recover(tmp_path).recovered == []


@pytest.mark.parametrize("mode", ["dev", "tuner"])
def test_an_append_mode_run_closed_before_its_first_row_keeps_its_early_events(tmp_path: Path, mode: str) -> None:
    kw: dict[str, Any] = {"trial_id": "t1"} if mode == "tuner" else {}
    with flightlog.TelemetryManager(tmp_path, FLOW, mode=mode, flush_interval=3600.0, **kw) as tm:
        tm.event("EARLY", {"k": 0})
        tm.event("EARLY", {"k": 1}, t_wall_ms=-12.5)
    tel, ev, manifest = _run_files(tmp_path, mode, {"run_id": tm.run_id})
    events = [e for f in ev for e in pq.read_table(f).to_pylist()]
    assert [e["event"] for e in events] == ["RUN_STARTED", "EARLY", "EARLY", "RUN_FINISHED"]
    assert events[2]["t_wall_ms"] == -12.5 and events[1]["t_wall_ms"] <= events[3]["t_wall_ms"]
    assert sum(pq.read_table(f).num_rows for f in tel) == 0
    assert manifest["status"] == "finished" and manifest["counts"]["events"] == 4
    assert _spools(tmp_path) == []


# --------------------------------------------------------------------------- odd payloads

ODD_EVENTS = textwrap.dedent(
    """
    ODD = [
        ("ÉVÉNEMENT_🚀", {"s": "h\\u00e9llo \\u2028\\u2029 \\U0001F680 \\n\\t \\"q\\" \\\\ \\x00", "lone": "\\ud800"}),
        ("BIG", {"blob": "xé" * 1_500_000, "n": 3}),
        ("NONFINITE", {"nan": float("nan"), "inf": float("inf"), "ninf": [float("-inf"), 1.5]}),
        ("DEEP", {"a": [[[[{"b": [1, 2, {"c": None}]}]]]], "u": "\\uffff"}),
        ("EMPTY", {}),
        ("NONE", None),
        ("STR", "just a string"),
        ("LIST", [1, "2", 3.25, True, None]),
    ]
    """
)

ODD_CHILD = ODD_EVENTS + textwrap.dedent(
    """
    import os, signal, sys
    from flightlog import TelemetryManager
    root, end, then_log = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    tm = TelemetryManager(root, "odd", flush_interval=3600.0)
    for name, payload in ODD:
        tm.event(name, payload)
    if then_log:
        tm.log(x=1.0)
        tm.event("AFTER", {"big": "y" * 100_000})
    if end == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    tm.close()
    """
)


@pytest.mark.parametrize("then_log", [False, True], ids=["events_only", "adopted"])
def test_odd_payloads_of_early_events_survive_a_kill_as_a_close_writes_them(tmp_path: Path, then_log: bool) -> None:
    ns: dict[str, Any] = {}
    exec(ODD_EVENTS, ns)  # the same literal the child runs
    expected = [(name, flightlog.events.payload_json(name, payload)) for name, payload in ns["ODD"]]
    if then_log:
        expected.append(("AFTER", json.dumps({"big": "y" * 100_000})))
    got = {}
    for end in ("close", "kill"):
        root = tmp_path / end
        proc = subprocess.run(
            [sys.executable, "-c", ODD_CHILD, str(root), end, "1" if then_log else "0"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == (-signal.SIGKILL if end == "kill" else 0), proc.stderr[-3000:]
        rep = flightlog.recover(root)
        assert not rep.errors and len(rep.recovered) == (end == "kill"), rep
        (run,) = [p for p in root.iterdir() if p.is_dir()]
        ev = pq.read_table(run / "events.parquet").to_pylist()
        got[end] = [(e["event"], e["payload"]) for e in ev if e["event"] not in ("RUN_STARTED", "RUN_FINISHED")]
        assert all(math.isfinite(e["t_wall_ms"]) for e in ev)
        assert _spools(root) == []
    assert got["kill"] == expected
    assert got["close"] == expected


NONFINITE_TIME = textwrap.dedent(
    """
    import os, signal, sys
    from flightlog import TelemetryManager
    root, then_log = sys.argv[1], sys.argv[2] == "1"
    tm = TelemetryManager(root, "nonfinite", flush_interval=3600.0)
    tm.event("T_NAN", None, t_wall_ms=float("nan"))
    tm.event("T_INF", None, t_wall_ms=float("inf"))
    tm.event("T_NINF", None, t_wall_ms=float("-inf"))
    if then_log:
        tm.log(x=1.0)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("then_log", [False, True], ids=["events_only", "adopted"])
def test_an_early_event_with_a_non_finite_time_survives_a_kill(tmp_path: Path, then_log: bool) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", NONFINITE_TIME, str(tmp_path), "1" if then_log else "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    rep = flightlog.recover(tmp_path)
    assert not rep.errors and len(rep.recovered) == 1, rep
    ev = pq.read_table(Path(rep.recovered[0]["path"]) / "events.parquet").to_pylist()
    by_name = {e["event"]: e["t_wall_ms"] for e in ev}
    assert math.isnan(by_name["T_NAN"]) and by_name["T_INF"] == math.inf and by_name["T_NINF"] == -math.inf, by_name


# --------------------------------------------------------------------------- object store

S3_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from flightlog import TelemetryManager
    root, opts, mode, then_log = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
    tm = TelemetryManager(root, "objs", mode=mode, storage_options=opts, flush_interval=3600.0, sampling=None)
    tm.event("EARLY", {"k": 0, "s": "\\u00e9"})
    tm.event("EARLY", {"k": 1}, t_wall_ms=-4.0)
    if then_log:
        tm.log(x=1.0)
        tm.log(x=2.0)
        tm.event("LATE")
    print(json.dumps({"run_id": tm.run_id}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize(("mode", "then_log"), [("run", False), ("run", True), ("dev", False)])
def test_object_store_early_events_survive_a_kill(s3_bucket: Any, mode: str, then_log: bool) -> None:
    """The events-only spool of an object-store run is in the shared local spool folder
    (FLIGHTLOG_SPOOL_DIR): recover finds it by the run's location and publishes it."""
    root = s3_bucket.url(f"k{mode}{int(then_log)}")
    opts = s3_bucket.storage_options
    spool_dir = Path(os.environ["FLIGHTLOG_SPOOL_DIR"])
    proc = subprocess.run(
        [sys.executable, "-c", S3_CHILD, root, json.dumps(opts), mode, "1" if then_log else "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run_id = json.loads(proc.stdout.strip().splitlines()[-1])["run_id"]
    metas = [json.loads(p.read_text()) for p in spool_dir.rglob("meta.json") if run_id in p.read_text()]
    assert len(metas) == 1 and (metas[0]["schema_json"] == "") == (not then_log), metas
    rep = flightlog.recover(root, storage_options=opts)
    assert not rep.errors and [r["run_id"] for r in rep.recovered] == [run_id], rep
    prefix = root.split("/", 3)[3]
    keys = s3_bucket.keys(prefix + "/")
    ev_keys = [k for k in keys if k.endswith(".parquet") and "events" in k and run_id in k]
    assert len(ev_keys) == 1, keys
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=ev_keys[0])["Body"].read()
    import io

    ev = pq.read_table(io.BytesIO(body)).to_pylist()
    names = [e["event"] for e in ev]
    assert names == ["RUN_STARTED", "EARLY", "EARLY", *(["LATE"] if then_log else [])], names
    assert ev[2]["t_wall_ms"] == -4.0 and json.loads(ev[1]["payload"]) == {"k": 0, "s": "\u00e9"}
    assert all(e["run_id"] == run_id for e in ev)
    tel_keys = [k for k in keys if k.endswith(".parquet") and "telemetry" in k and run_id in k]
    rows = 0
    for k in tel_keys:
        rows += pq.read_table(
            io.BytesIO(s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=k)["Body"].read())
        ).num_rows
    assert rows == (2 if then_log else 0), tel_keys
    leftovers = [p for p in spool_dir.rglob("meta.json") if run_id in p.read_text()]
    assert leftovers == [], "the run's spool is still in the shared spool folder"
    again = flightlog.recover(root, storage_options=opts)
    assert again.recovered == [] and not again.errors and not again.live, again


CLOSE_KILL = textwrap.dedent(
    """
    import os, random, signal, sys, threading, time
    from flightlog import TelemetryManager
    root, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    tm = TelemetryManager(root, "closekill", flush_interval=rng.choice([0.005, 3600.0]))
    for k in range(int(sys.argv[3])):
        tm.event("EARLY", {"k": k}, t_wall_ms=float(k) if k % 2 else None)
    delay = rng.uniform(*rng.choice([(0.0, 0.01), (0.01, 0.05)]))
    def killer():
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=killer, daemon=True).start()
    tm.close()  # the constants-only schema, the adoption, RUN_FINISHED, the files, the manifest
    time.sleep(3600)
    """
)


@pytest.mark.parametrize("seed", [0, 1, 2, 5, 6, 8])
def test_killed_while_closing_a_run_that_never_logged(tmp_path: Path, seed: int) -> None:
    """close() of a lazy run before its first row (the pending recorder gets the
    constants-only schema and adopts its spool) killed at a seeded moment: every early
    event (all returned before close) is in the file once; recover finishes the run."""
    n_early = 5 + 7 * seed
    proc = subprocess.run(
        [sys.executable, "-c", CLOSE_KILL, str(tmp_path), str(seed), str(n_early)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    rep = flightlog.recover(tmp_path)
    assert not rep.errors and not rep.live and len(rep.recovered) <= 1, rep
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    m = read_manifest(run)
    assert m["status"] in ("finished", "crashed"), m["status"]
    assert (m["status"] == "crashed") == (len(rep.recovered) == 1)
    ev = pq.read_table(run / "events.parquet").to_pylist()
    names = [e["event"] for e in ev]
    assert names[0] == "RUN_STARTED" and names.count("RUN_STARTED") == 1
    early = [(json.loads(e["payload"])["k"], e["t_wall_ms"]) for e in ev if e["event"] == "EARLY"]
    assert [k for k, _ in early] == list(range(n_early)), early
    assert all(t == float(k) for k, t in early if k % 2), early
    assert names.count("RUN_FINISHED") <= 1 and (m["status"] == "crashed" or names[-1] == "RUN_FINISHED")
    assert m["counts"]["events"] == len(ev) and m["counts"]["rows_written"] == 0
    if (run / "telemetry.parquet").exists():
        assert pq.read_table(run / "telemetry.parquet").num_rows == 0
    assert _spools(tmp_path) == []
    before = _snapshot(tmp_path)
    assert flightlog.recover(tmp_path).recovered == [] and _snapshot(tmp_path) == before


# --------------------------------------------------------------------------- clocks and reuse


def test_now_ms_before_the_first_log_is_on_the_clock_of_the_early_events(tmp_path: Path) -> None:
    with flightlog.TelemetryManager(tmp_path, FLOW, flush_interval=3600.0) as tm:
        time.sleep(0.02)
        before = tm.now_ms()
        tm.event("MINE", t_wall_ms=before)  # the library's own clock, as a user stamps a time
        tm.event("STAMPED")
        time.sleep(0.02)
        tm.log(x=1.0)
        after = tm.now_ms()
        tm.event("AFTER_FIRST_ROW")
    ev = {e["event"]: e["t_wall_ms"] for e in pq.read_table(tm.run_path / "events.parquet").to_pylist()}
    assert after >= before, (before, after)
    assert ev["MINE"] <= ev["AFTER_FIRST_ROW"], ev
    assert abs(ev["MINE"] - ev["STAMPED"]) < 5.0, ev


def test_a_bare_recorders_clock_runs_from_its_creation_across_the_first_log(tmp_path: Path) -> None:
    rec = flightlog.FlightRecorder(tmp_path / "rec", flush_interval=3600.0)
    time.sleep(0.03)
    before = rec.now_ms()
    rec.event("STAMPED")
    time.sleep(0.01)
    rec.log(x=1.0)
    after = rec.now_ms()
    rec.event("AFTER_FIRST_ROW")
    rec.close()
    ev = {e["event"]: e["t_wall_ms"] for e in pq.read_table(tmp_path / "rec" / "events.parquet").to_pylist()}
    # The clock started when the recorder was made, not at its first log().
    assert before >= 30.0, before
    assert after >= before + 10.0, (before, after)
    assert before <= ev["STAMPED"] <= after <= ev["AFTER_FIRST_ROW"], (before, after, ev)


REOPEN_DEAD = textwrap.dedent(
    """
    import os, signal, sys
    from flightlog import FlightRecorder
    rec = FlightRecorder(sys.argv[1], flush_interval=3600.0)
    rec.event("DEAD")
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_schema_less_recorder_in_a_folder_with_a_dead_spool_does_not_lose_events_silently(tmp_path: Path) -> None:
    path = tmp_path / "rec"
    proc = subprocess.run([sys.executable, "-c", REOPEN_DEAD, str(path)], capture_output=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL
    try:
        rec = flightlog.FlightRecorder(path, flush_interval=3600.0)
        rec.event("NEW")
    except FileExistsError:
        return  # refused up front, as FlightRecorder(path, schema) is: nothing was accepted
    with pytest.raises(FileExistsError, match="did not finish"):
        rec.log(x=1.0)
    with pytest.warns(RuntimeWarning, match="1 event"):
        rec.close()
    # The dead recording's event is still there for recover.
    rep = flightlog._core.recover_run_dir(str(path))
    assert rep["salvaged_events"] == 1
    assert pq.read_table(path / "events.parquet")["event"].to_pylist() == ["DEAD"]


def test_a_schema_less_recorder_in_a_finished_folder_is_refused_up_front(tmp_path: Path) -> None:
    """A folder holding a finished recording is refused at construction, as
    FlightRecorder(path, schema) refuses it. Before, the schema-less recorder accepted
    events, its first log() raised FileExistsError, and those events went with the spool
    it then removed, without a warning at close."""
    path = tmp_path / "rec"
    schema = flightlog.Schema([flightlog.Field("x", "f64")])
    done = flightlog.FlightRecorder(path, schema)
    done.log(x=1.0)
    done.close()
    before = {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="already exists"):
        flightlog.FlightRecorder(path, schema)
    with pytest.raises(FileExistsError, match="already exists"):
        flightlog.FlightRecorder(path)
    after = {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before


OVERWRITE_KILL = textwrap.dedent(
    """
    import os, signal, sys
    from flightlog import FlightRecorder
    rec = FlightRecorder(sys.argv[1], flush_interval=3600.0, overwrite=True)
    rec.event("NEW")
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_replacing_output_file_killed_before_its_first_row_is_not_half_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with flightlog.FlightRecorder(out) as old:
        old.event("OLD")
        old.log(x=7.0)
    events = tmp_path / ".out.parquet.flightlog" / "events.parquet"
    assert pq.read_table(events)["event"].to_pylist() == ["OLD"]
    proc = subprocess.run(
        [sys.executable, "-c", OVERWRITE_KILL, str(out)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    rep = flightlog.recover(out)
    assert not rep.errors, rep
    telemetry = pq.read_table(out)["x"].to_pylist()
    names = pq.read_table(events)["event"].to_pylist()
    # One recording or the other, never the old rows with the new events.
    assert [telemetry, names] in ([[7.0], ["OLD"]], [[], ["NEW"]]), (telemetry, names)


OUTPUT_FILE_KILL = textwrap.dedent(
    """
    import os, signal, sys
    from flightlog import FlightRecorder
    rec = FlightRecorder(sys.argv[1], flush_interval=3600.0)
    rec.event("EARLY", {"k": 0})
    rec.event("EARLY", {"k": 1}, t_wall_ms=-2.5)
    if sys.argv[2] == "1":
        rec.log(x=1.0)
        rec.event("LATE")
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("then_log", [False, True], ids=["events_only", "adopted"])
def test_an_output_file_recording_killed_around_its_first_row(tmp_path: Path, then_log: bool) -> None:
    out = tmp_path / "out.parquet"
    proc = subprocess.run(
        [sys.executable, "-c", OUTPUT_FILE_KILL, str(out), "1" if then_log else "0"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL
    rep = flightlog.recover(out)
    assert not rep.errors and len(rep.recovered) == 1, rep
    ev = pq.read_table(tmp_path / ".out.parquet.flightlog" / "events.parquet").to_pylist()
    assert [e["event"] for e in ev] == ["EARLY", "EARLY", *(["LATE"] if then_log else [])]
    assert ev[1]["t_wall_ms"] == -2.5
    if then_log:
        assert 0 <= ev[0]["t_wall_ms"] <= ev[2]["t_wall_ms"], ev  # one clock across the first row
        assert pq.read_table(out)["x"].to_pylist() == [1.0]
    else:
        assert not out.exists()
    assert _spools(tmp_path) == []
    assert flightlog.recover(out).recovered == []


# --------------------------------------------------------------------------- closed before the first row


def test_flush_of_a_bare_recorder_closed_without_a_schema_raises_closed(tmp_path: Path) -> None:
    with flightlog.FlightRecorder(tmp_path / "given", flightlog.Schema([flightlog.Field("x", "f64")])) as given:
        given.log(x=1.0)
    with pytest.raises(flightlog.RecorderClosedError) as closed:
        given.flush()
    for events in (0, 2):
        rec = flightlog.FlightRecorder(tmp_path / f"bare{events}", flush_interval=3600.0)
        for k in range(events):
            rec.event("EARLY", {"k": k})
        if events:
            with pytest.warns(RuntimeWarning, match=f"{events} event"):
                rec.close()
        else:
            rec.close()
        assert rec.closed
        with pytest.raises(flightlog.RecorderClosedError) as raised:
            rec.flush()
        assert str(raised.value) == str(closed.value)
    # An open one without a schema yet has nothing to flush: no error.
    with flightlog.FlightRecorder(tmp_path / "open", flush_interval=3600.0) as rec:
        rec.flush()
        rec.log(x=1.0)


@pytest.mark.parametrize("how", ["lazy_before_first_row", "lazy_after_a_row", "given_schema"])
def test_every_closed_run_says_closed_to_log_record_and_extend(tmp_path: Path, how: str) -> None:
    schema = flightlog.Schema([flightlog.Field("x", "f64")]) if how == "given_schema" else None
    with flightlog.TelemetryManager(tmp_path, FLOW, schema=schema, flush_interval=3600.0) as tm:
        tm.event("EARLY")
        if how == "lazy_after_a_row":
            tm.log(x=1.0)
    assert tm.closed
    for call in (
        lambda: tm.log(x=1.0),
        lambda: tm.log(not_a_field=1.0),
        lambda: tm.record(1.0),
        lambda: tm.record(1.0, 2.0, 3.0),
        lambda: tm.extend(x=[1.0]),
        lambda: tm.flush(),
    ):
        with pytest.raises(flightlog.RecorderClosedError, match="closed"):
            call()
    assert read_manifest(tm.run_path)["status"] == "finished"


@pytest.mark.parametrize("early_events", [0, 2])
def test_a_replacing_output_file_closed_without_a_row_leaves_no_staging_folder(
    tmp_path: Path, early_events: int
) -> None:
    out = tmp_path / "out.parquet"
    with flightlog.FlightRecorder(out) as old:
        old.event("OLD")
        old.log(x=7.0)
    sidecar = tmp_path / ".out.parquet.flightlog"
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    listing = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    rec = flightlog.FlightRecorder(out, flush_interval=3600.0, overwrite=True)
    for k in range(early_events):
        rec.event("NEW", {"k": k})
    if early_events:
        with pytest.warns(RuntimeWarning, match=f"{early_events} event"):
            rec.close()
    else:
        rec.close()
    assert not (sidecar / "replacement").exists(), sorted(os.listdir(sidecar))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == listing
    assert {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert pq.read_table(out)["x"].to_pylist() == [7.0]
    assert flightlog.recover(out).recovered == []
    # The file can be replaced later as usual.
    with flightlog.FlightRecorder(out, overwrite=True) as new:
        new.log(x=8.0)
    assert pq.read_table(out)["x"].to_pylist() == [8.0]
    assert not (sidecar / "replacement").exists()

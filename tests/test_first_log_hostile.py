"""Hostile (but legal) use of e0950e6: a recorder whose schema comes with its first
``log()`` stays pending when that log() fails (a start refused by the folder, a row
that does not convert under the types it would infer), keeping its early events,
their spool and the folder's claim; an output file closed before any row leaves
nothing behind.

* the failing start repeated, events between the failures, then success: events
  once, in order, times non-decreasing, no leaked threads or files;
* flush()/stats()/now_ms()/close() on a recorder whose start failed, and the folder
  free for a new recorder after close;
* TelemetryManager: close after a failed start (folder fit again, or not), the
  manifest, ``flightlog.recover``; dev mode (append-mode parts);
* kill -9 right after failed starts, then recovery (bare folder and manager root);
* os.fork() after a failed start;
* odd first-row values (numpy scalars, huge ints, lone surrogates, values whose
  conversion raises or calls back into the recorder);
* two recorders of one output file (threads, processes) while one closes without
  a row; symlinked folders; overwrite=True.

Defects this file found were fixed with it (the claim's retry racing the hidden
folder's removal, a first value calling back into the recorder, a manager closing a
run whose start failed, a recorder garbage-collected before its first row, close()
in a forked child, an exception of a value's own conversion, and a replacing output
file that let go of its claim before it moved into place).
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import flightlog
from conftest import run_child_json

SPOOL = ".flightlog.spool"


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _events(path: Path) -> list[str]:
    return pq.read_table(path)["event"].to_pylist()


def _refused_start(rec: Any, **row: Any) -> None:
    with pytest.raises(FileExistsError, match="already exists"):
        rec.log(**row)


def _recorder_whose_start_failed(tmp_path: Path) -> tuple[Path, Any]:
    """A bare recorder with one early event ("EARLY") whose first log() was refused at
    its start: a finished recording's file (still there) was put in its folder."""
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run)
    rec.event("EARLY")
    (run / "telemetry.parquet").write_bytes(b"PAR1")
    _refused_start(rec, E=1.0)
    return run, rec


def _threads_of_this_process() -> int:
    return len(os.listdir("/proc/self/task"))


# ----------------------------------------------------------------------------- bare folder


def test_many_failed_starts_then_success_keeps_every_event_once_in_order(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run, flush_interval=3600.0)
    rec.event("FIRST", {"k": 0})
    intruder = run / "telemetry.parquet"
    intruder.write_bytes(b"PAR1")
    threads_before = _threads_of_this_process()
    for i in range(30):
        _refused_start(rec, E=float(i))
        assert rec.schema is None and not rec.closed
        rec.event("BETWEEN", {"i": i})
        # An explicit time is kept as given, even one before the recorder's clock began.
        if i == 10:
            rec.event("EXPLICIT", t_wall_ms=-1.0)
    assert _threads_of_this_process() == threads_before, "a failed start leaves no thread behind"
    # Only the claim, the one spool (one instance) and the intruder are in the folder.
    spools = [p for p in (run / SPOOL).iterdir()]
    assert len(spools) == 1 and sorted(p.name for p in spools[0].iterdir()) == ["events.log", "meta.json"]
    assert sorted(p.name for p in run.iterdir()) == [".flightlog.lock", SPOOL, "telemetry.parquet"]
    intruder.unlink()
    rec.log(E=99.0)
    rec.event("AFTER")
    rec.close()
    ev = pq.read_table(run / "events.parquet").to_pylist()
    names = [e["event"] for e in ev]
    assert names == ["FIRST"] + ["BETWEEN"] * 11 + ["EXPLICIT"] + ["BETWEEN"] * 19 + ["AFTER"]
    between = [json.loads(e["payload"])["i"] for e in ev if e["event"] == "BETWEEN"]
    assert between == list(range(30))
    stamped = [e["t_wall_ms"] for e in ev if e["event"] != "EXPLICIT"]
    assert all(a <= b for a, b in itertools.pairwise(stamped)), stamped
    assert [e["t_wall_ms"] for e in ev if e["event"] == "EXPLICIT"] == [-1.0]
    assert pq.read_table(run / "telemetry.parquet").to_pylist() == [{"E": 99.0}]
    assert sorted(p.name for p in run.iterdir()) == ["events.parquet", "telemetry.parquet"]


def test_the_other_final_file_refuses_the_start_too(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run)
    rec.event("EARLY")
    (run / "events.parquet").write_bytes(b"PAR1")
    _refused_start(rec, E=1.0)
    (run / "events.parquet").unlink()
    rec.log(E=2.0)
    rec.close()
    assert _events(run / "events.parquet") == ["EARLY"]


def test_calls_on_a_recorder_whose_start_failed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run)
    rec.event("EARLY")
    (run / "telemetry.parquet").write_bytes(b"PAR1")
    t0 = rec.now_ms()
    _refused_start(rec, E=1.0)
    rec.flush()  # nothing to flush: no error
    assert rec.stats()["rows_offered"] == 0
    t1 = rec.now_ms()
    assert t1 >= t0 > 0.0, "the clock keeps running from the recorder's creation"
    with pytest.raises(flightlog.SchemaError):
        rec.record(1.0)
    with pytest.raises(flightlog.SchemaError):
        rec.extend(E=[1.0])
    assert repr(rec).startswith("<FlightRecorder open")
    with pytest.raises(flightlog.RunClaimedError):
        flightlog.FlightRecorder(run)
    with pytest.warns(RuntimeWarning, match="1 event"):
        rec.close()


def test_close_after_a_failed_start_warns_drops_the_spool_and_frees_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run)
    rec.event("A")
    rec.event("B")
    intruder = run / "telemetry.parquet"
    intruder.write_bytes(b"PAR1")
    _refused_start(rec, E=1.0)
    _refused_start(rec, E=1.0)
    with pytest.warns(RuntimeWarning, match="2 event"):
        rec.close()
    assert rec.closed
    assert _tree(run) == ["telemetry.parquet"], "no claim, no spool"
    assert intruder.read_bytes() == b"PAR1"
    for call in (rec.flush, lambda: rec.log(E=1.0), lambda: rec.event("X")):
        with pytest.raises(flightlog.RecorderClosedError):
            call()
    assert rec.now_ms() == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec.close()  # idempotent, and warns once
    # Not claimed: the finished-looking file is what refuses a new recorder now.
    with pytest.raises(FileExistsError):
        flightlog.FlightRecorder(run)
    intruder.unlink()
    with flightlog.FlightRecorder(run) as again:
        again.log(E=3.0)
    assert pq.read_table(run / "telemetry.parquet")["E"].to_pylist() == [3.0]
    assert not (run / "events.parquet").exists() or _events(run / "events.parquet") == []


def test_failed_starts_race_with_events_from_threads(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run)
    intruder = run / "telemetry.parquet"
    intruder.write_bytes(b"PAR1")
    failures = 0
    go = threading.Barrier(3)

    def events(tag: str) -> None:
        go.wait()
        for i in range(200):
            rec.event(tag, {"i": i})

    ts = [threading.Thread(target=events, args=(t,)) for t in "XY"]
    for t in ts:
        t.start()
    go.wait()
    while any(t.is_alive() for t in ts) or failures == 0:
        with pytest.raises(FileExistsError):
            rec.log(E=0.0)
        failures += 1
    for t in ts:
        t.join()
    assert failures >= 1 and rec.schema is None
    intruder.unlink()
    rec.log(E=1.0)
    rec.close()
    ev = pq.read_table(run / "events.parquet").to_pylist()
    assert len(ev) == 400
    for tag in "XY":
        assert [json.loads(e["payload"])["i"] for e in ev if e["event"] == tag] == list(range(200))


def test_a_spool_removed_by_hand_before_the_first_log(tmp_path: Path) -> None:
    """The adoption fails (its spool is gone): the log() raises, the events stay in
    memory, and the next log() starts the recorder with them."""
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run)
    rec.event("A")
    shutil.rmtree(run / SPOOL)
    with pytest.raises(flightlog.WriteError):
        rec.log(E=1.0)
    assert rec.schema is None
    rec.event("B")
    rec.log(E=2.0)
    rec.close()
    assert _events(run / "events.parquet") == ["A", "B"]
    assert pq.read_table(run / "telemetry.parquet")["E"].to_pylist() == [2.0]


def test_a_pending_recorder_garbage_collected_does_not_lose_its_events_silently(tmp_path: Path) -> None:
    run, rec = _recorder_whose_start_failed(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del rec
        gc.collect()
    warned = any(issubclass(w.category, RuntimeWarning) for w in caught)
    assert warned or (run / SPOOL).is_dir(), (_tree(run), [str(w.message) for w in caught])


# ----------------------------------------------------------------------------- first rows


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (np.uint64(2**64 - 1), OverflowError),
        (-(2**63) - 1, OverflowError),
        (-(2**200), OverflowError),
        ("ok\udfff", UnicodeEncodeError),
        ({"nested": [1, 2]}, flightlog.SchemaError),
        ([1.0], flightlog.SchemaError),
        (None, flightlog.SchemaError),
        (b"bytes", flightlog.SchemaError),
        (np.datetime64("2020-01-01"), TypeError),
    ],
    ids=["u64-max", "below-i64", "huge-negative", "lone-surrogate", "dict", "list", "none", "bytes", "datetime64"],
)
def test_a_first_row_that_cannot_be_stored_leaves_no_schema(tmp_path: Path, value: Any, error: type) -> None:
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run)
    rec.event("EARLY")
    with pytest.raises(error):
        rec.log(E=1.0, v=value)
    assert rec.schema is None and not rec.closed
    assert (run / SPOOL).is_dir()
    # The next row decides the schema; v is not in it.
    rec.log(E=2.0)
    assert [f.name for f in rec.schema.fields] == ["E"]
    rec.close()
    assert pq.read_table(run / "telemetry.parquet").to_pylist() == [{"E": 2.0}]
    assert _events(run / "events.parquet") == ["EARLY"]


@pytest.mark.parametrize(
    ("value", "dtype", "stored"),
    [
        (np.uint64(2**63 - 1), "i64", 2**63 - 1),
        (np.float32(1.5), "f64", 1.5),
        (np.float16(0.5), "f64", 0.5),
        (np.int8(-3), "i64", -3),
        (np.bool_(True), "bool", True),
        (True, "bool", True),
        (-(2**63), "i64", -(2**63)),
        (float("inf"), "f64", float("inf")),
        ("a\x00b", "str", "a\x00b"),
    ],
    ids=["u64-fits", "f32", "f16", "i8", "np-bool", "bool", "i64-min", "inf", "nul-in-str"],
)
def test_odd_first_values_that_convert(tmp_path: Path, value: Any, dtype: str, stored: Any) -> None:
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run)
    rec.event("EARLY")
    rec.log(v=value)
    assert [(f.name, f.dtype) for f in rec.schema.fields] == [("v", dtype)]
    rec.close()
    assert pq.read_table(run / "telemetry.parquet")["v"].to_pylist() == [stored]
    assert _events(run / "events.parquet") == ["EARLY"]


class _Raising:
    def __float__(self) -> float:
        raise ValueError("no float today")


class _Interrupting:
    def __index__(self) -> int:
        raise KeyboardInterrupt


def test_a_first_value_whose_conversion_raises_leaves_the_recorder_pending(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run)
    rec.event("EARLY")
    with pytest.raises(ValueError, match="no float today"):
        rec.log(E=_Raising())  # the value's own error, as float(value) raises it
    assert rec.schema is None
    rec.event("LATER")
    rec.log(E=1.0)
    rec.close()
    assert _events(run / "events.parquet") == ["EARLY", "LATER"]


def test_a_keyboard_interrupt_in_a_first_value_is_not_turned_into_a_type_error(tmp_path: Path) -> None:
    rec = flightlog.FlightRecorder(tmp_path / "run")
    rec.event("EARLY")
    try:
        with pytest.raises(KeyboardInterrupt):
            rec.log(n=_Interrupting())
    finally:
        assert rec.schema is None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec.close()


REENTRANT = textwrap.dedent(
    """
    import json, os, sys, threading, flightlog
    rec = flightlog.FlightRecorder(sys.argv[1])
    rec.event("EARLY")
    call = sys.argv[2]

    class Lazy:
        def __float__(self):
            if call == "now_ms":
                return rec.now_ms()
            rec.event("INSIDE")
            return 1.0

    out = {}
    def first_log():
        try:
            rec.log(t=Lazy())
            out["ok"] = True
        except Exception as e:
            out["error"] = type(e).__name__
    t = threading.Thread(target=first_log, daemon=True)
    t.start()
    t.join(3.0)
    print(json.dumps({"hung": t.is_alive(), **out}), flush=True)
    os._exit(0)
    """
)


@pytest.mark.parametrize("call", ["now_ms", "event"])
def test_a_first_value_calling_back_into_the_recorder_does_not_hang(tmp_path: Path, call: str) -> None:
    out = run_child_json(REENTRANT, str(tmp_path / "run"), call, timeout=60)
    assert out["hung"] is False, out


REENTRANT_CONSTANT = textwrap.dedent(
    """
    import json, os, sys, threading, flightlog
    from flightlog import Field, Schema
    call = sys.argv[2]
    rec = None

    class Lazy:
        def __float__(self):
            if rec is not None:
                if call == "now_ms":
                    return rec.now_ms()
                rec.event("INSIDE")
            return 1.0

    rec = flightlog.FlightRecorder(sys.argv[1], constants={"c": Lazy()})
    rec.event("EARLY")
    out = {}
    def start():
        try:
            # What a run closed before its first row does: the schema given, not inferred.
            rec._start(Schema([Field("c", "f64"), Field("x", "f64")]))
            rec.close()
            out["ok"] = True
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"
    t = threading.Thread(target=start, daemon=True)
    t.start()
    t.join(3.0)
    print(json.dumps({"hung": t.is_alive(), **out}), flush=True)
    os._exit(0)
    """
)


@pytest.mark.parametrize("call", ["now_ms", "event"])
def test_a_constant_calling_back_into_the_recorder_does_not_hang_a_given_schema(tmp_path: Path, call: str) -> None:
    """``_start(schema)`` converts the constants outside the pending state's lock too."""
    run = tmp_path / "run"
    out = run_child_json(REENTRANT_CONSTANT, str(run), call, timeout=60)
    assert out == {"hung": False, "ok": True}, out
    names = pq.read_table(run / "events.parquet")["event"].to_pylist()
    assert names[0] == "EARLY", names
    assert ("INSIDE" in names) == (call == "event"), names


def test_a_started_recorder_takes_a_value_calling_back_into_it(tmp_path: Path) -> None:
    """The same value after the first row (the recorder started) works too."""
    rec = flightlog.FlightRecorder(tmp_path / "run")

    class Lazy:
        def __float__(self) -> float:
            rec.event("INSIDE")
            return rec.now_ms()

    rec.log(t=1.0)
    rec.log(t=Lazy())
    rec.close()
    assert pq.read_table(tmp_path / "run" / "telemetry.parquet").num_rows == 2


# ----------------------------------------------------------------------------- TelemetryManager


def test_manager_failed_start_then_close_once_the_folder_is_fit(tmp_path: Path) -> None:
    tm = flightlog.TelemetryManager(tmp_path, "f")
    tm.event("EARLY", {"a": 1})
    intruder = tm.run_path / "telemetry.parquet"
    intruder.write_bytes(b"PAR1")
    for _ in range(3):
        with pytest.raises(FileExistsError):
            tm.log(E=1.0)
        assert tm.recorder is None and tm.status == "running"
    tm.event("MID")
    assert tm.stats() == {} and tm.now_ms() > 0.0
    intruder.unlink()
    tm.close()
    assert tm.status == "finished"
    assert _events(tm.run_path / "events.parquet") == ["RUN_STARTED", "EARLY", "MID", "RUN_FINISHED"]
    assert pq.read_table(tm.run_path / "telemetry.parquet").num_rows == 0
    assert sorted(p.name for p in tm.run_path.iterdir()) == ["events.parquet", "manifest.toml", "telemetry.parquet"]
    assert flightlog.recover(tmp_path).recovered == []


def test_manager_failed_start_then_rows(tmp_path: Path) -> None:
    with flightlog.TelemetryManager(tmp_path, "f") as tm:
        tm.event("EARLY")
        intruder = tm.run_path / "events.parquet"
        intruder.write_bytes(b"PAR1")
        with pytest.raises(FileExistsError):
            tm.log(E=1.0, n=1)
        for bad in (2**70, "\ud800"):
            with pytest.raises((OverflowError, UnicodeEncodeError)):
                tm.log(E=1.0, n=bad)
        intruder.unlink()
        tm.log(E=2.0, n=2)
        tm.log(E=3.0, n=3)
    assert tm.status == "finished"
    t = pq.read_table(tm.run_path / "telemetry.parquet")
    assert t.column_names == ["run_id", "flow_name", "E", "n"]
    assert t["n"].to_pylist() == [2, 3]
    assert _events(tm.run_path / "events.parquet") == ["RUN_STARTED", "EARLY", "RUN_FINISHED"]


def test_manager_close_with_the_folder_still_unfit_releases_the_run(tmp_path: Path) -> None:
    tm = flightlog.TelemetryManager(tmp_path, "f")
    tm.event("EARLY")
    intruder = tm.run_path / "telemetry.parquet"
    intruder.write_bytes(b"PAR1")
    with pytest.raises(FileExistsError):
        tm.log(E=1.0)
    with pytest.raises(FileExistsError):
        tm.close()
    try:
        assert tm.closed and tm.status == "failed"
        assert tm.manifest["error_type"] == "FileExistsError"
        intruder.unlink()
        rep = flightlog.recover(tmp_path)
        assert rep.live == [], rep
    finally:
        pending = tm._pending
        if pending is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pending.close()


def test_manager_dev_mode_failed_start_on_a_taken_part_name(tmp_path: Path) -> None:
    tm = flightlog.TelemetryManager(tmp_path, "f", mode="dev", sampling=None)
    tm.event("EARLY")
    parts = tmp_path / "flows" / "f" / "dev_telemetry"
    intruder = parts / f"part-{tm.run_id}-000000.parquet"
    intruder.write_bytes(b"PAR1")
    with pytest.raises(FileExistsError, match="already holds segments"):
        tm.log(E=1.0)
    intruder.unlink()
    tm.log(E=2.0)
    tm.close()
    assert tm.status == "finished"
    (part,) = parts.glob("*.parquet")
    assert pq.read_table(part)["E"].to_pylist() == [2.0]
    (ev,) = (tmp_path / "flows" / "f" / "dev_events").glob("*.parquet")
    assert _events(ev) == ["RUN_STARTED", "EARLY", "RUN_FINISHED"]
    assert not [p for p in parts.iterdir() if p.name.startswith(".")], "no claim or spool left"


# ----------------------------------------------------------------------------- kill -9

KILLED_BARE = textwrap.dedent(
    """
    import sys, pathlib, flightlog
    run = pathlib.Path(sys.argv[1])
    rec = flightlog.FlightRecorder(run)
    rec.event("EARLY", {"n": 0})
    (run / "telemetry.parquet").write_bytes(b"PAR1")
    for i in range(5):
        try:
            rec.log(E=1.0)
        except FileExistsError:
            rec.event("MID", {"n": i + 1})
    print("refused", flush=True)
    sys.stdin.read()
    """
)

KILLED_MANAGER = textwrap.dedent(
    """
    import sys, flightlog
    tm = flightlog.TelemetryManager(sys.argv[1], "f")
    tm.event("EARLY")
    (tm.run_path / "telemetry.parquet").write_bytes(b"PAR1")
    for i in range(3):
        try:
            tm.log(E=1.0)
        except FileExistsError:
            tm.event("MID", {"n": i})
    print(tm.run_path, flush=True)
    sys.stdin.read()
    """
)


def _run_then_kill(script: str, arg: str) -> str:
    with subprocess.Popen(
        [sys.executable, "-c", script, arg], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as p:
        try:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
    return line


def test_kill_after_repeated_failed_starts_then_recover_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "rec"
    assert _run_then_kill(KILLED_BARE, str(run)) == "refused"
    assert (run / SPOOL).is_dir()
    (run / "telemetry.parquet").unlink()
    rep = flightlog._core.recover_run_dir(str(run))
    assert (rep["salvaged_events"], rep["event_rows"], rep["telemetry_rows"]) == (6, 6, 0), rep
    ev = pq.read_table(run / "events.parquet").to_pylist()
    assert [json.loads(e["payload"])["n"] for e in ev] == list(range(6))
    times = [e["t_wall_ms"] for e in ev]
    assert times == sorted(times)
    assert not (run / SPOOL).exists()
    again = flightlog._core.recover_run_dir(str(run))
    assert again["salvaged_events"] == 0 and again["event_rows"] == 6, again


def test_kill_after_a_managers_failed_starts_then_recover_the_root(tmp_path: Path) -> None:
    run = Path(_run_then_kill(KILLED_MANAGER, str(tmp_path)))
    assert (run / SPOOL).is_dir()
    (run / "telemetry.parquet").unlink()
    rep = flightlog.recover(tmp_path)
    assert rep.live == [] and rep.errors == [] and len(rep.recovered) == 1, rep
    assert rep.recovered[0]["salvaged_events"] == 5
    assert _events(run / "events.parquet") == ["RUN_STARTED", "EARLY", "MID", "MID", "MID"]
    assert flightlog.read_manifest(run)["status"] == "crashed"
    assert sorted(p.name for p in run.iterdir()) == ["events.parquet", "manifest.toml"]
    assert flightlog.recover(tmp_path).recovered == []


# ----------------------------------------------------------------------------- fork


def _fork_and_report(body: Any) -> dict[str, Any]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.write(w, json.dumps(body()).encode())
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        text = f.read()
    assert status == 0 and text, (status, text)
    return json.loads(text)


def test_fork_after_a_failed_start_leaves_the_parents_spool_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rec = flightlog.FlightRecorder(run)
    rec.event("EARLY")
    intruder = run / "telemetry.parquet"
    intruder.write_bytes(b"PAR1")
    _refused_start(rec, E=1.0)
    before = _tree(run)

    def child() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, call in (
            ("event", lambda: rec.event("CHILD")),
            ("log", lambda: rec.log(E=3.0)),
            ("close", rec.close),
        ):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    call()
                out[name] = "ok"
            except Exception as e:
                out[name] = type(e).__name__
        return out

    assert _fork_and_report(child) == {"event": "FlightlogError", "log": "FlightlogError", "close": "ok"}
    assert _tree(run) == before
    with pytest.raises(flightlog.RunClaimedError):
        flightlog.FlightRecorder(run)
    intruder.unlink()
    rec.log(E=2.0)
    rec.event("LATE")
    rec.close()
    assert _events(run / "events.parquet") == ["EARLY", "LATE"]
    assert pq.read_table(run / "telemetry.parquet")["E"].to_pylist() == [2.0]


def test_close_in_a_forked_child_does_not_claim_the_parents_events_are_lost(tmp_path: Path) -> None:
    _, rec = _recorder_whose_start_failed(tmp_path)

    def child() -> dict[str, Any]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rec.close()
        return {"warnings": [str(w.message) for w in caught]}

    try:
        assert _fork_and_report(child) == {"warnings": []}
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec.close()


# ----------------------------------------------------------------------------- output files


def _output_file_whose_start_failed(tmp_path: Path, content: bytes) -> tuple[Path, Any]:
    """``FlightRecorder("x.parquet")`` with one early event ("EARLY") whose first log()
    was refused at its start: the output file appeared (``content``) meanwhile."""
    out = tmp_path / "x.parquet"
    rec = flightlog.FlightRecorder(out)
    rec.event("EARLY")
    out.write_bytes(content)
    _refused_start(rec, E=1.0)
    return out, rec


def test_output_file_appearing_refuses_the_start_and_close_leaves_only_it(tmp_path: Path) -> None:
    out, rec = _output_file_whose_start_failed(tmp_path, b"someone else's")
    assert (tmp_path / ".x.parquet.flightlog" / SPOOL).is_dir()
    with pytest.warns(RuntimeWarning, match="1 event"):
        rec.close()
    assert _tree(tmp_path) == ["x.parquet"]
    assert out.read_bytes() == b"someone else's"


def test_output_file_failed_start_then_success(tmp_path: Path) -> None:
    out, rec = _output_file_whose_start_failed(tmp_path, b"x")
    out.unlink()
    rec.log(E=2.0)
    rec.close()
    assert pq.read_table(out)["E"].to_pylist() == [2.0]
    assert _events(tmp_path / ".x.parquet.flightlog" / "events.parquet") == ["EARLY"]
    assert _tree(tmp_path) == [".x.parquet.flightlog", ".x.parquet.flightlog/events.parquet", "x.parquet"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_file_closed_without_rows_many_times(tmp_path: Path, overwrite: bool) -> None:
    out = tmp_path / "x.parquet"
    if overwrite:
        out.write_bytes(b"old")
    for i in range(20):
        rec = flightlog.FlightRecorder(out, overwrite=overwrite)
        if i % 2:
            rec.event("E")
            with pytest.warns(RuntimeWarning):
                rec.close()
        else:
            rec.close()
    assert _tree(tmp_path) == (["x.parquet"] if overwrite else [])
    if overwrite:
        assert out.read_bytes() == b"old"


def test_output_file_through_a_symlinked_folder(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    rec = flightlog.FlightRecorder(link / "x.parquet")
    rec.event("A")
    with pytest.raises(flightlog.RunClaimedError):
        flightlog.FlightRecorder(real / "x.parquet")
    with pytest.warns(RuntimeWarning):
        rec.close()
    assert _tree(real) == []
    # An output file that is a symlink, replaced: closed without rows, the link and its target stay.
    target = tmp_path / "target.parquet"
    target.write_bytes(b"old")
    (real / "y.parquet").symlink_to(target)
    rec = flightlog.FlightRecorder(real / "y.parquet", overwrite=True)
    rec.event("A")
    with pytest.warns(RuntimeWarning):
        rec.close()
    assert (real / "y.parquet").is_symlink() and target.read_bytes() == b"old"
    assert _tree(real) == ["y.parquet"]


def test_run_folder_through_a_symlink_failed_start_then_success(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    rec = flightlog.FlightRecorder(link)
    rec.event("A")
    (real / "telemetry.parquet").write_bytes(b"x")
    _refused_start(rec, E=1.0)
    with pytest.raises(flightlog.RunClaimedError):
        flightlog.FlightRecorder(real)
    (real / "telemetry.parquet").unlink()
    rec.log(E=5.0)
    rec.close()
    assert _events(real / "events.parquet") == ["A"]
    assert pq.read_table(real / "telemetry.parquet")["E"].to_pylist() == [5.0]


@pytest.mark.filterwarnings("ignore:the recorder was closed before any row:RuntimeWarning")
def test_two_threads_on_one_output_file_one_never_logging(tmp_path: Path) -> None:
    """Two threads take the file in turn, record an event and close without a row (the
    close removes the hidden folder), as fast as they can: every try must either get
    the recorder or RunClaimedError; nothing is left at the end."""
    out = tmp_path / "x.parquet"
    errors: list[str] = []
    stop = threading.Event()
    deadline = time.monotonic() + 6
    cycles = [0, 0]

    def worker(k: int) -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                rec = flightlog.FlightRecorder(out)
            except flightlog.RunClaimedError:
                continue
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
                stop.set()
                return
            rec.event("E", {"k": k})
            rec.close()
            cycles[k] += 1

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == [], (errors, cycles)
    assert _tree(tmp_path) == []


OUTPUT_FILE_CHILD = textwrap.dedent(
    """
    import json, sys, time, warnings, flightlog
    warnings.simplefilter("ignore")
    out, tag, rows = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    errors, done = [], 0
    deadline = time.monotonic() + 20
    for i in range(25):
        while True:
            try:
                rec = flightlog.FlightRecorder(out, overwrite=True)
                break
            except flightlog.RunClaimedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
            except Exception as e:
                errors.append(type(e).__name__ + ": " + str(e))
                time.sleep(0.001)
        rec.event(tag, {"i": i})
        if rows:
            rec.log(i=i, tag=tag)
        rec.close()
        done += 1
    print(json.dumps({"errors": errors, "done": done}))
    """
)


def test_two_processes_on_one_output_file_one_never_logging(tmp_path: Path) -> None:
    """Process A closes without rows over and over, process B records a row each time:
    the file is B's last recording, complete, and no stray folder is left. Errors other
    than the claim are counted (threads: see the test above)."""
    out = tmp_path / "x.parquet"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OUTPUT_FILE_CHILD, str(out), tag, rows],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag, rows in (("A", "0"), ("B", "1"))
    ]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [r["done"] for r in results] == [25, 25]
    assert pq.read_table(out).to_pylist() == [{"i": 24, "tag": "B"}]
    assert _tree(tmp_path) == [".x.parquet.flightlog", ".x.parquet.flightlog/events.parquet", "x.parquet"]
    assert _events(tmp_path / ".x.parquet.flightlog" / "events.parquet") == ["B"]


@pytest.mark.filterwarnings("ignore:the recorder was closed before any row:RuntimeWarning")
def test_a_replacing_recorder_closing_never_refuses_the_next_with_file_exists(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    out.write_bytes(b"old")
    spurious: list[str] = []
    deadline = time.monotonic() + 8
    stop = threading.Event()

    def worker(tag: str, rows: bool) -> None:
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                rec = flightlog.FlightRecorder(out, overwrite=True)
            except flightlog.RunClaimedError:
                time.sleep(0.0002)
                continue
            except FileExistsError as e:
                spurious.append(f"{tag}: {e}")
                stop.set()
                return
            except flightlog.WriteError:
                continue  # another recorder holds it: try again
            rec.event(tag)
            if rows:
                rec.log(i=i)
            rec.close()
            i += 1

    ts = [threading.Thread(target=worker, args=("A", False)), threading.Thread(target=worker, args=("B", True))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert spurious == []

"""A run whose schema comes with its first ``log()`` (``schema=None``) records an
event before that first row, and the process is killed with SIGKILL once
``event()`` returned (the README: once ``event()`` returns, the event is in the
run's spool). ``recover`` must publish it: before the first row the events are in
an events-only spool, which the recorder adopts when the first ``log()`` gives it
a schema.

Also: the same with one ``log()`` after the event before the kill (the adopted
spool); a bare ``FlightRecorder(schema=None)`` killed after an event; and the
clean paths (a run closed before any row keeps its events; a bare recorder closed
without a schema leaves no spool behind)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import flightlog
from flightlog import TelemetryManager

CHILD = textwrap.dedent(
    """
    import sys
    from flightlog import TelemetryManager
    root, then_log = sys.argv[1], sys.argv[2] == "1"
    tm = TelemetryManager(root, "lazy", flush_interval=3600.0)
    tm.event("STARTED", {"step": 0})
    if then_log:
        tm.log(iter=1, E=0.5)
    print(tm.run_path, flush=True)  # after the calls returned
    sys.stdin.read()
    """
)


def _events_after_kill(root: Path, then_log: bool) -> list[str]:
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), "1" if then_log else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as p:
        try:
            assert p.stdout is not None
            run = Path(p.stdout.readline().strip())
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
    rep = flightlog.recover(root)
    assert not rep.errors and len(rep.recovered) == 1, rep
    events = run / "events.parquet"
    return pq.read_table(events)["event"].to_pylist() if events.exists() else []


def test_an_event_before_the_first_row_of_an_inferred_schema_survives_once_a_row_follows(tmp_path: Path) -> None:
    assert _events_after_kill(tmp_path, then_log=True).count("STARTED") == 1


def test_an_event_before_the_first_row_of_an_inferred_schema_survives_a_kill(tmp_path: Path) -> None:
    names = _events_after_kill(tmp_path, then_log=False)
    assert names.count("STARTED") == 1 and names.count("RUN_STARTED") == 1, names
    assert names.index("RUN_STARTED") < names.index("STARTED")


def test_events_before_and_after_the_first_row_keep_their_order_across_a_kill(tmp_path: Path) -> None:
    names = _events_after_kill(tmp_path, then_log=True)
    assert [n for n in names if n in ("RUN_STARTED", "STARTED")] == ["RUN_STARTED", "STARTED"]


BARE = textwrap.dedent(
    """
    import sys
    from flightlog import FlightRecorder
    rec = FlightRecorder(sys.argv[1], flush_interval=3600.0)
    rec.event("EARLY", {"n": 1})
    rec.event("EARLIER_CLOCK", None, t_wall_ms=-5.0)
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def test_a_bare_recorder_without_a_schema_killed_after_events(tmp_path: Path) -> None:
    run = tmp_path / "rec"
    with subprocess.Popen([sys.executable, "-c", BARE, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as p:
        try:
            assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
    assert (run / ".flightlog.spool").is_dir()
    # A bare recorder's folder is not a run (no manifest): the core's recovery of one folder.
    rep = flightlog._core.recover_run_dir(str(run))
    assert (rep["salvaged_events"], rep["event_rows"], rep["telemetry_rows"]) == (2, 2, 0), rep
    assert not (run / ".flightlog.spool").exists()
    ev = pq.read_table(run / "events.parquet").to_pylist()
    assert [e["event"] for e in ev] == ["EARLY", "EARLIER_CLOCK"]
    assert ev[1]["t_wall_ms"] == -5.0 and ev[0]["t_wall_ms"] >= 0.0
    assert not (run / "telemetry.parquet").exists()
    again = flightlog._core.recover_run_dir(str(run))
    assert again["salvaged_events"] == 0 and again["event_rows"] == 2, again


def test_a_run_closed_before_its_first_row_keeps_its_events(tmp_path: Path) -> None:
    with TelemetryManager(tmp_path, "lazy") as tm:
        tm.event("STARTED", {"step": 0})
        assert tm.recorder is None
    names = pq.read_table(tm.run_path / "events.parquet")["event"].to_pylist()
    assert names[:2] == ["RUN_STARTED", "STARTED"] and names[-1] == "RUN_FINISHED"
    assert pq.read_table(tm.run_path / "telemetry.parquet").num_rows == 0
    assert not (tm.run_path / ".flightlog.spool").exists()


def test_a_bare_recorder_closed_without_a_schema_leaves_no_spool(tmp_path: Path) -> None:
    rec = flightlog.FlightRecorder(tmp_path / "rec")
    rec.event("EARLY")
    assert (tmp_path / "rec" / ".flightlog.spool").is_dir()
    with pytest.warns(RuntimeWarning, match="1 event"):
        rec.close()
    assert not (tmp_path / "rec" / ".flightlog.spool").exists()
    assert flightlog.recover(tmp_path / "rec").recovered == []


def test_a_failed_first_log_keeps_the_early_events(tmp_path: Path) -> None:
    with TelemetryManager(tmp_path, "lazy") as tm:
        tm.event("STARTED")
        with pytest.raises(flightlog.SchemaError, match="cannot infer the type of field 'E'"):
            tm.log(E=object())  # no dtype for it: the schema is not inferred
        assert tm.recorder is None
        tm.log(E=0.5)
    names = pq.read_table(tm.run_path / "events.parquet")["event"].to_pylist()
    assert names.count("STARTED") == 1
    assert pq.read_table(tm.run_path / "telemetry.parquet")["E"].to_pylist() == [0.5]


def test_a_first_log_whose_start_fails_keeps_the_early_events(tmp_path: Path) -> None:
    """Not a row the schema refuses but a start that fails: a finished recording's file
    appeared in the folder after the recorder was made. The first log() raises, the
    recorder stays one whose schema is to come, with its events, their spool and its
    claim; once the folder is fit again the next log() starts it."""
    run = tmp_path / "rec"
    rec = flightlog.FlightRecorder(run)
    rec.event("EARLY", {"k": 1})
    intruder = run / "telemetry.parquet"
    intruder.write_bytes(b"PAR1")
    with pytest.raises(FileExistsError, match="already exists"):
        rec.log(E=1.0)
    assert rec.schema is None and not rec.closed
    assert (run / ".flightlog.spool").is_dir(), "the events' spool stays"
    with pytest.raises(flightlog.RunClaimedError):
        flightlog.FlightRecorder(run)  # still this folder's one writer
    intruder.unlink()
    rec.log(E=2.0)
    rec.close()
    assert pq.read_table(run / "events.parquet")["event"].to_pylist() == ["EARLY"]
    assert pq.read_table(run / "telemetry.parquet")["E"].to_pylist() == [2.0]
    assert not (run / ".flightlog.spool").exists()


def test_a_failed_start_killed_then_recovered_keeps_the_early_events(tmp_path: Path) -> None:
    """As above, killed after the failed first log(): recover publishes the events."""
    run = tmp_path / "rec"
    child = textwrap.dedent(
        """
        import sys, pathlib, flightlog
        run = pathlib.Path(sys.argv[1])
        rec = flightlog.FlightRecorder(run)
        rec.event("EARLY")
        (run / "telemetry.parquet").write_bytes(b"PAR1")
        try:
            rec.log(E=1.0)
        except FileExistsError:
            print("refused", flush=True)
        sys.stdin.read()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", child, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as p:
        try:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "refused"
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
    assert (run / ".flightlog.spool").is_dir()
    (run / "telemetry.parquet").unlink()
    # A bare recorder's folder is not a run (no manifest): the core's recovery of one folder.
    rep = flightlog._core.recover_run_dir(str(run))
    assert (rep["salvaged_events"], rep["event_rows"]) == (1, 1), rep
    assert pq.read_table(run / "events.parquet")["event"].to_pylist() == ["EARLY"]
    assert not (run / ".flightlog.spool").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_file_closed_without_a_row_leaves_nothing_behind(tmp_path: Path, overwrite: bool) -> None:
    """``FlightRecorder("x.parquet")`` (schema to come) closed before any row writes no
    file, and its hidden folder (claim, spool) goes with it; an existing file that
    ``overwrite=True`` would have replaced stays as it was."""
    out = tmp_path / "x.parquet"
    if overwrite:
        out.write_bytes(b"old")
    rec = flightlog.FlightRecorder(out, overwrite=overwrite)
    rec.event("EARLY")
    with pytest.warns(RuntimeWarning, match="1 event"):
        rec.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["x.parquet"] if overwrite else [])
    if overwrite:
        assert out.read_bytes() == b"old"
    # The path is free for the next recording.
    with flightlog.FlightRecorder(out, overwrite=overwrite) as again:
        again.log(E=1.0)
    assert pq.read_table(out)["E"].to_pylist() == [1.0]


@pytest.mark.parametrize(
    ("bad", "error"),
    [({"n": 2**70}, OverflowError), ({"s": "\ud800"}, UnicodeEncodeError)],
    ids=["int-past-i64", "lone-surrogate"],
)
def test_a_refused_first_row_gives_no_schema(tmp_path: Path, bad: dict[str, object], error: type) -> None:
    """The schema is inferred from the first row that is recorded: a first ``log()`` whose
    row cannot be stored under the types it would give raises and leaves the recorder
    waiting for its schema, its events kept; an ``overwrite=True`` output file closed
    then is not replaced by an empty one."""
    out = tmp_path / "x.parquet"
    out.write_bytes(b"old")
    rec = flightlog.FlightRecorder(out, overwrite=True)
    rec.event("EARLY")
    with pytest.raises(error):
        rec.log(E=0.5, **bad)
    assert rec.schema is None
    with pytest.warns(RuntimeWarning, match="1 event"):
        rec.close()
    assert out.read_bytes() == b"old"

    run = tmp_path / "run"
    with flightlog.FlightRecorder(run) as rec:
        rec.event("EARLY")
        with pytest.raises(error):
            rec.log(E=0.5, **bad)
        rec.log(E=1.5, n=3, s="ok")
    t = pq.read_table(run / "telemetry.parquet")
    assert t.column_names == ["E", "n", "s"] and t["E"].to_pylist() == [1.5]
    assert pq.read_table(run / "events.parquet")["event"].to_pylist() == ["EARLY"]

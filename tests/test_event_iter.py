"""The `iter` an event is stamped with: the iteration of the newest row recorded before it.

The recorder reads it from the ring when the event is recorded (rows no longer keep it on
the side), so what counts is what was recorded: a row that was sampled out, refused by the
row budget or dropped by a full ring has no say; a null `iter` gives a null; a thread that
recorded no row gets the newest row of any thread that did.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flightlog import Field, FlightRecorder, RowBudgetWarning, Schema

SCHEMA = Schema([Field("iter", "i64", nullable=False), Field("x", "f64", nullable=False)])
NULLABLE = Schema([Field("iter", "i64"), Field("x", "f64", nullable=False)])


def events_of(run: Path) -> list[tuple[str, int | None]]:
    table = pq.read_table(run / "events.parquet")
    return list(zip(table.column("event").to_pylist(), table.column("iter").to_pylist(), strict=True))


def test_an_event_carries_the_iter_of_the_row_before_it(tmp_path: Path) -> None:
    run = tmp_path / "r"
    with FlightRecorder(run, SCHEMA) as rec:
        rec.event("BEFORE_ANY_ROW")
        for i in range(10):
            rec.record(i, 0.5)
        rec.event("AFTER_RECORD")
        rec.log(iter=41, x=1.0)
        rec.event("AFTER_LOG")
        rec.extend(iter=[100, 101, 102], x=[0.0, 0.0, 0.0])
        rec.event("AFTER_EXTEND")
        rec.record(7, 0.5)  # iterations need not grow: the newest row counts, not the largest
        rec.event("AFTER_A_SMALLER_ITER")
    assert events_of(run) == [
        ("BEFORE_ANY_ROW", None),
        ("AFTER_RECORD", 9),
        ("AFTER_LOG", 41),
        ("AFTER_EXTEND", 102),
        ("AFTER_A_SMALLER_ITER", 7),
    ]


def test_rows_that_were_not_recorded_do_not_move_the_iter(tmp_path: Path) -> None:
    run = tmp_path / "sampled"
    # Keep the first 2 rows, then every 10th.
    with FlightRecorder(run, SCHEMA, sampling=(2, 10)) as rec:
        for i in range(15):
            rec.record(i, 0.5)
        rec.event("SAMPLED")
    table = pq.read_table(run / "telemetry.parquet")
    newest_kept = table.column("iter").to_pylist()[-1]
    assert newest_kept < 14, table.column("iter").to_pylist()
    assert events_of(run) == [("SAMPLED", newest_kept)]

    run = tmp_path / "budget"
    with FlightRecorder(run, SCHEMA, max_rows=3) as rec:
        with pytest.warns(RowBudgetWarning):
            for i in range(6):
                rec.record(i, 0.5)
        rec.event("OVER_BUDGET")
    assert [e for e in events_of(run) if e[0] == "OVER_BUDGET"] == [("OVER_BUDGET", 2)]

    run = tmp_path / "dropped"
    with FlightRecorder(run, SCHEMA, ring_capacity=4, on_full="drop", flush_interval=3600) as rec:
        for i in range(50):
            rec.record(i, 0.5)
        dropped = rec.stats()["rows_dropped"]
        rec.event("AFTER_DROPS")
    assert dropped > 0
    table = pq.read_table(run / "telemetry.parquet")
    assert events_of(run) == [("AFTER_DROPS", table.column("iter").to_pylist()[-1])]


def test_a_null_iter_gives_a_null(tmp_path: Path) -> None:
    run = tmp_path / "r"
    with FlightRecorder(run, NULLABLE) as rec:
        rec.record(5, 0.5)
        rec.event("AFTER_5")
        rec.record(None, 0.5)
        rec.event("AFTER_NULL")

        # Another thread's null is its own: not replaced by this thread's 5.
        def other() -> None:
            rec.record(None, 0.5)
            rec.event("OTHER_AFTER_NULL")

        rec.record(5, 0.5)
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert events_of(run) == [("AFTER_5", 5), ("AFTER_NULL", None), ("OTHER_AFTER_NULL", None)]


def test_each_thread_sees_its_own_rows_and_a_thread_without_rows_sees_some(tmp_path: Path) -> None:
    run = tmp_path / "r"
    with FlightRecorder(run, SCHEMA) as rec:
        rec.record(1, 0.5)
        started = threading.Barrier(2)

        def other() -> None:
            rec.record(1000, 0.5)
            started.wait()  # both threads have recorded
            started.wait()  # the main thread recorded its event
            rec.event("OTHER")

        t = threading.Thread(target=other)
        t.start()
        started.wait()
        rec.event("MAIN")
        started.wait()
        t.join()
        quiet: list[None] = []
        q = threading.Thread(target=lambda: quiet.append(rec.event("QUIET")))
        q.start()
        q.join()
    events = dict(events_of(run))
    assert events["MAIN"] == 1
    assert events["OTHER"] == 1000
    assert events["QUIET"] in (1, 1000)

"""The per-row entry points `record` and `log` are vectorcall builtins bound to the
native recorder (no tuple or dict per call). These tests pin down what that must not
change: argument handling, errors, reference counts, threads, and the rows written."""

from __future__ import annotations

import gc
import inspect
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flightlog import Enum, Field, FlightRecorder, Schema, SchemaError

SCHEMA = Schema(
    [
        Field("iter", "i64", nullable=False),
        Field("E", "f64", nullable=False),
        Field("phase", Enum(["warmup", "main"]), nullable=False),
        Field("note", "str"),
    ]
)


def rows_of(run: Path) -> list[dict]:
    return pq.read_table(run / "telemetry.parquet").to_pylist()


def test_record_and_log_are_builtins_bound_to_the_native_recorder(tmp_path: Path) -> None:
    with FlightRecorder(tmp_path / "run", SCHEMA) as rec:
        for method, name, signature in ((rec.record, "record", "(*values)"), (rec.log, "log", "(**fields)")):
            assert type(method).__name__ == "builtin_function_or_method"
            assert method.__name__ == name
            assert method.__self__ is rec._native
            assert str(inspect.signature(method)) == signature
            assert method.__doc__ and "Records one row" in method.__doc__


def test_rows_from_both_entry_points_round_trip(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with FlightRecorder(run, SCHEMA) as rec:
        rec.record(0, 1.5, "warmup", "a")
        rec.record(1, 2.5, "main")  # a trailing nullable field omitted
        rec.log(iter=2, E=3.5, phase="main", note="b")
        rec.log(phase="warmup", E=4.5, iter=3)  # any keyword order, nullable omitted
        # Keys and labels built at run time are not the interned objects: the slow path.
        name, label = "".join(["E"]), "".join(["ma", "in"])
        rec.log(**{"iter": 4, name: 5.5, "phase": label})
    assert rows_of(run) == [
        {"iter": 0, "E": 1.5, "phase": "warmup", "note": "a"},
        {"iter": 1, "E": 2.5, "phase": "main", "note": None},
        {"iter": 2, "E": 3.5, "phase": "main", "note": "b"},
        {"iter": 3, "E": 4.5, "phase": "warmup", "note": None},
        {"iter": 4, "E": 5.5, "phase": "main", "note": None},
    ]


def test_bad_calls_raise_clear_errors_and_keep_earlier_rows(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with FlightRecorder(run, SCHEMA) as rec:
        rec.record(0, 1.0, "main")
        with pytest.raises(TypeError, match="keyword arguments only"):
            rec.log(1, 2.0)
        with pytest.raises(TypeError, match="'E'"):
            rec.record(1, "not a number", "main")
        with pytest.raises(TypeError, match="'iter'"):
            rec.log(iter=1.5, E=1.0, phase="main")
        with pytest.raises(SchemaError, match="unknown field 'energy'"):
            rec.log(iter=1, energy=1.0, phase="main")
        with pytest.raises(SchemaError, match="missing non-nullable field 'E'"):
            rec.log(iter=1, phase="main")
        with pytest.raises(ValueError, match="phase"):
            rec.record(1, 1.0, "cooldown")
        with pytest.raises(SchemaError, match="takes 3 to 4 values"):
            rec.record()
        with pytest.raises(SchemaError, match="got 5"):
            rec.record(1, 1.0, "main", "x", "one too many")
        with pytest.raises(TypeError, match="no keyword arguments"):
            rec.record(iter=1)
        rec.log(iter=1, E=2.0, phase="main")
    assert [r["iter"] for r in rows_of(run)] == [0, 1]


def test_values_are_borrowed_not_leaked_or_freed(tmp_path: Path) -> None:
    """The entry points read CPython's argument array in place: reference counts of the
    arguments (and of the keyword names) must be exactly what they were."""
    value, label, key = float(sum(range(1000))) + 0.25, "main", "E"
    with FlightRecorder(tmp_path / "run", SCHEMA) as rec:
        # Garbage of earlier tests that still refers to the interned "E" would be freed by
        # the gc.collect() below and read as a change: collect it before counting.
        gc.collect()
        before = (sys.getrefcount(value), sys.getrefcount(label), sys.getrefcount(key))
        for i in range(10_000):
            rec.record(i, value, label)
            rec.log(**{"iter": i, key: value, "phase": label})
        assert (sys.getrefcount(value), sys.getrefcount(label), sys.getrefcount(key)) == before
        # Errors take another path: it must not leak either, nor leave counts for later.
        for _ in range(1_000):
            with pytest.raises(TypeError):
                rec.record(0, label, label)
        gc.collect()
        assert (sys.getrefcount(value), sys.getrefcount(label), sys.getrefcount(key)) == before


def test_first_log_infers_the_schema_through_the_fast_entry_point(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with FlightRecorder(run) as rec:
        with pytest.raises(SchemaError, match="without fields"):
            rec.log()
        rec.log(iter=0, E=1.0)
        rec.log(E=2.0, iter=1)
    assert rows_of(run) == [{"iter": 0, "E": 1.0}, {"iter": 1, "E": 2.0}]


def test_threads_share_one_recorder_through_the_entry_points(tmp_path: Path) -> None:
    run = tmp_path / "run"
    n, threads = 20_000, 4
    with FlightRecorder(run, SCHEMA) as rec:

        def work(t: int) -> None:
            record, log = rec.record, rec.log
            for i in range(n):
                if i % 2:
                    record(t * n + i, 1.0, "main")
                else:
                    log(iter=t * n + i, E=1.0, phase="warmup")

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    iters = pq.read_table(run / "telemetry.parquet").column("iter").to_pylist()
    assert sorted(iters) == list(range(n * threads))

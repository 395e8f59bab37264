"""record() converts a common row straight into its ring slot (issue 12).

A row whose values are all exact floats, exact ints and interned enum labels
is written into the thread's ring slot in place; any other value declines the
slot (never published) and the general path converts or rejects the row.
These tests mix the two paths row by row and check, with pyarrow as an
independent reader, that every row arrives once, whole, in order, and that a
rejected row leaves nothing behind.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flightlog import Enum, Field, FlightRecorder, Schema


def _schema(nullable: bool) -> Schema:
    return Schema(
        [
            Field("iter", "i64", nullable=False),
            Field("x", "f64", nullable=nullable),
            Field("y", "f64", nullable=nullable),
            Field("phase", Enum(["RED", "AMBER", "GREEN"]), nullable=nullable),
        ]
    )


class FloatSub(float):
    pass


#: ``record`` as made here (the leading int read in place on CPython 3.11), and as made on
#: other interpreters (that int read through the C API): the row tests run both.
RECORD_ENTRIES = ["record", "_record_ints_by_api"]


def test_record_reads_ints_in_place_on_cpython_3_11() -> None:
    """Detecting CPython 3.11's int layout at import is what makes ``record`` read ints in
    place: a detection that failed would go unseen (both entries would then be the same)."""
    from flightlog import _core

    per_version = ".cpython-311-" in Path(_core.__file__).name
    layout_311 = sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
    if not (layout_311 and per_version and sys.int_info.bits_per_digit == 30):
        pytest.skip("the in-place int read is for CPython 3.11's per-version build, 30-bit digits")
    assert _core._ints_in_place is True


def _offer_both(
    rows: list[tuple[object, ...]],
    names: list[str],
    by_record: FlightRecorder,
    by_log: FlightRecorder,
    entry: str = "record",
) -> dict[str, list[object]]:
    """Offers each row to ``by_record``'s ``entry`` (``record`` or its C API twin) and, by
    keyword, to ``by_log.log``; returns per call what it raised (the exception's type) or
    None."""
    outcomes: dict[str, list[object]] = {"record": [], "log": []}
    for row in rows:
        for name, call, args, kwargs in (
            ("record", getattr(by_record._native, entry), row, {}),
            ("log", by_log.log, (), dict(zip(names, row, strict=True))),
        ):
            try:
                call(*args, **kwargs)
                outcomes[name].append(None)
            except Exception as e:  # the same refusal both ways, whatever it is
                outcomes[name].append(type(e))
    return outcomes


@pytest.mark.parametrize("nullable", [False, True])
def test_rows_of_both_paths_interleave_whole_and_in_order(tmp_path: Path, nullable: bool) -> None:
    rec = FlightRecorder(tmp_path / "r", _schema(nullable))
    expected = []
    for i in range(300):
        kind = i % 6
        if kind == 0:
            row = (i, 0.5 * i, -1.0 * i, "RED")  # in place
        elif kind == 1:
            row = (i, i, 2.0, "AMBER")  # an int for an f64 field: general path
        elif kind == 2:
            row = (i, np.float64(i), FloatSub(3.5), "GREEN")  # float subclasses
        elif kind == 3:
            row = (np.int64(i), 1.0, 2.0, "RED")  # a numpy int for the i64 field
        elif kind == 4:
            row = (i, math.inf, math.nan, "amber".upper())  # a label built at run time
        else:
            row = (True + i - 1, 1.5, 2.5, "GREEN")  # bool arithmetic gives an int
        rec.record(*row)
        expected.append((int(row[0]), float(row[1]), float(row[2]), row[3]))
    rec.close()
    t = pq.read_table(tmp_path / "r" / "telemetry.parquet").to_pylist()
    got = [(r["iter"], r["x"], r["y"], r["phase"]) for r in t]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g[0] == e[0] and g[3] == e[3]
        for a, b in zip(g[1:3], e[1:3], strict=True):
            assert (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("nullable", [False, True])
def test_trailing_float_fields_take_every_kind_of_value(tmp_path: Path, nullable: bool) -> None:
    """A schema ending in f64 fields (a telemetry row: ids and labels, then floats) has
    those converted by their own loop: exact floats in place, anything else the general
    way, a bad value refused with its field named and nothing recorded."""
    schema = Schema(
        [Field("iter", "i64", nullable=False), Field("phase", Enum(["RED", "GREEN"]), nullable=nullable)]
        + [Field(f"x{k}", "f64", nullable=nullable) for k in range(4)]
    )
    rec = FlightRecorder(tmp_path / "r", schema)
    rows = [
        (0, "RED", 0.5, 1.5, 2.5, 3.5),  # in place
        (1, "GREEN", 1, 2.0, np.float64(3.0), FloatSub(4.0)),  # an int, float subclasses
        (2, "RED", math.inf, -0.0, 7.0, math.nan),
        (3, "GREEN", 1.0, 2.0, 3.0, 1e300),
    ]
    for row in rows:
        rec.record(*row)
    with pytest.raises(TypeError, match="x2"):
        rec.record(4, "RED", 1.0, 2.0, "three", 4.0)
    with pytest.raises(TypeError, match=r"x3.*bool"):
        rec.record(4, "RED", 1.0, 2.0, 3.0, True)
    if nullable:
        rec.record(5, None, None, 2.0, None, 4.0)
    else:
        with pytest.raises((TypeError, ValueError), match="x1"):
            rec.record(5, "RED", 1.0, None, 3.0, 4.0)
    rec.close()
    t = pq.read_table(tmp_path / "r" / "telemetry.parquet").to_pylist()
    assert [r["iter"] for r in t] == [0, 1, 2, 3] + ([5] if nullable else [])
    assert [t[1][f"x{k}"] for k in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert t[2]["x0"] == math.inf and math.copysign(1.0, t[2]["x1"]) == -1.0 and math.isnan(t[2]["x3"])
    assert t[3]["x3"] == 1e300
    if nullable:
        assert t[4] == {"iter": 5, "phase": None, "x0": None, "x1": 2.0, "x2": None, "x3": 4.0}


def test_a_rejected_row_after_fast_values_records_nothing(tmp_path: Path) -> None:
    rec = FlightRecorder(tmp_path / "r", _schema(False))
    rec.record(0, 1.0, 2.0, "RED")
    # The first values are converted in place before the bad one is seen.
    with pytest.raises(TypeError, match="y"):
        rec.record(1, 1.0, "not a number", "RED")
    with pytest.raises(OverflowError):
        rec.record(2**70, 1.0, 2.0, "RED")
    with pytest.raises(ValueError, match="phase"):
        rec.record(3, 1.0, 2.0, "PURPLE")
    rec.record(4, 4.0, 8.0, "GREEN")
    rec.close()
    t = pq.read_table(tmp_path / "r" / "telemetry.parquet")
    assert t.column("iter").to_pylist() == [0, 4]
    assert t.column("y").to_pylist() == [2.0, 8.0]
    assert rec.stats()["rows_offered"] == 2


def test_none_in_a_nullable_field_takes_the_general_path(tmp_path: Path) -> None:
    rec = FlightRecorder(tmp_path / "r", _schema(True))
    rec.record(0, None, 1.0, None)
    rec.record(1, 2.0, 3.0, "GREEN")
    rec.close()
    t = pq.read_table(tmp_path / "r" / "telemetry.parquet").to_pylist()
    assert t == [
        {"iter": 0, "x": None, "y": 1.0, "phase": None},
        {"iter": 1, "x": 2.0, "y": 3.0, "phase": "GREEN"},
    ]


@pytest.mark.parametrize("on_full", ["drop", "block"])
def test_a_full_ring_declines_the_slot_and_on_full_applies(tmp_path: Path, on_full: str) -> None:
    rec = FlightRecorder(tmp_path / "r", _schema(False), ring_capacity=64, on_full=on_full)
    n = 5_000
    for i in range(n):
        rec.record(i, float(i), 0.0, "RED")
    rec.close()
    stats = rec.stats()
    t = pq.read_table(tmp_path / "r" / "telemetry.parquet")
    iters = t.column("iter").to_pylist()
    assert stats["rows_offered"] == n
    assert len(iters) + stats["rows_dropped"] == n
    assert iters == sorted(iters) and len(set(iters)) == len(iters)
    if on_full == "block":
        assert iters == list(range(n))


def test_budget_and_sampling_count_in_place_rows(tmp_path: Path) -> None:
    rec = FlightRecorder(tmp_path / "r", _schema(False), max_rows=10)
    with pytest.warns(Warning):
        for i in range(25):
            rec.record(i, 1.0, 2.0, "RED")
    rec.close()
    t = pq.read_table(tmp_path / "r" / "telemetry.parquet")
    assert t.column("iter").to_pylist() == list(range(10))
    assert rec.stats()["rows_offered"] == 25


def test_log_rows_in_place_in_any_keyword_order_and_by_built_names(tmp_path: Path) -> None:
    rec = FlightRecorder(tmp_path / "r", _schema(False))
    built = "".join(["ph", "ase"])  # equal to the field name, not the interned object
    rec.log(iter=0, x=1.0, y=2.0, phase="RED")  # schema order, in place
    rec.log(phase="GREEN", y=4.0, iter=1, x=3.0)  # any order, in place
    rec.log(**{"iter": 2, "x": 5.0, "y": 6.0, built: "AMBER"})  # general path
    rec.log(iter=3, x=7, y=8.0, phase="RED")  # an int for an f64 field: general path
    with pytest.raises(TypeError):
        rec.log(iter=4, x=1.0, y="bad", phase="RED")
    with pytest.raises(Exception, match="nope"):
        rec.log(iter=5, x=1.0, y=2.0, nope=1.0)
    rec.close()
    t = pq.read_table(tmp_path / "r" / "telemetry.parquet").to_pylist()
    assert t == [
        {"iter": 0, "x": 1.0, "y": 2.0, "phase": "RED"},
        {"iter": 1, "x": 3.0, "y": 4.0, "phase": "GREEN"},
        {"iter": 2, "x": 5.0, "y": 6.0, "phase": "AMBER"},
        {"iter": 3, "x": 7.0, "y": 8.0, "phase": "RED"},
    ]
    assert rec.stats()["rows_offered"] == 4


def test_log_of_a_constant_column_is_refused_and_records_nothing(tmp_path: Path) -> None:
    schema = Schema([Field("iter", "i64", nullable=False), Field("x", "f64", nullable=False), Field("run", "str")])
    rec = FlightRecorder(tmp_path / "r", schema, constants={"run": "a"})
    rec.log(iter=0, x=1.0)
    with pytest.raises(Exception, match="run"):
        rec.log(iter=1, run="b")
    rec.close()
    t = pq.read_table(tmp_path / "r" / "telemetry.parquet").to_pylist()
    assert t == [{"iter": 0, "x": 1.0, "run": "a"}]


@pytest.mark.parametrize("entry", RECORD_ENTRIES)
def test_the_iteration_then_floats_row_matches_log_value_for_value(tmp_path: Path, entry: str) -> None:
    """The usual telemetry schema (an i64 ``iter``, then f64 fields) has its own in-place
    path (the int read first, then the float loop, no loop over the leading slots). Any
    value that path does not take declines to the general one: every row, and every
    refusal, is the same as through ``log()``, a different path, checked field by field.
    Both ways ``record`` reads the int are run: in place (CPython 3.11's layout, what
    ``record`` is here) and through the C API (what it is on other interpreters)."""
    names = ["iter", "a", "b", "c"]
    schema = Schema([Field("iter", "i64", nullable=False)] + [Field(n, "f64", nullable=False) for n in names[1:]])
    by_record = FlightRecorder(tmp_path / "record", schema)
    by_log = FlightRecorder(tmp_path / "log", schema)
    rows = [
        (0, 0.5, 1.5, 2.5),  # in place
        (1, -0.0, math.inf, math.nan),
        (np.int64(2), 1.0, 2.0, 3.0),  # a numpy int for the i64
        (2**40, 1.0, 2.0, 3.0),  # two 30-bit digits
        (2**62, 1.0, 2.0, 3.0),  # three digits: the interpreter's own conversion
        (-(2**31), 1.0, 2.0, 3.0),  # negative, two digits
        (5, 1, FloatSub(2.0), np.float64(3.0)),  # an int and float subclasses for f64
        (2**70, 1.0, 2.0, 3.0),  # too large for an i64: refused
        (True, 1.0, 2.0, 3.0),  # a bool for the i64
        (6, 1.0, "two", 3.0),  # a string for an f64: refused
        (7, 1.0, 2.0, None),  # None in a non-nullable f64: refused
        (8, 1.0, 2.0, 3.0),  # in place again after the refusals
    ]
    for row in rows:
        outcomes = []
        calls = ((getattr(by_record._native, entry), row, {}), (by_log.log, (), dict(zip(names, row, strict=True))))
        for call, args, kwargs in calls:
            try:
                call(*args, **kwargs)
                outcomes.append(None)
            except Exception as e:  # the same refusal both ways, whatever it is
                outcomes.append(type(e))
        assert outcomes[0] == outcomes[1], (row, outcomes)
    assert by_record.stats()["rows_offered"] == by_log.stats()["rows_offered"]
    by_record.close()
    by_log.close()
    got = pq.read_table(tmp_path / "record" / "telemetry.parquet").to_pylist()
    want = pq.read_table(tmp_path / "log" / "telemetry.parquet").to_pylist()
    assert [r["iter"] for r in got] == [r["iter"] for r in want]
    assert [r["iter"] for r in got][:7] == [0, 1, 2, 2**40, 2**62, -(2**31), 5]
    assert got[-1]["iter"] == 8
    for g, w in zip(got, want, strict=True):
        for n in names[1:]:
            assert (math.isnan(g[n]) and math.isnan(w[n])) or (
                g[n] == w[n] and math.copysign(1, g[n]) == math.copysign(1, w[n])
            )


@pytest.mark.parametrize("n_floats", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("then_label", [False, True])
@pytest.mark.parametrize("entry", RECORD_ENTRIES)
def test_the_float_run_declines_at_any_position_as_log_does(
    tmp_path: Path, n_floats: int, then_label: bool, entry: str
) -> None:
    """The float run of the usual row is converted two values a turn, an odd one first:
    a value it does not take, at any position (the odd one, first or second of a pair),
    sends the row to the general path whole, and so does a field after the run (an enum
    label here). Checked against ``log()`` row by row, with ints of every size the
    in-place read handles (one digit first, by itself)."""
    names = ["iter"] + [f"f{k}" for k in range(n_floats)]
    fields = [Field("iter", "i64", nullable=False)] + [Field(n, "f64", nullable=False) for n in names[1:]]
    tail: list[object] = []
    if then_label:
        names.append("phase")
        fields.append(Field("phase", Enum(["RED", "AMBER", "GREEN"]), nullable=False))
        tail = ["AMBER"]
    schema = Schema(fields)
    by_record = FlightRecorder(tmp_path / "record", schema)
    by_log = FlightRecorder(tmp_path / "log", schema)
    floats = [0.25 + k for k in range(n_floats)]
    rows: list[tuple[object, ...]] = []
    for i in [0, 1, -1, 2**30 - 1, 2**30, -(2**30), 2**60 - 1]:
        rows.append((i, *floats, *tail))
    for k in range(n_floats):
        for odd in (3, FloatSub(3.5), np.float64(4.5), "x", None):
            vals: list[object] = list(floats)
            vals[k] = odd
            rows.append((len(rows), *vals, *tail))
    rows.append((len(rows), *floats, *tail))
    outcomes = _offer_both(rows, names, by_record, by_log, entry)
    assert outcomes["record"] == outcomes["log"]
    refused = sum(o is not None for o in outcomes["record"])
    assert refused == 2 * n_floats  # the string and the None at each position
    by_record.close()
    by_log.close()
    got = pq.read_table(tmp_path / "record" / "telemetry.parquet").to_pylist()
    want = pq.read_table(tmp_path / "log" / "telemetry.parquet").to_pylist()
    assert got == want
    assert len(got) == len(rows) - refused
    assert [r["iter"] for r in got][:7] == [0, 1, -1, 2**30 - 1, 2**30, -(2**30), 2**60 - 1]


class StrSub(str):
    pass


@pytest.mark.parametrize("nullable", [False, True])
def test_labels_after_the_float_run_match_log_value_for_value(tmp_path: Path, nullable: bool) -> None:
    """A row that ends in enum labels after its iteration and floats (a solver's phase) has
    its own in-place step for the labels: each found by identity among its field's first
    16 interned labels. Anything else declines the whole row to the general path: a label
    equal but not identical (built at run time), one past the first 16 (found by hash
    there), a str subclass, an unknown label or a non-string (refused), None (a null when
    nullable). Two label fields, checked against ``log()`` row by row and read back with
    pyarrow. Which path took a row is not visible from Python (both write the same words);
    ``benches/bench_instructions.py --cache`` shows the in-place step's counts."""
    modes = [f"m{k:02d}" for k in range(20)]
    names = ["iter", "x", "y", "phase", "mode"]
    schema = Schema(
        [
            Field("iter", "i64", nullable=False),
            Field("x", "f64", nullable=False),
            Field("y", "f64", nullable=False),
            Field("phase", Enum(["RED", "AMBER", "GREEN"]), nullable=nullable),
            Field("mode", Enum(modes), nullable=nullable),
        ]
    )
    by_record = FlightRecorder(tmp_path / "record", schema)
    by_log = FlightRecorder(tmp_path / "log", schema)
    built = "".join(["AM", "BER"])  # equal to a label, not the interned object
    rows: list[tuple[object, ...]] = [
        (0, 0.5, 1.5, "RED", "m00"),  # in place
        (1, 0.5, 1.5, "GREEN", "m15"),  # the 16th label: still by identity
        (2, 0.5, 1.5, "AMBER", "m16"),  # the 17th: by hash, on the general path
        (3, 0.5, 1.5, built, "m01"),
        (4, 0.5, 1.5, StrSub("RED"), "m02"),
        (5, 0.5, 1.5, "BLUE", "m03"),  # unknown: refused
        (6, 0.5, 1.5, "RED", 3),  # not a string: refused
        (7, 0.5, 1.5, None, "m04"),  # a null, or refused
        (8, 0.5, 1.5, "GREEN", "m19"),
        (9, 0.5, 1.5, "AMBER", "m05"),  # in place again after the refusals
    ]
    outcomes = _offer_both(rows, names, by_record, by_log)
    assert outcomes["record"] == outcomes["log"]
    refused = [row[0] for row, o in zip(rows, outcomes["record"], strict=True) if o is not None]
    assert refused == ([5, 6] if nullable else [5, 6, 7])
    by_record.close()
    by_log.close()
    got = pq.read_table(tmp_path / "record" / "telemetry.parquet").to_pylist()
    want = pq.read_table(tmp_path / "log" / "telemetry.parquet").to_pylist()
    assert got == want
    expected = {
        0: ("RED", "m00"),
        1: ("GREEN", "m15"),
        2: ("AMBER", "m16"),
        3: ("AMBER", "m01"),
        4: ("RED", "m02"),
        7: (None, "m04"),
        8: ("GREEN", "m19"),
        9: ("AMBER", "m05"),
    }
    assert {r["iter"]: (r["phase"], r["mode"]) for r in got} == {
        i: v for i, v in expected.items() if nullable or i != 7
    }

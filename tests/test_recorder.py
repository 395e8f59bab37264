"""FlightRecorder through real files, with pyarrow and DuckDB as independent readers."""

from __future__ import annotations

import gc
import glob
import math
import os
import re
import struct
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flightlog
from flightlog import Enum, Field, FlightRecorder, RecorderClosedError, Schema, SchemaError, WriteError

SCHEMA = Schema(
    [
        Field("iter", "i64", nullable=False),
        Field("E", "f64", nullable=False),
        Field("grad_norm", "f64", nullable=False),
        Field("phase", Enum(["RED", "AMBER", "GREEN"]), nullable=False),
        Field("note", "str"),
        Field("lam", "f32"),
        Field("ok", "bool"),
    ],
    version=3,
)


def read_pa(path: Path) -> pa.Table:
    return pq.read_table(path)


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def test_round_trip_record_log_extend_read_by_pyarrow_and_duckdb(run_dir: Path) -> None:
    with FlightRecorder(run_dir, SCHEMA, run_id="r1", flush_interval=0.05) as rec:
        rec.record(0, 1.0, 2.0, "RED", "a", 0.5, True)
        rec.log(iter=1, E=0.5, grad_norm=1.0, phase="AMBER")
        rec.extend(
            iter=np.arange(2, 6),
            E=np.array([0.4, 0.3, 0.2, 0.1]),
            grad_norm=[1, 2, 3, 4],
            phase=["GREEN"] * 4,
            note=["x", None, "y", ""],
        )
        assert rec.schema == SCHEMA
    table = read_pa(run_dir / "telemetry.parquet")
    assert table.num_rows == 6
    assert table.column("iter").to_pylist() == [0, 1, 2, 3, 4, 5]
    assert table.column("phase").to_pylist() == ["RED", "AMBER", "GREEN", "GREEN", "GREEN", "GREEN"]
    assert table.column("note").to_pylist() == ["a", None, "x", None, "y", ""]
    assert table.column("lam").to_pylist() == [0.5, None, None, None, None, None]
    assert table.column("ok").to_pylist() == [True, None, None, None, None, None]
    assert table.schema.field("iter").type == pa.int64()
    assert table.schema.field("lam").type == pa.float32()
    assert not table.schema.field("E").nullable
    meta = {k.decode(): v.decode() for k, v in pq.read_metadata(run_dir / "telemetry.parquet").metadata.items()}
    assert meta["schema_version"] == "3"
    assert meta["flightlog.run_id"] == "r1"
    assert meta["flightlog.format_version"] == "1"
    assert meta["flightlog.writer"].startswith("flightlog ")
    assert Schema.from_json(meta["flightlog.schema"]) == SCHEMA
    con = duckdb.connect()
    rows = con.execute(
        "select iter, E, phase, note from read_parquet(?) order by iter", [str(run_dir / "telemetry.parquet")]
    ).fetchall()
    assert rows[1] == (1, 0.5, "AMBER", None)
    kv = dict(
        con.execute(
            "select decode(key), decode(value) from parquet_kv_metadata(?)", [str(run_dir / "telemetry.parquet")]
        ).fetchall()
    )
    assert kv["schema_version"] == "3"
    # Floats are not dictionary-encoded, strings are.
    enc = dict(
        con.execute(
            "select path_in_schema, encodings from parquet_metadata(?)", [str(run_dir / "telemetry.parquet")]
        ).fetchall()
    )
    assert "DICTIONARY" not in enc["E"] and "PLAIN" in enc["E"]
    assert "DICTIONARY" in enc["phase"] or "RLE_DICTIONARY" in enc["phase"]


def test_special_floats_are_bit_exact_and_ints_do_not_go_through_float(run_dir: Path) -> None:
    specials = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 2.2250738585072014e-308 / 3, 1.7976931348623157e308]
    big = 2**53 + 1
    schema = Schema([Field("i", "i64", nullable=False), Field("x", "f64", nullable=False)])
    with FlightRecorder(run_dir, schema) as rec:
        for k, x in enumerate(specials):
            rec.record(big + k, x)
        rec.log(i=np.int64(-(2**63)), x=np.float64(-0.0))
        rec.log(i=2**63 - 1, x=np.float32(0.1))
    t = read_pa(run_dir / "telemetry.parquet")
    xs = t.column("x").to_pylist()
    for got, want in zip(xs, specials, strict=False):
        assert bits(got) == bits(want)
    assert t.column("i").to_pylist()[: len(specials)] == [big + k for k in range(len(specials))]
    assert t.column("i").to_pylist()[-2:] == [-(2**63), 2**63 - 1]
    assert bits(xs[-2]) == bits(-0.0)
    assert xs[-1] == float(np.float32(0.1))


#: Exact ints around every boundary of CPython's 30-bit digits (the record path reads
#: ints of one or two digits from their digits on CPython 3.11), and the i64 ends.
DIGIT_EDGES = sorted(
    {
        sign * b
        for b in (0, 1, 2**30 - 1, 2**30, 2**30 + 1, 2**31, 2**32, 2**59, 2**60 - 1, 2**60, 2**60 + 1, 2**62, 2**63 - 1)
        for sign in (1, -1)
    }
    | {-(2**63)}
)


@pytest.mark.parametrize("entry", ["record", "_record_ints_by_api"])
def test_exact_ints_round_trip_around_every_digit_boundary(run_dir: Path, entry: str) -> None:
    """Through ``record`` (ints read in place on CPython 3.11), its twin that reads them
    through the C API (``record`` on other interpreters) and ``log``."""
    schema = Schema([Field("i", "i64", nullable=False), Field("x", "f64")])
    with FlightRecorder(run_dir, schema) as rec:
        record = getattr(rec._native, entry)
        for v in DIGIT_EDGES:
            record(v, 0.5)
        for v in DIGIT_EDGES:
            rec.log(i=v, x=1.5)
        with pytest.raises(OverflowError, match="field 'i': 9223372036854775808 does not fit"):
            record(2**63, 0.5)
        with pytest.raises(OverflowError, match="field 'i': -9223372036854775809 does not fit"):
            rec.log(i=-(2**63) - 1, x=0.5)
    want = DIGIT_EDGES + DIGIT_EDGES
    assert read_pa(run_dir / "telemetry.parquet").column("i").to_pylist() == want
    got = duckdb.sql(f"SELECT i FROM read_parquet('{run_dir / 'telemetry.parquet'}')").fetchall()
    assert [r[0] for r in got] == want


def test_schema_is_inferred_from_the_first_log(run_dir: Path) -> None:
    with FlightRecorder(run_dir) as rec:
        assert rec.schema is None
        with pytest.raises(SchemaError, match="no schema yet"):
            rec.record(1, 2.0)
        rec.log(iter=0, E=1.5, phase="RED", ok=True, k=np.int32(3), f=np.float32(2.0))
        assert [(f.name, f.dtype) for f in rec.schema] == [
            ("iter", "i64"),
            ("E", "f64"),
            ("phase", "str"),
            ("ok", "bool"),
            ("k", "i64"),
            ("f", "f64"),
        ]
        rec.record(1, 0.5, "GREEN", False, 4, 1.0)
        with pytest.raises(SchemaError, match=r"unknown field 'Ee'.*iter: i64"):
            rec.log(iter=2, Ee=1.0, phase="RED", ok=True, k=1, f=1.0)
        with pytest.raises(SchemaError, match="missing non-nullable field 'E'"):
            rec.log(iter=2, phase="RED", ok=True, k=1, f=1.0)
    assert read_pa(run_dir / "telemetry.parquet").num_rows == 2


def test_t_wall_ms_is_stamped_when_omitted(run_dir: Path) -> None:
    schema = Schema([Field("iter", "i64", nullable=False), Field("t_wall_ms", "f64", nullable=False)])
    with FlightRecorder(run_dir, schema) as rec:
        rec.log(iter=0)
        time.sleep(0.02)
        rec.log(iter=1)
        rec.log(iter=2, t_wall_ms=-1.0)
    t = read_pa(run_dir / "telemetry.parquet").column("t_wall_ms").to_pylist()
    assert 0 <= t[0] < t[1] and t[1] - t[0] >= 15 and t[2] == -1.0


BAD_INPUTS = [
    # (call, args, kwargs, exception, message fragment)
    ("record", (1.5, 1.0, 1.0, "RED", None, None, None), {}, TypeError, "'iter' expects an int"),
    ("record", (1, "x", 1.0, "RED", None, None, None), {}, TypeError, "'E' expects a float"),
    ("record", (1, True, 1.0, "RED", None, None, None), {}, TypeError, "'E' expects a float, not a bool"),
    ("record", (True, 1.0, 1.0, "RED", None, None, None), {}, TypeError, "'iter' expects an int"),
    ("record", (1, 1.0, 1.0, "BLUE", None, None, None), {}, ValueError, "'phase': 'BLUE' is not one of"),
    ("record", (1, 1.0, 1.0, 3, None, None, None), {}, TypeError, "'phase' expects a str"),
    ("record", (1, None, 1.0, "RED", None, None, None), {}, TypeError, "'E' is not nullable"),
    ("record", (1, 1.0), {}, SchemaError, "record() takes 4 to 7 values"),
    ("record", (2**64, 1.0, 1.0, "RED", None, None, None), {}, OverflowError, "'iter'"),
    ("record", (1, 1.0, 1.0, "RED", b"bytes", None, None), {}, TypeError, "'note' expects a str"),
    ("record", (1, 1.0, 1.0, "RED", None, "0.5", None), {}, TypeError, "'lam' expects a float"),
    ("record", (1, 1.0, 1.0, "RED", None, None, 1), {}, TypeError, "'ok' expects a bool"),
    ("record", (1, [1.0], 1.0, "RED", None, None, None), {}, TypeError, "'E' expects a float"),
    ("record", (1, 1.0, 1.0, "RED", "\ud800", None, None), {}, ValueError, "'note'"),
    ("log", (), {"iter": 1, "E": 1.0, "grad_norm": 1.0, "phase": "RED", "zzz": 1}, SchemaError, "unknown field 'zzz'"),
    ("log", (), {"iter": 1, "grad_norm": 1.0, "phase": "RED"}, SchemaError, "missing non-nullable field 'E'"),
    ("log", (), {"iter": math.nan, "E": 1.0, "grad_norm": 1.0, "phase": "RED"}, TypeError, "'iter' expects an int"),
    ("log", (), {"iter": 1, "E": {"a": 1}, "grad_norm": 1.0, "phase": "RED"}, TypeError, "'E' expects a float"),
    (
        "extend",
        (),
        {"iter": [1, 2], "E": [1.0], "grad_norm": [1, 2], "phase": ["RED"] * 2},
        ValueError,
        "differ in length",
    ),
    (
        "extend",
        (),
        {"iter": np.array([1.5]), "E": [1.0], "grad_norm": [1], "phase": ["RED"]},
        TypeError,
        "expects integers",
    ),
    ("extend", (), {"iter": [1], "E": [1.0], "grad_norm": [1], "phase": ["PURPLE"]}, ValueError, "PURPLE"),
    ("extend", (), {"iter": [1], "E": [1.0], "grad_norm": [1]}, SchemaError, "missing non-nullable field 'phase'"),
    ("extend", (), {"iter": np.zeros((2, 2), dtype=np.int64)}, ValueError, "must be 1-D"),
    ("extend", (), {"iter": 5, "E": [1.0], "grad_norm": [1], "phase": ["RED"]}, TypeError, "sequence"),
    ("extend", (), {"iter": [1], "E": ["a"], "grad_norm": [1], "phase": ["RED"]}, TypeError, "'E' expects a float"),
    ("extend", (), {"iter": [1], "E": [1.0], "grad_norm": [1], "phase": ["RED"], "nope": [1]}, SchemaError, "'nope'"),
    ("extend", (), {"iter": [1, None], "E": [1.0, 2.0], "grad_norm": [1, 2], "phase": ["RED"] * 2}, TypeError, "row 1"),
]


@pytest.mark.parametrize(("call", "args", "kwargs", "exc", "fragment"), BAD_INPUTS)
def test_bad_input_raises_naming_the_field_and_keeps_earlier_rows(
    run_dir: Path, call: str, args: tuple, kwargs: dict, exc: type, fragment: str
) -> None:
    rec = FlightRecorder(run_dir, SCHEMA)
    rec.record(0, 1.0, 1.0, "RED", None, None, None)
    with pytest.raises(exc) as info:
        getattr(rec, call)(*args, **kwargs)
    assert fragment in str(info.value), str(info.value)
    rec.record(1, 1.0, 1.0, "GREEN", None, None, None)
    rec.close()
    assert read_pa(run_dir / "telemetry.parquet").column("iter").to_pylist() == [0, 1]


def test_bad_constructor_arguments_are_named(tmp_path: Path) -> None:
    cases = [
        ({"flush_interval": 0}, ValueError, "flush_interval"),
        ({"flush_interval": "1"}, TypeError, "flush_interval"),
        ({"on_full": "wait"}, ValueError, "on_full"),
        ({"compression": "brotli"}, ValueError, "compression"),
        ({"ring_capacity": 1}, ValueError, "ring_capacity"),
        ({"segment_rows": 0}, ValueError, "segment_rows"),
        ({"sampling": (10, 0)}, ValueError, "every"),
        ({"schema": {"iter": "i64"}}, TypeError, "schema"),
    ]
    for i, (kwargs, exc, fragment) in enumerate(cases):
        with pytest.raises(exc, match=fragment):
            FlightRecorder(tmp_path / str(i), **kwargs)
    with pytest.raises(SchemaError, match="unknown dtype"):
        Field("x", "complex")
    with pytest.raises(SchemaError, match="twice"):
        Schema([Field("x", "f64"), Field("x", "i64")])


def test_every_compression_codec_round_trips(tmp_path: Path) -> None:
    for codec in ["none", "snappy", "zstd", "lz4"]:
        with FlightRecorder(tmp_path / codec, SCHEMA, compression=codec) as rec:
            rec.extend(iter=np.arange(1000), E=np.linspace(0, 1, 1000), grad_norm=np.ones(1000), phase=["RED"] * 1000)
        t = read_pa(tmp_path / codec / "telemetry.parquet")
        assert t.num_rows == 1000 and t.column("E").to_pylist()[-1] == 1.0
        comp = pq.ParquetFile(tmp_path / codec / "telemetry.parquet").metadata.row_group(0).column(1).compression
        # pyarrow names LZ4_RAW (the non-deprecated LZ4 codec) "LZ4".
        assert (
            comp in {"none": ["UNCOMPRESSED"], "snappy": ["SNAPPY"], "zstd": ["ZSTD"], "lz4": ["LZ4", "LZ4_RAW"]}[codec]
        )


def test_extend_takes_strided_arrays_and_converts_dtypes(run_dir: Path) -> None:
    schema = Schema([Field("i", "i64", nullable=False), Field("x", "f64", nullable=False), Field("y", "f32")])
    base = np.arange(20, dtype=np.float32)
    with FlightRecorder(run_dir, schema) as rec:
        n = rec.extend(i=np.arange(10, dtype=np.uint16)[::-1], x=base[::2], y=np.arange(10, dtype=np.int8))
        assert n == 10
        rec.extend(i=np.array([5], dtype=">i8"), x=np.array([1.0], dtype=">f8"), y=[None])
    t = read_pa(run_dir / "telemetry.parquet")
    assert t.column("i").to_pylist() == [*range(9, -1, -1), 5]
    assert t.column("x").to_pylist() == [*[float(v) for v in base[::2]], 1.0]
    assert t.column("y").to_pylist() == [*[float(v) for v in range(10)], None]


def test_flush_makes_rows_durable_and_to_arrow_reads_them_before_close(run_dir: Path) -> None:
    rec = FlightRecorder(run_dir, SCHEMA, flush_interval=3600)
    rec.extend(iter=np.arange(100), E=np.ones(100), grad_norm=np.ones(100), phase=["RED"] * 100)
    rec.flush()
    segs = sorted(glob.glob(str(run_dir / "segments" / "*.parquet")))
    # telemetry-<8-digit recorder instance><6-digit sequence>.parquet
    assert [re.sub(r"-\d{8}(\d{6})\.", r"-\1.", os.path.basename(s)) for s in segs] == ["telemetry-000001.parquet"]
    data = rec.to_arrow()
    # Consumable more than once: DuckDB scans the object twice.
    assert pa.table(data).num_rows == 100
    assert duckdb.sql("select count(*) from data").fetchall() == [(100,)]
    assert pa.table(data).num_rows == 100
    df = rec.to_dataframe()
    assert len(df) == 100 and list(df.columns) == list(SCHEMA.names)
    rec.event("CERT_PASS", {"gap": 0.5, "arr": np.array([1, 2])})
    rec.close()
    assert not (run_dir / "segments").exists()
    ev = read_pa(run_dir / "events.parquet")
    assert ev.column_names == ["run_id", "t_wall_ms", "iter", "event", "payload"]
    assert ev.column("event").to_pylist() == ["CERT_PASS"]
    assert ev.column("iter").to_pylist() == [99]
    assert ev.column("payload").to_pylist() == ['{"gap": 0.5, "arr": [1, 2]}']


def test_event_payload_must_be_json(run_dir: Path) -> None:
    with FlightRecorder(run_dir, SCHEMA) as rec:
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            rec.event("X", {"f": object()})
        with pytest.raises(ValueError, match="event name"):
            rec.event("", None)
        with pytest.raises(ValueError, match="control character"):
            rec.event("A\nB", None)


def test_closed_recorder_raises_and_close_is_idempotent(run_dir: Path) -> None:
    rec = FlightRecorder(run_dir, SCHEMA)
    rec.record(0, 1.0, 1.0, "RED", None, None, None)
    rec.close()
    rec.close()
    assert rec.closed
    with pytest.raises(RecorderClosedError):
        rec.record(1, 1.0, 1.0, "RED", None, None, None)
    with pytest.raises(RecorderClosedError):
        rec.flush()
    assert rec.files[0]["rows"] == 1 and rec.files[0]["path"].endswith("telemetry.parquet")


def test_reopening_a_finished_folder_is_refused(run_dir: Path) -> None:
    FlightRecorder(run_dir, SCHEMA).close()
    with pytest.raises(FileExistsError, match="already exists"):
        FlightRecorder(run_dir, SCHEMA)


def test_garbage_collection_closes_without_losing_rows(run_dir: Path) -> None:
    rec = FlightRecorder(run_dir, SCHEMA, flush_interval=3600)
    for i in range(1000):
        rec.record(i, 1.0, 1.0, "RED", None, None, None)
    del rec
    gc.collect()
    assert read_pa(run_dir / "telemetry.parquet").num_rows == 1000


def test_write_error_surfaces_on_next_call_and_on_close(run_dir: Path) -> None:
    import shutil

    rec = FlightRecorder(run_dir, SCHEMA, flush_interval=3600)
    rec.record(0, 1.0, 1.0, "RED", None, None, None)
    rec.flush()
    shutil.rmtree(run_dir)  # the run folder vanishes mid-run
    rec.record(1, 1.0, 1.0, "RED", None, None, None)
    with pytest.raises(WriteError, match="kept in memory"):
        rec.flush()
    os.makedirs(run_dir / "segments")  # the disk comes back: the kept rows are written
    rec.record(2, 1.0, 1.0, "RED", None, None, None)
    # Close merges what survives and says that a published segment was deleted.
    with pytest.raises(WriteError, match="deleted by something else"):
        rec.close()
    assert read_pa(run_dir / "telemetry.parquet").column("iter").to_pylist() == [1, 2]
    assert rec.stats()["rows_lost"] == 1


def test_close_says_when_a_published_events_segment_was_deleted(run_dir: Path) -> None:
    """As for telemetry: close fails naming the vanished segment (it once wrote an empty
    events.parquet and said nothing; found by test_stateful)."""
    import shutil

    rec = FlightRecorder(run_dir, SCHEMA, flush_interval=3600, segment_rows=7)
    rec.event("A")
    rec.flush()
    (gone,) = [p.name for p in (run_dir / "segments").glob("events-*.parquet")]
    shutil.rmtree(run_dir / "segments")
    rec.event("B")
    with pytest.raises(WriteError, match=f"deleted by something else before close: {gone}"):
        rec.close()
    assert read_pa(run_dir / "events.parquet").column("event").to_pylist() == ["B"]


def test_several_threads_lose_nothing(run_dir: Path) -> None:
    schema = Schema([Field("t", "i64", nullable=False), Field("i", "i64", nullable=False)])
    rec = FlightRecorder(run_dir, schema, ring_capacity=64, flush_interval=0.01)

    def work(t: int) -> None:
        for i in range(20_000):
            rec.record(t, i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rec.close()
    t = read_pa(run_dir / "telemetry.parquet")
    assert t.num_rows == 80_000
    pairs = set(zip(t.column("t").to_pylist(), t.column("i").to_pylist(), strict=True))
    assert len(pairs) == 80_000
    assert rec.stats()["rows_written"] == 80_000


def test_drop_policy_counts_drops(run_dir: Path) -> None:
    schema = Schema([Field("i", "i64", nullable=False)])
    rec = FlightRecorder(run_dir, schema, ring_capacity=2, on_full="drop", flush_interval=3600)
    rec.extend(i=np.arange(100_000))
    rec.close()
    s = rec.stats()
    assert s["rows_offered"] == 100_000
    assert s["rows_written"] + s["rows_dropped"] == 100_000
    assert read_pa(run_dir / "telemetry.parquet").num_rows == s["rows_written"]


def test_sampling_and_budget(run_dir: Path) -> None:
    schema = Schema([Field("i", "i64", nullable=False)])
    rec = FlightRecorder(run_dir, schema, sampling=flightlog.Sampling(keep_first=10, every=5), max_rows=20)
    with pytest.warns(flightlog._errors.RowBudgetWarning, match="max_rows"):
        for i in range(200):
            rec.record(i)
    rec.close()
    s = rec.stats()
    assert (s["rows_offered"], s["rows_sampled_out"], s["rows_written"]) == (200, 152, 20)
    assert s["rows_over_budget"] == 48 - 20
    assert read_pa(run_dir / "telemetry.parquet").column("i").to_pylist() == [*range(10), *range(10, 60, 5)]
    assert read_pa(run_dir / "events.parquet").column("event").to_pylist() == ["ROW_BUDGET_EXCEEDED"]


def test_many_recorders_leak_no_fds_or_threads(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    schema = Schema([Field("i", "i64", nullable=False)])
    # Warm up, then measure.
    FlightRecorder(tmp_path / "warm", schema).close()
    fds, threads = proc.num_fds(), proc.num_threads()
    for k in range(10_000):
        rec = FlightRecorder(tmp_path / "many" / str(k), schema, flush_interval=3600)
        if k % 1000 == 0:
            rec.record(k)
        rec.close()
    assert proc.num_fds() <= fds + 2
    assert proc.num_threads() == threads


def test_record_may_omit_trailing_nullable_fields_and_stamp_t_wall_ms(run_dir: Path) -> None:
    schema = Schema(
        [
            Field("iter", "i64", nullable=False),
            Field("t_wall_ms", "f64", nullable=False),
            Field("E", "f64", nullable=False),
            Field("note", "str"),
            Field("x", "f64"),
        ]
    )
    with FlightRecorder(run_dir, schema) as rec:
        rec.record(0, None, 1.0)
        rec.record(1, 5.0, 2.0, "n")
        rec.record(2, None, 3.0, None, 0.5)
        with pytest.raises(SchemaError, match=r"takes 3 to 5 values"):
            rec.record(3, None)
    t = read_pa(run_dir / "telemetry.parquet")
    assert t.column("note").to_pylist() == [None, "n", None]
    assert t.column("x").to_pylist() == [None, None, 0.5]
    tw = t.column("t_wall_ms").to_pylist()
    assert tw[1] == 5.0 and 0 <= tw[0] <= tw[2]


def test_enum_labels_match_by_value_not_only_by_identity(run_dir: Path) -> None:
    schema = Schema([Field("phase", Enum(["RED", "GREEN"]), nullable=False)])
    built = "".join(["GR", "EEN"])  # equal to "GREEN" but a different object
    with FlightRecorder(run_dir, schema) as rec:
        rec.record("RED")
        rec.record(built)
        rec.log(phase=built)
        with pytest.raises(ValueError, match="'BLUE' is not one of"):
            rec.record("".join(["BL", "UE"]))
    assert read_pa(run_dir / "telemetry.parquet").column("phase").to_pylist() == ["RED", "GREEN", "GREEN"]

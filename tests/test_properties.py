"""Property test: random schemas and values round-trip exactly through the Rust
writer, read back by pyarrow and by DuckDB."""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flightlog import Enum, Field, FlightRecorder, Schema

LABELS = ["RED", "AMBER", "GREEN"]

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, math.nan]),
)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
texts = st.text(max_size=20).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
DTYPES = {
    "f64": floats,
    "f32": st.floats(width=32, allow_nan=False),
    "i64": ints,
    "bool": st.booleans(),
    "str": texts,
    "enum": st.sampled_from(LABELS),
}


@st.composite
def schema_and_rows(draw):  # type: ignore[no-untyped-def]
    kinds = draw(st.lists(st.sampled_from(sorted(DTYPES)), min_size=1, max_size=6))
    nullables = draw(st.lists(st.booleans(), min_size=len(kinds), max_size=len(kinds)))
    fields = [
        Field(f"c{i}", Enum(LABELS) if k == "enum" else k, nullable=n)
        for i, (k, n) in enumerate(zip(kinds, nullables, strict=True))
    ]
    n_rows = draw(st.integers(min_value=0, max_value=40))
    rows = []
    for _ in range(n_rows):
        row = []
        for k, f in zip(kinds, fields, strict=True):
            if f.nullable and draw(st.booleans()) and draw(st.booleans()):
                row.append(None)
            else:
                row.append(draw(DTYPES[k]))
        rows.append(row)
    return Schema(fields), kinds, rows


def same(a: object, b: object, kind: str) -> bool:
    if a is None or b is None:
        return a is b
    if kind == "f64":
        return struct.pack("<d", a) == struct.pack("<d", b)  # bit-exact: NaN, -0.0, subnormals
    if kind == "f32":
        return struct.pack("<f", a) == struct.pack("<f", b)
    return a == b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_and_rows(), st.sampled_from(["record", "log", "extend"]))
def test_random_rows_round_trip_bit_exact(case, how) -> None:  # type: ignore[no-untyped-def]
    schema, kinds, rows = case
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        with FlightRecorder(run, schema, flush_interval=0.01) as rec:
            if how == "record":
                for r in rows:
                    rec.record(*r)
            elif how == "log":
                for r in rows:
                    rec.log(**{f.name: v for f, v in zip(schema.fields, r, strict=True) if v is not None})
            elif rows:
                rec.extend(**{f.name: [r[i] for r in rows] for i, f in enumerate(schema.fields)})
        path = run / "telemetry.parquet"
        table = pq.read_table(path)
        assert table.num_rows == len(rows)
        for i, (f, kind) in enumerate(zip(schema.fields, kinds, strict=True)):
            col = table.column(f.name).to_pylist()
            for got, r in zip(col, rows, strict=True):
                assert same(got, r[i], kind), (f.name, got, r[i])
        # DuckDB reads the same values (compared as text for floats to keep NaN equal).
        got = duckdb.connect().execute(f"select count(*) from read_parquet('{path}')").fetchall()
        assert got == [(len(rows),)]
        for i, (f, kind) in enumerate(zip(schema.fields, kinds, strict=True)):
            if kind in ("f64", "f32"):
                continue
            col = [
                r[0] for r in duckdb.connect().execute(f"select \"{f.name}\" from read_parquet('{path}')").fetchall()
            ]
            assert col == [r[i] for r in rows]

"""extend() inputs (issue 19, items 19, 21, 24, 28): numpy arrays of every stride
shape, masked arrays, pandas nullable columns, the coercion rule, and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flightlog import Enum, Field, FlightRecorder, Schema

# The numpy dtypes each schema dtype accepts from extend() (the documented rule).
ACCEPTED = {
    "f64": ["f8", "f4", "i8", "i4", "i2", "i1", "u8", "u4", "u2", "u1"],
    "f32": ["f8", "f4", "i8", "i4", "i2", "i1", "u8", "u4", "u2", "u1"],
    "i64": ["i8", "i4", "i2", "i1", "u8", "u4", "u2", "u1"],
    "bool": ["?"],
}


def values_for(np_dtype: str, n: int) -> np.ndarray:
    if np_dtype == "?":
        return np.arange(n) % 3 == 0
    dt = np.dtype(np_dtype)
    if dt.kind == "f":
        return (np.arange(n) * 1.25 - 3).astype(dt)
    if dt.kind == "u":
        return (np.arange(n) * 7 % 250).astype(dt)
    return (np.arange(n) * 7 % 250 - 100).astype(dt)


def recorded(tmp_path: Path, field: Field, **columns) -> list:  # type: ignore[no-untyped-def]
    d = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    with FlightRecorder(d, Schema([field])) as rec:
        rec.extend(**columns)
    return pa.table(rec.to_arrow()).column(field.name).to_pylist()


def stride_shapes(a: np.ndarray) -> dict[str, np.ndarray]:
    """Views of the same values `a` (1-D, n elements) under every stride shape."""
    n = len(a)
    dt = a.dtype
    # A packed record with an odd itemsize: the field's byte stride is not a multiple of its size.
    packed = np.zeros(n, dtype=np.dtype([("pad", "u1"), ("x", dt), ("tail", "u1", (8,))]))
    packed["x"] = a
    aligned = np.zeros(n, dtype=[("x", dt), ("k", "i4")])
    aligned["x"] = a
    fortran = np.asfortranarray(np.stack([a, a[::-1], a], axis=1))  # (n, 3), column-major
    rows = np.asfortranarray(np.stack([a, a], axis=0))  # (2, n): rows are strided in F order
    ro = a.copy()
    ro.flags.writeable = False
    spaced = np.repeat(a, 3)[::3]
    return {
        "contiguous": a,
        "structured_aligned": aligned["x"],
        "structured_packed": packed["x"],
        "negative": a[::-1].copy()[::-1],
        "negative_step2": np.repeat(a, 2)[::-2][::-1],
        "fortran_column": fortran[:, 0],
        "fortran_row": rows[1],
        "read_only": ro,
        "non_contiguous": spaced,
    }


@pytest.mark.parametrize("schema_dtype,np_dtype", [(s, d) for s, ds in ACCEPTED.items() for d in ds])
def test_every_stride_shape_reads_back_the_values(tmp_path: Path, schema_dtype: str, np_dtype: str) -> None:
    a = values_for(np_dtype, 9)
    expected = recorded(tmp_path, Field("x", schema_dtype), x=a.tolist())
    for shape, view in stride_shapes(a).items():
        assert view.tolist() == a.tolist(), shape  # the view really holds the values
        got = recorded(tmp_path, Field("x", schema_dtype), x=view)
        assert got == expected, f"{shape} (strides {view.strides}, itemsize {view.itemsize})"


def test_issue_examples_structured_fields(tmp_path: Path) -> None:
    b = np.zeros(4, dtype=[("E", "f8"), ("k", "i4")])
    b["E"] = [1.5, 0.0, 2.5, 3.5]
    assert recorded(tmp_path, Field("E", "f64"), E=b["E"]) == [1.5, 0.0, 2.5, 3.5]
    p = np.zeros(4, dtype=np.dtype([("a", "u1"), ("k", "i8"), ("z", "u1", (8,))]))
    assert p.dtype.itemsize == 17
    p["k"] = [10, 20, 30, 40]
    assert recorded(tmp_path, Field("k", "i64"), k=p["k"]) == [10, 20, 30, 40]


@pytest.mark.parametrize("schema_dtype,np_dtype", [("f64", "f8"), ("f32", "i4"), ("i64", "i2"), ("bool", "?")])
def test_zero_stride_broadcast(tmp_path: Path, schema_dtype: str, np_dtype: str) -> None:
    one = values_for(np_dtype, 3)[1:2]
    view = np.broadcast_to(one, (5,))
    assert view.strides == (0,)
    assert recorded(tmp_path, Field("x", schema_dtype), x=view) == [one.tolist()[0]] * 5


def test_strided_columns_of_different_shapes_together(tmp_path: Path) -> None:
    rec_arr = np.zeros(1000, dtype=np.dtype([("p", "u1"), ("E", "f8"), ("i", "i8")]))
    rec_arr["E"] = np.arange(1000) / 4
    rec_arr["i"] = np.arange(1000)
    schema = Schema([Field("i", "i64"), Field("E", "f64"), Field("g", "f64")])
    with FlightRecorder(tmp_path / "r", schema) as rec:
        rec.extend(i=rec_arr["i"][::-1], E=rec_arr["E"][::-1], g=np.broadcast_to(np.float64(2.0), (1000,)))
    t = pa.table(rec.to_arrow())
    assert t.column("i").to_pylist() == list(range(999, -1, -1))
    assert t.column("E").to_pylist() == [i / 4 for i in range(999, -1, -1)]
    assert t.column("g").to_pylist() == [2.0] * 1000


# -- masked arrays and pandas missing values (item 21) ------------------------------------------


@pytest.mark.parametrize(
    "schema_dtype,np_dtype", [("f64", "f8"), ("f64", "i4"), ("i64", "i8"), ("bool", "?"), ("f32", "f4")]
)
def test_masked_entries_are_null_in_nullable_fields(tmp_path: Path, schema_dtype: str, np_dtype: str) -> None:
    data = values_for(np_dtype, 6)
    mask = [False, True, False, False, True, False]
    m = np.ma.array(data, mask=mask)
    got = recorded(tmp_path, Field("x", schema_dtype, nullable=True), x=m)
    want = [None if k else v for k, v in zip(mask, recorded(tmp_path, Field("x", schema_dtype), x=data), strict=True)]
    assert got == want


def test_masked_strided_and_string_columns(tmp_path: Path) -> None:
    b = np.zeros(4, dtype=[("E", "f8"), ("k", "i4")])
    b["E"] = [1.0, -999.0, 3.0, 4.0]
    m = np.ma.masked_equal(b["E"], -999.0)
    assert recorded(tmp_path, Field("E", "f64", nullable=True), E=m) == [1.0, None, 3.0, 4.0]
    s = np.ma.array(["a", "b", "c"], mask=[0, 1, 0])
    assert recorded(tmp_path, Field("s", "str", nullable=True), s=s) == ["a", None, "c"]
    # A mask with nothing masked (np.ma.nomask) records every value.
    assert recorded(tmp_path, Field("E", "f64"), E=np.ma.array([1.0, 2.0])) == [1.0, 2.0]


@pytest.mark.parametrize("schema_dtype,data", [("f64", [1.0, np.nan]), ("i64", [1, -999]), ("str", ["a", "b"])])
def test_masked_entries_in_non_nullable_fields_raise_and_record_nothing(
    tmp_path: Path, schema_dtype: str, data
) -> None:  # type: ignore[no-untyped-def]
    schema = Schema([Field("x", schema_dtype, nullable=False), Field("y", "f64")])
    with FlightRecorder(tmp_path / "r", schema) as rec:
        with pytest.raises((TypeError, ValueError), match=r"'x'.*(masked|None)"):
            rec.extend(x=np.ma.array(data, mask=[0, 1]), y=np.array([1.0, 2.0]))
    assert pa.table(rec.to_arrow()).num_rows == 0


@pytest.mark.parametrize(
    "schema_dtype,pd_dtype,data,want",
    [
        ("i64", "Int64", [1, None, 3], [1, None, 3]),
        ("f64", "Float64", [1.5, None, 3.0], [1.5, None, 3.0]),
        ("f64", "Int64", [1, None, 3], [1.0, None, 3.0]),
        ("bool", "boolean", [True, None, False], [True, None, False]),
        ("str", "string", ["a", None, "c"], ["a", None, "c"]),
        ("str", "object", ["a", "NA", "c"], ["a", None, "c"]),
    ],
)
def test_pandas_na_is_null_in_nullable_fields(tmp_path: Path, schema_dtype: str, pd_dtype: str, data, want) -> None:  # type: ignore[no-untyped-def]
    pd = pytest.importorskip("pandas")
    if pd_dtype == "object":
        col = pd.Series(["a", pd.NA, "c"], dtype=object)
    else:
        col = pd.Series(data, dtype=pd_dtype)
    assert recorded(tmp_path, Field("x", schema_dtype, nullable=True), x=col) == want
    # The same column as a DataFrame column and as a pandas array.
    assert recorded(tmp_path, Field("x", schema_dtype, nullable=True), x=pd.DataFrame({"c": col})["c"]) == want
    assert recorded(tmp_path, Field("x", schema_dtype, nullable=True), x=col.array) == want
    with pytest.raises(TypeError, match="'x'"):
        recorded(tmp_path, Field("x", schema_dtype, nullable=False), x=col)


def test_pandas_numpy_backed_columns(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"E": [1.5, np.nan, 3.0], "i": [1, 2, 3]})
    with FlightRecorder(tmp_path / "r", Schema([Field("i", "i64"), Field("E", "f64")])) as rec:
        rec.extend(i=df["i"], E=df["E"])
    t = pa.table(rec.to_arrow())
    assert t.column("i").to_pylist() == [1, 2, 3]
    e = t.column("E").to_pylist()
    assert e[0] == 1.5 and np.isnan(e[1]) and e[2] == 3.0  # NaN is data in a float64 column


# -- the coercion rule (item 28) -----------------------------------------------------------------

SCHEMA_DTYPES = ["f64", "f32", "i64", "bool", "str", "enum"]


def field_of(dtype: str) -> Field:
    return Field("x", Enum(["a", "b"]) if dtype == "enum" else dtype)


def numpy_inputs() -> dict[str, np.ndarray]:
    out = {d: values_for(d, 2) for d in ACCEPTED["f64"] + ["?"]}
    out |= {
        "f2": np.array([1.0, 2.0], dtype="f2"),
        "c16": np.array([1 + 1j, 2], dtype="c16"),
        "U": np.array(["a", "b"]),
        "S": np.array([b"a", b"b"]),
        "O_str": np.array(["a", "b"], dtype=object),
        "O_float": np.array([1.0, 2.0], dtype=object),
        "O_dict": np.array([{"a": 1}, {"b": 2}], dtype=object),
        "O_set": np.array([{1}, {2}], dtype=object),
        "O_list": np.array([None, None], dtype=object),
        ">f8": np.array([1.0, 2.0], dtype=">f8"),
    }
    lists = np.empty(2, dtype=object)
    lists[0], lists[1] = [1.0], [2.0]
    out["O_list"] = lists
    for unit in ("ns", "us", "ms", "s", "D", "Y"):
        out[f"M8[{unit}]"] = np.array([1, 2], dtype=f"datetime64[{unit}]")
        out[f"m8[{unit}]"] = np.array([1, 2], dtype=f"timedelta64[{unit}]")
    return out


def accepts(schema_dtype: str, key: str) -> bool:
    if schema_dtype in ("f64", "f32"):
        return key in ACCEPTED["f64"] or key in ("f2", "O_float", ">f8")
    if schema_dtype == "i64":
        return key in ACCEPTED["i64"]
    if schema_dtype == "bool":
        return key == "?"
    if schema_dtype == "str":
        return key in ("U", "O_str")
    return False  # enum: the labels "a"/"b" are tested below


@pytest.mark.parametrize("schema_dtype", SCHEMA_DTYPES)
@pytest.mark.parametrize("key", list(numpy_inputs()))
def test_coercion_rule_for_numpy_columns(tmp_path: Path, schema_dtype: str, key: str) -> None:
    col = numpy_inputs()[key]
    if schema_dtype == "enum" and key in ("U", "O_str"):
        assert recorded(tmp_path, field_of("enum"), x=col) == ["a", "b"]
        return
    if accepts(schema_dtype, key):
        got = recorded(tmp_path, field_of(schema_dtype), x=col)
        assert len(got) == 2
        # The same values as record() takes one by one.
        d = tmp_path / f"one-{key}-{schema_dtype}"
        with FlightRecorder(d, Schema([field_of(schema_dtype)])) as rec:
            for v in col.tolist():
                rec.record(v)
        assert got == pa.table(rec.to_arrow()).column("x").to_pylist()
        return
    with FlightRecorder(tmp_path / "r", Schema([field_of(schema_dtype)])) as rec:
        with pytest.raises(TypeError, match="'x'") as e:
            rec.extend(x=col)
    assert pa.table(rec.to_arrow()).num_rows == 0
    if key.startswith(("M8", "m8")):
        assert "convert" in str(e.value) and ("datetime64" in str(e.value) or "timedelta64" in str(e.value))


@pytest.mark.parametrize(
    "col", [{"a": 1.0}, {1.0, 2.0}, frozenset({1.0}), "ab", b"ab", (x for x in [1.0]), 1.5, {}.keys()]
)
def test_columns_must_be_arrays_or_sequences(tmp_path: Path, col) -> None:  # type: ignore[no-untyped-def]
    with FlightRecorder(tmp_path / "r", Schema([Field("x", "f64")])) as rec:
        with pytest.raises(TypeError, match=r"column 'x'.*(sequence|array)"):
            rec.extend(x=col)
    assert pa.table(rec.to_arrow()).num_rows == 0


@pytest.mark.parametrize("unit", ["ns", "us", "D"])
def test_datetime_lists_are_rejected_like_arrays(tmp_path: Path, unit: str) -> None:
    vals = [np.datetime64(1, unit), np.datetime64(2, unit)]
    for dtype in ("f64", "i64"):
        with FlightRecorder(tmp_path / f"{unit}{dtype}", Schema([Field("x", dtype)])) as rec:
            with pytest.raises(TypeError, match="'x'"):
                rec.extend(x=vals)
            with pytest.raises(TypeError, match="'x'"):
                rec.extend(x=[np.timedelta64(1, unit)])
            with pytest.raises(TypeError, match="'x'"):
                rec.record(np.timedelta64(1, unit))


# -- memory (item 24) -----------------------------------------------------------------------------

MEM_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import flightlog
    n = int(sys.argv[1])
    a, b = np.ones(n), np.arange(n, dtype=np.float64)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with flightlog.FlightRecorder(sys.argv[2], flightlog.Schema(
            [flightlog.Field("a", "f64"), flightlog.Field("b", "f64")])) as rec:
        rec.extend(a=a, b=b[::-1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mib": (peak - base) / 1024, "input_mib": (a.nbytes + b.nbytes) / 2**20}))
    """
)


def test_extend_peak_memory_is_flat(tmp_path: Path) -> None:
    """extend() of 2 x 4M f64 (61 MiB) raises the peak RSS by far less than the input:
    columns are converted and pushed in bounded chunks, not copied whole."""
    out = subprocess.run(
        [sys.executable, "-c", MEM_CHILD, str(4_000_000), str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    m = json.loads(out)
    assert m["growth_mib"] < 0.5 * m["input_mib"], m

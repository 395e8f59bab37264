"""Stateful fuzzing: random interleavings of the recorder and manager API (and a
fault: the segments folder deleted) checked against a simple in-memory model;
the Parquet merge fuzzed with random segment sets (and merges of merges)."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from flightlog import (
    Field,
    FlightRecorder,
    RecorderClosedError,
    Schema,
    SchemaError,
    TelemetryManager,
    WriteError,
    _core,
    read_manifest,
)

SCHEMA = Schema([Field("i", "i64", nullable=False), Field("x", "f64"), Field("s", "str")])
values_x = st.one_of(st.none(), st.floats(allow_nan=False, width=64))
values_s = st.one_of(st.none(), st.sampled_from(["a", "b", "", "é", "RED"]))


def table_rows(table: Any) -> list[tuple[Any, ...]]:
    cols = [table.column(n).to_pylist() for n in ("i", "x", "s")]
    return list(zip(*cols, strict=True))


class RecorderMachine(RuleBasedStateMachine):
    """A FlightRecorder against a list of rows."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.rec = FlightRecorder(self.dir / "run", SCHEMA, flush_interval=3600, segment_rows=7)
        self.rows: list[tuple[Any, ...]] = []
        self.events: list[str] = []
        self.closed = False
        self.faulted = False
        self.lost_published = False
        self.since_fault = 0
        self.n = 0

    def teardown(self) -> None:
        try:
            self.rec.close()
        except WriteError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def _next(self) -> int:
        self.n += 1
        return self.n

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> bool:
        """Calls a producer method; True if it took the row(s)."""
        if self.closed:
            with pytest.raises(RecorderClosedError):
                fn(*args, **kwargs)
            return False
        try:
            fn(*args, **kwargs)
            self.since_fault += self.faulted
            return True
        except WriteError:
            assert self.faulted, "a WriteError without a fault"
            return False

    @rule(x=values_x, s=values_s)
    def log(self, x: float | None, s: str | None) -> None:
        i = self._next()
        kwargs: dict[str, Any] = {"i": i}
        if x is not None:
            kwargs["x"] = x
        if s is not None:
            kwargs["s"] = s
        if self._call(self.rec.log, **kwargs):
            self.rows.append((i, x, s))

    @rule(x=values_x, s=values_s)
    def record(self, x: float | None, s: str | None) -> None:
        i = self._next()
        if self._call(self.rec.record, i, x, s):
            self.rows.append((i, x, s))

    @rule(xs=st.lists(st.tuples(st.floats(allow_nan=False), values_s), max_size=20))
    def extend(self, xs: list[tuple[float, str | None]]) -> None:
        if not xs and self.closed:
            return  # see test_extend_of_zero_rows_on_a_closed_recorder_raises
        ids = [self._next() for _ in xs]
        if self._call(self.rec.extend, i=ids, x=[x for x, _ in xs], s=[s for _, s in xs]):
            self.rows.extend((i, x, s) for i, (x, s) in zip(ids, xs, strict=True))

    @rule(bad=st.sampled_from(["type", "unknown", "missing"]))
    def bad_row(self, bad: str) -> None:
        if self.closed:
            return
        with pytest.raises((TypeError, SchemaError, WriteError)):
            if bad == "type":
                self.rec.log(i="no")
            elif bad == "unknown":
                self.rec.log(i=1, nope=2)
            else:
                self.rec.log(x=1.0)

    @rule(name=st.sampled_from(["A", "CERT_PASS", "ROLLBACK"]), k=st.integers(0, 10))
    def event(self, name: str, k: int) -> None:
        if self._call(self.rec.event, name, {"k": k}):
            self.events.append(name)

    @rule()
    def flush(self) -> None:
        if self.closed:
            with pytest.raises(RecorderClosedError):
                self.rec.flush()
            return
        if self.faulted:
            # The recorder makes a new segments folder (its run folder still
            # exists) and keeps recording; what vanished is reported at close.
            self.rec.flush()
            return
        self.rec.flush()
        import pyarrow as pa

        assert table_rows(pa.table(self.rec.to_arrow())) == self.rows

    @precondition(lambda self: not self.closed and not self.faulted)
    @rule()
    def delete_segments_dir(self) -> None:
        segments = self.dir / "run" / "segments"
        self.lost_published = bool(list(segments.glob("*.parquet")))
        shutil.rmtree(segments, ignore_errors=True)
        self.faulted = True

    @rule()
    def close(self) -> None:
        import pyarrow.parquet as pq

        if self.closed:
            self.rec.close()  # idempotent
            return
        self.closed = True
        if self.faulted:
            if self.lost_published:  # published segments vanished: close says so
                with pytest.raises(WriteError, match="deleted by something else"):
                    self.rec.close()
            else:
                self.rec.close()
                assert table_rows(pq.read_table(self.dir / "run" / "telemetry.parquet")) == self.rows
            return
        self.rec.close()
        assert table_rows(pq.read_table(self.dir / "run" / "telemetry.parquet")) == self.rows
        ev = pq.read_table(self.dir / "run" / "events.parquet").column("event").to_pylist()
        assert ev == self.events
        assert [f["rows"] for f in self.rec.files] == [len(self.rows), len(self.events)]

    @invariant()
    def counters(self) -> None:
        s = self.rec.stats()
        if not self.faulted:
            assert s["rows_offered"] == len(self.rows)
            assert s["events"] == len(self.events)
            assert s["rows_lost"] == 0
        assert s["rows_dropped"] == 0


def test_extend_of_zero_rows_on_a_closed_recorder_raises(tmp_path: Path) -> None:
    rec = FlightRecorder(tmp_path / "run", SCHEMA)
    rec.close()
    with pytest.raises(RecorderClosedError):
        rec.extend(i=[], x=[], s=[])


TestRecorderMachine = RecorderMachine.TestCase
TestRecorderMachine.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class ManagerMachine(RuleBasedStateMachine):
    """TelemetryManager runs (run and dev mode, schema given or inferred) against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp())
        self.tm: TelemetryManager | None = None
        self.rows = 0
        self.events = 0
        self.finished: list[tuple[Path, int, int, str]] = []

    def teardown(self) -> None:
        if self.tm is not None:
            self.tm.close()
        shutil.rmtree(self.root, ignore_errors=True)

    @precondition(lambda self: self.tm is None)
    @rule(mode=st.sampled_from(["run", "dev", "tuner"]), inferred=st.booleans())
    def start(self, mode: str, inferred: bool) -> None:
        opts: dict[str, Any] = {"mode": mode, "flush_interval": 3600, "sampling": None, "max_rows": None}
        if mode == "tuner":
            opts["trial_id"] = "t1"
        self.tm = TelemetryManager(self.root, "flow", schema=None if inferred else SCHEMA, **opts)
        self.rows, self.events = 0, 1  # RUN_STARTED

    @precondition(lambda self: self.tm is not None)
    @rule(x=st.floats(allow_nan=True))
    def log(self, x: float) -> None:
        assert self.tm is not None
        self.tm.log(i=self.rows, x=x, s="v")
        self.rows += 1

    @precondition(lambda self: self.tm is not None and self.tm.recorder is not None)
    @rule(n=st.integers(0, 30))
    def extend(self, n: int) -> None:
        assert self.tm is not None
        self.tm.extend(i=list(range(self.rows, self.rows + n)), x=[0.5] * n, s=["w"] * n)
        self.rows += n

    @precondition(lambda self: self.tm is not None)
    @rule(payload=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)))
    def event(self, payload: Any) -> None:
        assert self.tm is not None
        self.tm.event("STEP", payload)
        self.events += 1

    @precondition(lambda self: self.tm is not None)
    @rule()
    def flush(self) -> None:
        assert self.tm is not None
        self.tm.flush()
        if self.tm.recorder is not None:
            assert self.tm.stats()["rows_written"] == self.rows

    @precondition(lambda self: self.tm is not None)
    @rule(fail=st.booleans())
    def close(self, fail: bool) -> None:
        assert self.tm is not None
        tm, self.tm = self.tm, None
        tm.close(error=RuntimeError("boom") if fail else None)
        status = "failed" if fail else "finished"
        self.finished.append((tm.manifest_path, self.rows, self.events + 1, status))  # + RUN_FINISHED

    @invariant()
    def manifests(self) -> None:
        for path, rows, events, status in self.finished[-2:]:
            m = read_manifest(path)
            assert m["status"] == status
            assert m["counts"]["rows_written"] == rows
            assert m["counts"]["events"] == events
            if m["mode"] == "run":
                assert [f["rows"] for f in m["files"]] == [rows, events]
            else:
                assert sum(f["rows"] for f in m["files"] if f["kind"] == "telemetry") == rows


TestManagerMachine = ManagerMachine.TestCase
TestManagerMachine.settings = settings(
    max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --------------------------------------------------------------------------- merge fuzzing


@st.composite
def segment_sets(draw: Any) -> list[list[tuple[int, float, str | None]]]:
    n = draw(st.integers(1, 7))
    out = []
    start = 0
    for _ in range(n):
        k = draw(st.integers(0, 60))
        rows = [(start + j, draw(st.floats(allow_nan=True, allow_infinity=True)), draw(values_s)) for j in range(k)]
        start += k
        out.append(rows)
    return out


def _write_segment(path: Path, rows: list[tuple[int, float, str | None]], seed: int) -> Path:
    with FlightRecorder(path, SCHEMA, segment_rows=max(1, seed % 13 + 1), compression="zstd") as rec:
        for r in rows:
            rec.record(*r)
    return path / "telemetry.parquet"


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    def norm(v: Any) -> Any:
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return [tuple(map(norm, r)) for r in a] == [tuple(map(norm, r)) for r in b]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segment_sets(), st.integers(0, 2**16), st.booleans())
def test_merge_of_random_segment_sets(segments: list[list[Any]], seed: int, nested: bool) -> None:
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as d:
        paths = [_write_segment(Path(d) / f"seg{k}", rows, seed + k) for k, rows in enumerate(segments)]
        inputs = [Path(d) / f"telemetry-{k + 1:06d}.parquet" for k in range(len(paths))]
        for p, q in zip(paths, inputs, strict=True):
            p.rename(q)

        def listing(p: Path) -> tuple[list[str], list[int]]:
            """What an input contributes: the segments it lists (a merge), else itself."""
            kv = dict(_core.parquet_kv(str(p)))
            if "flightlog.segments" in kv:
                return json.loads(kv["flightlog.segments"]), json.loads(kv["flightlog.segment_rows"])
            return [p.name], [int(_core.parquet_rows(str(p)))]

        expected_names: list[str] = []
        expected_rows: list[int] = []
        for p in inputs:
            names, rows = listing(p)
            expected_names += names
            expected_rows += rows
        if nested and len(inputs) >= 2:
            # merge the first half, then merge that merge with the rest: names stay flat
            half = len(inputs) // 2
            first = Path(d) / "first.parquet"
            _core.merge_parquet(str(first), [str(p) for p in inputs[:half]])
            inputs = [first, *inputs[half:]]
        out = Path(d) / "merged.parquet"
        res = _core.merge_parquet(str(out), [str(p) for p in inputs])
        all_rows = [r for rows in segments for r in rows]
        assert res["rows"] == len(all_rows) == pq.ParquetFile(out).metadata.num_rows
        assert res["bytes"] == out.stat().st_size
        assert _same(table_rows(pq.read_table(out)), all_rows)
        kv = dict(_core.parquet_kv(str(out)))
        assert json.loads(kv["flightlog.segments"]) == expected_names
        assert json.loads(kv["flightlog.segment_rows"]) == expected_rows
        assert sum(expected_rows) == len(all_rows)
        assert json.loads(kv["flightlog.schema"]) == json.loads(SCHEMA.to_json())
        assert kv["schema_version"] == "1"
        # no temp file left beside the output
        assert [p.name for p in Path(d).iterdir() if ".tmp-" in p.name] == []


def test_merge_refuses_different_schemas_and_publishes_nothing(tmp_path: Path) -> None:
    a = _write_segment(tmp_path / "a", [(1, 1.0, "a")], 1)
    with FlightRecorder(tmp_path / "b", Schema([Field("j", "i64")])) as rec:
        rec.record(1)
    out = tmp_path / "out.parquet"
    with pytest.raises(WriteError, match="schema differs"):
        _core.merge_parquet(str(out), [str(a), str(tmp_path / "b" / "telemetry.parquet")])
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    with pytest.raises((WriteError, ValueError)):
        _core.merge_parquet(str(out), [])
    assert not out.exists()

"""Hostile input: a catalogue of bad inputs across the public API and the CLI.

Each case must get a clear exception (or a non-zero exit with one error line),
lose nothing already recorded (a finished run and the consolidated catalog are
checked after every case), put no file outside the root (a sentinel folder
beside it stays empty, and nothing else appears beside it), and never crash the
interpreter: risky cases run in a child process whose return code must not be
a signal.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import flightlog
from flightlog import (
    DuckDBManager,
    Field,
    FlightlogError,
    FlightRecorder,
    ManifestError,
    Schema,
    SchemaError,
    TelemetryManager,
    compact,
    read_manifest,
    recover,
)

SCHEMA = Schema([Field("iter", "i64", nullable=False), Field("E", "f64", nullable=False), Field("tag", "str")])
ROWS = 250


@dataclasses.dataclass
class Ctx:
    base: Path
    root: Path
    sentinel: Path
    run: Path  # a finished run folder with ROWS rows (consolidated)
    rec: FlightRecorder  # an open recorder (rows recorded before each case must survive)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    base = tmp_path_factory.mktemp("hostile")
    root, sentinel = base / "root", base / "sentinel"
    sentinel.mkdir()
    with TelemetryManager(root, "good", schema=SCHEMA) as tm:
        for i in range(ROWS):
            tm.record(i, 1.0 / (i + 1), "ok")
        tm.event("CERT_PASS", {"gap": 0.1})
    DuckDBManager(root).consolidate()
    rec = FlightRecorder(base / "open_run", SCHEMA, flush_interval=0.05)
    for i in range(10):
        rec.record(i, float(i), None)
    ctx = Ctx(base, root, sentinel, tm.run_path, rec)
    yield ctx
    rec.close()


def check_world(ctx: Ctx) -> None:
    """Nothing recorded was lost, nothing appeared outside the root."""
    import pyarrow.parquet as pq

    assert sorted(os.listdir(ctx.sentinel)) == [], "a file appeared outside the root"
    assert sorted(os.listdir(ctx.base)) == ["open_run", "root", "sentinel"], os.listdir(ctx.base)
    assert pq.read_table(ctx.run / "telemetry.parquet").num_rows == ROWS
    assert read_manifest(ctx.run)["status"] == "finished"
    n = DuckDBManager(ctx.root).query("SELECT count(*) FROM telemetry WHERE flow_name = 'good'").fetchone()
    assert n == (ROWS,)
    assert not ctx.rec.closed


# --------------------------------------------------------------------------- the catalogue

Case = tuple[str, Callable[[Ctx], Any], type[BaseException] | tuple[type[BaseException], ...] | None, str]
CASES: list[Case] = []


def case(name: str, exc: Any, match: str = "") -> Callable[[Callable[[Ctx], Any]], Callable[[Ctx], Any]]:
    def deco(fn: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
        CASES.append((name, fn, exc, match))
        return fn

    return deco


# -- values on the hot path
case("log: str for an i64 field", TypeError, "iter")(lambda c: c.rec.log(iter="3", E=1.0))
case("log: str for an f64 field", TypeError, "E")(lambda c: c.rec.log(iter=3, E="abc"))
case("record: bytes for a str field", TypeError, "tag")(lambda c: c.rec.record(1, 1.0, b"bytes"))
case("log: NaN in an int field", TypeError, "iter")(lambda c: c.rec.log(iter=math.nan, E=1.0))
case("log: inf in an int field", TypeError, "iter")(lambda c: c.rec.log(iter=math.inf, E=1.0))
case("log: 2**70 in an i64 field", (OverflowError, ValueError, TypeError), "iter")(
    lambda c: c.rec.log(iter=2**70, E=1.0)
)
case("log: a dict for an f64 field", TypeError, "E")(lambda c: c.rec.log(iter=1, E={"a": 1}))
case("log: None for a non-nullable field", (SchemaError, TypeError), "E")(lambda c: c.rec.log(iter=1, E=None))
case("log: unknown field", SchemaError, "nope")(lambda c: c.rec.log(iter=1, E=1.0, nope=2))
case("record: too many values", (TypeError, SchemaError, ValueError), "")(lambda c: c.rec.record(1, 1.0, "a", 4))
case("extend: columns of different lengths", (ValueError, SchemaError), "")(
    lambda c: c.rec.extend(iter=np.arange(3), E=np.zeros(4), tag=["a"] * 3)
)
case("extend: a 2-D array", (ValueError, TypeError), "")(
    lambda c: c.rec.extend(iter=np.zeros((2, 2), dtype=np.int64), E=np.zeros((2, 2)), tag=["a", "b"])
)
case("extend: an object array of dicts", TypeError, "")(
    lambda c: c.rec.extend(iter=np.array([{}, {}], dtype=object), E=np.zeros(2), tag=["a", "b"])
)
case("extend: NaN floats into an int column", (TypeError, ValueError), "iter")(
    lambda c: c.rec.extend(iter=np.array([1.0, math.nan]), E=np.zeros(2), tag=["a", "b"])
)


@case("log: a 5 MB string is data, stored whole", None)
def _huge_value(c: Ctx) -> None:
    import pyarrow.parquet as pq

    big = "x" * 5_000_000 + "\x00\u202e\U0001f600"
    with FlightRecorder(c.base / "big", SCHEMA) as rec:
        rec.log(iter=0, E=1.0, tag=big)
    assert pq.read_table(c.base / "big" / "telemetry.parquet").column("tag").to_pylist() == [big]
    import shutil

    shutil.rmtree(c.base / "big")


# -- events
case("event: name with a control character", ValueError, "control")(lambda c: c.rec.event("A\nB"))
case("event: empty name", ValueError, "")(lambda c: c.rec.event(""))
case("event: name of 10,000 characters", ValueError, "")(lambda c: c.rec.event("E" * 10_000))
case("event: name that is not a str", (ValueError, TypeError), "")(lambda c: c.rec.event(123))
case("event: bytes payload", TypeError, "JSON")(lambda c: c.rec.event("X", b"raw"))
case("event: nested payload holding a set", TypeError, "JSON")(lambda c: c.rec.event("X", {"a": [1, {"b": {1, 2}}]}))


@case("event: circular payload", TypeError, "JSON")
def _circular(c: Ctx) -> None:
    a: list[Any] = []
    a.append(a)
    c.rec.event("X", {"a": a})


case("event: a deeply nested payload is data", None)(
    lambda c: c.rec.event("X", {"a": [[[{"b": [1, 2, {"c": None}]}]]], "d": "\u202e\x00"})
)

# -- names that end up in paths
for arg, bad, exc in [
    ("flow_name", "../sentinel", ValueError),
    ("flow_name", "../../etc", ValueError),
    ("flow_name", "a/b", ValueError),
    ("flow_name", "a\\b", ValueError),
    ("flow_name", "..", ValueError),
    ("flow_name", "x\x00y", ValueError),
    ("flow_name", "line\nbreak", ValueError),
    ("flow_name", "para\u2029sep", ValueError),
    ("flow_name", "f" * 100_000, ValueError),
    ("flow_name", b"bytes", TypeError),
    ("flow_name", None, TypeError),
    ("run_id", "../../sentinel/x", ValueError),
    ("run_id", ".", ValueError),
    ("run_id", "/abs", ValueError),
    ("trial_id", "../t", ValueError),
    ("trial_id", "t\x7f", ValueError),
    ("run_prefix", "../", ValueError),
]:

    def _names(c: Ctx, arg: str = arg, bad: Any = bad) -> None:
        kwargs: dict[str, Any] = {"schema": SCHEMA}
        flow = "ok"
        if arg == "flow_name":
            flow = bad
        else:
            kwargs[arg] = bad
        if arg == "trial_id":
            kwargs["mode"] = "tuner"
        TelemetryManager(c.root, flow, **kwargs)

    CASES.append((f"TelemetryManager: {arg}={bad!r:.40}", _names, exc, ""))


@case("TelemetryManager: unicode names are fine and stay inside the root", None)
def _unicode(c: Ctx) -> None:
    with TelemetryManager(c.root, "流れ_\u202eevil", "ラン", mode="tuner", trial_id="试验 🚀", schema=SCHEMA) as tm:
        tm.record(1, 1.0, "é")
    assert tm.manifest_path.resolve().is_relative_to(c.root.resolve())


case("compact: path traversal in the flow name", ValueError, "")(lambda c: compact(c.root, "../sentinel"))
case("compact: bad 'which'", ValueError, "")(lambda c: compact(c.root, "good", which="../x"))
case("DuckDBManager.live: path traversal in the run id", ValueError, "")(
    lambda c: DuckDBManager(c.root).live("../sentinel")
)

# -- options
case("params: a value TOML cannot hold", TypeError, "params")(
    lambda c: TelemetryManager(c.root, "p", schema=SCHEMA, params={"f": object()})
)
case("tags: None inside an array", TypeError, "")(
    lambda c: TelemetryManager(c.root, "p", schema=SCHEMA, tags={"a": [1, None]})
)
case("metadata: a reserved key", ValueError, "reserved")(
    lambda c: FlightRecorder(c.base / "open_run" / "x", SCHEMA, metadata={"flightlog.schema": "{}"})
)
case("compression: unknown codec", ValueError, "compression")(
    lambda c: FlightRecorder(c.base / "open_run" / "x", SCHEMA, compression="zip")
)
case("flush_interval: NaN", ValueError, "flush_interval")(
    lambda c: FlightRecorder(c.base / "open_run" / "x", SCHEMA, flush_interval=math.nan)
)
case("ring_capacity: 2**40 (no huge allocation)", ValueError, "ring_capacity")(
    lambda c: FlightRecorder(c.base / "open_run" / "x", SCHEMA, ring_capacity=2**40)
)
case("segment_rows: 0", ValueError, "segment_rows")(
    lambda c: FlightRecorder(c.base / "open_run" / "x", SCHEMA, segment_rows=0)
)
case("sampling: every=0", ValueError, "every")(
    lambda c: FlightRecorder(c.base / "open_run" / "x", SCHEMA, sampling=(5, 0))
)
case("max_rows: negative", ValueError, "max_rows")(
    lambda c: FlightRecorder(c.base / "open_run" / "x", SCHEMA, max_rows=-5)
)
case("FlightRecorder: path is an existing file", (OSError, FlightlogError), "")(
    lambda c: FlightRecorder(c.run / "manifest.toml", SCHEMA)
)
case("FlightRecorder: path with a NUL byte", (ValueError, OSError), "")(lambda c: FlightRecorder("bad\x00path", SCHEMA))
case("FlightRecorder: a finished run folder", (FileExistsError, OSError), "already exists")(
    lambda c: FlightRecorder(c.run, SCHEMA)
)
case("Schema: duplicate field names", (SchemaError, ValueError), "")(
    lambda c: Schema([Field("a", "f64"), Field("a", "i64")])
)
case("Schema: unknown dtype", (SchemaError, ValueError, TypeError), "")(lambda c: Schema([Field("a", "f128")]))

# -- SQL injection through every parameter of the catalog API
EVIL = "x' OR '1'='1'; DROP TABLE runs; --"


def _sql_cases() -> None:
    q = lambda c, *a, **k: DuckDBManager(c.root).query(*a, **k)  # noqa: E731
    import duckdb

    CASES.extend(
        [
            ("query: a write statement", lambda c: q(c, "DROP TABLE runs"), duckdb.Error, ""),
            ("query: two statements", lambda c: q(c, "SELECT 1; DROP TABLE runs"), duckdb.Error, ""),
            (
                "query: breaking out of the wrapper to COPY a file outside the root",
                lambda c: q(c, f"SELECT 1) ; COPY runs TO '{c.sentinel}/leak.csv'; SELECT * FROM (SELECT 1"),
                duckdb.Error,
                "",
            ),
            (
                "query: breaking out of the wrapper to ATTACH a database outside the root",
                lambda c: q(c, f"SELECT 1); ATTACH '{c.sentinel}/x.db' AS x; CREATE TABLE x.t AS SELECT 1; SELECT (1"),
                duckdb.Error,
                "",
            ),
            ("query: COPY", lambda c: q(c, f"COPY runs TO '{c.sentinel}/leak.csv'"), duckdb.Error, ""),
            ("query: INSTALL", lambda c: q(c, "INSTALL httpfs"), duckdb.Error, ""),
            (
                "query: bound parameters are data",
                lambda c: _empty(q(c, "SELECT * FROM runs WHERE run_id = ?", [EVIL])),
                None,
                "",
            ),
            ("runs(flow_name=...)", lambda c: _empty(DuckDBManager(c.root).runs(flow_name=EVIL)), None, ""),
            ("runs(status=...)", lambda c: _empty(DuckDBManager(c.root).runs(status=[EVIL])), None, ""),
            ("telemetry(run_ids=...)", lambda c: _empty(DuckDBManager(c.root).telemetry(run_ids=EVIL)), None, ""),
            (
                "telemetry(columns=...)",
                lambda c: DuckDBManager(c.root).telemetry(columns=['E" FROM runs; DROP TABLE runs; --']),
                ValueError,
                "no column",
            ),
            ("events(names=...)", lambda c: _empty(DuckDBManager(c.root).events(names=[EVIL])), None, ""),
            ("compare(run_ids=...)", lambda c: _compare_empty(c), None, ""),
            ("compare(metric=...)", lambda c: DuckDBManager(c.root).compare(["x"], metric=EVIL), ValueError, ""),
            ("live(run_id=...)", lambda c: DuckDBManager(c.root).live(EVIL), ValueError, ""),
            ("query: sql that is not a str", lambda c: q(c, b"SELECT 1"), TypeError, ""),
        ]
    )


def _empty(result: Any) -> None:
    assert result.fetchall() == []


def _compare_empty(c: Ctx) -> None:
    rows = DuckDBManager(c.root).compare([EVIL], metric="E").fetchall()
    assert len(rows) == 1 and rows[0][3] == 0  # one row, no data: the id was data


_sql_cases()


@pytest.mark.parametrize("name,fn,exc,match", CASES, ids=[c[0] for c in CASES])
def test_hostile_input(world: Ctx, name: str, fn: Callable[[Ctx], Any], exc: Any, match: str) -> None:
    if exc is None:
        fn(world)
    else:
        with pytest.raises(exc, match=match or None) as info:
            fn(world)
        assert str(info.value).strip(), f"{name}: the error says nothing"
    # the open recorder still takes rows
    world.rec.record(99, 1.0, "after")
    check_world(world)


def test_the_catalogue_has_at_least_40_cases() -> None:
    assert len(CASES) >= 40 and len(CASES) + len(FILE_CASES) + len(CLI_CASES) >= 80


# --------------------------------------------------------------------------- hostile files on disk


def _finished_run(root: Path, flow: str, rows: int = 50) -> Path:
    with TelemetryManager(root, flow, schema=SCHEMA) as tm:
        for i in range(rows):
            tm.record(i, float(i), "a")
    return tm.run_path


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _flip_footer(p: Path) -> None:
    b = bytearray(p.read_bytes())
    rng = random.Random(3)
    for _ in range(20):
        pos = len(b) - 8 - rng.randrange(min(200, len(b) - 8))
        b[pos] ^= 0xFF
    p.write_bytes(bytes(b))


FILE_CASES = {
    "malformed manifest.toml": lambda run: (run / "manifest.toml").write_text("status = [unclosed\n"),
    "manifest.toml that is binary": lambda run: (run / "manifest.toml").write_bytes(os.urandom(300)),
    "manifest.toml with wrong types": lambda run: (run / "manifest.toml").write_text(
        'run_id = 5\nstatus = "weird"\nparams = "no"\n'
    ),
    "truncated telemetry.parquet": lambda run: _truncate(run / "telemetry.parquet"),
    "bit-flipped telemetry.parquet footer": lambda run: _flip_footer(run / "telemetry.parquet"),
    "events.parquet replaced by random bytes": lambda run: (run / "events.parquet").write_bytes(os.urandom(5000)),
    "empty telemetry.parquet": lambda run: (run / "telemetry.parquet").write_bytes(b""),
}


@pytest.mark.parametrize("name", sorted(FILE_CASES))
def test_hostile_files_are_skipped_with_a_reason(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    good = _finished_run(root, "good")
    bad = _finished_run(root, "bad")
    FILE_CASES[name](bad)
    db = DuckDBManager(root)
    report = db.consolidate()
    assert report.files_skipped, report
    assert all(reason.strip() for _, reason in report.files_skipped)
    assert db.query("SELECT count(*) FROM telemetry WHERE flow_name = 'good'").fetchone() == (50,)
    assert good.name in {r[0] for r in db.query("SELECT path FROM runs").fetchall()}
    rep = recover(root)  # never raises on a bad run; says what it could not do
    assert rep.live == []
    if "manifest" in name:
        with pytest.raises(ManifestError if "malformed" in name or "binary" in name else (ManifestError, KeyError)):
            m = read_manifest(bad)
            if "wrong types" in name:
                raise KeyError("not a manifest: " + repr(m))
    assert sorted(os.listdir(tmp_path)) == ["root"]


@pytest.mark.parametrize("kind", ["sqlite", "random", "empty", "text"])
def test_duckdb_db_from_another_program_gives_a_clear_error(tmp_path: Path, kind: str) -> None:
    import sqlite3

    import duckdb

    root = tmp_path / "root"
    run = _finished_run(root, "good")
    db_path = root / "duckdb.db"
    if kind == "sqlite":
        con = sqlite3.connect(db_path)
        con.execute("CREATE TABLE runs (x)")
        con.commit()
        con.close()
    elif kind == "random":
        db_path.write_bytes(os.urandom(64 * 1024))
    elif kind == "text":
        db_path.write_text("this is not a database\n" * 100)
    else:
        db_path.write_bytes(b"")
    before = db_path.read_bytes()
    db = DuckDBManager(root)
    with pytest.raises((duckdb.Error, FlightlogError, OSError)):
        db.query("SELECT 1")
    if kind == "empty":
        # Holds nothing (a process killed while creating it): rebuilt from the run tree,
        # the empty file kept beside it (issue 17).
        assert db.consolidate().rebuilt is not None
        assert (root / "duckdb.db.unreadable.bak").read_bytes() == before
        assert db.query("SELECT count(*) FROM runs").fetchone() == (1,)
    else:
        with pytest.raises((duckdb.Error, FlightlogError, OSError)) as info:
            db.consolidate()
        assert "is not a DuckDB database file" in str(info.value)
        assert db_path.read_bytes() == before, "the foreign file was modified"
    assert (run / "telemetry.parquet").exists()


def test_symlinked_run_folder_pointing_outside_the_root_is_never_followed(tmp_path: Path) -> None:
    """A crashed run living outside the root, linked in: recover must not write there,
    consolidate must not ingest it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    child = textwrap.dedent(
        """
        import sys, time
        from flightlog import TelemetryManager, Schema, Field
        tm = TelemetryManager(sys.argv[1], "f", schema=Schema([Field("i", "i64")]), flush_interval=0.01)
        for i in range(50):
            tm.record(i)
        tm.flush()
        print(tm.run_path, flush=True)
        time.sleep(600)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", child, str(outside)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    try:
        run = Path(p.stdout.readline().strip())
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    (root / "fda_run_evil").symlink_to(run)
    flows = root / "flows"
    flows.mkdir()
    (flows / "evil").symlink_to(outside)
    before = {f: os.stat(f).st_mtime_ns for f in map(str, outside.rglob("*"))}
    rep = recover(root)
    assert rep.recovered == [] and len(rep.errors) == 2, rep
    assert all("symbolic link" in e["error"] for e in rep.errors)
    db = DuckDBManager(root)
    report = db.consolidate()
    assert report.runs_added == 0 and report.rows_added == 0
    assert {p for p, _ in report.files_skipped} == {"fda_run_evil", "flows/evil"}
    after = {f: os.stat(f).st_mtime_ns for f in map(str, outside.rglob("*"))}
    assert after == before, "recover or consolidate touched files outside the root"


def test_symlinked_segments_inside_a_run_are_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = _finished_run(root, "a")
    other = tmp_path / "other_segments"
    other.mkdir()
    (other / "telemetry-000001.parquet").write_bytes((run / "telemetry.parquet").read_bytes())
    victim = root / "fda_run_victim"
    victim.mkdir()
    (victim / "segments").symlink_to(other)
    flightlog.write_manifest(victim, {"run_id": "victim", "mode": "run", "status": "running"})
    rep = recover(root, stale_after=0)
    assert [e["path"] for e in rep.errors] == [str(victim)]
    assert sorted(os.listdir(other)) == ["telemetry-000001.parquet"]


# --------------------------------------------------------------------------- risky inputs, in a child


RISKY = textwrap.dedent(
    """
    import math, os, random, sys, tempfile
    import numpy as np
    import flightlog
    from flightlog import FlightRecorder, Schema, Field, TelemetryManager, _core
    d = tempfile.mkdtemp()
    which = sys.argv[1]
    def attempt(fn):
        try:
            fn()
        except RecursionError:
            pass
        except Exception:
            pass
    if which == "deep":
        x = []
        for _ in range(200_000):
            x = [x]
        attempt(lambda: TelemetryManager(d, "f", params={"deep": x}))
        with FlightRecorder(d + "/r") as rec:
            attempt(lambda: rec.event("E", {"deep": x}))
    elif which == "corrupt":
        schema = Schema([Field("i", "i64", nullable=False), Field("s", "str")])
        with FlightRecorder(d + "/run", schema, segment_rows=100) as rec:
            rec.extend(i=np.arange(1000), s=[f"v{i % 5}" for i in range(1000)])
        src = d + "/run/telemetry.parquet"
        data = open(src, "rb").read()
        rng = random.Random(int(sys.argv[2]))
        for k in range(150):
            b = bytearray(data)
            if k % 3 == 0:
                b = b[: rng.randrange(len(b))]
            else:
                for _ in range(rng.randint(1, 12)):
                    pos = len(b) - 1 - rng.randrange(min(600 if k % 3 == 1 else len(b), len(b)))
                    b[pos] = rng.randrange(256)
            p = f"{d}/f{k}.parquet"
            open(p, "wb").write(b)
            attempt(lambda: _core.parquet_rows(p))
            attempt(lambda: _core.parquet_kv(p))
            attempt(lambda: _core.merge_parquet(f"{d}/m{k}.parquet", [src, p]))
            attempt(lambda: _core.recover_run_dir(d + "/nope"))
    elif which == "huge":
        schema = Schema([Field("s", "str"), Field("i", "i64")])
        with FlightRecorder(d + "/r", schema) as rec:
            for n in (10, 10_000, 10_000_000):
                rec.log(s="y" * n, i=n)
            attempt(lambda: rec.log(s="\\ud800", i=1))       # lone surrogate
            attempt(lambda: rec.extend(s=["a"] * 3, i=np.arange(2)))
            attempt(lambda: rec.extend(s=np.array([1, 2]), i=np.arange(2)))
        attempt(lambda: FlightRecorder(d + "/q", Schema([Field("x" * 100_000, "f64")])).close())
        attempt(lambda: FlightRecorder(d + "/z", ring_capacity=1 << 24, segment_rows=1 << 26).close())
    print("survived", flush=True)
    """
)


@pytest.mark.parametrize("which", ["deep", "corrupt-1", "corrupt-2", "huge"])
def test_risky_inputs_never_crash_the_interpreter(tmp_path: Path, which: str) -> None:
    args = which.split("-")
    # The child's tempfile.mkdtemp() lands in tmp_path, which pytest removes: the child leaves
    # without cleaning up on purpose (a crash would skip it anyway).
    r = subprocess.run(
        [sys.executable, "-c", RISKY, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert r.returncode >= 0, f"killed by signal {signal.Signals(-r.returncode).name}: {r.stderr[-2000:]}"
    assert r.returncode == 0 and "survived" in r.stdout, r.stderr[-3000:]


# --------------------------------------------------------------------------- the CLI


def _cli_exists() -> bool:
    import importlib.util

    return importlib.util.find_spec("flightlog.cli") is not None


CLI_CASES = [
    ["show", "../sentinel"],
    ["show", "x\x1b[31m"],
    ["show", "r" * 10_000],
    ["tail", "../../etc/passwd"],
    ["compact", "../sentinel"],
    ["compact", "good", "--which", "../x"],
    ["compare", EVIL, "--metric", "E"],
    ["compare", "x", "--metric", 'E"; DROP TABLE runs; --'],
    ["query", "DROP TABLE runs"],
    ["query", "SELECT 1; DROP TABLE runs"],
    ["query", "SELECT 1) ; COPY runs TO '{sentinel}/leak.csv'; SELECT * FROM (SELECT 1"],
    ["query", "SELECT * FROM runs WHERE run_id = $p", "--param", "p=" + EVIL, "--expect-ok"],
    ["runs", "--format", "xml"],
    ["plot", "../x", "--metric", "E", "-o", "{sentinel}/x.png"],
    ["--root", "{sentinel}/missing/deeper", "runs"],  # a missing root is an error, never created
    ["--root", sys.executable, "runs"],  # a root that is a file
    ["--timeout", "nan", "runs"],
    ["nonsense-command"],
]


@pytest.mark.skipif(not _cli_exists(), reason="flightlog.cli is not written yet")
@pytest.mark.parametrize("argv", CLI_CASES)
def test_cli_hostile_input(world: Ctx, argv: list[str]) -> None:
    expect_ok = "--expect-ok" in argv
    argv = [a.format(sentinel=world.sentinel, root=world.root) for a in argv if a != "--expect-ok"]
    if argv[0] != "--root":
        argv = ["--root", str(world.root), *argv]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    r = subprocess.run(
        [sys.executable, "-m", "flightlog.cli", *argv], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode >= 0, f"killed by a signal: {r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    if expect_ok:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode != 0, (r.stdout[-500:], r.stderr[-500:])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert lines, "no error line"
    if "missing/deeper" in " ".join(argv):
        # a read-only command must not create the root it was pointed at
        assert not (world.sentinel / "missing").exists()
        return
    check_world(world)

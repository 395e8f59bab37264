"""Spark reads the run tree (README; docs/SCALE_OUT.md, "Reading the tree from Spark").

PySpark in local mode (``local[2]``, one session for the module) reads a root that
flightlog wrote: finished runs, a schema that gained a column between runs, a run
killed with SIGKILL and finalised by ``flightlog.recover``, append-mode (dev and
tuner) parts beside a compacted file, and, during every read, a production run and
a dev run still being written by another process (published segments and parts,
temp files of flushes in progress). Spark uses exactly the options the doc gives
(``mergeSchema`` and one path glob) and must agree with flightlog's own counts and
with pyarrow, row for row.

Needs a Java 17+ runtime and ``pyspark`` (``pip install 'flightlog[spark]'``, ``make
java``): without them the tests skip, or fail under ``FLIGHTLOG_REQUIRE_SERVERS=1`` (CI).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import flightlog
from conftest_servers import unavailable
from flightlog import Enum, Field, Schema, TelemetryManager, read_manifest

pytestmark = [
    # A JVM start and a first query: about a minute on a loaded 2-core machine.
    pytest.mark.slow,
    # pyspark warns about pandas 3 when it first touches pandas; this module never
    # converts to pandas (it collects rows).
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

V1 = Schema(
    [
        Field("iter", "i64", nullable=False),
        Field("E", "f64", nullable=False),
        Field("t_wall_ms", "f64", unit="ms"),
        Field("phase", Enum(["RED", "AMBER", "GREEN"])),
        Field("accepted", "bool"),
        Field("step", "f32"),
        Field("note", "str"),
    ],
    version=1,
)
# The schema gained a column (and its version) between runs.
V2 = Schema([*V1, Field("grad_norm", "f64")], version=2)

# The documented read (docs/SCALE_OUT.md): the final files of finished and recovered
# runs, and the published append-mode parts and compacted files of every flow. Never
# `segments/` (a running run's, or leftovers of a crash before `recover`), never the
# events files, never temp files (dot-prefixed, and not named `*.parquet`).
TELEMETRY_GLOB = (
    "{fda_run_*/telemetry.parquet,flows/*/{dev,tuner}_telemetry.parquet,flows/*/{dev,tuner}_telemetry/part-*.parquet}"
)
# The run id from the path, where the path has it (a compacted file holds many runs).
PATH_RUN_ID = r"(?:/fda_run_([^/]+)/telemetry|/part-(.+)-[0-9]{6,})\.parquet$"

SPARK_TYPES = {  # flightlog dtype -> Spark SQL type name
    "i64": "bigint",
    "f64": "double",
    "f32": "float",
    "bool": "boolean",
    "str": "string",
    "enum": "string",
}

# The child that is killed mid-run: two flushes are durable, the rest is in its spool.
CRASH_CHILD = """
import sys
import numpy as np
from flightlog import Schema, TelemetryManager
root, run_id, schema = sys.argv[1], sys.argv[2], Schema.from_json(sys.argv[3])
tm = TelemetryManager(root, "solver", run_id=run_id, schema=schema, flush_interval=60.0)
def rows(lo, hi):
    i = np.arange(lo, hi)
    return dict(iter=i, E=1.0 / (1 + i), phase=["AMBER"] * len(i), accepted=i % 2 == 0,
                step=np.full(len(i), 0.25, np.float32), note=["crash"] * len(i), grad_norm=i * 0.5)
tm.extend(**rows(0, 1234))
tm.flush()
tm.extend(**rows(1234, 1300))
tm.flush()
tm.extend(**rows(1300, 1400))  # never flushed: recover takes these from the spool
print(tm.recorder.stats()["rows_written"], flush=True)
sys.stdin.read()  # until killed
"""

# The concurrent writer: a production run that keeps flushing (segments and their temp
# files come and go under `segments/`) and a dev run with published parts, both open
# until the parent writes a line. Prints the dev run's part rows, then "ready".
WRITER_CHILD = """
import select, sys
from flightlog import Schema, TelemetryManager
root, schema = sys.argv[1], Schema.from_json(sys.argv[2])
run = TelemetryManager(root, "solver", run_id="20260109_000000", schema=schema, flush_interval=60.0)
dev = TelemetryManager(root, "tuning", mode="dev", run_id="20260109_000001", schema=schema, sampling=None,
                       flush_interval=60.0)
row = dict(E=0.5, phase="RED", accepted=True, step=0.5, note="live")
for k in range(3):
    for i in range(10):
        dev.log(iter=10 * k + i, **row)
    dev.flush()
n = 0
while True:
    for i in range(10):
        run.log(iter=n, **row)
        n += 1
    run.flush()
    if n == 30:
        print("ready", flush=True)
    # Keep flushing until the parent says stop (a line on stdin).
    if select.select([sys.stdin], [], [], 0.25)[0]:
        break
run.close()
dev.close()
print(n, flush=True)
"""


# --------------------------------------------------------------------------- Spark


def java_major() -> int | None:
    """The major version of the ``java`` that PySpark starts ($JAVA_HOME, else PATH)."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if m is None:
        return None
    major = int(m[1])
    return int(m[2]) if major == 1 and m[2] else major


def java_children() -> list[Any]:
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if "java" in p.name()]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local[2] SparkSession for the module. Its JVM is stopped at teardown, and no
    java process of this test run may survive it."""
    try:
        from pyspark import SparkContext
        from pyspark.sql import SparkSession
    except ImportError as e:
        unavailable(f"pyspark is not installed ({e}); pip install 'flightlog[spark]'")
    major = java_major()
    if major is None or major < 17:
        unavailable(f"Spark 4 needs a Java 17+ runtime, found {major or 'none'} (make java: openjdk-17-jre-headless)")
    before = {p.pid for p in java_children()}
    env = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    session = None
    try:
        session = (
            SparkSession.builder.master("local[2]")
            .appName("flightlog-test-spark")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            # Test speed only (no effect on what is read): C1-only JIT and the serial GC
            # start the JVM and run the first queries about 1.5x faster on a busy 2-core box.
            .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
            .getOrCreate()
        )
        # Spark logs a stack trace at WARN when a path is a glob (it looks for a
        # `_spark_metadata` folder there); errors still show.
        session.sparkContext.setLogLevel("ERROR")
        yield session
    finally:
        gateway = SparkContext._gateway  # set once the JVM started, even if the session then failed
        if session is not None:
            session.stop()
        if gateway is not None:
            # SparkSession.stop() leaves the JVM up for another session; end it here: the
            # gateway JVM exits when its stdin closes.
            gateway.shutdown()
            gateway.proc.stdin.close()
            try:
                gateway.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                gateway.proc.kill()
                gateway.proc.wait()
            SparkContext._gateway = None
            SparkContext._jvm = None
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        left = [p for p in java_children() if p.pid not in before]
        assert left == [], f"java processes survived the Spark session: {left}"


def read_tree(spark: Any, root: Path) -> Any:
    """The run tree as one DataFrame, exactly as docs/SCALE_OUT.md reads it, plus the
    file each row came from and the run id its path gives (null for a compacted file)."""
    from pyspark.sql import functions as F

    df = spark.read.option("mergeSchema", "true").parquet(f"{root}/{TELEMETRY_GLOB}")
    path = F.col("_metadata.file_path")
    from_path = F.coalesce(
        F.nullif(F.regexp_extract(path, PATH_RUN_ID, 1), F.lit("")),
        F.nullif(F.regexp_extract(path, PATH_RUN_ID, 2), F.lit("")),
    )
    return df.withColumn("file_path", path).withColumn("path_run_id", from_path)


def spark_kv(spark: Any, path: str) -> dict[str, str]:
    """A Parquet file's key-value metadata, read with the Parquet reader inside Spark's
    JVM (through the session's Hadoop file system, so ``s3a://`` paths work too)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    hadoop_file = jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(jvm.org.apache.hadoop.fs.Path(path), conf)
    reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(hadoop_file)
    try:
        return dict(reader.getFooter().getFileMetaData().getKeyValueMetaData())
    finally:
        reader.close()


def local(file_path: str) -> str:
    """A Spark ``file:`` URI as a local path."""
    return file_path.removeprefix("file://").removeprefix("file:")


# --------------------------------------------------------------------------- the tree


def readline(child: subprocess.Popen[str], timeout: float) -> str:
    """The child's next stdout line; fails (never hangs) if none comes within ``timeout``."""
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    assert ready, f"no line from the child within {timeout} s"
    return child.stdout.readline().strip()


@dataclasses.dataclass
class Tree:
    root: Path
    expected: dict[str, int]  # run id -> rows, as flightlog counted them when it wrote them
    schema_version: dict[str, int]  # run id -> the schema version it was recorded with
    crashed: str
    before_recover: dict[str, int]  # Spark's per-run counts with the crashed run not yet recovered
    writer: subprocess.Popen[str]
    live_parts: dict[str, int]  # the live dev run's published parts: file name -> rows


def rows(schema: Schema, n: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    cols: dict[str, Any] = {
        "iter": i,
        "E": np.exp(-i / 100.0) + rng.random(n) * 1e-3,
        "phase": [("RED", "AMBER", "GREEN")[k % 3] for k in range(n)],
        "accepted": i % 3 != 0,
        "step": rng.random(n).astype(np.float32),
        "note": [f"n{k % 7}" for k in range(n)],
    }
    if "grad_norm" in schema:
        cols["grad_norm"] = rng.random(n)
    return cols


def pyarrow_counts(root: Path) -> Counter[str]:
    """Rows per run of every file the documented glob matches, read with pyarrow."""
    patterns = [
        "fda_run_*/telemetry.parquet",
        "flows/*/dev_telemetry.parquet",
        "flows/*/tuner_telemetry.parquet",
        "flows/*/dev_telemetry/part-*.parquet",
        "flows/*/tuner_telemetry/part-*.parquet",
    ]
    counts: Counter[str] = Counter()
    for pattern in patterns:
        for f in glob.glob(str(root / pattern)):
            counts.update(pq.read_table(f, columns=["run_id"])["run_id"].to_pylist())
    return counts


def spark_counts(spark: Any, root: Path) -> dict[str, int]:
    return {r["run_id"]: r["count"] for r in read_tree(spark, root).groupBy("run_id").count().collect()}


@pytest.fixture(scope="module")
def tree(spark: Any, tmp_path_factory: pytest.TempPathFactory, child_env_module: dict[str, str]) -> Iterator[Tree]:
    root = tmp_path_factory.mktemp("spark") / "root"
    expected: dict[str, int] = {}
    version: dict[str, int] = {}

    def record(run_id: str, schema: Schema, n: int, **kw: Any) -> None:
        with TelemetryManager(root, kw.pop("flow", "solver"), run_id=run_id, schema=schema, **kw) as tm:
            cols = rows(schema, n, seed=len(expected))
            half = n // 2
            tm.extend(**{k: v[:half] for k, v in cols.items()})
            tm.flush()  # two flushes: two segments (merged at close) or two parts
            tm.extend(**{k: v[half:] for k, v in cols.items()})
        expected[tm.run_id] = tm.recorder.stats()["rows_written"]
        version[tm.run_id] = schema.version
        assert expected[tm.run_id] == n

    # Production runs; the schema gains `grad_norm` (version 2) with the third.
    record("20260101_000000", V1, 1000)
    record("20260101_000001", V1, 2500)
    record("20260102_000000", V2, 700)

    # A run killed with SIGKILL mid-recording: its two flushes are durable, in segments.
    crashed = "20260103_000000"
    with subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(root), crashed, V2.to_json()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env_module,
    ) as child:
        try:
            durable = readline(child, timeout=120)
            assert durable == "1300", f"crash child said {durable!r}"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert (root / f"fda_run_{crashed}" / "segments").is_dir()

    # Append-mode runs of one flow: dev parts, compacted, then more parts beside the
    # compacted file (one with the new schema); and a tuner run.
    for k in range(3):
        record(f"20260105_00000{k}", V1, 300 + 10 * k, flow="tuning", mode="dev", sampling=None)
    report = flightlog.compact(root, "tuning")
    assert report["telemetry"]["parts_merged"] == 6 and report["telemetry"]["rows"] == 930
    record("20260105_000003", V1, 120, flow="tuning", mode="dev", sampling=None)
    record("20260105_000004", V2, 80, flow="tuning", mode="dev", sampling=None)
    record("20260106_000000", V1, 150, flow="grid", mode="tuner", trial_id="t7", sampling=None)
    assert (root / "flows" / "tuning" / "dev_telemetry.parquet").exists()
    assert len(list((root / "flows" / "tuning" / "dev_telemetry").glob("part-*.parquet"))) == 4

    # Spark before `recover`: the crashed run has no final file yet, so it is not read.
    before = spark_counts(spark, root)

    rep = flightlog.recover(root)
    assert [r["run_id"] for r in rep.recovered] == [crashed] and rep.errors == []
    expected[crashed] = read_manifest(root / f"fda_run_{crashed}")["counts"]["rows_written"]
    version[crashed] = V2.version
    # Every row whose extend() returned: the two flushes and the 100 rows after them.
    assert expected[crashed] == rep.recovered[0]["telemetry_rows"] == 1400

    # flightlog's counts are what pyarrow reads from the files the glob matches.
    assert pyarrow_counts(root) == expected

    # The concurrent writer, running during every read of every test.
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER_CHILD, str(root), V1.to_json()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env_module,
    )
    temps: list[Path] = []
    try:
        assert readline(writer, timeout=120) == "ready"
        live_run = root / "fda_run_20260109_000000"
        live_parts_dir = root / "flows" / "tuning" / "dev_telemetry"
        live_parts = {
            p.name: pq.ParquetFile(p).metadata.num_rows for p in sorted(live_parts_dir.glob("part-20260109_000001-*"))
        }
        assert list(live_parts.values()) == [10, 10, 10]
        assert len(list((live_run / "segments").glob("telemetry-*.parquet"))) >= 3
        assert not (live_run / "telemetry.parquet").exists()
        # Flushes in progress, caught half-written: the first half of a published file
        # under the writer's temp name (`.NAME.tmp-RANDOM`, beside where NAME will appear).
        # Real ones come and go under segments/ all the time; these two stay.
        for published, temp in [
            (
                next((live_run / "segments").glob("telemetry-*.parquet")),
                live_run / "segments" / ".telemetry-999999.parquet.tmp-spark",
            ),
            (
                live_parts_dir / next(iter(live_parts)),
                live_parts_dir / ".part-20260109_000001-000004.parquet.tmp-spark",
            ),
        ]:
            data = published.read_bytes()
            temp.write_bytes(data[: len(data) // 2])
            temps.append(temp)
        yield Tree(root, expected, version, crashed, before, writer, live_parts)
    finally:
        for t in temps:
            t.unlink(missing_ok=True)
        with contextlib.suppress(BrokenPipeError):  # the writer died: its stderr says why
            writer.stdin.write("stop\n")
            writer.stdin.flush()
        try:
            _out, err = writer.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            writer.kill()
            _out, err = writer.communicate()
        assert writer.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def child_env_module() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- tests


def test_spark_counts_every_run_exactly(spark, tree):
    counts = spark_counts(spark, tree.root)
    live = counts.pop("20260109_000001")  # the dev run being written: its whole parts so far
    assert live % 10 == 0 and live >= 30
    assert "20260109_000000" not in counts  # the production run being written: nothing yet
    assert counts == tree.expected


@pytest.fixture(scope="module")
def per_file(spark: Any, tree: Tree) -> list[dict[str, Any]]:
    """Spark's rows per (file, run_id, run id from the path): one read, while the writer runs."""
    df = read_tree(spark, tree.root).groupBy("file_path", "run_id", "path_run_id").count()
    return [{**r.asDict(), "file_path": local(r["file_path"])} for r in df.collect()]


def test_every_file_is_read_whole_while_runs_are_being_written(spark, tree, per_file):
    """Spark's rows per file equal the file's own row count (pyarrow): no file of the
    live runs, published or in progress, is read half-written, and the live production
    run's segments are not read at all."""
    rows_per_file = Counter[str]()
    for r in per_file:
        rows_per_file[r["file_path"]] += r["count"]
    for path, n in rows_per_file.items():
        assert "/segments/" not in path and "/." not in path, path
        assert n == pq.ParquetFile(path).metadata.num_rows, path
    live = {Path(p).name: n for p, n in rows_per_file.items() if "part-20260109_000001-" in p}
    # Parts published after the tree was set up are read whole too (checked above).
    assert set(tree.live_parts) <= set(live)
    assert all(n == 10 for n in live.values())
    assert tree.writer.poll() is None, "the writer must still be running"

    # Why the documented glob: segments are whole Parquet files that `*.parquet` matches,
    # so a recursive read of the root would take in the running run's rows (and, after a
    # crash, segments beside a final file).
    naive = (
        spark.read.option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "*.parquet")
        .parquet(str(tree.root))
        .inputFiles()
    )
    assert any("/fda_run_20260109_000000/segments/telemetry-" in f for f in naive)


def test_run_id_from_the_path_matches_the_column(tree, per_file):
    with_path = Counter[str]()
    for r in per_file:
        if r["path_run_id"] is None:
            # Only a compacted file holds rows of several runs, with no run id in its path.
            assert r["file_path"].endswith("/flows/tuning/dev_telemetry.parquet"), r
        else:
            assert r["path_run_id"] == r["run_id"], r
            with_path[r["path_run_id"]] += r["count"]
    compacted = {f"20260105_00000{k}" for k in range(3)}
    for rid, n in tree.expected.items():
        assert with_path.get(rid, 0) == (0 if rid in compacted else n), rid


def test_types_values_and_schema_version_read_as_flightlog_wrote_them(spark, tree):
    df = read_tree(spark, tree.root)
    types = dict(df.dtypes)
    for field in V2:
        dtype = "enum" if isinstance(field.dtype, Enum) else field.dtype
        assert types[field.name] == SPARK_TYPES[dtype], field.name
    assert types["run_id"] == types["flow_name"] == types["trial_id"] == "string"

    # Values, column by column, equal pyarrow's read of the same files; a column the
    # run's schema did not have is null. One read of the whole tree (a few thousand rows).
    got: dict[str, list[Any]] = {}
    files: dict[str, set[str]] = {}
    for r in df.select("run_id", "file_path", *V2.names).collect():
        got.setdefault(r["run_id"], []).append(r)
        files.setdefault(r["run_id"], set()).add(r["file_path"])  # as Spark gives it: file:/...
    for rid, n in tree.expected.items():
        schema = V2 if tree.schema_version[rid] == 2 else V1
        table = pa.concat_tables(
            pq.read_table(local(f)).filter(pc.field("run_id") == rid).select(schema.names) for f in sorted(files[rid])
        ).sort_by("iter")
        mine = sorted(got[rid], key=lambda r: r["iter"])
        assert len(mine) == table.num_rows == n, rid
        for name in V2.names:
            want = table[name].to_pylist() if name in schema else [None] * n
            assert [r[name] for r in mine] == want, (rid, name)

    # schema_version: the Parquet key-value metadata, read through Spark's JVM, of every
    # file Spark read: the run's own version (a compacted file: that of its parts).
    for rid, paths in files.items():
        for path in paths:
            kv = spark_kv(spark, path)
            footer = pq.ParquetFile(local(path)).metadata.metadata
            assert kv["schema_version"] == footer[b"schema_version"].decode(), path
            assert kv["flightlog.schema"] == footer[b"flightlog.schema"].decode(), path
            if rid in tree.schema_version:
                assert kv["schema_version"] == str(tree.schema_version[rid]), path


def test_a_crashed_run_is_read_once_recover_has_finalised_it(tree):
    # Before recover the crashed run had only segments: Spark read every other run exactly
    # and none of its rows.
    assert tree.before_recover == {k: v for k, v in tree.expected.items() if k != tree.crashed}
    # After recover it is read with the others (test_spark_counts_every_run_exactly).
    assert tree.schema_version[tree.crashed] == 2
    assert (tree.root / f"fda_run_{tree.crashed}" / "telemetry.parquet").exists()
    assert not (tree.root / f"fda_run_{tree.crashed}" / "segments").exists()


def test_parts_a_dead_compaction_left_behind_are_read_twice_until_recover(spark, tmp_path):
    """The one layout state the glob reads wrong: a compaction that died between
    publishing the merged file and deleting its parts leaves parts that the merged file
    also holds. `flightlog recover` (or the next `compact`) deletes them; the doc says to
    run it before reading a flow whose compaction may have died."""
    root = tmp_path / "root"
    expected = {}
    for k in range(2):
        with TelemetryManager(root, "k", mode="dev", run_id=f"2026020{k}_000000", schema=V1, sampling=None) as tm:
            cols = rows(V1, 40 + k, seed=k)
            tm.extend(**{c: v[:20] for c, v in cols.items()})
            tm.flush()
            tm.extend(**{c: v[20:] for c, v in cols.items()})
        expected[tm.run_id] = 40 + k
    flow = root / "flows" / "k"
    parts = sorted(str(p) for p in (flow / "dev_telemetry").glob("part-*.parquet"))
    assert len(parts) == 4
    # The merged file published, the parts not yet deleted (as in test_runs.py).
    flightlog._core.merge_parquet(str(flow / "dev_telemetry.parquet"), parts)
    assert spark_counts(spark, root) == {rid: 2 * n for rid, n in expected.items()}

    rep = flightlog.recover(root)
    assert rep.leftover_parts_removed == 4 and rep.errors == []
    assert spark_counts(spark, root) == expected

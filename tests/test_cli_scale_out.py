"""The ``flightlog`` command line on object-store roots and DuckLake catalogs.

Real subprocess runs of ``python -m flightlog.cli`` against moto's S3 server and a
throwaway PostgreSQL cluster (tests/conftest_servers.py). The runs are recorded by
the real ``TelemetryManager`` straight onto the ``s3://`` root; the CLI gets its S3
settings from the ``AWS_*`` environment only, as a user's shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error as one_line_error
from conftest import follow_tail
from flightlog import Field, Schema, TelemetryManager

PYTHON = sys.executable
SCHEMA = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64")])
LAKE_EXTENSIONS = ("httpfs", "ducklake", "postgres_scanner")


@pytest.fixture
def needs_lake() -> None:
    """The DuckDB extension wheels of flightlog[lake] (skip, or fail in CI, without them)."""
    from conftest_servers import require_lake_extensions

    require_lake_extensions()


def aws_env(bucket) -> dict[str, str]:
    """What a user exports to reach the bucket (the CLI has no S3 flags)."""
    return {
        "AWS_ENDPOINT_URL": bucket.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m flightlog.cli ARGS`` with the catalog/root variables cleared, plus ``env``."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in ("FLIGHTLOG_ROOT", "FLIGHTLOG_DB", "FLIGHTLOG_CATALOG")
    }
    full_env.update(PYTHONUNBUFFERED="1", FLIGHTLOG_PLAIN="1")
    full_env.pop("FLIGHTLOG_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run(
        [PYTHON, "-m", "flightlog.cli", *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def as_json(proc: subprocess.CompletedProcess[str]) -> object:
    return json.loads(ok(proc))


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A one-line ``flightlog: error:`` with every needle, exit status 1 (conftest's helper)."""
    one_line_error(proc, *needles, status=1)


def record(root: str, bucket, run_id: str, n: int, *, flow: str = "gd", mode: str = "run", lr: float = 0.1) -> str:
    """A run of ``n`` rows (E = 1/(iter+1)) and one CERT_PASS event, written to ``root`` in the bucket."""
    options = {} if mode == "run" else {"sampling": None}
    with TelemetryManager(
        root,
        flow,
        run_id=run_id,
        mode=mode,
        schema=SCHEMA,
        params={"lr": lr},
        storage_options=bucket.storage_options,
        **options,
    ) as tm:
        it = np.arange(n, dtype=np.int64)
        tm.extend(iter=it, t_wall_ms=it * 2.0, E=1.0 / (it + 1.0))
        tm.event("CERT_PASS", {"gap": 0.5})
    return tm.run_id


@pytest.fixture
def s3_runs(needs_lake, s3_bucket):
    """Two production runs and a dev run recorded on ``s3://<bucket>/tele``: (bucket, root, {run_id: rows})."""
    root = s3_bucket.url("tele")
    rows = {
        record(root, s3_bucket, "20260101_000001", 60, lr=0.1): 60,
        record(root, s3_bucket, "20260101_000002", 80, lr=0.2): 80,
        record(root, s3_bucket, "D1", 30, flow="devflow", mode="dev"): 30,
    }
    return s3_bucket, root, rows


# --------------------------------------------------------------------------- s3 root, embedded catalog


def test_s3_root_with_a_local_db_file(s3_runs, tmp_path: Path) -> None:
    bucket, root, rows = s3_runs
    env = aws_env(bucket)
    db = tmp_path / "x.db"

    # Before any catalog: the runs come from the manifests in the bucket.
    runs = as_json(cli("runs", "--root", root, "--format", "json", env=env))
    assert {r["run_id"]: r["rows"] for r in runs} == rows
    assert {r["status"] for r in runs} == {"finished"}
    assert {r["mode"] for r in runs} == {"run", "dev"}
    assert all(r["final_E"] is None for r in runs)

    # The catalog commands say what they need, in one line; nothing local appears.
    assert_one_line_error(cli("query", "SELECT 1", "--root", root, env=env), root, "--db", "--catalog")
    assert_one_line_error(cli("consolidate", "--root", root, env=env), "--db")
    assert not list(Path.cwd().glob("s3:*"))

    rep = as_json(cli("consolidate", "--root", root, "--db", str(db), "--format", "json", env=env))
    assert rep["files_added"] == 2 * len(rows) and rep["files_skipped"] == []
    assert db.exists()
    again = ok(cli("consolidate", "--root", root, "--db", str(db), env=env))
    assert f"consolidated {root} into {db}" in again and "0 file" in again

    got = as_json(
        cli(
            "query",
            "SELECT run_id, count(*) AS n, min(E) AS lo FROM telemetry GROUP BY run_id ORDER BY run_id",
            "--root",
            root,
            "--db",
            str(db),
            "--format",
            "json",
            env=env,
        )
    )
    assert {r["run_id"]: r["n"] for r in got} == rows
    assert {r["run_id"]: r["lo"] for r in got} == {rid: 1.0 / n for rid, n in rows.items()}

    # runs: final/min of E from the catalog now.
    runs = as_json(cli("runs", "--root", root, "--db", str(db), "--format", "json", env=env))
    assert {r["run_id"]: r["final_E"] for r in runs} == {rid: 1.0 / n for rid, n in rows.items()}

    # The root and the catalog from the environment instead of flags.
    env_only = {**env, "FLIGHTLOG_ROOT": root, "FLIGHTLOG_DB": str(db)}
    assert as_json(cli("query", "SELECT count(*) AS n FROM runs", "--format", "json", env=env_only)) == [{"n": 3}]

    cmp = as_json(
        cli("compare", "20260101_000001", "20260101_000002", "--params", "lr", "--format", "json", env=env_only)
    )
    assert [(r["run_id"], r["rows"], r["lr"], r["min"]) for r in cmp] == [
        ("20260101_000001", 60, 0.1, 1 / 60),
        ("20260101_000002", 80, 0.2, 1 / 80),
    ]
    grouped = as_json(cli("compare", "--flow", "gd", "--group-by", "params.lr", "--format", "json", env=env_only))
    assert [g["lr"] for g in grouped] == [0.1, 0.2]


def test_show_tail_and_plot_read_the_bucket(s3_runs, tmp_path: Path) -> None:
    bucket, root, _ = s3_runs
    env = aws_env(bucket)

    shown = as_json(cli("show", "20260101_000002", "--root", root, "--format", "json", env=env))
    assert shown["source"] == "files" and shown["path"] == f"{root}/fda_run_20260101_000002"
    assert shown["run"]["status"] == "finished"
    assert {c["column"]: c["count"] for c in shown["columns"]}["E"] == 80
    assert [e["event"] for e in shown["events"]] == ["RUN_STARTED", "CERT_PASS", "RUN_FINISHED"]
    table = ok(cli("show", "D1", "--root", root, env=env))
    assert f"path     {root}/flows/devflow" in table and "CERT_PASS" in table

    lines = [
        json.loads(x)
        for x in ok(cli("tail", "20260101_000001", "--root", root, "--format", "json", env=env)).splitlines()
    ]
    assert lines[-1] == {"end": True, "status": "finished", "rows": 60, "events": 3}
    assert lines[0]["file"] == "telemetry.parquet" and lines[0]["rows"] == 60 and lines[0]["E"] == 1 / 60
    dev = [json.loads(x) for x in ok(cli("tail", "D1", "--root", root, "--format", "json", env=env)).splitlines()]
    assert dev[-1]["end"] is True and sum(x.get("rows", 0) for x in dev[:-1]) == 30

    png = tmp_path / "p.png"
    ok(cli("plot", "20260101_000001", "D1", "--root", root, "-o", str(png), env=env))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert_one_line_error(cli("show", "nope", "--root", root, env=env), "no run 'nope'", root)


def writer_script(root: str, body: str) -> str:
    """A child process's script: the imports, ``root`` and an (iter i64, E f64) ``schema``, then
    ``body``, which records a run of flow ``writer`` there and prints its run id first."""
    header = f"""
import os
import time
import numpy as np
from flightlog import TelemetryManager, Schema, Field
root = {root!r}
schema = Schema([Field("iter", "i64"), Field("E", "f64")])
"""
    return header + textwrap.dedent(body)


def _two_telemetry_segments(lines: list[dict]) -> bool:
    return sum(x.get("file", "").startswith("telemetry-") for x in lines) >= 2


def test_tail_follows_a_running_run_in_the_bucket(needs_lake, s3_bucket, tmp_path: Path) -> None:
    root = s3_bucket.url("live")
    env = aws_env(s3_bucket)
    stop = tmp_path / "stop-writer"
    script = writer_script(
        root,
        f"""
        with TelemetryManager(root, "writer", schema=schema, flush_interval=0.1) as tm:
            print(tm.run_id, flush=True)
            t0 = time.monotonic(); i = 0
            while not os.path.exists({str(stop)!r}) and time.monotonic() - t0 < 60:
                tm.record(i, 1.0 / (i + 1)); i += 1
                if i % 200 == 0:
                    time.sleep(0.01)
        """,
    )
    with subprocess.Popen(
        [PYTHON, "-c", script], stdout=subprocess.PIPE, text=True, env={**os.environ, **env}
    ) as writer:
        assert writer.stdout is not None
        run_id = writer.stdout.readline().strip()
        argv = [PYTHON, "-m", "flightlog.cli", "tail", run_id, "--root", root, "--interval", "0.1", "--format", "json"]
        status, lines, err = follow_tail(argv, env, stop, _two_telemetry_segments)
        writer.wait(timeout=60)
    assert status == 0, err
    assert lines[-1]["end"] is True and lines[-1]["status"] == "finished"
    segments = [x for x in lines if x.get("file", "").startswith("telemetry-")]
    assert len(segments) >= 2, lines
    assert all(x["rows"] > 0 for x in segments)
    assert lines[-1]["rows"] >= segments[-1]["total_rows"]


def test_recover_finalises_a_crashed_run_in_the_bucket(needs_lake, s3_bucket) -> None:
    root = s3_bucket.url("crash")
    env = aws_env(s3_bucket)
    script = writer_script(
        root,
        """
        tm = TelemetryManager(root, "writer", schema=schema, segment_rows=100)
        print(tm.run_id, flush=True)
        tm.extend(iter=np.arange(250), E=np.ones(250))
        tm.flush()
        os._exit(1)
        """,
    )
    proc = subprocess.run(
        [PYTHON, "-c", script], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    run_id = proc.stdout.strip()
    assert run_id, proc.stderr
    assert any("/segments/" in k for k in s3_bucket.keys("crash/"))

    # By evidence (its process is gone) the run is crashed before recover says so.
    runs = as_json(cli("runs", "--root", root, "--format", "json", env=env))
    assert [(r["run_id"], r["status"]) for r in runs] == [(run_id, "crashed")]

    report = as_json(cli("recover", "--root", root, "--format", "json", env=env))
    assert report["root"] == root and report["errors"] == []
    assert [(r["run_id"], r["previous_status"], r["status"]) for r in report["recovered"]] == [
        (run_id, "running", "crashed")
    ]
    assert report["recovered"][0]["telemetry_rows"] == 250
    assert f"crash/fda_run_{run_id}/telemetry.parquet" in s3_bucket.keys("crash/")
    assert not [k for k in s3_bucket.keys("crash/") if "/segments/" in k]
    again = cli("recover", "--root", root, env=env)
    assert "recovered 0 run(s)" in ok(again)


def test_local_only_commands_and_bad_roots_are_one_line_errors(s3_bucket) -> None:
    env = aws_env(s3_bucket)
    root = s3_bucket.url("tele")
    assert_one_line_error(cli("compact", "gd", "--root", root, env=env), "local roots only", "consolidate")
    assert_one_line_error(cli("compact", "gd", env={**env, "FLIGHTLOG_ROOT": root}), "local roots only")
    assert_one_line_error(cli("demo", "--quick", "--root", root, env=env), "local root")
    for bad in ("gs://bucket/x", "s3:/bucket/x", "https://example.com/x"):
        assert_one_line_error(cli("runs", "--root", bad, env=env), "s3://bucket/prefix")
    assert_one_line_error(cli("runs", "--root", "s3://Bad_Bucket/x", env=env), "bucket name")
    missing = cli("runs", "--root", "s3://no-such-bucket-here/x", env=env)
    assert_one_line_error(missing, "NoSuchBucket")
    assert "<Error>" not in missing.stderr
    assert not list(Path.cwd().glob("s3:*")) and not list(Path.cwd().glob("gs:*"))


def test_db_and_catalog_options_exclude_each_other(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    proc = cli("query", "SELECT 1", "--root", root, "--db", "x.db", "--catalog", "ducklake:x.ducklake")
    assert_one_line_error(proc, "--catalog and --db")
    env = {"FLIGHTLOG_DB": "x.db", "FLIGHTLOG_CATALOG": "ducklake:x.ducklake"}
    assert_one_line_error(cli("query", "SELECT 1", "--root", root, env=env), "FLIGHTLOG_CATALOG", "FLIGHTLOG_DB")
    assert_one_line_error(cli("query", "SELECT 1", "--root", root, "--catalog", "sqlite:x"), "--catalog must be")


def test_local_root_with_db_elsewhere_and_a_ducklake_file(needs_lake, tmp_path: Path) -> None:
    root = tmp_path / "root"
    schema = Schema([Field("iter", "i64"), Field("E", "f64")])
    with TelemetryManager(root, "gd", run_id="L1", schema=schema) as tm:
        tm.extend(iter=np.arange(5), E=np.arange(5.0))
    db = tmp_path / "elsewhere" / "cat.db"
    ok(cli("consolidate", "--root", str(root), "--db", str(db)))
    assert db.exists() and not (root / "duckdb.db").exists()
    assert as_json(
        cli("query", "SELECT count(*) AS n FROM telemetry", "--root", str(root), "--db", str(db), "--format", "json")
    ) == [{"n": 5}]

    lake = f"ducklake:{tmp_path / 'meta.ducklake'}"
    assert_one_line_error(cli("query", "SELECT 1", "--root", str(root), "--catalog", lake), "consolidate")
    rep = as_json(cli("consolidate", "--root", str(root), "--catalog", lake, "--format", "json"))
    assert rep["files_added"] == 2
    env = {"FLIGHTLOG_CATALOG": lake}
    runs = as_json(cli("runs", "--root", str(root), "--format", "json", env=env))
    assert [(r["run_id"], r["final_E"]) for r in runs] == [("L1", 4.0)]


# --------------------------------------------------------------------------- DuckLake on PostgreSQL


def test_ducklake_postgres_catalog_over_an_s3_root(s3_runs, postgres_dsn: str) -> None:
    bucket, root, rows = s3_runs
    env = aws_env(bucket)
    catalog = f"ducklake:postgres:{postgres_dsn}"
    base = ["--root", root, "--catalog", catalog]

    assert_one_line_error(cli("query", "SELECT 1", *base, env=env), "consolidate")

    rep = as_json(cli("consolidate", *base, "--format", "json", env=env))
    assert rep["files_added"] == 2 * len(rows) and rep["files_skipped"] == []
    table = ok(cli("consolidate", *base, env=env))
    assert "ducklake:postgres:" in table and "0 file" in table
    # The lake's data files live below the root, in the bucket.
    assert not [k for k in bucket.keys("tele/lake/") if not k.endswith(".parquet")]

    got = as_json(
        cli("query", "SELECT run_id, count(*) AS n FROM telemetry GROUP BY run_id", *base, "--format", "json", env=env)
    )
    assert {r["run_id"]: r["n"] for r in got} == rows

    env_cat = {**env, "FLIGHTLOG_ROOT": root, "FLIGHTLOG_CATALOG": catalog}
    cmp = as_json(cli("compare", "20260101_000001", "20260101_000002", "D1", "--format", "json", env=env_cat))
    assert [(r["run_id"], r["rows"], r["last"]) for r in cmp] == [
        ("20260101_000001", 60, 1 / 60),
        ("20260101_000002", 80, 1 / 80),
        ("D1", 30, 1 / 30),
    ]
    runs = as_json(cli("runs", "--format", "json", env=env_cat))
    assert {r["run_id"]: r["min_E"] for r in runs} == {rid: 1.0 / n for rid, n in rows.items()}
    shown = as_json(cli("show", "D1", "--format", "json", env=env_cat))
    assert shown["source"] == "catalog" and {c["column"]: c["count"] for c in shown["columns"]}["E"] == 30

"""Every error a user meets is a flightlog error; no secret is written down (issue 14, part 4).

Catalog I/O errors go through real servers and real files: SeaweedFS enforces S3
credentials (a wrong secret gets HTTP 403), moto answers for a bucket that does not
exist, and a ``duckdb.db`` that is not a database cannot be read. Provenance is read
back from the ``manifest.toml`` of a run recorded in a child process whose
``sys.argv`` carries the secrets.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

import flightlog
from conftest import assert_one_line_error
from conftest_servers import WEED_ACCESS, Bucket
from flightlog import CatalogError, DuckDBManager, FlightlogError, Schema, TelemetryManager, read_manifest
from flightlog import Field as F

SCHEMA = Schema([F("iter", "i64"), F("t_wall_ms", "f64"), F("E", "f64")])


def _needs_httpfs() -> None:
    """DuckDB reads s3:// through the lake extra's httpfs wheel (skipped, declared, on the
    DuckDB 2 line, which has no such wheel; a failure in CI on the 1.5.5 line)."""
    from conftest_servers import require_lake_extensions

    require_lake_extensions()


def make_root(root: Path, runs: int = 2) -> list[str]:
    ids = []
    for r in range(runs):
        with TelemetryManager(root, "gd", run_id=f"r{r}", schema=SCHEMA) as tm:
            for i in range(10):
                tm.log(iter=i, t_wall_ms=float(i), E=1.0 / (i + 1))
            ids.append(tm.run_id)
    return ids


def assert_catalog_error(excinfo: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    err = excinfo.value
    assert isinstance(err, CatalogError) and isinstance(err, FlightlogError)
    assert isinstance(err.__cause__, duckdb.IOException), repr(err.__cause__)
    # DuckDB's message is kept
    assert str(err.__cause__).strip().splitlines()[0] in str(err)
    for n in needles:
        assert n.lower() in str(err).lower(), str(err)


# --------------------------------------------------------------------------- catalog errors


class WeedBucket(Bucket):
    access = WEED_ACCESS


def test_wrong_s3_secret_is_a_catalog_error(tmp_path, request):
    _needs_httpfs()
    bucket = WeedBucket.create(request.getfixturevalue("seaweed_server"))
    try:
        make_root(tmp_path / "local")
        bucket.upload_tree(tmp_path / "local", "prod")
        wrong = {**bucket.storage_options, "aws_secret_access_key": "not-the-secret"}
        db = DuckDBManager(bucket.url("prod"), db_path=tmp_path / "cat.duckdb", storage_options=wrong)
        with pytest.raises(CatalogError) as excinfo:
            db.consolidate()
        assert_catalog_error(excinfo, "403")
        assert isinstance(excinfo.value.__cause__, duckdb.HTTPException)
        assert "not-the-secret" not in str(excinfo.value)
        live = DuckDBManager(bucket.url("prod"), files_only=True, storage_options=wrong)
        with pytest.raises(CatalogError) as excinfo:
            live.live("r0")
        assert_catalog_error(excinfo, "403")
        # the right secret works: the error was the secret, nothing else
        good = DuckDBManager(
            bucket.url("prod"), db_path=tmp_path / "cat2.duckdb", storage_options=bucket.storage_options
        )
        assert good.consolidate().runs_added == 2
    finally:
        for key in bucket.keys():
            bucket.client.delete_object(Bucket=bucket.name, Key=key)
        bucket.client.delete_bucket(Bucket=bucket.name)


def test_missing_bucket_is_a_catalog_error(tmp_path, s3_bucket):
    _needs_httpfs()
    make_root(tmp_path / "local")
    s3_bucket.upload_tree(tmp_path / "local", "prod")
    url = s3_bucket.url("prod").replace(s3_bucket.name, s3_bucket.name + "-missing")
    db = DuckDBManager(url, files_only=True, storage_options=s3_bucket.storage_options)
    with pytest.raises(CatalogError) as excinfo:
        db.live("r0")
    assert_catalog_error(excinfo, s3_bucket.name + "-missing")


@pytest.fixture
def corrupt_catalog(tmp_path) -> Path:
    root = tmp_path / "root"
    make_root(root)
    DuckDBManager(root).consolidate()
    db_file = root / "duckdb.db"
    # A real unreadable catalog: the file is there, its header is not DuckDB's.
    db_file.write_bytes(b"this is not a duckdb database\n" * 4096)
    return root


@pytest.mark.parametrize(
    "call",
    [
        lambda db: db.consolidate(),
        lambda db: db.query("SELECT count(*) FROM telemetry"),
        lambda db: db.runs(),
        lambda db: db.telemetry("r0"),
        lambda db: db.events("r0"),
        lambda db: db.compare(["r0", "r1"]),
    ],
    ids=["consolidate", "query", "runs", "telemetry", "events", "compare"],
)
def test_unreadable_catalog_is_a_catalog_error(corrupt_catalog, call):
    db = DuckDBManager(corrupt_catalog, timeout=5)
    with pytest.raises(CatalogError) as excinfo:
        call(db)
    assert_catalog_error(excinfo, str(corrupt_catalog / "duckdb.db"))


def test_bad_sql_stays_a_duckdb_error(tmp_path):
    # The documented rule: query()'s own SQL errors are duckdb.Error, not CatalogError.
    root = tmp_path / "root"
    make_root(root)
    db = DuckDBManager(root)
    db.consolidate()
    with pytest.raises(duckdb.Error) as excinfo:
        db.query("SELEC nonsense")
    assert not isinstance(excinfo.value, CatalogError)
    with pytest.raises(ValueError, match="no telemetry column"):
        db.compare(["r0"], metric="nope")


def test_cli_reports_an_unreadable_catalog_in_one_line(corrupt_catalog):
    proc = subprocess.run(
        [sys.executable, "-m", "flightlog.cli", "--root", str(corrupt_catalog), "--timeout", "5", "query", "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert_one_line_error(proc, "duckdb.db", status=1)


def test_catalog_error_is_public():
    assert "CatalogError" in flightlog.__all__
    assert issubclass(flightlog.CatalogError, flightlog.FlightlogError)
    assert issubclass(flightlog.CatalogError, OSError)
    assert "CatalogError" in (flightlog._errors.__doc__ or "")


# --------------------------------------------------------------------------- secrets in provenance

SECRETS = {
    # argv item(s) -> what the manifest must hold instead
    "opt_eq": (["--aws-secret-access-key=AKsecret1"], ["--aws-secret-access-key=<redacted>"]),
    "opt_space": (["--password", "hunter2"], ["--password", "<redacted>"]),
    "token": (["--token", "tok-secret3"], ["--token", "<redacted>"]),
    "api_key": (["--api-key=key-secret4"], ["--api-key=<redacted>"]),
    "api_key_underscore": (["--API_KEY", "key-secret5"], ["--API_KEY", "<redacted>"]),
    "passwd": (["--db-passwd=pw-secret6"], ["--db-passwd=<redacted>"]),
    "secret": (["--client-secret", "cs-secret7"], ["--client-secret", "<redacted>"]),
    "dsn_key_value": (
        ["host=db user=me password=dsn-secret8 dbname=x"],
        ["host=db user=me password=<redacted> dbname=x"],
    ),
    "dsn_quoted": (
        ["--dsn", "host=db password='q secret9' dbname=x"],
        ["--dsn", "host=db password=<redacted> dbname=x"],
    ),
    "dsn_url": (["--db=postgresql://me:url-secret10@db:5432/x"], ["--db=postgresql://me:<redacted>@db:5432/x"]),
    "url_userinfo": (["https://bob:http-secret11@example.com/data"], ["https://bob:<redacted>@example.com/data"]),
    "override": (["db.token=ov-secret12"], ["db.token=<redacted>"]),
}
KEPT = ["--lr=0.1", "--max-tokens", "100", "--tokenizer", "gpt2", "--passes", "3", "s3://bucket/prefix", "user@host"]

_RECORD = textwrap.dedent(
    """
    import json, sys
    from flightlog import Field, Schema, TelemetryManager
    root, options = sys.argv[1], json.loads(sys.argv[2])
    sys.argv = ["train.py", *sys.argv[3:]]
    kwargs = {} if options is None else {"provenance": options}
    with TelemetryManager(root, "gd", schema=Schema([Field("iter", "i64")]), **kwargs) as tm:
        tm.log(iter=0)
    print(tm.manifest_path)
    """
)


def record_with_argv(root: Path, argv: list[str], options: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _RECORD, str(root), json.dumps(options), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.name == "manifest.toml"
    text = path.read_text(encoding="utf-8")
    return {"manifest": read_manifest(path.parent), "text": text, "folder": path.parent}


@pytest.mark.parametrize("case", sorted(SECRETS))
def test_secret_in_argv_is_redacted_in_the_manifest(tmp_path, case):
    given, expected = SECRETS[case]
    got = record_with_argv(tmp_path / "root", [*given, *KEPT])
    argv = got["manifest"]["provenance"]["argv"]
    assert argv == ["train.py", *expected, *KEPT]
    secrets = re.findall(r"[\w-]*secret\d+|hunter2", " ".join(given))
    assert secrets
    for secret in secrets:
        assert secret not in got["text"]


def test_redacted_argv_reaches_the_catalog(tmp_path):
    root = tmp_path / "root"
    record_with_argv(root, ["--password", "hunter2", "--db=postgresql://me:pw9@db/x"])
    db = DuckDBManager(root)
    db.consolidate()
    (argv,) = db.query("SELECT argv FROM runs").fetchone()
    assert "hunter2" not in str(argv) and "pw9" not in str(argv)
    assert "<redacted>" in str(argv)
    assert "hunter2" not in (root / "duckdb.db").read_bytes().decode("latin-1")


def test_provenance_argv_false_leaves_argv_out(tmp_path):
    got = record_with_argv(tmp_path / "root", ["--password", "hunter2"], {"argv": False})
    assert "argv" not in got["manifest"]["provenance"]
    assert "hunter2" not in got["text"]
    assert got["manifest"]["provenance"]["pid"] > 0  # the rest of provenance stays


def test_provenance_extra_redact_patterns(tmp_path):
    got = record_with_argv(tmp_path / "root", ["--run-name", "customer-ACME-42", "--lr=0.1"], {"redact": [r"ACME-\d+"]})
    assert got["manifest"]["provenance"]["argv"] == ["train.py", "--run-name", "customer-<redacted>", "--lr=0.1"]


@pytest.mark.parametrize(
    ("options", "error", "needle"),
    [
        ({"argvs": False}, ValueError, "unknown option"),
        ({"argv": "no"}, TypeError, "provenance['argv']"),
        ({"redact": ["("]}, ValueError, "bad regular expression"),
        ({"redact": [3]}, TypeError, "regular expressions"),
        (["argv"], TypeError, "provenance must be a dict"),
    ],
)
def test_bad_provenance_options_are_refused_before_any_file(tmp_path, options, error, needle):
    with pytest.raises(error, match=None) as excinfo:
        TelemetryManager(tmp_path / "root", "gd", schema=SCHEMA, provenance=options)
    assert needle in str(excinfo.value)
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").iterdir())


def test_catalog_dsn_redaction_is_shared(tmp_path):
    # The catalog's masking of DSNs in messages uses the same module as provenance.
    from flightlog import _redact
    from flightlog.catalog import lake as _catalog

    assert _catalog._redact is _redact.redact_dsn
    assert _catalog._redact("host=h password=pw dbname=d") == "host=h password=*** dbname=d"

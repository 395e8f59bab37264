"""The catalog across DuckDB versions (issue 17): ``duckdb.db`` records the DuckDB that wrote
it; a file this DuckDB cannot read (written by the other DuckDB line, corrupt, or not a
database) gives a message saying exactly that, ``consolidate`` rebuilds it from the run tree
keeping the old file beside it, and ``runs``/``show``/``tail``/``recover`` answer from the
run tree, saying so on stderr.

The other DuckDB line: DuckDB reads older storage versions, never newer ones, so a 2.x file
is unreadable under 1.5.5 while 2.x reads a 1.5.5 file. ``make wheel-test`` runs the suite
in a 1.5.5 venv and a 2.x venv and points each at the other's interpreter through
``FLIGHTLOG_OTHER_DUCKDB_PYTHON``, so each line writes the file the other then opens.
Without it (a dev venv) the cross-line tests skip, or fail under FLIGHTLOG_REQUIRE_SERVERS=1."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import duckdb
import numpy as np
import pytest

from conftest_servers import unavailable
from flightlog import CatalogUnavailableError, DuckDBManager, Field, Schema, TelemetryManager
from flightlog.cli import main

SCHEMA = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64")], version=3)
SHOW_RUN_IDS = "import duckdb, sys; print(duckdb.connect(sys.argv[1]).sql('SELECT run_id FROM runs').fetchall())"
OTHER = os.environ.get("FLIGHTLOG_OTHER_DUCKDB_PYTHON", "")


def make_run(root: Path, run_id: str, n: int = 5) -> None:
    with TelemetryManager(root, "gd", run_id=run_id, schema=SCHEMA) as tm:
        it = np.arange(n, dtype=np.int64)
        tm.extend(iter=it, t_wall_ms=it * 2.0, E=1.0 / (it + 1.0))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def other_duckdb() -> tuple[str, str]:
    """(python, DuckDB version) of the venv holding the other DuckDB line."""
    if not OTHER:
        unavailable("FLIGHTLOG_OTHER_DUCKDB_PYTHON (a python with the other DuckDB line) is not set")
    version = subprocess.run(
        [OTHER, "-c", "import duckdb; print(duckdb.__version__)"], capture_output=True, text=True, timeout=120
    )
    assert version.returncode == 0, version.stderr
    theirs = version.stdout.strip()
    assert theirs.split(".")[0] != duckdb.__version__.split(".")[0], (theirs, duckdb.__version__)
    return OTHER, theirs


def write_with(python: str, root: Path) -> None:
    """Consolidates ``root`` with ``python``'s flightlog and DuckDB, in a subprocess: the
    catalog a user of the other DuckDB line leaves behind."""
    code = "import sys\nfrom flightlog import DuckDBManager\nDuckDBManager(sys.argv[1]).consolidate()\n"
    proc = subprocess.run([python, "-c", code, str(root)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def corrupt_header(path: Path) -> bytes:
    """Flips one byte of ``path``'s main header (after its checksum); returns the new bytes."""
    data = bytearray(path.read_bytes())
    data[12] ^= 0x01  # the storage version number: the header checksum no longer matches
    path.write_bytes(bytes(data))
    return bytes(data)


# --------------------------------------------------------------------------- recording the version


def test_consolidate_records_the_duckdb_that_wrote_the_catalog(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    db = DuckDBManager(tmp_path)
    db.consolidate()
    sidecar = tomllib.loads((tmp_path / "duckdb.db.version").read_text())
    assert sidecar["duckdb_version"] == duckdb.__version__
    assert sidecar["storage_version"].startswith("v")
    table = dict(db.query("SELECT key, value FROM _flightlog.catalog_writer").fetchall())
    assert table["duckdb_version"] == duckdb.__version__
    assert table["storage_version"] == sidecar["storage_version"]
    from flightlog.catalog import read_catalog_version

    info = read_catalog_version(tmp_path / "duckdb.db")
    assert info["header_duckdb_version"] == duckdb.__version__
    assert isinstance(info["header_storage_number"], int)
    # The catalog's own tables are unchanged: the record is in a schema of its own.
    assert {r[0] for r in db.query("SHOW TABLES").fetchall()} == {"runs", "telemetry", "events", "_ingested_files"}


# --------------------------------------------------------------------------- unreadable files, any venv


@pytest.mark.parametrize("kind", ["empty", "corrupt"])
def test_an_unreadable_catalog_is_named_and_rebuilt(tmp_path: Path, capsys, kind: str) -> None:
    make_run(tmp_path, "a")
    make_run(tmp_path, "b", n=7)
    db_file = tmp_path / "duckdb.db"
    if kind == "empty":
        bad = b""
        db_file.write_bytes(bad)
        kept_name, what = "duckdb.db.unreadable.bak", "is empty, not a DuckDB database"
    else:
        DuckDBManager(tmp_path).consolidate()
        bad = corrupt_header(db_file)
        kept_name, what = f"duckdb.db.duckdb-{duckdb.__version__}.bak", "duckdb.db is corrupt"

    # Reads say what happened and how to get out, as a flightlog error (no raw DuckDB error).
    with pytest.raises(CatalogUnavailableError, match=what) as e:
        DuckDBManager(tmp_path).query("SELECT 1")
    assert "`flightlog consolidate`" in str(e.value) and kept_name in str(e.value)
    rc, out, err = cli(capsys, "query", "SELECT count(*) FROM runs", "--root", str(tmp_path))
    assert rc == 1 and what in err and len(err.strip().splitlines()) == 1

    # runs and show answer from the run tree, with one line on stderr.
    rc, out, err = cli(capsys, "runs", "--root", str(tmp_path), "--format", "csv")
    assert rc == 0 and out.splitlines()[1].startswith("a,gd,run,finished") and out.splitlines()[2].startswith("b,")
    assert len(err.strip().splitlines()) == 1 and "catalog unreadable" in err and what in err
    rc, out, err = cli(capsys, "show", "b", "--root", str(tmp_path))
    assert rc == 0 and "run b" in out and "columns (durable files)" in out
    assert len(err.strip().splitlines()) == 1 and what in err

    # consolidate rebuilds from the run tree and keeps the old bytes beside it.
    rc, out, err = cli(capsys, "consolidate", "--root", str(tmp_path))
    assert rc == 0 and f"rebuilt it from the run tree (the old file is kept as {kept_name})" in err
    assert (tmp_path / kept_name).read_bytes() == bad
    db = DuckDBManager(tmp_path)
    assert db.query("SELECT run_id, count(*) FROM telemetry GROUP BY ALL ORDER BY 1").fetchall() == [("a", 5), ("b", 7)]
    rc, out, err = cli(capsys, "runs", "--root", str(tmp_path), "--format", "csv")
    assert rc == 0 and err == "" and out.splitlines()[2].endswith(",7,0.14285714285714285,0.14285714285714285")
    # A second consolidation finds nothing to rebuild.
    report = db.consolidate()
    assert report.rebuilt is None and report.files_added == 0


def test_a_foreign_file_is_named_and_left_alone(tmp_path: Path, capsys) -> None:
    """A non-empty file that is no DuckDB database may be another program's (a mistyped
    --db): the clear message, `runs` from the run tree, and the file untouched."""
    make_run(tmp_path, "a")
    db_file = tmp_path / "duckdb.db"
    bad = b"not a database\n" * 300
    db_file.write_bytes(bad)
    rc, out, err = cli(capsys, "runs", "--root", str(tmp_path), "--format", "csv")
    assert rc == 0 and out.splitlines()[1].startswith("a,gd,run,finished")
    assert len(err.strip().splitlines()) == 1 and "is not a DuckDB database file" in err
    rc, out, err = cli(capsys, "consolidate", "--root", str(tmp_path))
    assert rc == 1 and "is not a DuckDB database file" in err and "move it aside" in err
    assert len(err.strip().splitlines()) == 1
    assert db_file.read_bytes() == bad and sorted(p.name for p in tmp_path.glob("duckdb.db*")) == [
        "duckdb.db",
        "duckdb.db.lock",
    ]
    db_file.rename(tmp_path / "mine.txt")  # what the message says to do
    rc, out, err = cli(capsys, "consolidate", "--root", str(tmp_path))
    assert rc == 0 and "1 runs added" in out


def test_tail_and_recover_need_no_catalog(tmp_path: Path, capsys) -> None:
    make_run(tmp_path, "a")
    (tmp_path / "duckdb.db").write_bytes(b"\0garbage" * 100)
    rc, out, _ = cli(capsys, "tail", "a", "--root", str(tmp_path))
    assert rc == 0 and "run a finished: 5 rows" in out
    rc, out, _ = cli(capsys, "recover", "--root", str(tmp_path))
    assert rc == 0 and str(tmp_path) in out


# --------------------------------------------------------------------------- the other DuckDB line


def test_a_catalog_from_the_other_duckdb_line(tmp_path: Path, capsys) -> None:
    python, theirs = other_duckdb()
    make_run(tmp_path, "a")
    write_with(python, tmp_path)
    assert tomllib.loads((tmp_path / "duckdb.db.version").read_text())["duckdb_version"] == theirs
    mine_major, theirs_major = int(duckdb.__version__.split(".")[0]), int(theirs.split(".")[0])
    if theirs_major > mine_major:
        # A newer DuckDB's file: the exact message, then runs from the manifests and a rebuild.
        expected = f"duckdb.db was written by DuckDB {theirs}"
        with pytest.raises(CatalogUnavailableError) as e:
            DuckDBManager(tmp_path).query("SELECT 1")
        assert f"{expected} (storage version " in str(e.value)
        assert f"this environment has {duckdb.__version__}" in str(e.value)
        rc, out, err = cli(capsys, "runs", "--root", str(tmp_path), "--format", "csv")
        assert rc == 0 and out.splitlines()[1].startswith("a,gd,run,finished") and expected in err
        report = DuckDBManager(tmp_path).consolidate()
        assert report.rebuilt is not None and expected in report.rebuilt
        assert (tmp_path / f"duckdb.db.duckdb-{theirs}.bak").is_file()
        # The kept file is still the other line's: it opens there, with its row.
        check = subprocess.run(
            [python, "-c", SHOW_RUN_IDS, str(tmp_path / f"duckdb.db.duckdb-{theirs}.bak")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.stdout.strip() == "[('a',)]", check.stderr
    else:
        # An older DuckDB's file: this one reads and extends it; nothing is rebuilt.
        db = DuckDBManager(tmp_path)
        assert db.query("SELECT run_id FROM runs").fetchall() == [("a",)]
        report = db.consolidate()
        assert report.rebuilt is None and report.files_added == 0
    rc, out, err = cli(capsys, "runs", "--root", str(tmp_path), "--format", "csv")
    assert rc == 0 and err == "" and out.splitlines()[1].endswith(",5,0.2,0.2")
    sidecar = tomllib.loads((tmp_path / "duckdb.db.version").read_text())
    assert sidecar["duckdb_version"] == duckdb.__version__

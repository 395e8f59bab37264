"""Listing runs from the catalog (issue 17, part 2): ``flightlog runs``, ``show``,
``scan_runs`` and ``find_run`` take the runs the catalog holds as finished from it and
read only the others from their files; the answer is the one of the files alone.

Real run folders (written by the recorder), real DuckDB, live and SIGKILLed recorders
in subprocesses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from flightlog import DuckDBManager, Field, Schema, TelemetryManager
from flightlog._analysis import listing_catalog, runs_rows
from flightlog._errors import RunNotFoundError
from flightlog.runs.discover import _runs_by_evidence, find_run, scan_runs
from flightlog.runs.manifest import read_manifest

SCHEMA = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64")])

LIVE_CHILD = textwrap.dedent(
    """
    import sys
    from flightlog import TelemetryManager, Schema, Field
    mode, flow = sys.argv[1], sys.argv[2]
    schema = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64")])
    kw = {"trial_id": "t-live"} if mode == "tuner" else {}
    tm = TelemetryManager(None, flow, mode=mode, schema=schema, sampling=None, flush_interval=30.0, **kw)
    for i in range(50):
        tm.record(i, float(i), 1.0 / (i + 1))
    tm.flush()
    print(tm.run_id, flush=True)
    sys.stdin.read()  # holds the run (and its claim) open until the parent closes stdin or kills it
    tm.close()
    """
)


def _scan(root: Path) -> list:
    """``scan_runs`` with the root's own catalog, as the CLI and the dashboard list runs:
    the fast path (``scan_runs(root)`` alone reads every manifest)."""
    with listing_catalog(root) as db:
        return scan_runs(root, db=db)


def make_run(root: Path, run_id: str, *, flow: str = "gd", mode: str = "run", n: int = 20) -> None:
    options = {"sampling": None} if mode != "run" else {}
    if mode == "tuner":
        options["trial_id"] = f"t-{run_id}"
    with TelemetryManager(root, flow, run_id=run_id, mode=mode, schema=SCHEMA, params={"k": run_id}, **options) as tm:
        for i in range(n):
            tm.record(i, float(i), 1.0 / (i + 1))


@contextlib.contextmanager
def recorder(root: Path, mode: str = "run", flow: str = "live") -> Iterator[tuple[subprocess.Popen, str]]:
    """A recorder in a child process with an open run (its claim held) until the block
    ends; the child and its group are killed whatever happens."""
    env = {
        **os.environ,
        "FLIGHTLOG_ROOT": str(root),
    }
    p = subprocess.Popen(
        [sys.executable, "-c", LIVE_CHILD, mode, flow],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = p.stdout.readline().strip()
        assert line, p.stderr.read() if p.poll() is not None else "no run id from the child"
        yield p, line
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=60)


def crashed_run(root: Path, mode: str = "run", flow: str = "dead") -> str:
    """A run whose recorder was SIGKILLed: its manifest still says running."""
    with recorder(root, mode, flow) as (p, run_id):
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    return run_id


def listing(root: Path, **kw) -> tuple[list[str], list[list]]:
    """``flightlog runs`` rows, without the live duration (it grows between two calls)."""
    cols, rows = runs_rows(root, **kw)
    i = cols.index("duration_s")
    return cols, [[*r[:i], None if r[3] == "running" else r[i], *r[i + 1 :]] for r in rows]


def evidence_listing(root: Path) -> list[tuple]:
    return [(r.run_id, r.status, r.manifest, str(r.where)) for r in _runs_by_evidence(root)]


def fast_listing(root: Path) -> list[tuple]:
    return [(r.run_id, r.status, r.manifest, str(r.where)) for r in _scan(root)]


def listed_from_catalog(root: Path) -> set[str]:
    """Manifest paths the catalog can list runs from."""
    return set(DuckDBManager(root, read_only=True)._listing() or {})


def test_catalog_listing_is_the_evidence_listing(tmp_path):
    root = tmp_path / "root"
    for k in range(4):
        make_run(root, f"20250101_00000{k}")
    make_run(root, "dev1", flow="dv", mode="dev")
    make_run(root, "tun1", flow="tu", mode="tuner")
    with recorder(root) as (_, live_id), recorder(root, "dev", "livedev") as (_, live_dev):
        crashed = crashed_run(root)
        rep = DuckDBManager(root).consolidate()
        assert rep.runs_added == 9, rep
        # Finished runs are listed from the catalog; the live and crashed ones are not.
        assert len(listed_from_catalog(root)) == 6
        make_run(root, "20250102_000000")  # new since the consolidation
        crashed_new = crashed_run(root, "tuner", "deadtuner")
        expected = evidence_listing(root)
        # Run ids are unique per folder, not across a root's run folders and flows.
        statuses = {(m.get("flow_name"), rid): status for rid, status, m, _ in expected}
        assert statuses["live", live_id] == statuses["livedev", live_dev] == "running"
        assert statuses["dead", crashed] == statuses["deadtuner", crashed_new] == "crashed"
        assert statuses["gd", "20250102_000000"] == statuses["dv", "dev1"] == "finished"
        assert len(expected) == 11
        assert fast_listing(root) == expected
        cols, rows = listing(root)
        # The same rows as without the catalog's listing (a catalog with no listing table).
        plain = tmp_path / "plain.db"
        shutil.copy(root / "duckdb.db", plain)
        con = duckdb.connect(str(plain))
        con.execute("DROP TABLE _flightlog.run_listing")
        con.close()
        assert DuckDBManager(root, db_path=plain, read_only=True)._listing() is None
        assert listing(root, db=DuckDBManager(root, db_path=plain, read_only=True)) == (cols, rows)
        assert [r[0] for r in rows] == [r[0] for r in expected]
        final_e = cols.index("final_E")  # by name: the columns grew (outcome)
        assert {r[0]: r[final_e] for r in rows}["20250101_000000"] == 1.0 / 20  # final_E from the catalog
        # find_run gives the whole manifest, whichever way the run was found.
        ids = [rid for rid, *_ in expected]
        for rid, status, manifest, _ in expected:
            if ids.count(rid) > 1:
                with pytest.raises(RunNotFoundError, match="ambiguous"):
                    find_run(root, rid)
                continue
            ref = find_run(root, rid)
            assert (ref.status, ref.manifest) == (status, manifest)
            assert isinstance(ref.where, Path)


def test_run_that_dies_after_consolidation_shows_crashed(tmp_path):
    root = tmp_path / "root"
    make_run(root, "20250101_000000")
    with recorder(root) as (p, live_id):
        DuckDBManager(root).consolidate()
        assert {r.run_id: r.status for r in _scan(root)}[live_id] == "running"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
        got = {r.run_id: r.status for r in _scan(root)}
        assert got == {"20250101_000000": "finished", live_id: "crashed"}
        _, rows = runs_rows(root)
        assert {r[0]: r[3] for r in rows} == got
        assert fast_listing(root) == evidence_listing(root)


def test_deleted_and_changed_run_folders(tmp_path):
    root = tmp_path / "root"
    for k in range(3):
        make_run(root, f"20250101_00000{k}")
    make_run(root, "dev1", flow="dv", mode="dev")
    DuckDBManager(root).consolidate()
    assert len(listed_from_catalog(root)) == 4
    # Deleted after consolidation: not listed, not found.
    shutil.rmtree(root / "fda_run_20250101_000000")
    (root / "flows" / "dv" / "runs" / "dev1.toml").unlink()
    # Changed after consolidation (a new flow name): listed as it is now.
    mpath = root / "fda_run_20250101_000001" / "manifest.toml"
    mpath.write_text(mpath.read_text().replace('flow_name = "gd"', 'flow_name = "renamed"'))
    # Replaced by a manifest that is not valid TOML: a bad manifest, as without the catalog.
    bad = root / "fda_run_20250101_000002" / "manifest.toml"
    bad.write_text("not = [toml")
    expected = evidence_listing(root)
    assert [(rid, status) for rid, status, _, _ in expected] == [
        ("20250101_000002", "bad manifest"),  # no created_at: first
        ("20250101_000001", "finished"),
    ]
    assert fast_listing(root) == expected
    _, rows = runs_rows(root)
    assert {r[0]: r[1] for r in rows}["20250101_000001"] == "renamed"
    assert "20250101_000000" not in {r[0] for r in rows}
    with pytest.raises(RunNotFoundError, match="no run"):
        find_run(root, "20250101_000000")
    with pytest.raises(RunNotFoundError, match="bad manifest"):
        find_run(root, "20250101_000002")
    # A folder replaced by a symbolic link to a copy: read from the files, as before.
    shutil.copytree(root / "fda_run_20250101_000001", tmp_path / "elsewhere")
    shutil.rmtree(root / "fda_run_20250101_000001")
    (root / "fda_run_20250101_000001").symlink_to(tmp_path / "elsewhere")
    assert fast_listing(root) == evidence_listing(root)


def test_same_size_same_mtime_rewrite_is_served_from_the_catalog(tmp_path):
    """The cheap signature is the manifest's mtime_ns, size and inode: a rewrite in place
    that keeps all three (which the recorder and ``recover`` never do: they rename a new
    file over it) is not seen. This pins that the fast path is taken, and what it trusts."""
    root = tmp_path / "root"
    make_run(root, "20250101_000000")
    DuckDBManager(root).consolidate()
    mpath = root / "fda_run_20250101_000000" / "manifest.toml"
    st = mpath.stat()
    mpath.write_text(mpath.read_text().replace('flow_name = "gd"', 'flow_name = "xy"'))
    os.utime(mpath, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert read_manifest(mpath)["flow_name"] == "xy"
    assert [r.manifest["flow_name"] for r in _scan(root)] == ["gd"]
    assert [r.manifest["flow_name"] for r in _runs_by_evidence(root)] == ["xy"]
    # find_run reads the one run it found from its file.
    assert find_run(root, "20250101_000000").manifest["flow_name"] == "xy"
    # Written as flightlog writes manifests (a new file renamed over the old one): a new
    # inode, seen even with the same size and mtime (file systems with coarse times).
    tmp = mpath.with_name("manifest.toml.tmp")
    tmp.write_text(mpath.read_text().replace('flow_name = "xy"', 'flow_name = "zw"'))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, mpath)
    assert (mpath.stat().st_size, mpath.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert [r.manifest["flow_name"] for r in _scan(root)] == ["zw"]


def test_old_catalog_gets_its_listing_at_the_next_consolidate(tmp_path):
    root = tmp_path / "root"
    for k in range(3):
        make_run(root, f"20250101_00000{k}")
    DuckDBManager(root).consolidate()
    con = duckdb.connect(str(root / "duckdb.db"))
    con.execute("DROP TABLE _flightlog.run_listing")  # as written before the listing existed
    con.close()
    assert DuckDBManager(root, read_only=True)._listing() is None
    expected = evidence_listing(root)
    assert fast_listing(root) == expected
    rep = DuckDBManager(root).consolidate()
    assert (rep.runs_added, rep.runs_updated, rep.files_added) == (0, 0, 0)
    assert len(listed_from_catalog(root)) == 3
    assert fast_listing(root) == expected
    again = DuckDBManager(root).consolidate()
    assert (again.runs_added, again.runs_updated) == (0, 0)


def test_prune_drops_the_listing_rows(tmp_path):
    root = tmp_path / "root"
    make_run(root, "20250101_000000")
    make_run(root, "20250101_000001")
    DuckDBManager(root).consolidate()
    shutil.rmtree(root / "fda_run_20250101_000000")
    rep = DuckDBManager(root).consolidate(prune=True)
    assert rep.runs_pruned == 1
    assert listed_from_catalog(root) == {"fda_run_20250101_000001/manifest.toml"}


def test_cli_runs_and_show_are_unchanged(tmp_path):
    """The command line, end to end: the same ``runs`` and ``show`` output with the
    catalog's listing and without it."""
    root = tmp_path / "root"
    for k in range(3):
        make_run(root, f"20250101_00000{k}")
    make_run(root, "dev1", flow="dv", mode="dev")
    crashed_run(root)
    env = {
        **os.environ,
        "FLIGHTLOG_PLAIN": "1",
    }

    def cli(*argv: str) -> str:
        p = subprocess.run(
            [sys.executable, "-m", "flightlog.cli", *argv, "--root", str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        return p.stdout

    DuckDBManager(root).consolidate()
    with_listing = [cli("runs", "--format", fmt) for fmt in ("csv", "json", "table")]
    show = cli("show", "20250101_000001", "--format", "json")
    con = duckdb.connect(str(root / "duckdb.db"))
    con.execute("DROP TABLE _flightlog.run_listing")
    con.close()
    assert [cli("runs", "--format", fmt) for fmt in ("csv", "json", "table")] == with_listing
    assert cli("show", "20250101_000001", "--format", "json") == show
    assert "crashed" in with_listing[0] and with_listing[0].count("\n") == 6


@pytest.fixture
def lake_catalog(tmp_path):
    """A DuckLake catalog in a DuckDB file (needs the lake extensions: skips cleanly without them)."""
    from conftest_servers import require_lake_extensions

    require_lake_extensions()
    return f"ducklake:{tmp_path / 'meta.ducklake'}"


def test_ducklake_listing_is_the_evidence_listing(tmp_path, lake_catalog):
    root = tmp_path / "root"
    for k in range(3):
        make_run(root, f"20250101_00000{k}")
    make_run(root, "dev1", flow="dv", mode="dev")
    with recorder(root) as (p, live_id):
        db = DuckDBManager(root, catalog=lake_catalog, data_path=tmp_path / "lakedata")
        db.consolidate()
        assert len(db._listing()) == 4
        make_run(root, "20250102_000000")
        shutil.rmtree(root / "fda_run_20250101_000000")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
        reader = DuckDBManager(root, catalog=lake_catalog, data_path=tmp_path / "lakedata", read_only=True)
        expected = evidence_listing(root)
        assert {rid: s for rid, s, _, _ in expected}[live_id] == "crashed"
        got = [(r.run_id, r.status, r.manifest, str(r.where)) for r in scan_runs(root, db=reader)]
        assert got == expected
        assert [r[:7] for r in listing(root, db=reader)[1]] == [r[:7] for r in listing(root)[1]]
        # Consolidating again records the new run and drops nothing that is still there.
        db.consolidate(prune=True)
        assert set(db._listing()) == {
            "fda_run_20250101_000001/manifest.toml",
            "fda_run_20250101_000002/manifest.toml",
            "fda_run_20250102_000000/manifest.toml",
            "flows/dv/runs/dev1.toml",
        }


def test_long_tables_are_laid_out_as_rich_lays_them_out(monkeypatch):
    """``render`` builds long tables itself (rich takes ~1.6 ms a row); the text must be
    rich's own, cell for cell, or rich is used (markup, emoji codes, non-ASCII, wide tables)."""
    import datetime
    import random
    import string

    pytest.importorskip("rich")
    from flightlog import _render as cli

    monkeypatch.delenv("FLIGHTLOG_PLAIN", raising=False)
    rng = random.Random(17)
    alphabet = string.ascii_letters + "_-. :[]/"

    def value(kind: str):
        if rng.random() < 0.15:
            return None
        return {
            "s": lambda: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))),
            "i": lambda: rng.randint(-(10**6), 10**9),
            "f": lambda: rng.choice([rng.random() * 10 ** rng.randint(-12, 12), float("nan"), 0.0, -1.5]),
            "d": lambda: (
                rng.choice([datetime.datetime(2025, 1, 1), datetime.datetime(987, 6, 5)])
                + datetime.timedelta(seconds=rng.randint(0, 10**8))
            ),
            "b": lambda: rng.random() < 0.5,
            "u": lambda: rng.choice(["é", ":smile:", "[bold]x[/bold]", "a\tb", "ok", "東京"]),
        }[kind]()

    fast_used = 0
    for _ in range(150):
        kinds = [rng.choice("sifdbu" if rng.random() < 0.2 else "sifdb") for _ in range(rng.randint(1, 9))]
        cols = ["".join(rng.choice(string.ascii_lowercase + "_") for _ in range(rng.randint(1, 10))) for _ in kinds]
        rows = [[value(k) for k in kinds] for _ in range(rng.randint(0, 30))]
        title = rng.choice([None, "runs", ""])
        monkeypatch.setattr(cli, "_RICH_MAX_ROWS", 10**9)
        by_rich = cli.render(cols, rows, "table", title=title)
        monkeypatch.setattr(cli, "_RICH_MAX_ROWS", -1)
        assert cli.render(cols, rows, "table", title=title) == by_rich, (cols, rows, title)
        numeric = [False] * len(cols)
        types = cli._column_types(rows, len(cols))
        fast_used += cli._simple_head_table(cols, rows, types, numeric, title) is not None
    assert fast_used > 50  # the comparison covered the fast layout, not only the fallback


def test_csv_columns_are_written_as_each_value_would_be():
    """``render(..., "csv")`` hands uniform columns to csv.writer untouched: the text must be
    the one of converting every value by ``_csv_value`` (bools, times, JSON, numpy scalars,
    quoting, nan and inf included)."""
    import csv
    import datetime
    import io
    import random

    import numpy as np

    from flightlog import _render

    rng = random.Random(5)
    makers = {
        "s": lambda: "",
        "i": lambda: rng.randint(-(10**12), 10**12),
        "f": lambda: rng.choice([rng.random() * 10 ** rng.randint(-20, 20), float("nan"), float("-inf"), 0.0, 1e16]),
        "b": lambda: rng.random() < 0.5,
        "d": lambda: (
            datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=rng.random() * 1e7)
        ),
        "j": lambda: rng.choice([{"k": [1, 2.5]}, [None, "x"], ()]),
        "n": lambda: rng.choice([np.float64(0.25), np.int64(3), np.float32(1.5)]),
    }
    plain = ["a", "", "é", " pad ", "x.y", "t:1"]
    for k in range(400):
        # Half the tables have no field to quote (render joins them itself), half may.
        texts = [*plain, "x,y", 'q"uote', "line\nbreak", "cr\rx"] if k % 2 else plain
        makers["s"] = lambda texts=texts: rng.choice(texts)
        kinds = [rng.choice("sifbdjn" if rng.random() < 0.5 else "sif") for _ in range(rng.randint(1, 8))]
        mixed = rng.random() < 0.3
        rows = [
            [None if rng.random() < 0.1 else makers[rng.choice("sifbdjn") if mixed else k]() for k in kinds]
            for _ in range(rng.randint(0, 20))
        ]
        cols = [f"c{i}" for i in range(len(kinds))]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([_render._csv_value(v) for v in r])
        assert _render.render(cols, rows, "csv") == buf.getvalue().rstrip("\n"), rows


def test_consolidate_with_nothing_new_still_sees_changed_and_copied_folders(tmp_path):
    """The quick look at a consolidated run folder (lstat of its manifest and files) hands
    anything changed to the full look: a data file changed after it was ingested is
    reported, a copied folder is named as a copy, a new run is added."""
    root = tmp_path / "root"
    for k in range(3):
        make_run(root, f"20250101_00000{k}")
    db = DuckDBManager(root)
    assert db.consolidate().runs_added == 3
    again = db.consolidate()
    assert (again.files_added, again.runs_added, again.runs_updated, again.files_skipped) == (0, 0, 0, [])
    with open(root / "fda_run_20250101_000000" / "telemetry.parquet", "ab") as f:
        f.write(b"x")
    shutil.copytree(root / "fda_run_20250101_000001", root / "fda_run_20250101_000001.bak")
    make_run(root, "20250101_000009")
    rep = db.consolidate()
    assert rep.runs_added == 1 and rep.files_added == 2
    reasons = dict(rep.files_skipped)
    assert "changed after it was ingested" in reasons["fda_run_20250101_000000/telemetry.parquet"]
    assert (
        "fda_run_20250101_000001 " in reasons["fda_run_20250101_000001.bak"]
        or "as fda_run_20250101_000001" in (reasons["fda_run_20250101_000001.bak"])
    )
    assert db.query("SELECT count(*) FROM telemetry").fetchone()[0] == 4 * 20


def test_manager_runs_rechecks_only_running_runs(tmp_path):
    """``DuckDBManager.runs()``: a run held as running is decided again by evidence (dead
    since the consolidation: crashed, also for the status filter); finished runs are
    the catalog's rows."""
    root = tmp_path / "root"
    make_run(root, "20250101_000000")
    with recorder(root) as (p, live_id):
        db = DuckDBManager(root)
        db.consolidate()
        reader = DuckDBManager(root, read_only=True)
        assert dict(reader.runs().relation.select("run_id, status").fetchall()) == {
            "20250101_000000": "finished",
            live_id: "running",
        }
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
        assert dict(reader.runs().relation.select("run_id, status").fetchall()) == {
            "20250101_000000": "finished",
            live_id: "crashed",
        }
        assert len(reader.runs(status="running")) == 0
        assert [r[0] for r in reader.runs(status=["crashed"]).relation.select("run_id").fetchall()] == [live_id]
        assert [r[0] for r in reader.runs(flow_name="gd").relation.select("run_id").fetchall()] == ["20250101_000000"]
        assert {r.run_id for r in _runs_by_evidence(root) if r.status == "crashed"} == {live_id}


@pytest.mark.slow
def test_scale_bench_smoke(tmp_path):
    """benches/bench_catalog_scale.py runs end to end (tiny N: the figures mean nothing)."""
    script = Path(__file__).resolve().parents[1] / "benches" / "bench_catalog_scale.py"
    out = tmp_path / "out.md"
    env = dict(os.environ)  # the installed flightlog (the wheel under test, or the dev build)
    p = subprocess.run(
        [sys.executable, str(script), "--runs", "30", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 30 |")]
    assert len(rows) == 1 and rows[0].count("|") == 12, out.read_text()


def test_listing_while_a_writer_holds_the_catalog(tmp_path):
    """A catalog held by a writer (another process has ``duckdb.db`` open read-write) is
    not waited for: the runs are listed from their files, the same list."""
    root = tmp_path / "root"
    make_run(root, "20250101_000000")
    make_run(root, "20250101_000001")
    DuckDBManager(root).consolidate()
    expected = evidence_listing(root)
    holder = textwrap.dedent(
        """
        import sys, duckdb
        con = duckdb.connect(sys.argv[1])
        print("held", flush=True)
        sys.stdin.read()
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", holder, str(root / "duckdb.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert p.stdout.readline().strip() == "held", p.stderr.read() if p.poll() is not None else ""
        assert fast_listing(root) == expected
        assert find_run(root, "20250101_000001").manifest == expected[1][2]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=60)


def test_the_rust_scan_finds_what_the_python_walk_finds(tmp_path):
    """``_core.list_run_manifests`` (the listing's one ``lstat`` a run, on threads) lists the
    candidates ``LocalRootTree.list_runs`` lists, with ``os.lstat``'s signatures: hidden
    folders, files, FIFOs, symlinks to folders and to files, flows with and without runs."""
    import duckdb

    from flightlog import _core
    from flightlog.runs.layout import FLOWS_DIR, MANIFEST_NAME, RUN_MANIFEST_SUFFIX, RUNS_DIR
    from flightlog.runs.tree import LocalRootTree

    root = tmp_path / "root"
    make_run(root, "20250101_000000")
    make_run(root, "dev1", flow="dv", mode="dev")
    (root / "empty_folder").mkdir()
    (root / ".hidden").mkdir()
    (root / "a_file").write_text("x")
    os.mkfifo(root / "a_fifo")
    os.symlink(root / "fda_run_20250101_000000", root / "linked_run")
    os.symlink(root / "a_file", root / "linked_file")
    (root / "fifo_run").mkdir()
    os.mkfifo(root / "fifo_run" / "manifest.toml")
    (root / "flows" / "nothing" / "runs").mkdir(parents=True)
    (root / "flows" / "dv" / "runs" / ".tmp-x.toml").write_text("")

    def lstat_sig(path: str):
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, stat.S_ISREG(st.st_mode))

    import stat

    expected = {
        (e.manifest_rel, e.is_folder, lstat_sig(f"{root}/{e.manifest_rel}")) for e in LocalRootTree(root).list_runs()
    }
    scan = _core.list_run_manifests(str(root), MANIFEST_NAME, FLOWS_DIR, RUNS_DIR, RUN_MANIFEST_SUFFIX)
    rows = duckdb.connect().from_arrow(scan).fetchall()
    got = {
        (rel, folder, None if mtime is None else (mtime, size, ino, reg)) for rel, folder, mtime, size, ino, reg in rows
    }
    assert got == expected
    assert {r[0] for r in rows} >= {"linked_run/manifest.toml", "fifo_run/manifest.toml", "flows/dv/runs/dev1.toml"}
    assert _core.list_run_manifests(str(tmp_path / "nope"), MANIFEST_NAME, FLOWS_DIR, RUNS_DIR, ".toml").num_rows == 0


def test_a_root_with_a_name_that_is_not_utf8_is_listed_from_the_files(tmp_path):
    """The Rust scan leaves a root with a non-UTF-8 name to Python (names keep their bytes):
    the listing is still the evidence listing."""
    root = tmp_path / "root"
    for k in range(2):
        make_run(root, f"20250101_00000{k}")
    assert DuckDBManager(root).consolidate().runs_added == 2
    os.mkdir(os.fsencode(root) + b"/odd_\xff")
    assert fast_listing(root) == evidence_listing(root)
    assert len(fast_listing(root)) == 2


def _report_and_tables(root: Path) -> tuple:
    """What a consolidation of ``root`` says and leaves, with paths relative to the root."""
    rep = DuckDBManager(root).consolidate()
    con = duckdb.connect(str(root / "duckdb.db"), read_only=True)
    try:
        runs = sorted(con.execute("SELECT run_id, flow_name, status, manifest_path, path FROM runs").fetchall())
        files = sorted(con.execute("SELECT path, kind, run_id, rows, size FROM _ingested_files").fetchall())
        counts = con.execute("SELECT count(*), count(DISTINCT run_id) FROM telemetry").fetchone()
    finally:
        con.close()
    said = (rep.files_added, rep.rows_added, rep.runs_added, rep.runs_updated, sorted(rep.files_skipped))
    return said, runs, files, counts


def test_the_quick_look_decides_as_the_look_at_each_folder(tmp_path, monkeypatch):
    """``consolidate`` recognises the run folders with nothing new in one query (the Rust scan
    joined with the bookkeeping) and loads only the others' bookkeeping. After every kind of
    change to a consolidated root, it must report and ingest what the folder-by-folder look
    (the path it replaces, still used when pruning) does."""
    from flightlog.catalog import ingest

    root = tmp_path / "root"
    for k in range(7):
        make_run(root, f"20250101_00000{k}")
    make_run(root, "dev1", flow="dv", mode="dev")
    DuckDBManager(root).consolidate()
    with open(root / "fda_run_20250101_000000" / "telemetry.parquet", "ab") as f:
        f.write(b"x")  # a data file changed after it was ingested
    shutil.copytree(root / "fda_run_20250101_000001", root / "fda_run_20250101_000001.bak")  # a copy
    os.utime(root / "fda_run_20250101_000002" / "manifest.toml", ns=(1, 1))  # a manifest touched
    os.rename(root / "fda_run_20250101_000003", root / "renamed_000003")  # a folder renamed
    os.unlink(root / "fda_run_20250101_000004" / "events.parquet")  # a data file gone
    os.symlink(root / "fda_run_20250101_000005", root / "link_000005")  # a symlink to a run
    make_run(root, "20250102_000000")  # a new run
    make_run(root, "dev2", flow="dv", mode="dev")
    quick_root, full_root = tmp_path / "quick", tmp_path / "full"
    shutil.copytree(root, quick_root, symlinks=True)
    shutil.copytree(root, full_root, symlinks=True)
    quick = _report_and_tables(quick_root)
    monkeypatch.setattr(ingest, "settled_folders", lambda con, root: (None, {}))
    full = _report_and_tables(full_root)
    assert quick == full
    assert quick[0][2] >= 1 and quick[0][4], quick[0]  # it did see the new run and the skipped files
    # And a second consolidation finds nothing new either way.
    monkeypatch.undo()
    again = DuckDBManager(quick_root).consolidate()
    assert (again.files_added, again.runs_added, again.runs_updated) == (0, 0, 0)

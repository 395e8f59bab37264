"""What a new user meets first (issue 14, part 5): the run outcome, consolidation counts,
typed JSON output, ambiguous prefixes, number formatting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flightlog import DuckDBManager, Field, FlightlogError, Schema, TelemetryManager, events, read_manifest

SCHEMA = Schema([Field("iter", "i64"), Field("t_wall_ms", "f64"), Field("E", "f64"), Field("phase", "str")])


def cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", FLIGHTLOG_PLAIN="1")
    return subprocess.run(
        [sys.executable, "-m", "flightlog.cli", *args, "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _run(root: Path, flow: str, *, outcome: str | None = None, event: str | None = None, rows: int = 3) -> str:
    with TelemetryManager(root, flow, schema=SCHEMA) as tm:
        for i in range(rows):
            tm.log(iter=i, E=10.0**-i, phase="RED" if i == 0 else "GREEN")
        if event is not None:
            tm.event(event, {"iter": rows - 1})
        if outcome is not None:
            tm.outcome = outcome
        return tm.run_id


def _finished_payload(root: Path, run_id: str) -> dict:
    db = DuckDBManager(root)
    db.consolidate()
    (payload,) = db.query("SELECT payload FROM events WHERE run_id = ? AND event = 'RUN_FINISHED'", [run_id]).fetchone()
    return json.loads(payload)


def test_outcome_is_set_explicitly_and_kept_apart_from_status(tmp_path: Path) -> None:
    rid = _run(tmp_path, "f", outcome="converged")
    (run_dir,) = tmp_path.glob(f"fda_run_{rid}")
    m = read_manifest(run_dir)
    assert (m["status"], m["outcome"]) == ("finished", "converged")
    assert list(m).index("outcome") == list(m).index("status") + 1
    assert _finished_payload(tmp_path, rid)["outcome"] == "converged"


def test_outcome_comes_from_a_terminal_event(tmp_path: Path) -> None:
    rid = _run(tmp_path, "f", event=events.TIMEOUT)
    m = read_manifest(next(tmp_path.glob(f"fda_run_{rid}")))
    assert (m["status"], m["outcome"]) == ("finished", "timeout")
    # An explicit outcome wins over later terminal events.
    with TelemetryManager(tmp_path, "f", schema=SCHEMA) as tm:
        tm.log(iter=0, E=1.0, phase="RED")
        tm.outcome = "converged"
        tm.event(events.CANCELLED)
        assert tm.outcome == "converged"
    # No outcome said: none written.
    rid = _run(tmp_path, "g")
    assert "outcome" not in read_manifest(next(tmp_path.glob(f"fda_run_{rid}")))


def test_outcome_bad_values_and_after_close(tmp_path: Path) -> None:
    with TelemetryManager(tmp_path, "f", schema=SCHEMA) as tm:
        for bad in ("", "x" * 65, "a\nb"):
            with pytest.raises(ValueError, match="outcome"):
                tm.outcome = bad
        with pytest.raises(ValueError, match="outcome"):
            tm.outcome = 3  # type: ignore[assignment]
    with pytest.raises(FlightlogError, match="closed"):
        tm.outcome = "late"


def test_runs_show_and_compare_show_the_outcome(tmp_path: Path) -> None:
    ok = _run(tmp_path, "f", outcome="converged")
    slow = _run(tmp_path, "f", event=events.TIMEOUT)
    assert cli("consolidate", root=tmp_path).returncode == 0
    runs = {r["run_id"]: r for r in json.loads(cli("runs", "--format", "json", root=tmp_path).stdout)}
    assert (runs[ok]["outcome"], runs[slow]["outcome"]) == ("converged", "timeout")
    shown = cli("show", slow, root=tmp_path).stdout
    assert "status finished" in shown and "outcome timeout" in shown
    rows = json.loads(cli("compare", ok, slow, "--format", "json", root=tmp_path).stdout)
    assert [r["outcome"] for r in rows] == ["converged", "timeout"]


def test_consolidate_reports_telemetry_and_event_rows_apart(tmp_path: Path) -> None:
    _run(tmp_path, "f", rows=5)  # 5 rows; RUN_STARTED and RUN_FINISHED
    rep = DuckDBManager(tmp_path).consolidate()
    assert (rep.telemetry_rows_added, rep.event_rows_added, rep.rows_added) == (5, 2, 7)
    assert "5 telemetry rows, 2 event rows" in str(rep)


def test_show_json_has_typed_min_max_and_payload_objects(tmp_path: Path) -> None:
    rid = _run(tmp_path, "f", event=events.TIMEOUT)
    assert cli("consolidate", root=tmp_path).returncode == 0
    out = json.loads(cli("show", rid, "--format", "json", root=tmp_path).stdout)
    cols = {c["column"]: c for c in out["columns"]}
    assert cols["iter"]["min"] == 0 and cols["iter"]["max"] == 2
    assert cols["E"]["max"] == 1.0 and isinstance(cols["E"]["min"], float)
    timeout = next(e for e in out["events"] if e["event"] == "TIMEOUT")
    assert timeout["payload"] == {"iter": 2}


def test_an_ambiguous_prefix_says_how_many_runs_match(tmp_path: Path) -> None:
    ids = [_run(tmp_path, "f", rows=1) for _ in range(7)]
    prefix = ids[0][: next((i for i in range(len(ids[0])) if len({r[: i + 1] for r in ids}) > 1), len(ids[0]))]
    while prefix in ids:  # an exact id is not a prefix search
        prefix = prefix[:-1]
    assert prefix and all(r.startswith(prefix) for r in ids)
    proc = cli("show", prefix, root=tmp_path)
    assert proc.returncode != 0
    assert "7 runs match" in proc.stderr and "and 2 more" in proc.stderr


def test_table_numbers_have_one_format(tmp_path: Path) -> None:
    from flightlog._render import render

    text = render(["a", "b", "c"], [[0.0414873, 1.22607, 2.507e-17]], "table")
    assert "0.04149" in text and "1.226" in text and "2.507e-17" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_dev_installs_only_what_the_demo_needs() -> None:
    repo = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}

    def dry(target: str) -> str:
        proc = subprocess.run(["make", "-n", target], cwd=repo, capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    dev = dry("dev")
    for test_only in ("pytest", "moto", "hypothesis", "dask", "seaweedfs", "pyspark", "ruff"):
        assert test_only not in dev, test_only
    assert "maturin develop --release" in dev and "PIP_QUIET=1" in dev
    assert "maturin develop --release -q" not in dev  # cargo's progress is shown
    full = dry("test-all")
    assert "pytest" in full and "moto" in full

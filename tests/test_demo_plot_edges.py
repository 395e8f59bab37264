"""What a newcomer trips over in the demo, the plots, the README and the warnings (issue 14, part 5)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import flightlog
from flightlog import DuckDBManager, TelemetryManager, schemas

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    from flightlog._demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo") / "root", quick=True, plot=False, out=None)


def test_demo_event_iter_equals_the_iter_in_its_payload(demo) -> None:
    db = DuckDBManager(demo.root, read_only=True)
    rows = db.query(
        "SELECT run_id, event, iter, payload FROM events WHERE event IN ('CERT_PASS', 'CERT_FAIL', 'TIMEOUT')"
    ).fetchall()
    names = {r[1] for r in rows}
    assert {"CERT_PASS", "CERT_FAIL", "TIMEOUT"} <= names
    for run_id, event, it, payload in rows:
        body = payload if isinstance(payload, dict) else json.loads(payload)
        assert it == body["iter"], (run_id, event, it, body)


def test_event_markers_sit_at_their_time_on_a_time_axis(demo, tmp_path: Path) -> None:
    from flightlog._plot import plot_runs

    db = DuckDBManager(demo.root, read_only=True)
    run = next(r for r in demo.runs if r.status == "finished" and r.method == "gd" and r.step_scale == 1.9)
    by_time = plot_runs(db, [run.run_id], "E", tmp_path / "t.png", x="t_wall_ms", logy=True)
    by_iter = plot_runs(db, [run.run_id], "E", tmp_path / "i.png", x="iter", logy=True)
    (cert,) = [m for m in by_iter["markers"] if m["event"] == "CERT_PASS"]
    (cert_t,) = [m for m in by_time["markers"] if m["event"] == "CERT_PASS"]
    it = int(cert["x"])
    (t_row,) = db.query("SELECT t_wall_ms FROM telemetry WHERE run_id = ? AND iter = ?", [run.run_id, it]).fetchone()
    assert cert_t["x"] == pytest.approx(t_row)
    (t_max,) = db.query("SELECT max(t_wall_ms) FROM telemetry WHERE run_id = ?", [run.run_id]).fetchone()
    # every marker is on the time axis of its run, not at an iteration number
    for m in by_time["markers"]:
        assert 0 <= m["x"] <= t_max
    assert cert_t["y"] == pytest.approx(cert["y"])


def test_units_warning_says_how_to_silence_it(tmp_path: Path) -> None:
    with pytest.warns(flightlog.UnitsWarning) as record:
        with TelemetryManager(tmp_path / "root", "gd", schema=schemas.CFS_CORE):
            pass
    text = str(record[0].message)
    assert "filterwarnings('ignore', category=flightlog.UnitsWarning)" in text
    # and the advice works (pytest turns warnings into errors here)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=flightlog.UnitsWarning)
        with TelemetryManager(tmp_path / "root", "gd", schema=schemas.CFS_CORE):
            pass


def test_readme_30_second_example_runs_twice_in_the_same_folder(tmp_path: Path) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[:1]
    for attempt in range(2):
        result = subprocess.run(
            [sys.executable, "-c", block],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=dict(os.environ),
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, (attempt, result.stderr)
        assert "GREEN" in result.stdout
    assert len(list((tmp_path / "runs").iterdir())) == 2


def _show(root: Path, run_id: str, fmt: str, capsys: pytest.CaptureFixture[str]) -> str:
    from flightlog.cli import main

    capsys.readouterr()
    assert main(["--root", str(root), "--format", fmt, "show", run_id]) == 0
    return capsys.readouterr().out


def _phase_run(root: Path) -> str:
    from flightlog import Enum, Field, Schema

    schema = Schema([Field("iter", "i64"), Field("phase", Enum(["RED", "AMBER", "GREEN"]))])
    with TelemetryManager(root, "enum", schema=schema) as tm:
        for i in range(10):
            tm.log(iter=i, phase="RED" if i < 6 else ("AMBER" if i < 9 else "GREEN"))
    return tm.run_id


@pytest.mark.parametrize("consolidated", [True, False], ids=["catalog", "files"])
def test_show_gives_value_counts_of_an_enum_not_a_lexicographic_min_max(tmp_path, capsys, consolidated) -> None:
    root = tmp_path / "root"
    run_id = _phase_run(root)
    if consolidated:
        DuckDBManager(root).consolidate()
    data = json.loads(_show(root, run_id, "json", capsys))
    (phase,) = [c for c in data["columns"] if c["column"] == "phase"]
    assert data["source"] == ("catalog" if consolidated else "files")
    assert phase["min"] is None and phase["max"] is None  # was "AMBER" / "RED"
    assert phase["counts"] == {"RED": 6, "AMBER": 3, "GREEN": 1}
    text = _show(root, run_id, "table", capsys)
    assert "phase: RED 6, AMBER 3, GREEN 1" in text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("phase ")]
    assert "AMBER" not in line and "RED" not in line


def test_plot_colours_of_curves_phases_and_events_are_distinct() -> None:
    from flightlog._plot import CURVE_COLORS, EVENT_STYLE, PHASE_COLORS

    curves = {c.lower() for c in CURVE_COLORS}
    phases = {c.lower() for c in PHASE_COLORS.values()}
    events = {c.lower() for _marker, c in EVENT_STYLE.values()}
    assert len(curves) == len(CURVE_COLORS) >= 6
    assert not curves & phases and not curves & events and not phases & events


def test_plot_picks_log_y_when_the_metric_spans_decades_and_labels_its_unit(demo, tmp_path: Path) -> None:
    from flightlog._plot import plot_runs

    db = DuckDBManager(demo.root, read_only=True)
    ids = [r.run_id for r in demo.runs if r.status == "finished"]
    info = plot_runs(db, ids, "E", tmp_path / "e.png")  # E falls from ~1 to ~1e-17
    assert info["logy"] is True
    assert info["ylabel"].startswith("E\nf(x_k) - f(x*), optimality gap")
    info = plot_runs(db, ids, "E", tmp_path / "e_lin.png", logy=False)  # an explicit choice wins
    assert info["logy"] is False
    info = plot_runs(db, ids, "eta_dd", tmp_path / "eta.png")  # constant and negative: linear
    assert info["logy"] is False
    info = plot_runs(db, ids, "t_wall_ms", tmp_path / "t.png", x="iter")
    assert info["ylabel"].startswith("t_wall_ms [ms]\n")


def test_cli_plot_logy_is_auto_by_default(demo, tmp_path: Path, capsys) -> None:
    from flightlog.cli import main

    run = demo.runs[0].run_id
    for flag, expected in (([], True), (["--no-logy"], False), (["--logy"], True)):
        capsys.readouterr()
        args = ["--root", str(demo.root), "--format", "json", "plot", run, "-o", str(tmp_path / "p.png"), *flag]
        assert main(args) == 0
        assert json.loads(capsys.readouterr().out)["logy"] is expected, flag


def test_plot_of_a_live_run_whose_id_has_a_quote(tmp_path: Path) -> None:
    """A run not yet consolidated is plotted from its files through a DuckDB relation,
    whose query takes no parameters: an id with a quote (a valid run id) is quoted, not
    spliced into the SQL."""
    from flightlog._plot import plot_runs

    root = tmp_path / "root"
    schema = flightlog.Schema(
        [flightlog.Field("iter", "i64", nullable=False), flightlog.Field("E", "f64", nullable=False)]
    )
    with TelemetryManager(root, "q", run_id="o'brien", schema=schema) as tm:
        for i in range(50):
            tm.record(i, 1.0 / (i + 1))
    db = DuckDBManager(root, read_only=True)
    try:
        info = plot_runs(db, ["o'brien"], "E", tmp_path / "q.png")
    finally:
        db.close()
    assert (tmp_path / "q.png").stat().st_size > 0
    assert info is not None

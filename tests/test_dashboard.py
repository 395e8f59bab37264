"""The dashboard without a browser: its data layer (flightlog._dashdata), its HTTP API (Starlette's
TestClient against the real app and a real root), the report file, and the two CLI commands."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error
from flightlog import DuckDBManager, Field, Schema, TelemetryManager, schemas
from flightlog._dashdata import DashData, DashError, check_run_id
from flightlog._demo import run_demo

UNITS = {"phi_residual": {"unit": "1", "method": "test"}, "invariant_drift_max": {"unit": "1", "method": "test"}}

pytest.importorskip("starlette")
pytest.importorskip("starlette.testclient")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("dash") / "root"
    result = run_demo(root, quick=True, plot=False, out=None)
    return root, [r.run_id for r in result.runs]


@pytest.fixture(scope="module")
def client(demo):
    from starlette.testclient import TestClient

    from flightlog._ui import make_app

    root, _ = demo
    data = DashData(root)
    with TestClient(make_app(data, allowed_hosts=["testserver", "127.0.0.1"])) as c:
        yield c
    data.close()


# --------------------------------------------------------------------------- data layer


def test_runs_lists_the_demo_runs_with_status_params_and_last_values(demo) -> None:
    root, ids = demo
    page = DashData(root).runs(limit=100)
    assert page["total"] == page["all"] == 6
    assert {r["run_id"] for r in page["rows"]} == set(ids)
    assert "params.method" in page["columns"] and "last_E" in page["columns"]
    by_id = {r["run_id"]: r for r in page["rows"]}
    statuses = sorted(r["status"] for r in page["rows"])
    assert statuses == ["failed"] + ["finished"] * 5
    for r in page["rows"]:
        assert r["rows"] > 0 and r["last_E"] is not None and r["params.method"] in ("gd", "nesterov")
    failed = next(r for r in by_id.values() if r["status"] == "failed")
    assert failed["last_E"] > 1e6  # it diverged


def test_runs_filter_sort_and_paginate(demo) -> None:
    root, _ = demo
    d = DashData(root)
    assert d.runs(status="failed")["total"] == 1
    assert d.runs(flow="quadratic_nesterov")["total"] == 2
    assert d.runs(param="method=nesterov")["total"] == 2
    assert d.runs(param="step_scale=2.1")["total"] == 1
    assert d.runs(param="nope")["total"] == 0
    steps = [r["params.step_scale"] for r in d.runs(sort="params.step_scale", desc=True)["rows"]]
    assert steps == sorted(steps, reverse=True)
    finals = [r["last_E"] for r in d.runs(sort="last_E")["rows"]]
    assert finals == sorted(finals)
    p1, p2 = d.runs(limit=4), d.runs(limit=4, offset=4)
    assert len(p1["rows"]) == 4 and len(p2["rows"]) == 2
    assert not {r["run_id"] for r in p1["rows"]} & {r["run_id"] for r in p2["rows"]}
    for bad in ({"sort": "nope"}, {"limit": 0}, {"limit": 10_000}, {"offset": -1}):
        with pytest.raises(DashError) as e:
            d.runs(**bad)
        assert e.value.status == 400


def test_run_has_manifest_metrics_and_events(demo) -> None:
    root, ids = demo
    run = DashData(root).run(ids[0])
    assert run["source"] == "catalog" and run["rows"] > 1000
    assert "E" in run["metrics"] and "iter" not in run["metrics"] and "phase" not in run["metrics"]
    assert "lambda" not in run["metrics"]  # a column of the schema that this run never filled
    m = run["manifest"]
    assert m["params"]["method"] == "gd" and "E" in m["units"] and "host" in m["provenance"]
    assert "rows_dropped" in m["counts"] and "producer_stalls" in m["cost"]
    assert any(e["event"] == "CERT_PASS" for e in run["events"])


def test_series_has_phase_bands_and_event_markers(demo) -> None:
    root, ids = demo
    s = DashData(root).series(ids[0], "E")
    assert s["rows"] > 1000 and len(s["x"]) == len(s["y"]) == s["points"]
    assert s["x"] == sorted(s["x"])
    assert [p[2] for p in s["phases"]] == ["RED", "AMBER", "GREEN"]
    assert s["events"] and all(ev[2] != "RUN_STARTED" for ev in s["events"])
    assert {ev[2] for ev in s["events"]} <= {"CERT_PASS", "CERT_FAIL", "TIMEOUT"}
    zoom = DashData(root).series(ids[0], "E", x_min=100, x_max=199)
    assert zoom["rows"] == 100 and min(zoom["x"]) == 100 and max(zoom["x"]) == 199


@pytest.mark.parametrize("how", ["m4", "minmax"])
def test_series_of_a_big_run_is_downsampled_in_duckdb_and_keeps_its_spike(tmp_path: Path, monkeypatch, how) -> None:
    import flightlog._dashdata as dd

    if how == "minmax":  # the path of runs above M4_MAX_ROWS rows (2M), on a smaller run
        monkeypatch.setattr(dd, "M4_MAX_ROWS", 1000)
    n = 300_000
    it = np.arange(n, dtype=np.int64)
    e = np.exp(-it / 50_000.0)
    e[123_457] = 1e6  # one spike among 300k rows: min/max per bucket must keep it
    with TelemetryManager(tmp_path, "big", schema=Schema([Field("iter", "i64"), Field("E", "f64")])) as tm:
        tm.extend(iter=it, E=e)
        rid = tm.run_id
    DuckDBManager(tmp_path).consolidate()
    s = DashData(tmp_path).series(rid, "E", buckets=200)
    assert s["rows"] == n
    assert s["points"] <= 4 * 200 and max(s["y"]) == 1e6
    x = s["x"][s["y"].index(1e6)]
    if how == "m4":
        assert x == 123_457  # the spike's own row
    else:
        assert abs(x - 123_457) <= n / 199  # at its pixel (bucket)


def test_a_running_run_is_read_from_its_durable_segments(tmp_path: Path) -> None:
    with TelemetryManager(tmp_path, "live", schema=schemas.CFS_CORE, units=UNITS) as tm:
        for i in range(300):
            tm.log(phase="RED" if i < 100 else "GREEN", iter=i, E=1.0 / (i + 1), grad_norm=1.0, eta_dd=0.0,
                   gamma=0.1, alpha=0.1, phi_residual=0.0, invariant_drift_max=0.0)  # fmt: skip
        tm.event("CERT_PASS", {"gap": 1e-9})
        tm.flush()
        d = DashData(tmp_path)
        run = d.run(tm.run_id)
        assert run["status"] == "running" and run["source"] == "files" and run["rows"] == 300
        s = d.series(tm.run_id, "E")
        assert s["rows"] == 300 and s["source"] == "files" and [p[2] for p in s["phases"]] == ["RED", "GREEN"]
        assert [ev[2] for ev in s["events"]] == ["CERT_PASS"]
        row = d.runs()["rows"][0]
        assert row["status"] == "running" and row["rows"] == 300 and row["last_E"] == pytest.approx(1 / 300)
    assert DashData(tmp_path).run(tm.run_id)["status"] == "finished"


def test_empty_root_is_an_empty_state_not_an_error(tmp_path: Path) -> None:
    page = DashData(tmp_path).runs()
    assert page["total"] == page["all"] == 0 and page["rows"] == []


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "../../etc/passwd", "a\\b", "x\x00y", "", "a" * 200, 5])
def test_bad_run_ids_are_refused_with_400(bad) -> None:
    with pytest.raises(DashError) as e:
        check_run_id(bad)
    assert e.value.status == 400


def test_unknown_run_is_404(demo) -> None:
    root, _ = demo
    with pytest.raises(DashError) as e:
        DashData(root).run("20990101_000000")
    assert e.value.status == 404 and "no run" in str(e.value)


# --------------------------------------------------------------------------- HTTP


def test_index_is_the_page_with_its_scripts_inline(client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "uPlot" in r.text and "FL_CONFIG" in r.text and "<script src" not in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]


def test_api_answers(client, demo) -> None:
    _, ids = demo
    runs = client.get("/api/runs", params={"status": "finished", "sort": "rows", "desc": "1"}).json()
    assert runs["total"] == 5 and [r["rows"] for r in runs["rows"]] == sorted(
        (r["rows"] for r in runs["rows"]), reverse=True
    )
    run = client.get(f"/api/run/{ids[0]}").json()
    assert run["run_id"] == ids[0]
    s = client.get(f"/api/run/{ids[0]}/series", params={"metric": "E", "buckets": "100"}).json()
    assert s["points"] <= 400 and s["phases"]
    cmp = client.get("/api/compare", params={"runs": f"{ids[0]},{ids[4]}", "group_by": "params.method", "tol": "1e-8"})
    assert cmp.status_code == 200
    body = cmp.json()
    assert [r[0] for r in body["rows"]] == [ids[0], ids[4]] and len(body["group_rows"]) == 2


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("/api/run/%2E%2E", 400, "not valid"),
        ("/api/run/..%5Cx/series?metric=E", 400, "not valid"),
        ("/api/run/20990101_000000", 404, "no run"),
        ("/api/run/{id}/series", 400, "metric"),
        ("/api/run/{id}/series?metric=nope", 404, "no telemetry column"),
        ("/api/run/{id}/series?metric=E&buckets=abc", 400, "buckets must be an integer"),
        ("/api/run/{id}/series?metric=E&buckets=1", 400, "buckets must be"),
        ("/api/run/{id}/series?metric=E&x_min=nan", 400, "finite"),
        ("/api/run/{id}/series?metric=E%27%3B%20DROP%20TABLE%20runs%3B--", 404, "no telemetry column"),
        ("/api/runs?limit=0", 400, "limit"),
        ("/api/runs?offset=x", 400, "offset"),
        ("/api/runs?sort=nope", 400, "cannot sort"),
        ("/api/runs?desc=maybe", 400, "desc"),
        ("/api/compare", 400, "run ids"),
        ("/api/compare?runs={id}&group_by=params.nope%22", 200, ""),
        ("/api/compare?runs={id}&tol=inf", 400, "finite"),
        ("/nope", 404, "no page"),
        ("/api/../../etc/passwd", 404, "no page"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_clear_message_never_a_traceback(client, demo, path, status, needle) -> None:
    _, ids = demo
    r = client.get(path.replace("{id}", ids[0]))
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text and r.headers["content-type"] == "application/json"
    if needle:
        assert needle in r.json()["error"]


def test_only_get_and_a_known_host(client) -> None:
    r = client.post("/api/runs")
    assert r.status_code == 405 and "error" in r.json()
    r = client.get("/api/runs", headers={"host": "attacker.example"})
    assert r.status_code == 400


def test_the_catalog_is_opened_read_only(demo) -> None:
    root, _ = demo
    d = DashData(root)
    assert d.db.read_only
    with pytest.raises(PermissionError):
        d.db.consolidate()


# --------------------------------------------------------------------------- report


def test_report_is_one_self_contained_file(demo, tmp_path: Path) -> None:
    from flightlog._report import write_report

    root, ids = demo
    info = write_report(root, ids, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert info["bytes"] < 2_000_000
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    embed = json.loads(re.search(r"window\.FL_EMBED=(.*?);</script>", html, flags=re.S).group(1))
    for rid in ids:
        assert f"run/{rid}" in embed and f"series/{rid}/E" in embed
    assert embed["runs"]["total"] == 6 and "compare/E" in embed
    assert embed["compare/E"]["group_by"] == "params.method"


def test_report_data_cannot_break_out_of_its_script(tmp_path: Path) -> None:
    from flightlog._report import write_report

    with TelemetryManager(tmp_path, "x", schema=Schema([Field("iter", "i64"), Field("E", "f64")])) as tm:
        tm.log(iter=0, E=1.0)
        tm.log(iter=1, E=0.5)
        tm.event("NOTE", {"text": "</script><script>alert(1)</script>"})
    info = write_report(tmp_path, [tm.run_id], tmp_path / "r.html")
    html = Path(info["path"]).read_text()
    assert "alert(1)" in html  # the payload is there...
    assert "<script>alert(1)" not in html and html.count("</script>") == 3  # ...but cannot close a script


def test_cli_report_and_its_errors(demo, tmp_path: Path) -> None:
    root, ids = demo
    out = tmp_path / "one.html"
    cmd = [sys.executable, "-m", "flightlog.cli", "report", "--root", str(root)]
    proc = subprocess.run(
        [*cmd, ids[0][:-1] + ids[0][-1], "-o", str(out), "-m", "E,grad_norm"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and "self-contained" in proc.stdout and out.exists()
    assert_one_line_error(subprocess.run([*cmd, "nope"], capture_output=True, text=True, timeout=300), "no run 'nope'")
    assert_one_line_error(
        subprocess.run([*cmd, ids[0], "-m", "zzz"], capture_output=True, text=True, timeout=300), "zzz"
    )


def test_cli_ui_serves_prints_its_url_and_warns_off_localhost(demo) -> None:
    root, _ = demo
    for host, warned in (("127.0.0.1", False), ("127.0.0.2", True)):
        proc = subprocess.Popen(
            [sys.executable, "-m", "flightlog.cli", "ui", "--root", str(root), "--host", host],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            line = proc.stdout.readline()
            url = re.search(r"(http://\S+/)", line).group(1)
            assert url.startswith(f"http://{host}:")
            with urllib.request.urlopen(url + "api/runs", timeout=60) as r:
                assert json.load(r)["total"] == 6
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        assert ("WARNING" in err) is warned, err
    proc = subprocess.run(
        [sys.executable, "-m", "flightlog.cli", "ui", "--port", "70000"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "65535" in proc.stderr


def test_import_flightlog_stays_light() -> None:
    code = (
        "import sys, flightlog\n"
        "heavy = [m for m in ('starlette', 'uvicorn', 'flightlog._dashdata', 'flightlog._ui', 'flightlog._report') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_demo_writes_its_report_without_matplotlib(tmp_path: Path) -> None:
    from test_bare_install import bare_cli

    root = tmp_path / "root"
    proc = bare_cli("demo", "--quick", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert f"report (open it in a browser): {root / 'report.html'}" in proc.stdout
    assert (root / "report.html").stat().st_size > 50_000

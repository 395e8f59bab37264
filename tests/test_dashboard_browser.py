"""The dashboard in a real browser: Debian's headless Chromium driven by selenium (chromedriver).

Each test loads a page of a served demo root (``flightlog ui`` in a subprocess) or of a report
file, and checks what a person sees: the runs table, charts drawn (canvas pixels that are not
blank), phase bands and event markers, the log toggle changing the axis, two runs in the compare
chart, a live run growing, and no JavaScript console error. Screenshots are saved under the
pytest temp folder (``screens/``; the path is printed).

Without chromium/chromedriver/selenium the tests skip with the reason, unless
``FLIGHTLOG_REQUIRE_SERVERS=1`` (CI), where they fail (``make browser`` installs them).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest_servers import unavailable
from flightlog._demo import run_demo

TIMEOUT = 60  # seconds for a page to show what is waited for (a loaded 2-core machine)


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        unavailable("Debian's chromium and chromium-driver are not installed (make browser)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("selenium is not installed (pip install 'flightlog[test]')")
    return browser, driver


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("screens")
    print(f"\nscreenshots: {path}")
    return path


@pytest.fixture(scope="module")
def browser():
    binary, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(TIMEOUT)
    yield drv
    drv.quit()


@pytest.fixture(autouse=True)
def no_console_errors(request):
    """After each test: no JavaScript error (SEVERE entry) in the browser's console."""
    yield
    if "browser" not in request.fixturenames:
        return
    drv = request.getfixturevalue("browser")
    errors = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TimeoutError(f"no output from {proc.args} in {timeout} s")
        return proc.stdout.readline()
    finally:
        sel.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    _chromium()
    root = tmp_path_factory.mktemp("browser") / "root"
    result = run_demo(root, quick=True, plot=False, out=None)
    return root, [r.run_id for r in result.runs]


@pytest.fixture(scope="module")
def served(demo):
    root, _ = demo
    proc = subprocess.Popen(
        [sys.executable, "-m", "flightlog.cli", "ui", "--root", str(root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = _readline(proc, 120)
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield m.group(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)


def _wait(drv, script: str, what: str, timeout: float = TIMEOUT):
    """Waits until the JavaScript expression ``script`` is truthy (the page polls and redraws)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, poll_frequency=0.2).until(
        lambda d: d.execute_script(f"return ({script});"), message=what
    )


# Pixels of a canvas that are not transparent or white: a drawn chart has thousands.
_INK = """
const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i+3] > 0 && (d[i] < 240 || d[i+1] < 240 || d[i+2] < 240)) n++;
return n;
"""


def _open(drv, url: str, page: str) -> None:
    drv.get("about:blank")
    drv.get(url)
    _wait(drv, f"document.body.getAttribute('data-page') === '{page}'", f"{page} page rendered")


def test_runs_page_lists_the_demo_runs(browser, served, demo, screens) -> None:
    _, ids = demo
    _open(browser, served, "runs")
    _wait(browser, "document.querySelectorAll('#runs tbody tr').length === 6", "six rows")
    links = [a.text for a in browser.find_elements("css selector", "#runs a.run-link")]
    assert sorted(links) == sorted(ids)
    statuses = sorted(s.text for s in browser.find_elements("css selector", "#runs .status"))
    assert statuses == ["failed"] + ["finished"] * 5
    headers = [th.text for th in browser.find_elements("css selector", "#runs th")]
    assert "method" in headers and "last_E" in headers and "step_scale" in headers
    browser.save_screenshot(str(screens / "runs.png"))
    # filter by status: the table shows the failed run only
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "filter-status")).select_by_value("failed")
    _wait(browser, "document.querySelectorAll('#runs tbody tr').length === 1", "one failed run")
    Select(browser.find_element("id", "filter-status")).select_by_value("")
    _wait(browser, "document.querySelectorAll('#runs tbody tr').length === 6", "six rows again")


def test_run_page_draws_charts_with_phase_bands_and_event_markers(browser, served, demo, screens) -> None:
    _, ids = demo
    _open(browser, served + f"#/run/{ids[0]}", "run")
    charts = browser.find_elements("css selector", ".chart[data-ready]")
    assert {c.get_attribute("data-metric") for c in charts} >= {"E", "grad_norm", "phi_residual"}
    e_chart = browser.find_element("css selector", ".chart[data-metric='E']")
    assert "null" not in e_chart.text and "undefined" not in e_chart.text
    canvas = e_chart.find_element("css selector", "canvas")
    assert browser.execute_script(_INK, canvas) > 2000, "the E chart is blank"
    bands = e_chart.find_elements("css selector", ".phase-band")
    assert {b.get_attribute("class").split()[-1] for b in bands} == {"phase-RED", "phase-AMBER", "phase-GREEN"}
    assert all(b.size["width"] > 0 and b.size["height"] > 50 for b in bands)
    markers = e_chart.find_elements("css selector", ".event-marker")
    assert markers and any("CERT_PASS" in m.get_attribute("title") for m in markers)
    assert browser.find_element("id", "params").text.count("step_scale") == 1
    assert "producer_stalls" in browser.find_element("id", "recorder").text
    assert "CERT_PASS" in browser.find_element("id", "events").text
    browser.save_screenshot(str(screens / "run.png"))


def test_log_toggle_changes_the_axis(browser, served, demo, screens) -> None:
    _, ids = demo
    _open(browser, served + f"#/run/{ids[1]}", "run")
    sel = ".chart[data-metric='E'] .plot"
    assert browser.find_element("css selector", sel).get_attribute("data-scale") == "log"
    q = json.dumps(sel)
    before = browser.execute_script(f"return document.querySelector({q} + ' canvas').toDataURL();")
    browser.find_element("id", "log-toggle").click()
    _wait(browser, f"document.querySelector({q}).getAttribute('data-scale') === 'linear'", "linear axis")
    after = browser.execute_script(f"return document.querySelector({q} + ' canvas').toDataURL();")
    assert after != before
    canvas = browser.find_element("css selector", f"{sel} canvas")
    assert browser.execute_script(_INK, canvas) > 1000
    browser.save_screenshot(str(screens / "run-linear.png"))


def test_selecting_two_runs_shows_both_in_the_compare_chart(browser, served, demo, screens) -> None:
    _, ids = demo
    _open(browser, served, "runs")
    _wait(browser, "document.querySelectorAll('#runs tbody tr').length === 6", "six rows")
    for rid in (ids[0], ids[4]):
        browser.find_element("css selector", f"input.select-run[data-run='{rid}']").click()
    browser.find_element("id", "compare-selected").click()
    _wait(browser, "document.body.getAttribute('data-page') === 'compare'", "compare page")
    _wait(browser, "document.querySelector('#compare-chart[data-ready]')", "compare chart drawn")
    chart = browser.find_element("id", "compare-chart")
    assert chart.get_attribute("data-series") == "2"
    labels = [e.text for e in chart.find_elements("css selector", ".u-legend .u-series th")]
    assert sum(1 for t in labels if ids[0] in t or ids[4] in t) == 2
    assert browser.execute_script(_INK, chart.find_element("css selector", "canvas")) > 2000
    _wait(browser, "document.querySelector('#compare-table')", "per-run table")
    rows = browser.find_element("id", "compare-table").text
    assert ids[0] in rows and ids[4] in rows
    browser.save_screenshot(str(screens / "compare.png"))


def test_compare_grouped_table_and_chart(browser, served, demo, screens) -> None:
    _, ids = demo
    url = served + "#/compare?runs=" + ",".join(ids) + "&metric=E&group_by=params.method&tol=1e-8"
    _open(browser, url, "compare")
    _wait(browser, "document.querySelector('#group-table')", "grouped table")
    text = browser.find_element("id", "group-table").text
    assert "gd" in text and "nesterov" in text and "final_ci95_lo" in text
    assert len(browser.find_elements("css selector", "#group-chart circle")) == 2
    browser.save_screenshot(str(screens / "compare-grouped.png"))


_LIVE = """
import sys
from flightlog import TelemetryManager, schemas
units = {"phi_residual": {"unit": "1", "method": "t"}, "invariant_drift_max": {"unit": "1", "method": "t"}}
with TelemetryManager(sys.argv[1], "live_flow", schema=schemas.CFS_CORE, units=units, params={"alpha": 0.1}) as tm:
    print(tm.run_id, flush=True)
    i = 0
    for line in sys.stdin:  # one batch per line from the test: it paces the run, no sleeps
        for _ in range(200):
            tm.log(phase="RED" if i < 300 else "GREEN", iter=i, E=1.0 / (i + 1), grad_norm=1.0, eta_dd=0.0,
                   gamma=0.1, alpha=0.1, phi_residual=0.0, invariant_drift_max=0.0)
            i += 1
        tm.event("CERT_PASS", {"i": i})
        tm.flush()
        print("flushed", i, flush=True)
"""


def test_a_live_run_grows_while_it_records(browser, served, demo, screens) -> None:
    root, _ = demo
    proc = subprocess.Popen(
        [sys.executable, "-c", _LIVE, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        rid = _readline(proc, 120).strip()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert _readline(proc, 120).split() == ["flushed", "200"]
        _open(browser, served + f"#/run/{rid}", "run")
        assert browser.find_element("css selector", "#run-head .status").text == "running"
        _wait(browser, "document.getElementById('run-rows').textContent === '200'", "200 rows shown")
        canvas = browser.find_element("css selector", ".chart[data-metric='E'] canvas")
        ink_before = browser.execute_script(_INK, canvas)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert _readline(proc, 120).split() == ["flushed", "400"]
        # No reload: the page polls the run's durable segments every second.
        _wait(browser, "document.getElementById('run-rows').textContent === '400'", "400 rows shown")
        _wait(browser, "document.querySelectorAll(\".chart[data-metric='E'] .phase-band\").length === 2", "GREEN band")
        canvas = browser.find_element("css selector", ".chart[data-metric='E'] canvas")
        assert browser.execute_script(_INK, canvas) > 0 and ink_before > 0
        browser.save_screenshot(str(screens / "live.png"))
        _, err = proc.communicate(timeout=120)  # closes its stdin: the run ends
        assert proc.returncode == 0, err
        _wait(browser, "document.querySelector('#run-head .status').textContent === 'finished'", "finished")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)


def test_report_file_shows_run_and_compare_views_offline(browser, demo, tmp_path, screens) -> None:
    from flightlog._report import write_report

    root, ids = demo
    info = write_report(root, ids, tmp_path / "report.html")
    _open(browser, Path(info["path"]).as_uri(), "compare")
    _wait(browser, "document.querySelector('#compare-chart[data-ready]')", "compare chart drawn")
    chart = browser.find_element("id", "compare-chart")
    assert chart.get_attribute("data-series") == "6"
    assert browser.execute_script(_INK, chart.find_element("css selector", "canvas")) > 2000
    assert browser.find_element("id", "group-table").text.count("nesterov") == 1
    browser.save_screenshot(str(screens / "report-compare.png"))
    browser.execute_script(f"location.hash = '#/run/{ids[3]}';")
    _wait(browser, "document.querySelector(\".chart[data-metric='E'][data-ready]\")", "run page of the report")
    e_chart = browser.find_element("css selector", ".chart[data-metric='E']")
    assert browser.execute_script(_INK, e_chart.find_element("css selector", "canvas")) > 1000
    assert e_chart.find_elements("css selector", ".event-marker")  # its CERT_FAIL
    assert "failed" in browser.find_element("id", "run-head").text
    browser.save_screenshot(str(screens / "report-run.png"))
    browser.execute_script("location.hash = '#/runs';")
    _wait(browser, "document.querySelectorAll('#runs tbody tr').length === 6", "runs of the report")


def test_empty_root_shows_an_empty_state(browser, tmp_path) -> None:
    _chromium()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flightlog.cli", "ui", "--root", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        url = re.search(r"(http://\S+/)", _readline(proc, 120)).group(1)
        _open(browser, url, "runs")
        _wait(browser, "document.getElementById('empty-state')", "empty state")
        assert "No runs" in browser.find_element("id", "empty-state").text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)

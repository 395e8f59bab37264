"""Hostile tests of ``recover("s3://bucket/root/<run>")`` (that run alone; a prefix without a
run's marks is a root) and of a root's ``flows`` folder a bare ``FlightRecorder`` wrote into
(reported, never read as the flows). Real children killed -9 or alive, real files, moto's S3.
Each behaviour here was found wrong first (a strict xfail naming what happened and where), then fixed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import flightlog
from flightlog import TelemetryManager
from test_cli_scale_out import aws_env, cli
from test_object_store import SCHEMA, read_table, read_toml
from test_recover_hostile import _ids, _killed_bare, _listing, _Live, _paths

PYTHON = sys.executable

# 107 rows (100 flushed, 7 in the spool) by a bare FlightRecorder at the URL or a TelemetryManager
# run/dev run under the root; prints the run id, then dies (-9) or, given a line, records 13 more
# rows and closes ("closed", or the name of the close's exception).
CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from flightlog import Field, FlightRecorder, Schema, TelemetryManager
    where, opts, kind, act = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    s = Schema([Field("iter", "i64", nullable=False), Field("E", "f64", nullable=False)])
    if kind == "bare":
        rec, name = FlightRecorder(where, s, storage_options=opts, flush_interval=60.0), "-"
    else:
        rec = TelemetryManager(where, "f", mode=kind, schema=s, storage_options=opts, flush_interval=60.0)
        name = rec.run_id
    for i in range(107):
        rec.record(i, 1.0)
        if i == 99:
            rec.flush()
    print(name, flush=True)
    if act == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.readline()
    for i in range(107, 120):
        rec.record(i, 1.0)
    try:
        rec.close()
        print("closed", flush=True)
    except Exception as e:
        print(type(e).__name__, flush=True)
    """
)


@pytest.fixture
def spawn(s3_bucket, child_env):
    """``spawn(where, kind, act)`` -> ``(proc, run_id)``; a live child is killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(where: str, kind: str, act: str = "kill") -> tuple[subprocess.Popen[str], str]:
        args = [PYTHON, "-c", CHILD, where, json.dumps(s3_bucket.storage_options), kind, act]
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env)
        procs.append(proc)
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
        if act == "kill":
            proc.communicate(timeout=120)
            assert proc.returncode == -signal.SIGKILL
        assert name, "the child did not start"
        return proc, name

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=60)


def finish(proc: subprocess.Popen[str]) -> str:
    """Lets a live child record 13 more rows and close; what its close said."""
    out, _ = proc.communicate("close\n", timeout=120)
    assert proc.returncode == 0
    return out.strip().splitlines()[-1]


def _s3_paths(report) -> list[tuple[str, int]]:
    return [(r["path"], r["telemetry_rows"]) for r in report.recovered]


def _nothing(report) -> bool:
    return report.recovered == [] and report.live == [] and report.errors == []


# --------------------------------------------------------------------------- s3: one run's URL


def test_a_live_run_given_by_url_is_live_untouched_and_still_closes(s3_bucket, spawn):
    opts = s3_bucket.storage_options
    root = s3_bucket.url("r")
    proc, rid = spawn(root, "run", "live")
    url = f"{root}/fda_run_{rid}"
    before = s3_bucket.keys("r/")
    for given in (url, url + "/"):
        for stale_after in (600.0, 0.0):  # the writer's pid on this host decides, not the age
            rep = flightlog.recover(given, storage_options=opts, stale_after=stale_after)
            assert (rep.recovered, rep.live, rep.errors) == ([], [url], []), (given, stale_after, rep)
    assert s3_bucket.keys("r/") == before
    assert finish(proc) == "closed"
    m = read_toml(s3_bucket, f"r/fda_run_{rid}/manifest.toml")
    assert m["status"] == "finished" and m["counts"]["rows_written"] == 120
    assert read_table(s3_bucket, f"r/fda_run_{rid}/telemetry.parquet")["iter"].to_pylist() == list(range(120))
    assert _nothing(flightlog.recover(url, storage_options=opts, stale_after=0))


def test_sub_prefixes_strangers_and_finished_runs_change_nothing_then_the_run_url_recovers(s3_bucket, spawn):
    opts = s3_bucket.storage_options
    root = s3_bucket.url("r")
    with TelemetryManager(root, "f", schema=SCHEMA, storage_options=opts) as done:
        done.record(1, 1.0)
    _, rid = spawn(root, "run")
    url = f"{root}/fda_run_{rid}"
    before = s3_bucket.keys()
    strangers = [
        f"{url}/segments",
        f"{url}/segments/",
        f"{root}/fda_run_{done.run_id}",  # finished: nothing to do, no error
        f"{root}/fda_run_nosuchrun",
        s3_bucket.url("nope/deeper"),
        s3_bucket.url(""),  # the bucket alone: a root whose only "run folder" is r/
    ]
    for given in strangers:
        rep = flightlog.recover(given, storage_options=opts, stale_after=0)
        assert _nothing(rep), (given, rep)
    assert s3_bucket.keys() == before
    assert read_toml(s3_bucket, f"r/fda_run_{rid}/manifest.toml")["status"] == "running"
    rep = flightlog.recover(url, storage_options=opts)
    assert _s3_paths(rep) == [(url, 107)] and rep.errors == [] and rep.live == [], rep
    assert read_table(s3_bucket, f"r/fda_run_{rid}/telemetry.parquet")["iter"].to_pylist() == list(range(107))
    m = read_toml(s3_bucket, f"r/fda_run_{rid}/manifest.toml")
    assert m["status"] == "crashed" and m["counts"]["rows_written"] == 107
    assert not [k for k in s3_bucket.keys() if "/segments/" in k]
    assert _nothing(flightlog.recover(url, storage_options=opts, stale_after=0))
    assert _nothing(flightlog.recover(root, storage_options=opts, stale_after=0))


def test_a_run_at_the_top_of_the_bucket_is_recovered_by_its_url(s3_bucket, spawn):
    opts = s3_bucket.storage_options
    _, rid = spawn(s3_bucket.url(""), "run")
    url = s3_bucket.url(f"fda_run_{rid}")
    rep = flightlog.recover(url, storage_options=opts)
    assert _s3_paths(rep) == [(url, 107)] and rep.errors == [], rep
    assert read_table(s3_bucket, f"fda_run_{rid}/telemetry.parquet").num_rows == 107
    assert _nothing(flightlog.recover(s3_bucket.url(""), storage_options=opts, stale_after=0))


@pytest.mark.parametrize(
    "check",
    [
        "data",
        "live",
    ],
)
def test_three_threads_racing_to_recover_one_run_url(s3_bucket, spawn, check):
    opts = s3_bucket.storage_options
    root = s3_bucket.url("r")
    _, rid = spawn(root, "run")
    url = f"{root}/fda_run_{rid}"
    gate = threading.Barrier(3)

    def go(_: int) -> flightlog.RecoverReport:
        gate.wait()
        return flightlog.recover(url, storage_options=opts)

    with ThreadPoolExecutor(3) as pool:
        reports = list(pool.map(go, range(3)))
    if check == "data":
        assert [p for r in reports for p in _s3_paths(r)] == [(url, 107)], reports
        assert read_table(s3_bucket, f"r/fda_run_{rid}/telemetry.parquet")["iter"].to_pylist() == list(range(107))
        assert read_toml(s3_bucket, f"r/fda_run_{rid}/manifest.toml")["counts"]["rows_written"] == 107
        assert not [k for k in s3_bucket.keys() if "/segments/" in k]
    else:
        assert [(r.live, r.errors) for r in reports] == [([], [])] * 3, reports


def test_a_killed_dev_run_is_untouched_by_its_flow_prefixes_and_recovered_by_its_root(s3_bucket, spawn):
    opts = s3_bucket.storage_options
    root = s3_bucket.url("r")
    _, rid = spawn(root, "dev")
    before = s3_bucket.keys()
    flow = f"{root}/flows/f"
    for given in (
        flow,
        f"{flow}/",
        f"{root}/flows",
        f"{flow}/runs",
        f"{flow}/runs/{rid}.toml",
        f"{flow}/dev_telemetry",
    ):
        rep = flightlog.recover(given, storage_options=opts, stale_after=0)
        assert _nothing(rep), (given, rep)
    assert s3_bucket.keys() == before
    assert read_toml(s3_bucket, f"r/flows/f/runs/{rid}.toml")["status"] == "running"
    rep = flightlog.recover("s3a://" + root.removeprefix("s3://"), storage_options=opts)
    assert _s3_paths(rep) == [(f"{flow}/runs/{rid}.toml", 107)] and rep.errors == [], rep
    assert read_toml(s3_bucket, f"r/flows/f/runs/{rid}.toml")["status"] == "crashed"


def test_a_killed_bare_recording_on_s3_is_recovered_at_once_by_its_url(s3_bucket, spawn):
    url = s3_bucket.url("r/bare")
    spawn(url, "bare")
    rep = flightlog.recover(url, storage_options=s3_bucket.storage_options)
    assert _s3_paths(rep) == [(url, 107)], rep


@pytest.mark.parametrize(
    "stale_after",
    [
        600.0,
        0.0,
    ],
)
def test_a_live_bare_recording_on_s3_is_live_and_still_closes(s3_bucket, spawn, stale_after):
    url = s3_bucket.url("r/bare")
    proc, _ = spawn(url, "bare", "live")
    rep = flightlog.recover(url, storage_options=s3_bucket.storage_options, stale_after=stale_after)
    closed = finish(proc)
    assert (rep.recovered, rep.live, rep.errors, closed) == ([], [url], [], "closed"), (rep, closed)
    assert read_table(s3_bucket, "r/bare/telemetry.parquet")["iter"].to_pylist() == list(range(120))


def test_a_killed_recording_at_a_hidden_prefix_is_not_silently_ignored(s3_bucket, spawn):
    url = s3_bucket.url("r/.hid")
    spawn(url, "bare")
    rep = flightlog.recover(url, storage_options=s3_bucket.storage_options, stale_after=0)
    assert rep.errors or rep.recovered, rep


@pytest.mark.parametrize(
    "how",
    [
        "--root",
        "positional",
    ],
)
def test_the_cli_recovers_one_run_url(s3_bucket, spawn, how):
    root = s3_bucket.url("r")
    _, rid = spawn(root, "run")
    url = f"{root}/fda_run_{rid}"
    argv = ["recover", "--root", url] if how == "--root" else ["recover", url]
    proc = cli(*argv, "--format", "json", env=aws_env(s3_bucket))
    assert proc.returncode == 0, proc.stderr
    assert [(r["path"], r["telemetry_rows"]) for r in json.loads(proc.stdout)["recovered"]] == [(url, 107)]
    assert read_toml(s3_bucket, f"r/fda_run_{rid}/manifest.toml")["status"] == "crashed"


# --------------------------------------------------------------------------- local: a root's `flows`

_DEV_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from flightlog import Field, Schema, TelemetryManager
    mode = sys.argv[2]
    tm = TelemetryManager(sys.argv[1], "myflow", mode=mode, schema=Schema([Field("i", "i64", nullable=False)]),
                          flush_interval=60.0, **({"trial_id": "t1"} if mode == "tuner" else {}))
    for i in range(520):
        tm.log(i=i)
        if i == 499:
            tm.flush()
    print(tm.manifest_path, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _flows_error(report, path: Path) -> bool:
    return [e["path"] for e in report.errors] == [str(path)] and "rename it" in report.errors[0]["error"]


@pytest.mark.parametrize("flush", [False, True])
def test_a_killed_bare_recording_in_flows_is_reported_untouched_then_recovered_renamed(tmp_path: Path, flush: bool):
    root = tmp_path / "root"
    flows = root / "flows"
    n = _killed_bare(flows, 300, flush=flush)
    before = _listing(root)
    for given in (root, flows, root, flows):
        rep = flightlog.recover(given, stale_after=0)
        assert rep.recovered == [] and rep.live == [] and _flows_error(rep, flows), (given, rep)
    assert _listing(root) == before  # no .compact.lock, nothing swept
    flows.rename(root / "renamed")
    rep = flightlog.recover(root)
    assert rep.errors == [] and _paths(rep) == [(str(root / "renamed"), n)], rep
    assert _ids(root / "renamed" / "telemetry.parquet") == [(1, i) for i in range(n)]


def test_flows_a_symlink_to_a_killed_bare_recording_is_reported_and_its_target_untouched(tmp_path: Path):
    target = tmp_path / "elsewhere" / "rec"
    _killed_bare(target, 250, flush=True)
    root = tmp_path / "root"
    root.mkdir()
    (root / "flows").symlink_to(target)
    before = _listing(tmp_path)
    for given in (root, root / "flows"):
        rep = flightlog.recover(given, stale_after=0)
        assert rep.recovered == [] and rep.live == [] and _flows_error(rep, root / "flows"), (given, rep)
    assert _listing(tmp_path) == before


def test_real_dev_and_tuner_flows_killed_or_finished_are_recovered_as_before(tmp_path: Path):
    root = tmp_path / "root"
    with TelemetryManager(root, "finished", mode="dev", schema=SCHEMA) as done:
        done.record(1, 1.0)
    killed = []
    for mode in ("dev", "tuner"):
        proc = subprocess.run([PYTHON, "-c", _DEV_KILLED, str(root), mode], capture_output=True, text=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        killed.append(proc.stdout.strip())
    assert not any(n.startswith(".flightlog") for n in os.listdir(root / "flows"))
    before = _listing(root)
    # The flows folder itself is not a recording: no "rename it", nothing changed.
    assert _nothing(flightlog.recover(root / "flows"))
    assert _listing(root) == before
    rep = flightlog.recover(root)
    assert rep.errors == [] and rep.live == [], rep
    assert sorted(_paths(rep)) == sorted((k, 520) for k in killed)
    assert _nothing(flightlog.recover(root, stale_after=0))


def test_a_live_bare_recording_in_flows_is_untouched_and_told_to_close_first(tmp_path: Path):
    """A live `FlightRecorder(root / "flows")` is reported as a recording in the wrong place,
    not as live (telling its writer apart would take its claim, which recover does not do for
    what it will not recover): the advice says to close it before renaming it. Nothing is
    touched, and its own close writes every row."""
    root = tmp_path / "root"
    live = _Live(root / "flows", 400)
    try:
        reps = [flightlog.recover(given, stale_after=0) for given in (root, root / "flows")]
        closed = live.close()
    finally:
        live.kill()
    assert _ids(root / "flows" / "telemetry.parquet") == [(2, i) for i in range(400)]
    assert closed == "closed 400"
    for r in reps:
        assert r.recovered == [] and r.live == [] and [e["path"] for e in r.errors] == [str(root / "flows")], r
        assert "once its recorder is closed or gone, rename it" in r.errors[0]["error"], r


def test_a_killed_bare_recording_inside_flows_is_not_taken_for_a_flow(tmp_path: Path):
    root = tmp_path / "root"
    _killed_bare(root / "flows" / "x", 300, flush=True)
    before = _listing(root)
    rep = flightlog.recover(root, stale_after=0)
    assert not (root / "flows" / "x" / ".compact.lock").exists()
    assert rep.errors or rep.recovered, rep
    assert rep.recovered or _listing(root) == before

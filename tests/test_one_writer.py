"""One writer per run folder (issue 18) and recover that respects it (issue 19, items 4 and 14).

A recorder claims its folder (``flock`` on ``.flightlog.lock``) from construction to
``close()`` or process death. A second recorder in the same thread, another thread
or another process is refused with :class:`flightlog.RunClaimedError` naming the
holder; the first recorder's rows all reach its file. ``recover`` never finalises a
folder whose writer holds the claim, and concurrent recovers report each run once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import flightlog
from conftest import run_together
from flightlog import Field, FlightRecorder, RunClaimedError, Schema, TelemetryManager

PYTHON = sys.executable
SCHEMA = Schema([Field("who", "i64", nullable=False), Field("i", "i64", nullable=False)])


def _rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def _assert_names_holder(err: BaseException, pid: int) -> None:
    msg = str(err)
    assert f"process {pid}" in msg, msg
    assert f"host {socket.gethostname()}" in msg, msg
    assert "since 20" in msg, msg
    assert "one writer per run folder" in msg, msg


def test_two_recorders_in_one_process_second_is_refused_and_first_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "r5"
    a = FlightRecorder(path, SCHEMA, flush_interval=0.01)
    with pytest.raises(RunClaimedError) as exc:
        FlightRecorder(path, SCHEMA, flush_interval=0.01)
    _assert_names_holder(exc.value, os.getpid())
    assert isinstance(exc.value, flightlog.FlightlogError)
    # A recorder whose schema comes with its first log() is refused at construction too.
    with pytest.raises(RunClaimedError):
        FlightRecorder(path, None)
    for i in range(300_000):
        a.record(1, i)
    a.close()
    assert a.stats()["rows_written"] == 300_000
    assert _rows(path / "telemetry.parquet") == 300_000
    # The claim is released at close: no lock file is left in the finished folder.
    assert not (path / ".flightlog.lock").exists()


def test_a_recorder_in_another_thread_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with FlightRecorder(path, SCHEMA) as a:
        a.record(1, 0)
        errors: list[BaseException] = []

        def other() -> None:
            try:
                FlightRecorder(path, SCHEMA)
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join(timeout=60)
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], RunClaimedError), errors
        _assert_names_holder(errors[0], os.getpid())
        a.record(1, 1)
    assert _rows(path / "telemetry.parquet") == 2


_HOLDER = """
import sys
from flightlog import Field, FlightRecorder, Schema
s = Schema([Field("who", "i64", nullable=False), Field("i", "i64", nullable=False)])
rec = FlightRecorder(sys.argv[1], s, flush_interval=0.01)
for i in range(int(sys.argv[2])):
    rec.record(1, i)
rec.flush()
print("ready", flush=True)
if sys.argv[3] == "close":
    sys.stdin.readline()
    rec.close()
    print("closed", flush=True)
else:
    sys.stdin.readline()  # wait to be killed
"""


def _start_holder(path: Path, rows: int, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [PYTHON, "-c", _HOLDER, str(path), str(rows), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"holder did not start: {line!r} {proc.communicate(timeout=30)}")
    return proc


def _close_holder(proc: subprocess.Popen[str]) -> None:
    """Tells a holder started with mode "close" to close its recorder; waits for it to exit."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "closed"
    assert proc.wait(timeout=60) == 0


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def test_a_recorder_in_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r"
    proc = _start_holder(path, 50_000, "close")
    try:
        with pytest.raises(RunClaimedError) as exc:
            FlightRecorder(path, SCHEMA)
        _assert_names_holder(exc.value, proc.pid)
        _close_holder(proc)
    finally:
        _stop(proc)
    assert _rows(path / "telemetry.parquet") == 50_000


def test_a_recorder_on_a_finished_run_is_refused_and_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with FlightRecorder(path, SCHEMA) as a:
        for i in range(1000):
            a.record(1, i)
    final = path / "telemetry.parquet"
    before = (final.read_bytes(), final.stat().st_mtime_ns, final.stat().st_ino)
    with pytest.raises(FileExistsError, match="never appended to a finished one"):
        FlightRecorder(path, SCHEMA)
    assert (final.read_bytes(), final.stat().st_mtime_ns, final.stat().st_ino) == before
    assert not (path / ".flightlog.lock").exists()
    assert not (path / "segments").exists()


def test_kill_9_of_the_claim_holder_lets_recover_finalise(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = root / "fda_run_k"
    proc = _start_holder(path, 20_000, "kill")
    _stop(proc)
    assert (path / ".flightlog.lock").exists()  # left by the killed holder, lock gone with it
    report = flightlog.recover(root, stale_after=0)
    assert report.errors == [], report.errors
    assert [r["path"] for r in report.recovered] == [str(path)]
    assert report.recovered[0]["telemetry_rows"] == 20_000
    assert _rows(path / "telemetry.parquet") == 20_000
    assert not (path / ".flightlog.lock").exists()


def test_a_killed_bare_recorder_is_recovered_at_once(tmp_path: Path) -> None:
    """A FlightRecorder folder has no manifest (no pid to ask): its claim file names the dead
    writer's host and pid, and the claim is free, so recover need not wait ``stale_after``."""
    root = tmp_path / "root"
    path = root / "fda_run_k"
    proc = _start_holder(path, 20_000, "kill")
    _stop(proc)
    report = flightlog.recover(root)  # the default stale_after (600 s); the files are seconds old
    assert report.errors == [] and report.live == [], report
    assert [r["path"] for r in report.recovered] == [str(path)]
    assert report.recovered[0]["telemetry_rows"] == 20_000
    assert _rows(path / "telemetry.parquet") == 20_000
    assert not (path / ".flightlog.lock").exists() and not (path / ".flightlog.spool").exists()


def test_recover_given_the_run_folder_itself(tmp_path: Path) -> None:
    path = tmp_path / "just_a_folder"  # any name: a recorder's folder is a run folder
    proc = _start_holder(path, 7_000, "kill")
    _stop(proc)
    report = flightlog.recover(path)
    assert report.errors == [] and report.live == [], report
    assert [r["path"] for r in report.recovered] == [str(path)]
    assert _rows(path / "telemetry.parquet") == 7_000
    again = flightlog.recover(path)
    assert again.recovered == [] and again.errors == [] and again.live == []
    assert _rows(path / "telemetry.parquet") == 7_000


def test_recover_reports_a_live_bare_recorder_it_leaves_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = root / "fda_run_live"
    proc = _start_holder(path, 5000, "close")
    try:
        for given in (root, path):
            report = flightlog.recover(given)
            assert report.live == [str(path)] and report.recovered == [] and report.errors == [], report
        assert not (path / "telemetry.parquet").exists() and (path / ".flightlog.spool").is_dir()
        _close_holder(proc)
    finally:
        _stop(proc)
    assert _rows(path / "telemetry.parquet") == 5000


def test_a_bare_recorder_of_another_boot_waits_stale_after(tmp_path: Path) -> None:
    """A spool whose writer ran in another boot (or on another host sharing the folder) names
    a pid this host cannot ask: the folder's age decides, as for any such run."""
    root = tmp_path / "root"
    path = root / "fda_run_far"
    proc = _start_holder(path, 3000, "kill")
    _stop(proc)
    (meta_path,) = (path / ".flightlog.spool").glob("*/meta.json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "boot_id": "another-boot"}))
    before = sorted(p.name for p in path.rglob("*"))
    report = flightlog.recover(root)
    assert report.recovered == [] and report.live == [] and report.errors == [], report
    assert sorted(p.name for p in path.rglob("*")) == before
    meta_path.write_text(json.dumps(meta))  # this boot's writer again, and it is gone: at once
    report = flightlog.recover(root)
    assert [r["path"] for r in report.recovered] == [str(path)], report
    assert _rows(path / "telemetry.parquet") == 3000


def test_old_style_segment_names_are_still_recovered(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = root / "fda_run_old"
    proc = _start_holder(path, 3000, "kill")
    _stop(proc)
    segs = sorted((path / "segments").glob("telemetry-*.parquet"))
    assert segs and all(len(p.stem) == len("telemetry-") + 14 for p in segs), segs
    for n, p in enumerate(segs, 1):  # as written before segment names had an instance
        p.rename(p.with_name(f"telemetry-{n:06d}.parquet"))
    report = flightlog.recover(root, stale_after=0)
    assert report.errors == []
    assert _rows(path / "telemetry.parquet") == 3000


def test_recover_leaves_a_live_bare_recorder_alone(tmp_path: Path) -> None:
    """Issue 19 item 4: a live FlightRecorder idle past stale_after is not crashed."""
    root = tmp_path / "root"
    path = root / "fda_run_live"
    rec = FlightRecorder(path, SCHEMA, flush_interval=0.01)
    for i in range(20_000):
        rec.record(1, i)
    rec.flush()
    old = time.time() - 3600
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old))
    report = flightlog.recover(root, stale_after=0.5)
    assert report.recovered == [] and report.errors == []
    assert report.live == [str(path)]
    assert not (path / "telemetry.parquet").exists()
    assert not (path / "manifest.toml").exists()
    rec.record(1, 20_000)
    rec.close()
    assert _rows(path / "telemetry.parquet") == 20_001


def test_recover_leaves_a_live_recorder_of_another_process_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = root / "fda_run_other"
    proc = _start_holder(path, 5000, "close")
    try:
        old = time.time() - 3600
        for p in [path, *path.rglob("*")]:
            os.utime(p, (old, old))
        report = flightlog.recover(root, stale_after=0)
        assert report.live == [str(path)] and report.recovered == [] and report.errors == []
        _close_holder(proc)
    finally:
        _stop(proc)
    assert _rows(path / "telemetry.parquet") == 5000


_CRASH = """
import os, signal, sys
from flightlog import TelemetryManager
root, n = sys.argv[1], int(sys.argv[2])
for k in range(n):
    pid = os.fork()
    if pid == 0:
        tm = TelemetryManager(root, "flow", run_id=f"c{k}")
        for i in range(100 + k):
            tm.log(iter=i, E=float(i))
        tm.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
"""


def test_concurrent_recovers_exit_0_and_report_each_run_once(tmp_path: Path, child_env: dict[str, str]) -> None:
    """Issue 19 item 14."""
    root = tmp_path / "root"
    root.mkdir()
    n = 6
    subprocess.run([PYTHON, "-c", _CRASH, str(root), str(n)], check=True, timeout=120, env=child_env)
    cmd = [PYTHON, "-m", "flightlog.cli", "recover", "--root", str(root), "--format", "json"]
    outs = run_together([cmd] * 4, env=child_env, timeout=120)
    reports = [json.loads(o) for o in outs]
    assert all(r["errors"] == [] for r in reports), reports
    recovered = [r["run_id"] for rep in reports for r in rep["recovered"]]
    assert sorted(recovered) == sorted(f"c{k}" for k in range(n)), recovered
    for k in range(n):
        folder = root / f"fda_run_c{k}"
        assert _rows(folder / "telemetry.parquet") == 100 + k
        assert not (folder / "segments").exists()
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert flightlog.recover(root).recovered == []


def test_a_manager_run_claims_its_folder(tmp_path: Path) -> None:
    with TelemetryManager(tmp_path, "flow", run_id="m1") as tm:
        tm.log(iter=0, E=1.0)
        with pytest.raises(RunClaimedError):
            FlightRecorder(tm.run_path, None)
    assert _rows(Path(tm.run_path) / "telemetry.parquet") == 1


_ODD_LOCK = r"""
import json, os, sys
import flightlog
from flightlog import Field, FlightRecorder, Schema
root, lock_kind = sys.argv[1], sys.argv[2]
out = {}
try:
    FlightRecorder(os.path.join(root, "fda_run_new"), Schema([Field("i", "i64")]))
    out["constructor"] = "accepted"
except flightlog.FlightlogError as e:
    out["constructor"] = f"{type(e).__name__}: {e}"
report = flightlog.recover(root)
out["recovered"] = [r["run_id"] for r in report.recovered]
out["errors"] = [e["error"] for e in report.errors]
print(json.dumps(out))
"""


def _plant(lock: Path, kind: str, outside: Path) -> None:
    lock.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.symlink_to(outside)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_an_odd_lock_file_is_refused_never_waited_on_or_followed(tmp_path: Path, kind: str) -> None:
    """A FIFO planted as `.flightlog.lock` hung the constructor and `recover` (opening it
    waits for a peer); a symbolic link was followed and its target overwritten."""
    root = tmp_path / "root"
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    crashed = root / "fda_run_crashed"
    proc = subprocess.run([PYTHON, "-c", _HOLDER_THEN_DIE, str(crashed)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (root / "fda_run_new").mkdir()
    for run in (crashed, root / "fda_run_new"):
        _plant(run / ".flightlog.lock", kind, outside)
    child = subprocess.Popen(
        [PYTHON, "-c", _ODD_LOCK, str(root), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise AssertionError("hung on a planted lock file") from None
    assert child.returncode == 0, err
    seen = json.loads(out)
    assert "lock file" in seen["constructor"] and "WriteError" in seen["constructor"], seen
    assert seen["recovered"] == [] and len(seen["errors"]) == 1 and "lock file" in seen["errors"][0], seen
    assert outside.read_text() == "keep me"


_HOLDER_THEN_DIE = r"""
import os, signal, sys
from flightlog import Field, Schema, TelemetryManager
path = sys.argv[1]
root, name = os.path.split(path)
tm = TelemetryManager(root, "f", run_id=name.removeprefix("fda_run_"), schema=Schema([Field("i", "i64")]))
for i in range(100):
    tm.record(i)
tm.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""

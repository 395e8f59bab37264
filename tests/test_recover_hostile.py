"""Hostile tests of recover on a bare recorder's folder (no manifest: the claim file names
the writer) and of ``recover(folder)``: nothing a recorder wrote is lost, duplicated, or
finalised while its writer is alive.

A ``FlightRecorder(folder, schema)`` leaves ``.flightlog.lock`` (``pid= host= since=``),
``.flightlog.spool/NNNNNNNN/`` and maybe ``segments/``. ``recover`` takes the claim (a
non-blocking ``flock``) when the claim file names this host: held, the writer is alive
(``report.live``); free, the writer is dead and the run is recovered at once.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import flightlog
from flightlog import Field, FlightRecorder, RunClaimedError, Schema, TelemetryManager

PYTHON = sys.executable
SCHEMA = Schema([Field("who", "i64", nullable=False), Field("i", "i64", nullable=False)])
HOST = socket.gethostname()

# --------------------------------------------------------------------------- helpers


def _ids(path: Path) -> list[tuple[int, int]]:
    t = pq.read_table(path)
    return list(zip(t["who"].to_pylist(), t["i"].to_pylist(), strict=True))


def _listing(folder: Path) -> dict[str, int]:
    """Every entry under ``folder`` (links not followed) with its size (-1 for folders)."""
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(folder))] = -1 if p.is_dir() and not p.is_symlink() else st.st_size
    return out


def _paths(report: Any) -> list[tuple[str, int]]:
    return [(r["path"], r["telemetry_rows"]) for r in report.recovered]


# A child that records ``n`` rows (who=1, i=0..n-1) into a bare recorder and kills itself.
_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from flightlog import Field, FlightRecorder, Schema
    s = Schema([Field("who", "i64", nullable=False), Field("i", "i64", nullable=False)])
    path, n, flush, ring = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    rec = FlightRecorder(path, s, flush_interval=60.0, ring_capacity=ring or None)
    for i in range(n):
        rec.record(1, i)
    if flush == "flush":
        rec.flush()  # a segment in segments/, then more rows in the spool only
        for i in range(n, n + 7):
            rec.record(1, i)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _killed_bare(path: Path, n: int, *, flush: bool = False, ring: int = 0) -> int:
    """Records into ``path`` in a child that is then killed -9; returns the rows recorded."""
    proc = subprocess.run(
        [PYTHON, "-c", _KILLED, str(path), str(n), "flush" if flush else "-", str(ring)],
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (path / ".flightlog.lock").is_file() and not (path / "telemetry.parquet").exists()
    return n + 7 if flush else n


# A live child recorder: records ``n`` rows, flushes, says "ready", then on each stdin line:
# "more K" records K more rows and says "ok"; "close" closes and says "closed".
_LIVE = textwrap.dedent(
    """
    import sys
    from flightlog import Field, FlightRecorder, Schema
    s = Schema([Field("who", "i64", nullable=False), Field("i", "i64", nullable=False)])
    rec = FlightRecorder(sys.argv[1], s, flush_interval=0.02)
    n = int(sys.argv[2])
    for i in range(n):
        rec.record(2, i)
    rec.flush()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[0] == "more":
            for i in range(n, n + int(words[1])):
                rec.record(2, i)
            n += int(words[1])
            print("ok", flush=True)
        elif words[0] == "close":
            rec.close()
            print("closed", rec.stats()["rows_written"], flush=True)
            break
    """
)


class _Live:
    def __init__(self, path: Path, n: int) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-c", _LIVE, str(path), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        line = self._read()
        if line != "ready":
            self.kill()
            raise AssertionError(f"live recorder did not start: {line!r}")

    def _read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def say(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> str:
        answer = self.say("close")
        assert self.proc.wait(timeout=120) == 0
        return answer

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
            self.proc.communicate(timeout=30)


@pytest.fixture
def live_factory():
    made: list[_Live] = []

    def make(path: Path, n: int) -> _Live:
        made.append(_Live(path, n))
        return made[-1]

    yield make
    for m in made:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(m.proc.pid, signal.SIGCONT)
        m.kill()


# --------------------------------------------------------------------------- live writers are left alone


def test_a_stopped_live_bare_recorder_of_another_process_is_live_and_untouched(tmp_path: Path, live_factory) -> None:
    """SIGSTOPped (alive, silent): its claim is held, so recover(root) and recover(folder)
    report it live and change nothing; resumed, it records more and closes with every row."""
    root = tmp_path / "root"
    path = root / "stopped"
    live = live_factory(path, 4000)
    os.killpg(live.proc.pid, signal.SIGSTOP)
    before = _listing(path)
    for given in (root, path, path, root):
        report = flightlog.recover(given)
        assert report.live == [str(path)] and report.recovered == [] and report.errors == [], report
        report = flightlog.recover(given, stale_after=0)  # the claim, not the age, decides
        assert report.live == [str(path)] and report.recovered == [] and report.errors == [], report
    assert _listing(path) == before
    assert not (path / "manifest.toml").exists() and not (path / "telemetry.parquet").exists()
    os.killpg(live.proc.pid, signal.SIGCONT)
    assert live.say("more 3000") == "ok"
    assert live.close() == "closed 7000"
    assert _ids(path / "telemetry.parquet") == [(2, i) for i in range(7000)]
    assert sorted(os.listdir(path)) == ["events.parquet", "telemetry.parquet"]
    again = flightlog.recover(root, stale_after=0)
    assert again.recovered == [] and again.live == [] and again.errors == []


def test_a_live_bare_recorder_in_another_thread_of_this_process_is_live(tmp_path: Path) -> None:
    """The claim is an flock of an open file description: recover in the writer's own process
    opens the file anew and finds it held (the text names this very pid)."""
    root = tmp_path / "root"
    path = root / "threaded"
    rec = FlightRecorder(path, SCHEMA, flush_interval=0.01, ring_capacity=64)
    stop = threading.Event()
    written = [0]
    failures: list[BaseException] = []

    def produce() -> None:
        try:
            i = 0
            while not stop.is_set() or i < 2000:
                rec.record(3, i)
                i += 1
                written[0] = i
        except BaseException as e:  # pragma: no cover - reported below
            failures.append(e)

    t = threading.Thread(target=produce)
    t.start()
    try:
        reports = []
        for k in range(30):
            given = root if k % 2 else path
            reports.append(flightlog.recover(given, stale_after=0 if k % 3 == 0 else 600))
    finally:
        stop.set()
        t.join(timeout=120)
    assert not t.is_alive() and failures == []
    for report in reports:
        assert report.live == [str(path)] and report.recovered == [] and report.errors == [], report
    assert not (path / "manifest.toml").exists()
    rec.close()
    assert _ids(path / "telemetry.parquet") == [(3, i) for i in range(written[0])]
    assert sorted(os.listdir(path)) == ["events.parquet", "telemetry.parquet"]


def test_a_claim_text_overwritten_in_place_does_not_fool_recover(tmp_path: Path, live_factory) -> None:
    """Someone rewrites the live writer's claim file (same inode) to name a dead pid, or no
    pid at all: the writer still holds the flock on that inode, so the run is live."""
    path = tmp_path / "root" / "scribbled"
    live = live_factory(path, 2500)
    lock = path / ".flightlog.lock"
    inode = lock.stat().st_ino
    for text in (f"pid=999999999 host={HOST} since=2020-01-01T00:00:00Z\n", "", "garbage\n", f"pid=1 host={HOST}\n"):
        with open(lock, "r+") as f:
            f.truncate(0)
            f.write(text)
        for given in (path, path.parent):
            # A claim naming this host is tried at once; any other is tried once stale (0 here).
            report = flightlog.recover(given, stale_after=600 if text.startswith("pid=") else 0)
            assert report.live == [str(path)] and report.recovered == [] and report.errors == [], (text, report)
    assert lock.stat().st_ino == inode
    assert not (path / "manifest.toml").exists() and not (path / "telemetry.parquet").exists()
    assert live.close() == "closed 2500"
    assert _ids(path / "telemetry.parquet") == [(2, i) for i in range(2500)]


def test_a_replaced_claim_file_does_not_get_a_live_writer_finalised(tmp_path: Path, live_factory) -> None:
    """The writer's claim file is replaced (``sed -i``, a sync tool, rm + echo) by one naming a
    dead pid of this host. The live writer's flock is on the old, unlinked inode; the spool's
    meta.json still names the writer's live pid. recover must not finalise the run."""
    path = tmp_path / "root" / "replaced"
    live = live_factory(path, 1000)
    lock = path / ".flightlog.lock"
    lock.unlink()
    lock.write_text(f"pid=999999999 host={HOST} since=2020-01-01T00:00:00Z\n")
    report = flightlog.recover(path)  # the default stale_after: the folder is seconds old
    assert report.recovered == [] and report.errors == [], report
    assert live.say("more 1000") == "ok"
    assert live.close() == "closed 2000"
    assert _ids(path / "telemetry.parquet") == [(2, i) for i in range(2000)]
    assert not (path / "segments").exists()


# --------------------------------------------------------------------------- the flock is the proof


@pytest.mark.parametrize("who", ["pid1", "parent", "me", "role_recover", "far_future_since"])
def test_a_dead_writers_claim_naming_a_live_pid_is_still_recovered(tmp_path: Path, who: str) -> None:
    """The claim file names a live but unrelated pid (pid reuse): the free flock proves the
    writer gone; recovered at once with every row, and never twice."""
    path = tmp_path / "root" / f"reused_{who}"
    n = _killed_bare(path, 3001, flush=who == "me")
    pid = {"pid1": 1, "parent": os.getppid(), "me": os.getpid(), "role_recover": os.getpid()}.get(who, 1)
    extra = " role=recover" if who == "role_recover" else ""
    since = "9999-12-31T23:59:59Z" if who == "far_future_since" else "2026-01-01T00:00:00Z"
    (path / ".flightlog.lock").write_text(f"pid={pid} host={HOST} since={since}{extra}\n")
    report = flightlog.recover(path.parent if who == "parent" else path)
    assert report.errors == [] and report.live == [], report
    assert _paths(report) == [(str(path), n)]
    assert _ids(path / "telemetry.parquet") == [(1, i) for i in range(n)]
    assert sorted(os.listdir(path)) == ["manifest.toml", "telemetry.parquet"]
    again = flightlog.recover(path, stale_after=0)
    assert again.recovered == [] and again.errors == [] and again.live == []


_DYING = _KILLED.replace("os.kill(os.getpid(), signal.SIGKILL)", "print('ready', flush=True)\nsys.stdin.readline()")


def test_a_writer_killed_but_not_yet_reaped_is_recovered(tmp_path: Path) -> None:
    """A writer killed but not yet waited for (dying, then a zombie): live while its flock is
    held, then recovered at once, never an error in between."""
    path = tmp_path / "root" / "zombie"
    proc = subprocess.Popen(
        [PYTHON, "-c", _DYING, str(path), "5000", "-", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)  # not proc.kill(): nothing here may reap it
        deadline = time.monotonic() + 60
        while True:
            report = flightlog.recover(path)
            assert report.errors == [], report
            if report.recovered:
                break
            assert report.live == [str(path)], report  # still dying: its lock is held
            assert time.monotonic() < deadline, "the killed writer's claim was never let go"
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert _paths(report) == [(str(path), 5000)]
    assert _ids(path / "telemetry.parquet") == [(1, i) for i in range(5000)]


# --------------------------------------------------------------------------- races


def test_recovers_racing_in_threads_recover_a_dead_bare_folder_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = root / "raced"
    n = _killed_bare(path, 20_000, flush=True, ring=256)
    k = 8
    barrier = threading.Barrier(k)
    reports: list[Any] = [None] * k
    failures: list[BaseException] = []

    def go(j: int) -> None:
        try:
            barrier.wait(timeout=60)
            reports[j] = flightlog.recover(root if j % 2 else path)
        except BaseException as e:  # pragma: no cover - reported below
            failures.append(e)

    threads = [threading.Thread(target=go, args=(j,)) for j in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == [] and all(not t.is_alive() for t in threads)
    assert all(r.errors == [] and r.live == [] for r in reports), reports
    assert sorted(p for r in reports for p in _paths(r)) == [(str(path), n)]
    assert _ids(path / "telemetry.parquet") == [(1, i) for i in range(n)]
    assert sorted(os.listdir(path)) == ["manifest.toml", "telemetry.parquet"]


_RECOVER_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import flightlog
    go = float(sys.argv[2])
    while time.time() < go:
        time.sleep(0.0005)
    print(json.dumps(flightlog.recover(sys.argv[1]).as_dict()))
    """
)


def test_recovers_racing_in_processes_recover_a_dead_bare_folder_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = root / "raced"
    n = _killed_bare(path, 30_000, ring=64)
    go = time.time() + 3.0  # all children start, then recover at once
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", _RECOVER_CHILD, str(path if j % 2 else root), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for j in range(5)
    ]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    assert all(r["errors"] == [] and r["live"] == [] for r in reports), reports
    recovered = [(x["path"], x["telemetry_rows"]) for r in reports for x in r["recovered"]]
    assert recovered == [(str(path), n)], reports
    assert _ids(path / "telemetry.parquet") == [(1, i) for i in range(n)]
    assert sorted(os.listdir(path)) == ["manifest.toml", "telemetry.parquet"]


def test_a_new_recorder_racing_recover_after_a_kill_is_refused_and_no_row_is_lost(tmp_path: Path) -> None:
    """Right after a kill, a new FlightRecorder on the same folder races recover. The new
    recorder is refused (the claim is recover's, the dead spool is unfinished, or the run is
    finished); recover reports the run live at worst (while the new recorder held the claim
    for a moment) and recovers it then; the dead writer's rows are there exactly once."""
    rng = random.Random(20261204)
    for attempt in range(8):
        path = tmp_path / f"again{attempt}"
        n = _killed_bare(path, 2000 + attempt, flush=attempt % 2 == 1)
        barrier = threading.Barrier(2)
        outcome: dict[str, Any] = {}
        delay = rng.uniform(0, 0.004)

        def start(barrier: threading.Barrier, delay: float, path: Path, outcome: dict[str, Any]) -> None:
            barrier.wait(timeout=60)
            time.sleep(delay)
            try:
                rec = FlightRecorder(path, SCHEMA)
            except (RunClaimedError, FileExistsError) as e:
                outcome["refused"] = e
            else:  # pragma: no cover - a defect: reported by the assert below
                outcome["started"] = True
                rec.close()

        t = threading.Thread(target=start, args=(barrier, delay, path, outcome))
        t.start()
        barrier.wait(timeout=60)
        first = flightlog.recover(path)
        t.join(timeout=120)
        assert not t.is_alive()
        assert "started" not in outcome and "refused" in outcome, outcome
        assert first.errors == [], first
        reports = [first]
        if not first.recovered:
            # The refused recorder held the claim a moment (live), or had already let go of it,
            # removing the dead writer's claim file (its spool still says it is gone).
            assert first.live in ([str(path)], []), first
            reports.append(flightlog.recover(path, stale_after=0))
        assert [p for r in reports for p in _paths(r)] == [(str(path), n)], reports
        assert _ids(path / "telemetry.parquet") == [(1, i) for i in range(n)]
        assert sorted(os.listdir(path)) == ["manifest.toml", "telemetry.parquet"]
        with pytest.raises((RunClaimedError, FileExistsError)):
            FlightRecorder(path, SCHEMA)  # finished now: never appended to
        assert _ids(path / "telemetry.parquet") == [(1, i) for i in range(n)]


def test_recover_hammering_a_recorder_while_it_closes_never_marks_it_crashed(tmp_path: Path) -> None:
    """recover(root) and recover(folder) in a loop while a recorder records and closes
    normally in another process: every report says live or nothing; the run has no
    manifest afterwards (it was never finalised as crashed) and every row once."""
    root = tmp_path / "root"
    for attempt in range(3):
        path = root / f"closing{attempt}"
        live = _Live(path, 3000 + attempt)
        try:
            stop = threading.Event()
            reports: list[Any] = []
            failures: list[BaseException] = []

            def hammer(path: Path, stop: threading.Event, reports: list[Any], failures: list[BaseException]) -> None:
                try:
                    k = 0
                    while not stop.is_set():
                        reports.append(flightlog.recover(root if k % 2 else path, stale_after=0 if k % 3 else 600))
                        k += 1
                except BaseException as e:  # pragma: no cover - reported below
                    failures.append(e)

            threads = [threading.Thread(target=hammer, args=(path, stop, reports, failures)) for _ in range(2)]
            for t in threads:
                t.start()
            try:
                assert live.say("more 5000") == "ok"
                answer = live.close()
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=120)
        finally:
            live.kill()
        assert failures == [] and reports, failures
        assert answer == f"closed {8000 + attempt}"
        for r in reports:
            assert r.recovered == [] and r.errors == [], r
            assert set(r.live) <= {str(path)}, r
        assert sorted(os.listdir(path)) == ["events.parquet", "telemetry.parquet"]
        assert _ids(path / "telemetry.parquet") == [(2, i) for i in range(8000 + attempt)]


def test_recover_after_a_refused_new_recorder_is_still_at_once(tmp_path: Path) -> None:
    """The user re-runs a killed script on the same folder: the recorder is refused, telling
    them to run recover on the folder. That recover must recover the run then, not in 10 min."""
    path = tmp_path / "rerun"
    n = _killed_bare(path, 1500)
    with pytest.raises(FileExistsError, match="run recover on the folder"):
        FlightRecorder(path, SCHEMA)
    report = flightlog.recover(path)  # the default stale_after; the folder is seconds old
    assert report.errors == [] and report.live == [], report
    assert _paths(report) == [(str(path), n)]
    assert _ids(path / "telemetry.parquet") == [(1, i) for i in range(n)]


# --------------------------------------------------------------------------- how the folder is named


@pytest.mark.parametrize("form", ["dot", "relative", "trailing_slash", "dot_segments", "renamed", "under_root"])
def test_recover_a_folder_however_it_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    work = tmp_path / "work"
    path = work / "trial"
    n = _killed_bare(path, 1234, flush=form in ("dot", "renamed"))
    if form == "renamed":
        path = path.rename(work / "trial_renamed_after_the_kill")
    monkeypatch.chdir(path if form == "dot" else work)
    given: Any = {
        "dot": ".",
        "relative": path.name,
        "trailing_slash": f"{path.name}/",
        "dot_segments": f"./{path.name}/./",
        "renamed": path,
        "under_root": work,
    }[form]
    report = flightlog.recover(given)
    assert report.errors == [] and report.live == [], report
    assert [(Path(p).resolve(), rows) for p, rows in _paths(report)] == [(path.resolve(), n)]
    assert report.recovered[0]["run_id"] == path.name and report.recovered[0]["status"] == "crashed"
    assert _ids(path / "telemetry.parquet") == [(1, i) for i in range(n)]
    assert sorted(os.listdir(path)) == ["manifest.toml", "telemetry.parquet"]
    again = flightlog.recover(given, stale_after=0)
    assert again.recovered == [] and again.errors == [] and again.live == []


def test_a_symlink_to_a_run_folder_with_segments_is_refused_and_untouched(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "real"
    _killed_bare(real, 800, flush=True)
    before = _listing(real)
    root = tmp_path / "root"
    root.mkdir()
    link = root / "link"
    link.symlink_to(real)
    for given in (link, root):
        report = flightlog.recover(given)
        assert report.recovered == [] and report.live == [], report
        assert [e["path"] for e in report.errors] == [str(link)], report
        assert "symbolic link" in report.errors[0]["error"]
    assert _listing(real) == before


def test_a_symlinked_segments_folder_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    path = tmp_path / "root" / "segs_linked"
    _killed_bare(path, 900, flush=True)
    outside = tmp_path / "outside_segments"
    shutil.move(path / "segments", outside)
    (path / "segments").symlink_to(outside)
    before, before_out = _listing(path), _listing(outside)
    for given in (path, path.parent):
        report = flightlog.recover(given, stale_after=0)
        assert report.recovered == [] and report.live == [], report
        assert len(report.errors) == 1 and "symbolic link" in report.errors[0]["error"], report
    assert _listing(path) == before and _listing(outside) == before_out


def test_a_symlinked_spool_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    path = tmp_path / "root" / "spool_linked"
    _killed_bare(path, 700)
    outside = tmp_path / "outside_spool"
    shutil.move(path / ".flightlog.spool", outside)
    (path / ".flightlog.spool").symlink_to(outside)
    before_out = _listing(outside)
    report = flightlog.recover(path)
    assert _listing(outside) == before_out  # recover never writes or deletes through a link
    assert report.recovered == [] and len(report.errors) == 1, report


def test_a_symlink_to_a_bare_folder_without_segments_is_not_silently_ignored(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "real"
    _killed_bare(real, 600)
    link = tmp_path / "link"
    link.symlink_to(real)
    report = flightlog.recover(link)
    assert report.recovered or report.errors, report


@pytest.mark.parametrize("name", ["flows", ".hidden_trial"])
def test_a_bare_folder_named_like_a_roots_skipped_entries_is_not_silently_ignored(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    n = _killed_bare(path, 500)
    report = flightlog.recover(path)
    assert report.errors or _paths(report) == [(str(path), n)], report


def test_odd_claim_and_manifest_files_never_block_and_the_rows_stay(tmp_path: Path) -> None:
    root = tmp_path / "root"
    fifo_lock = root / "fifo_lock"
    n1 = _killed_bare(fifo_lock, 400)
    (fifo_lock / ".flightlog.lock").unlink()
    os.mkfifo(fifo_lock / ".flightlog.lock")
    fifo_manifest = root / "fifo_manifest"
    n2 = _killed_bare(fifo_manifest, 300)
    os.mkfifo(fifo_manifest / "manifest.toml")
    linked_lock = root / "linked_lock"
    n3 = _killed_bare(linked_lock, 200)
    target = tmp_path / "precious"
    target.write_text(f"pid=999999999 host={HOST} since=x\n")
    (linked_lock / ".flightlog.lock").unlink()
    (linked_lock / ".flightlog.lock").symlink_to(target)
    before = {p: _listing(p) for p in (fifo_lock, fifo_manifest, linked_lock)}
    # The default stale_after: each spool says its writer is gone, so recover goes for the
    # claim (or the manifest) and reports the odd file instead of opening it; nothing waits.
    report = flightlog.recover(root)
    assert report.recovered == [] and report.live == [], report
    assert sorted(e["path"] for e in report.errors) == sorted(map(str, before)), report
    errors = {e["path"]: e["error"] for e in report.errors}
    assert "FIFO" in errors[str(fifo_manifest)] and "not a regular file" in errors[str(fifo_lock)], errors
    assert "link" in errors[str(linked_lock)], errors
    for folder in before:
        one = flightlog.recover(folder, stale_after=0)
        assert one.recovered == [] and one.live == [] and [e["path"] for e in one.errors] == [str(folder)], one
    assert {p: _listing(p) for p in before} == before
    assert target.read_text() == f"pid=999999999 host={HOST} since=x\n"
    # Once the odd file is removed, every row is recovered.
    (fifo_lock / ".flightlog.lock").unlink()
    (fifo_manifest / "manifest.toml").unlink()
    (linked_lock / ".flightlog.lock").unlink()
    report = flightlog.recover(root, stale_after=0)
    assert report.errors == [], report
    assert sorted(_paths(report)) == sorted([(str(fifo_lock), n1), (str(fifo_manifest), n2), (str(linked_lock), n3)])
    for folder, n in ((fifo_lock, n1), (fifo_manifest, n2), (linked_lock, n3)):
        assert _ids(folder / "telemetry.parquet") == [(1, i) for i in range(n)]


# --------------------------------------------------------------------------- other kinds of runs


_TM_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from flightlog import Field, Schema, TelemetryManager
    tm = TelemetryManager(sys.argv[1], "flowk", mode="run", run_id="r1",
                          schema=Schema([Field("i", "i64", nullable=False)]), flush_interval=60.0)
    for i in range(int(sys.argv[2])):
        tm.log(i=i)
    tm.event("HALF", {"k": 1})
    print(os.path.dirname(tm.manifest_path), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_telemetry_manager_run_folder_is_finalised_crashed_with_every_row(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = subprocess.run([PYTHON, "-c", _TM_KILLED, str(root), "4321"], timeout=120, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_dir = Path(proc.stdout.strip())
    assert run_dir.parent == root and (run_dir / "manifest.toml").is_file()
    report = flightlog.recover(run_dir)
    assert report.errors == [] and report.live == [], report
    assert _paths(report) == [(str(run_dir), 4321)]
    assert report.recovered[0]["previous_status"] == "running" and report.recovered[0]["status"] == "crashed"
    events = pq.read_table(run_dir / "events.parquet")["event"].to_pylist()
    assert report.recovered[0]["event_rows"] == len(events) and events.count("HALF") == 1, events
    t = pq.read_table(run_dir / "telemetry.parquet")
    assert t["i"].to_pylist() == list(range(4321))
    assert set(t["flow_name"].to_pylist()) == {"flowk"} and set(t["run_id"].to_pylist()) == {"r1"}
    from flightlog.runs.manifest import read_manifest

    m = read_manifest(run_dir / "manifest.toml")
    assert m["status"] == "crashed" and m["counts"]["rows_written"] == 4321 and m["flow_name"] == "flowk"
    assert sorted(os.listdir(run_dir)) == ["events.parquet", "manifest.toml", "telemetry.parquet"]
    for given in (run_dir, root):
        again = flightlog.recover(given, stale_after=0)
        assert again.recovered == [] and again.errors == [] and again.live == []


_OUT_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from flightlog import Field, FlightRecorder, Schema
    s = Schema([Field("who", "i64", nullable=False), Field("i", "i64", nullable=False)])
    rec = FlightRecorder(sys.argv[1], s, flush_interval=60.0, overwrite=sys.argv[3] == "over")
    for i in range(int(sys.argv[2])):
        rec.record(4, i)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_output_file_recording_is_recovered_as_before(tmp_path: Path) -> None:
    """``FlightRecorder("x/out.parquet")`` killed: recover(the file) publishes it; recover of
    its folder (and a TelemetryManager root around it) does not touch its hidden sidecar."""
    work = tmp_path / "x"
    out = work / "out.parquet"
    proc = subprocess.run([PYTHON, "-c", _OUT_KILLED, str(out), "2222", "-"], timeout=120, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    sidecar = work / ".out.parquet.flightlog"
    before = _listing(work)
    report = flightlog.recover(work)
    assert report.recovered == [] and report.errors == [] and report.live == [], report
    # Given the hidden sidecar itself: not a run folder; said so, pointing at the output file.
    report = flightlog.recover(sidecar)
    assert report.recovered == [] and report.live == [], report
    assert [e["path"] for e in report.errors] == [str(sidecar)], report
    assert "recover that file" in report.errors[0]["error"]
    assert _listing(work) == before and not out.exists()
    report = flightlog.recover(out)
    assert report.errors == [] and report.live == [], report
    assert [(r["path"], r["telemetry_rows"]) for r in report.recovered] == [(str(out), 2222)]
    assert _ids(out) == [(4, i) for i in range(2222)]
    # overwrite=True killed: the finished file stays as it was until the replacement is recovered.
    proc = subprocess.run([PYTHON, "-c", _OUT_KILLED, str(out), "3333", "over"], timeout=120, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _ids(out) == [(4, i) for i in range(2222)]
    assert flightlog.recover(work).recovered == []
    assert _ids(out) == [(4, i) for i in range(2222)]
    report = flightlog.recover(out)
    assert report.errors == [] and [r["telemetry_rows"] for r in report.recovered] == [3333], report
    assert _ids(out) == [(4, i) for i in range(3333)]


def test_recover_given_a_flow_folder_leaves_the_flow_manifest_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with TelemetryManager(root, "myflow", mode="dev", schema=Schema([Field("i", "i64")])) as tm:
        for i in range(10):
            tm.log(i=i)
    flow = root / "flows" / "myflow"
    manifest = (flow / "manifest.toml").read_bytes()
    # What a compaction killed mid-write leaves in the flow folder.
    (flow / ".dev_telemetry.parquet.tmp-12345").write_bytes(b"PAR1")
    report = flightlog.recover(flow)
    assert all(r["run_id"] != "myflow" for r in report.recovered), report
    assert (flow / "manifest.toml").read_bytes() == manifest


# --------------------------------------------------------------------------- kill -9 flat out, recover at once

_FLAT_OUT = textwrap.dedent(
    """
    import mmap, os, random, sys, threading, time
    import numpy as np
    from flightlog import Field, FlightRecorder, Schema
    path, prog, seed, ring, segment, flush = sys.argv[1:7]
    seed, ring, segment, flush = int(seed), int(ring), int(segment), float(flush)
    fd = os.open(prog, os.O_RDWR)
    P = memoryview(mmap.mmap(fd, 8 * 64)).cast("q")
    s = Schema([Field("who", "i64", nullable=False), Field("i", "i64", nullable=False)])
    rec = FlightRecorder(path, s, ring_capacity=ring, segment_rows=segment, flush_interval=flush)

    def body(t):
        r = random.Random(seed * 1009 + t)
        done = 0
        while True:
            n = r.choice([1, 1, 3, ring - 1, ring, ring + 1, 257, 1000])
            P[2 * t] = done + n  # begun
            if n == 1:
                rec.record(t, done)
            else:
                rec.extend(who=np.full(n, t, dtype=np.int64), i=np.arange(done, done + n, dtype=np.int64))
            done += n
            P[2 * t + 1] = done  # returned

    for t in range(1, 5):
        threading.Thread(target=body, args=(t,), daemon=True).start()
    P[0] = 1
    time.sleep(3600)
    """
)


@pytest.mark.parametrize(("seed", "ring", "segment", "flush"), [(1, 16, 257, 0.003), (2, 256, 1000, 0.05)])
def test_kill_9_flat_out_then_recover_at_once_has_every_returned_row_once(
    tmp_path: Path, seed: int, ring: int, segment: int, flush: float
) -> None:
    """Four threads record flat out into small rings (the journal in use); killed -9, then
    recover(folder) with the default stale_after is called at once, before the child is
    reaped: live while it dies, then recovered. Per thread, the rows are 0..k-1 in order,
    exactly once, with every row whose call returned (returned <= k <= begun)."""
    path = tmp_path / "root" / "flat"
    prog = tmp_path / "progress"
    prog.write_bytes(b"\0" * 8 * 64)
    p = subprocess.Popen(
        [PYTHON, "-c", _FLAT_OUT, str(path), str(prog), str(seed), str(ring), str(segment), str(flush)],
        stderr=subprocess.PIPE,
    )
    fd = os.open(prog, os.O_RDONLY)
    m = mmap.mmap(fd, 8 * 64, prot=mmap.PROT_READ)
    words = memoryview(m).cast("q")
    rng = random.Random(seed)
    try:
        deadline = time.monotonic() + 60
        want = 30 * max(ring, 256) + rng.randrange(5000)
        while not (words[0] == 1 and sum(words[2 * t + 1] for t in range(1, 5)) >= want):
            assert p.poll() is None, "the child died"
            assert time.monotonic() < deadline, "the child never got going"
            time.sleep(0.002)
        os.kill(p.pid, signal.SIGKILL)
        reports = []
        while True:
            report = flightlog.recover(path)
            reports.append(report)
            assert report.errors == [], report
            if report.recovered:
                break
            assert report.live == [str(path)], report
            assert time.monotonic() < deadline, "the killed writer's claim was never let go"
    finally:
        p.kill()
        _, err = p.communicate(timeout=30)
    assert b"Traceback" not in err and b"panic" not in err, err
    counts = {t: (int(words[2 * t + 1]), int(words[2 * t])) for t in range(1, 5)}
    words.release()
    m.close()
    os.close(fd)
    assert [len(r.recovered) for r in reports].count(1) == 1
    table = pq.read_table(path / "telemetry.parquet")
    assert reports[-1].recovered[0]["telemetry_rows"] == table.num_rows
    who, ids = table["who"].to_numpy(), table["i"].to_numpy()
    for t, (returned, begun) in counts.items():
        mine = ids[who == t]
        k = len(mine)
        assert (mine == list(range(k))).all(), f"thread {t}: rows lost, reordered or twice"
        assert returned <= k <= begun, (t, returned, k, begun)
    assert set(who.tolist()) <= set(counts)
    assert sorted(os.listdir(path)) == ["manifest.toml", "telemetry.parquet"]
    again = flightlog.recover(path.parent, stale_after=0)
    assert again.recovered == [] and again.errors == [] and again.live == []


def test_recover_dot_dot_naming_a_killed_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "trial"
    n = _killed_bare(path, 321)
    (path / "notes").mkdir()
    monkeypatch.chdir(path / "notes")
    report = flightlog.recover("..")
    assert report.errors or [rows for _, rows in _paths(report)] == [n], report


def test_a_bare_folder_named_flows_inside_a_root_is_reported_not_taken_for_the_flows(tmp_path: Path) -> None:
    """A killed `FlightRecorder(root / "flows")`: `recover(root)` read it as the root's flows
    folder (its `segments/` as a flow, given a `.compact.lock`) and said nothing. It is
    reported, untouched; renamed, it is recovered."""
    root = tmp_path / "root"
    path = root / "flows"
    n = _killed_bare(path, 400, flush=True)
    before = _listing(path)
    report = flightlog.recover(root)
    assert report.recovered == [] and [e["path"] for e in report.errors] == [str(path)], report
    assert "flows" in report.errors[0]["error"] and "rename" in report.errors[0]["error"], report
    assert _listing(path) == before
    path.rename(root / "renamed")
    report = flightlog.recover(root)
    assert report.errors == [] and _paths(report) == [(str(root / "renamed"), n)], report

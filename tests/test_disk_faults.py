"""Disk faults: a full disk, EIO on fsync, a read-only root, the run folder deleted
mid-run and permissions revoked mid-run.

For each: a clear ``WriteError`` (or ``PermissionError`` before anything is
written), nothing partial published (every ``*.parquet`` reads, no temp file is
left), the process keeps running (it can record a new run afterwards), rows
counted as lost where they truly are, and every row kept in memory written once
the fault clears.

Faults that need root (``mount``) or tools (``strace``) are skipped with the
reason when unavailable. Each scenario is a function returning an outcome dict,
reused by ``benches/reliability_report.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flightlog import Field, FlightRecorder, Schema, TelemetryManager, WriteError, read_manifest, recover

STRACE = shutil.which("strace") or "/usr/bin/strace"
SCHEMA = Schema([Field("i", "i64", nullable=False), Field("x", "f64", nullable=False)])


# --------------------------------------------------------------------------- helpers


class MountUnavailable(Exception):
    pass


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted at ``where`` (raises MountUnavailable if not permitted)."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
        )
    except FileNotFoundError as e:
        raise MountUnavailable(f"no mount command: {e}") from None
    if r.returncode != 0:
        raise MountUnavailable(f"mount -t tmpfs is not permitted here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, mode: str) -> None:
    for _ in range(50):  # EBUSY while a file is open for writing: retry briefly
        r = subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], capture_output=True, text=True)
        if r.returncode == 0:
            return
        time.sleep(0.02)
    raise RuntimeError(f"remount,{mode} failed: {r.stderr}")


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    try:
        with tmpfs(tmp_path / "mnt") as m:
            yield m
    except MountUnavailable as e:
        pytest.skip(str(e))


def parquet_problems(root: Path) -> list[str]:
    """Unreadable *.parquet files and leftover temp files under ``root``."""
    import pyarrow.parquet as pq

    problems = []
    for f in glob.glob(str(root / "**" / "*.parquet"), recursive=True):
        try:
            pq.read_table(f)
        except Exception as e:
            problems.append(f"unreadable {f}: {e}")
    for f in glob.glob(str(root / "**" / ".*"), recursive=True):
        if ".tmp-" in os.path.basename(f):
            problems.append(f"temp file left: {f}")
    return problems


def ids_in(run: Path) -> list[int]:
    """Row ids in a run folder: telemetry.parquet minus the segments it lists, plus segments."""
    import pyarrow.parquet as pq

    out: list[int] = []
    listed: set[str] = set()
    final = run / "telemetry.parquet"
    if final.exists():
        out += pq.read_table(final).column("i").to_pylist()
        kv = pq.ParquetFile(final).metadata.metadata or {}
        listed = set(json.loads(kv.get(b"flightlog.segments", b"[]")))
    for f in sorted(glob.glob(str(run / "segments" / "telemetry-*.parquet"))):
        if os.path.basename(f) not in listed:
            out += pq.read_table(f).column("i").to_pylist()
    return out


def keeps_running(root: Path) -> bool:
    """The process still works: a new run in a healthy folder records and closes."""
    with TelemetryManager(root, "after", schema=SCHEMA, max_rows=None) as tm:
        tm.record(0, 0.0)
    return read_manifest(tm.manifest_path)["counts"]["rows_written"] == 1


def extend(target: Any, start: int, n: int) -> None:
    target.extend(i=np.arange(start, start + n), x=np.random.rand(n))


# --------------------------------------------------------------------------- full disk


def scenario_full_disk(mnt: Path, healthy: Path) -> dict[str, Any]:
    """Record into a 2 MiB tmpfs until the disk is full, keep calling, close."""
    tm = TelemetryManager(mnt, "full", schema=SCHEMA, flush_interval=0.01, compression="none", max_rows=None)
    offered = refused = 0
    errors: list[BaseException] = []
    for _ in range(300):
        try:
            extend(tm, offered, 10_000)
            offered += 10_000
        except WriteError as e:
            errors.append(e)
            refused += 10_000
            if len(errors) >= 5:
                break
        time.sleep(0.005)
    close_error = None
    try:
        tm.close()
    except WriteError as e:
        close_error = e
    stats = tm.recorder.stats()
    problems = parquet_problems(mnt)
    durable = ids_in(tm.run_path)
    return {
        "fault": "full disk (2 MiB tmpfs)",
        "first_error": str(errors[0]) if errors else None,
        "close_error": str(close_error) if close_error else None,
        "errors_are_writeerror": bool(errors) and close_error is not None,
        "stats": stats,
        "offered": offered,
        "durable_rows": len(durable),
        "durable_distinct": len(set(durable)),
        "problems": problems,
        "keeps_running": keeps_running(healthy),
    }


def test_full_disk_gives_a_clear_write_error_and_publishes_nothing_partial(mnt: Path, tmp_path: Path) -> None:
    out = scenario_full_disk(mnt, tmp_path / "healthy")
    assert out["errors_are_writeerror"], out
    assert "No space left on device" in out["first_error"]
    assert out["problems"] == []
    assert out["durable_rows"] == out["durable_distinct"] == out["stats"]["rows_written"]
    assert out["keeps_running"]


def test_full_disk_every_row_offered_is_written_or_counted_lost(mnt: Path, tmp_path: Path) -> None:
    out = scenario_full_disk(mnt, tmp_path / "healthy")
    s = out["stats"]
    assert s["rows_offered"] == s["rows_written"] + s["rows_lost"], s


def scenario_disk_full_then_freed(mnt: Path) -> dict[str, Any]:
    """A ballast file fills the disk; rows pile up in memory; the ballast goes; they are written."""
    ballast = mnt / "ballast"
    with open(ballast, "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    # Leave room for the run folder and manifests only.
    os.truncate(ballast, max(ballast.stat().st_size - 48 * 1024, 0))
    run = mnt / "run"
    rec = FlightRecorder(run, SCHEMA, flush_interval=0.01, compression="none")
    offered, errors = 0, []
    deadline = time.monotonic() + 10
    while len(errors) < 3 and time.monotonic() < deadline:
        try:
            extend(rec, offered, 5000)
            offered += 5000
        except WriteError as e:
            errors.append(str(e))
        time.sleep(0.01)
    ballast.unlink()
    time.sleep(0.05)
    flush_error = None
    for _ in range(3):  # the first call may report an error from before the space came back
        try:
            rec.flush()
            flush_error = None
            break
        except WriteError as e:
            flush_error = str(e)
    rec.close()
    ids = ids_in(run)
    return {
        "fault": "disk full, then space freed",
        "errors": errors,
        "flush_error": flush_error,
        "offered": offered,
        "stats": rec.stats(),
        "rows": len(ids),
        "exact": sorted(ids) == list(range(offered)),
        "problems": parquet_problems(mnt),
    }


def test_rows_kept_in_memory_while_the_disk_is_full_are_written_when_space_returns(mnt: Path) -> None:
    out = scenario_disk_full_then_freed(mnt)
    assert out["errors"] and "No space left" in out["errors"][0], out
    assert "kept in memory for a retry" in out["errors"][0]
    assert out["flush_error"] is None, out
    assert out["exact"], (out["rows"], out["offered"])
    assert out["stats"]["rows_lost"] == 0
    assert out["problems"] == []


# --------------------------------------------------------------------------- EIO on fsync


EIO_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from flightlog import FlightRecorder, Schema, Field, WriteError
    schema = Schema([Field("i", "i64", nullable=False), Field("x", "f64", nullable=False)])
    rec = FlightRecorder(sys.argv[1], schema, flush_interval=3600)
    errors, offered = [], 0
    for k in range(8):
        try:
            rec.extend(i=np.arange(offered, offered + 1000), x=np.zeros(1000))
            offered += 1000
            rec.event("STEP", {"k": k})
        except WriteError as e:
            errors.append(str(e))
        try:
            rec.flush()
        except WriteError as e:
            errors.append(str(e))
    close_error = None
    try:
        rec.close()
    except WriteError as e:
        close_error = str(e)
    print(json.dumps({"errors": errors, "close_error": close_error, "offered": offered, "stats": rec.stats()}))
    """
)

_FSYNC_RE = re.compile(r"^\d+\s+fsync\(\d+<(?P<path>[^>]*)>\)\s+=\s+(?P<ret>-?\d+)")


def scenario_eio(tmp_path: Path, when: str) -> dict[str, Any]:
    """Run a recorder under ``strace -e inject=fsync:error=EIO:when=<when>`` (counted per thread)."""
    run = tmp_path / f"run-{when.replace('+', 'p')}"
    log = tmp_path / f"strace-{when.replace('+', 'p')}.log"
    r = subprocess.run(
        [
            *(STRACE, "-f", "-qq", "-y", "-o", str(log), "-e", "trace=fsync"),
            *("-e", f"inject=fsync:error=EIO:when={when}", sys.executable, "-c", EIO_CHILD, str(run)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out: dict[str, Any] = {"fault": f"EIO on fsync (strace when={when})", "returncode": r.returncode}
    if r.returncode != 0:
        out["stderr"] = r.stderr[-2000:]
        return out
    out.update(json.loads(r.stdout.strip().splitlines()[-1]))
    # Never retried blindly: a file whose fsync failed is never fsynced again.
    failed: set[str] = set()
    retried: list[str] = []
    injected = 0
    for line in log.read_text().splitlines():
        m = _FSYNC_RE.match(line)
        if not m:
            continue
        path = m.group("path")
        if path in failed and not os.path.isdir(path):
            retried.append(path)
        if "INJECTED" in line:
            injected += 1
            failed.add(path)
    out["injected"] = injected
    out["blind_retries"] = retried
    out["problems_before_recover"] = parquet_problems(run)
    rep = recover(tmp_path) if (run / "segments").exists() else None
    out["recover_errors"] = rep.errors if rep else []
    ids = ids_in(run)
    out["rows"] = len(ids)
    out["distinct"] = len(set(ids))
    out["exact"] = sorted(ids) == list(range(out["offered"]))
    return out


@pytest.fixture
def strace_ok(tmp_path: Path) -> None:
    if not os.path.exists(STRACE):
        pytest.skip("strace is not installed")
    r = subprocess.run([STRACE, "-f", "-qq", "-o", os.devnull, "true"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace not permitted?): {r.stderr.strip()[:200]}")


@pytest.mark.parametrize("when", ["1", "2", "3", "5"])
def test_eio_on_fsync_is_never_retried_blindly_and_loses_nothing(tmp_path: Path, strace_ok: None, when: str) -> None:
    out = scenario_eio(tmp_path, when)
    assert out["returncode"] == 0, out
    assert out["injected"] >= 1, out
    assert out["blind_retries"] == [], out
    assert out["problems_before_recover"] == [], out
    assert out["recover_errors"] == [], out
    # Every error was a clear WriteError naming the failed step; the rows were rewritten from memory.
    for e in [*out["errors"], *([out["close_error"]] if out["close_error"] else [])]:
        assert "Input/output error" in e and "fsync" in e, e
    assert out["errors"] or out["close_error"], out
    assert out["exact"], (out["rows"], out["distinct"], out["offered"])
    assert out["stats"]["rows_lost"] == 0


def test_permanent_eio_fails_loudly_and_publishes_nothing_partial(tmp_path: Path, strace_ok: None) -> None:
    out = scenario_eio(tmp_path, "2+")
    assert out["returncode"] == 0, out
    assert out["blind_retries"] == [], out
    assert out["close_error"] and "Input/output error" in out["close_error"], out
    assert len(out["errors"]) >= 6, out  # each flush says so
    assert out["problems_before_recover"] == [], out
    # No duplicates. The disk may hold more rows than rows_written: a publish whose
    # directory fsync failed after the rename has its file in place (and recover keeps it).
    assert out["rows"] == out["distinct"] >= out["stats"]["rows_written"]


def test_permanent_eio_counts_the_rows_it_gives_up_on(tmp_path: Path, strace_ok: None) -> None:
    out = scenario_eio(tmp_path, "2+")
    s = out["stats"]
    assert s["rows_offered"] == s["rows_written"] + s["rows_lost"], s
    assert "kept in memory" not in out["close_error"]


# --------------------------------------------------------------------------- read-only root


@contextlib.contextmanager
def read_only_bind(folder: Path) -> Iterator[None]:
    """``folder`` made read-only in place (a read-only bind mount of itself)."""
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True, capture_output=True)
    try:
        remount_bind_ro(folder)
        yield
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(folder)], capture_output=True).returncode == 0:
                break
            time.sleep(0.02)


def remount_bind_ro(folder: Path) -> None:
    for _ in range(50):  # EBUSY while a temp file there is open for writing: retry briefly
        r = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, text=True)
        if r.returncode == 0:
            return
        time.sleep(0.02)
    raise RuntimeError(f"remount,ro,bind failed: {r.stderr}")


def scenario_read_only_root(mnt: Path) -> dict[str, Any]:
    from flightlog import DuckDBManager

    out: dict[str, Any] = {"fault": "read-only root"}
    tm = TelemetryManager(mnt, "ro", schema=SCHEMA, flush_interval=0.01, max_rows=None)
    extend(tm, 0, 1000)
    tm.flush()
    # A live recorder's spool keeps files open for writing (its memory-mapped ring): the
    # kernel refuses to make the filesystem read-only under it.
    r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True)
    out["remount_refused_while_recording"] = r.returncode != 0 and "busy" in r.stderr
    if r.returncode == 0:
        remount(mnt, "rw")
    # Mid-run: the folder the segments go to turns read-only, then read-write again.
    offered, errors = 1000, []
    with read_only_bind(Path(tm.run_path) / "segments"):
        for _ in range(10):
            try:
                extend(tm, offered, 1000)
                offered += 1000
            except WriteError as e:
                errors.append(str(e))
            time.sleep(0.02)
        out["midrun_errors"] = errors
    for _ in range(3):
        try:
            extend(tm, offered, 1000)
            offered += 1000
            break
        except WriteError as e:  # an error from the read-only time, reported once
            errors.append(str(e))
    tm.close()
    # A read-only root: a run cannot start (PermissionError before anything is written),
    # consolidate and recover say what they could not do.
    remount(mnt, "ro")
    try:
        for mode in ("run", "dev"):
            try:
                TelemetryManager(mnt, "ro2", schema=SCHEMA, mode=mode)
                out[f"start_{mode}"] = "started"
            except PermissionError as e:
                out[f"start_{mode}"] = f"PermissionError: {e}"
        try:
            DuckDBManager(mnt).consolidate()
            out["consolidate"] = "ok"
        except OSError as e:
            out["consolidate"] = f"{type(e).__name__}: {e}"
        rep = recover(mnt)
        out["recover_on_ro"] = {"errors": rep.errors, "live": rep.live}
    finally:
        remount(mnt, "rw")
    ids = ids_in(tm.run_path)
    out.update(offered=offered, rows=len(ids), exact=sorted(ids) == list(range(offered)), stats=tm.recorder.stats())
    out["problems"] = parquet_problems(mnt)
    out["entries"] = sorted(os.listdir(mnt))
    return out


def test_read_only_root(mnt: Path) -> None:
    out = scenario_read_only_root(mnt)
    assert out["midrun_errors"] and all("Read-only file system" in e for e in out["midrun_errors"]), out
    assert out["start_run"].startswith("PermissionError") and "not writable" in out["start_run"]
    assert out["start_dev"].startswith("PermissionError")
    assert "Read-only file system" in out["consolidate"] or "PermissionError" in out["consolidate"], out
    assert out["remount_refused_while_recording"], out
    assert out["recover_on_ro"] == {"errors": [], "live": []}  # the run finished before
    assert out["exact"], out
    assert out["stats"]["rows_lost"] == 0
    assert out["problems"] == []
    assert [e for e in out["entries"] if e.startswith("fda_run_")] == [next(mnt.glob("fda_run_*")).name]


CRASH_CHILD = textwrap.dedent(
    """
    import sys, time
    from flightlog import TelemetryManager, Schema, Field
    schema = Schema([Field("i", "i64", nullable=False), Field("x", "f64", nullable=False)])
    tm = TelemetryManager(sys.argv[1], "crashed", schema=schema, flush_interval=0.01)
    for i in range(100):
        tm.record(i, 0.0)
    tm.flush()
    print("flushed", flush=True)
    time.sleep(600)
    """
)


def crashed_run(root: Path) -> None:
    """A run whose process was killed after a flush (segments, status "running")."""
    p = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(root)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    try:
        assert p.stdout.readline().strip() == "flushed"
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def test_read_only_root_with_a_crashed_run_reports_instead_of_raising(mnt: Path) -> None:
    crashed_run(mnt)
    remount(mnt, "ro")
    try:
        rep = recover(mnt)
    finally:
        remount(mnt, "rw")
    assert len(rep.errors) == 1 and "Read-only file system" in rep.errors[0]["error"], rep
    assert rep.recovered == []
    rep = recover(mnt)
    assert rep.errors == [] and [r["telemetry_rows"] for r in rep.recovered] == [100]


# --------------------------------------------------------------------------- run folder deleted


def scenario_run_folder_deleted(root: Path) -> dict[str, Any]:
    tm = TelemetryManager(root, "gone", schema=SCHEMA, flush_interval=0.01, max_rows=None)
    extend(tm, 0, 5000)
    tm.flush()
    shutil.rmtree(tm.run_path)
    offered, errors = 5000, []
    for _ in range(10):
        try:
            extend(tm, offered, 1000)
            offered += 1000
        except WriteError as e:
            errors.append(str(e))
        time.sleep(0.02)
    close_error: BaseException | None = None
    try:
        tm.close()
    except Exception as e:
        close_error = e
    return {
        "fault": "run folder deleted mid-run",
        "errors": errors,
        "close_error_type": type(close_error).__name__ if close_error else None,
        "close_error": str(close_error) if close_error else None,
        "close_notes": getattr(close_error, "__notes__", []),
        "offered": offered,
        "stats": tm.recorder.stats(),
        "status": tm.status,
        "leftovers": sorted(os.listdir(root)),
        "keeps_running": keeps_running(root / "healthy"),
    }


def test_run_folder_deleted_mid_run(tmp_path: Path) -> None:
    out = scenario_run_folder_deleted(tmp_path)
    assert out["errors"] and "No such file or directory" in out["errors"][0], out
    # A WriteError about the data, not a FileNotFoundError about a manifest temp file.
    assert out["close_error_type"] == "WriteError", out
    assert any("manifest" in n for n in out["close_notes"]), out
    assert out["status"] == "failed"
    assert out["leftovers"] == [], out  # nothing re-created, nothing partial
    assert out["stats"]["rows_lost"] >= 5000  # the published segment that vanished
    assert out["keeps_running"]


def test_run_folder_deleted_counts_every_row_lost(tmp_path: Path) -> None:
    out = scenario_run_folder_deleted(tmp_path)
    s = out["stats"]
    assert s["rows_lost"] == s["rows_offered"], s


# --------------------------------------------------------------------------- permissions revoked


PERM_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from flightlog import TelemetryManager, Schema, Field, WriteError
    schema = Schema([Field("i", "i64", nullable=False), Field("x", "f64", nullable=False)])
    tm = TelemetryManager(sys.argv[1], "perm", schema=schema, flush_interval=0.01, max_rows=None)
    offered, errors = 0, []
    def step():
        global offered
        try:
            tm.extend(i=np.arange(offered, offered + 1000), x=np.zeros(1000))
            offered += 1000
        except WriteError as e:
            errors.append(str(e))
    step(); tm.flush()
    print(tm.run_path, flush=True)
    sys.stdin.readline()              # the parent revoked write permission on segments/
    import time
    for _ in range(5):
        step(); time.sleep(0.02)
    print("revoked-done", flush=True)
    sys.stdin.readline()              # the parent gave it back
    for _ in range(3):
        step()
    close_error = None
    try:
        tm.close()
    except WriteError as e:
        close_error = str(e)
    print(json.dumps({"errors": errors, "close_error": close_error, "offered": offered,
                      "stats": tm.recorder.stats()}))
    """
)


def _drop_dac_override() -> None:
    """preexec_fn: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH so root obeys file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def scenario_permissions_revoked(root: Path) -> dict[str, Any]:
    """chmod 0500 on segments/ while a run records (as root, the child drops
    CAP_DAC_OVERRIDE so the mode applies), then 0755 again."""
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        kwargs["preexec_fn"] = _drop_dac_override
    p = subprocess.Popen(
        [sys.executable, "-c", PERM_CHILD, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
    assert p.stdin is not None and p.stdout is not None
    try:
        run = Path(p.stdout.readline().strip())
        seg = run / "segments"
        os.chmod(seg, 0o500)
        p.stdin.write("go\n")
        p.stdin.flush()
        p.stdout.readline()
        problems_while = parquet_problems(run)
        os.chmod(seg, 0o755)
        p.stdin.write("go\n")
        p.stdin.flush()
        out_text, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0:
        return {"fault": "permissions revoked", "returncode": p.returncode, "stderr": err[-2000:]}
    out = json.loads(out_text.strip().splitlines()[-1])
    ids = ids_in(run)
    out.update(
        fault="permissions revoked mid-run",
        returncode=0,
        problems_while=problems_while,
        rows=len(ids),
        exact=sorted(ids) == list(range(out["offered"])),
        status=read_manifest(run)["status"],
    )
    return out


def test_permissions_revoked_mid_run(tmp_path: Path) -> None:
    root = tmp_path / "root"
    out = scenario_permissions_revoked(root)
    if out.get("returncode") != 0 and "prctl" in out.get("stderr", ""):
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here: " + out["stderr"][-200:])
    assert out["returncode"] == 0, out
    assert out["errors"] and all("Permission denied" in e for e in out["errors"]), out
    assert out["problems_while"] == []
    assert out["close_error"] is None, out
    assert out["exact"], out
    assert out["stats"]["rows_lost"] == 0
    assert out["status"] == "finished"


def all_scenarios(base: Path) -> list[dict[str, Any]]:
    """Every fault once (for the reliability report); skipped faults say why."""
    outcomes: list[dict[str, Any]] = []

    def guarded(name: str, fn: Any) -> None:
        try:
            outcomes.append(fn())
        except MountUnavailable as e:
            outcomes.append({"fault": name, "skipped": str(e)})

    def with_mount(fn: Any, size: str = "2m") -> Any:
        def run() -> Any:
            d = Path(tempfile.mkdtemp(dir=base))
            with tmpfs(d / "mnt", size) as m:
                return fn(m, d)

        return run

    guarded("full disk", with_mount(lambda m, d: scenario_full_disk(m, d / "healthy")))
    guarded("disk full then freed", with_mount(lambda m, d: scenario_disk_full_then_freed(m)))
    if os.path.exists(STRACE):
        for when in ("1", "3", "2+"):
            outcomes.append(scenario_eio(Path(tempfile.mkdtemp(dir=base)), when))
    else:
        outcomes.append({"fault": "EIO on fsync", "skipped": "strace is not installed"})
    guarded("read-only root", with_mount(lambda m, d: scenario_read_only_root(m), "8m"))
    outcomes.append(scenario_run_folder_deleted(Path(tempfile.mkdtemp(dir=base))))
    outcomes.append(scenario_permissions_revoked(Path(tempfile.mkdtemp(dir=base)) / "root"))
    return outcomes

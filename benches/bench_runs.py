"""Short runs: how many 10-row runs `TelemetryManager` starts and closes per second on a
local disk, and how many fsyncs and file-system operations each costs.

    python benches/bench_runs.py [--runs 300] [--rows 10] [--workers 2] [--rounds 3] [--root DIR] [--out FILE]

* runs/s: ``--runs`` runs of ``--rows`` rows each (``iter`` + 3 f64 columns), each
  opened, filled with one ``extend`` and closed (manifest, final Parquet files), one
  after another; then the same runs spread over ``--workers`` threads of one process, as
  an auto-tuner runs trials side by side (a run waits on its fsyncs about as long as it
  computes, so another run's work fits in those waits). Each is measured ``--rounds``
  times, alternating, and reported as the median round with the range;
* CPU per run (user and system) of the same loop, and the same loop in a RAM folder
  (``/dev/shm``, where fsync costs nothing): flightlog's own ceiling, apart from the disk;
* fsyncs per run: the same loop in a child process under ``strace -f -c`` (skipped, with a
  message, when strace is missing), divided by the runs it made; from the same trace, the
  folders each run makes and the names it removes (successful ``mkdir``, ``rmdir``,
  ``unlink``, ``unlinkat``; ``openat``, ``rename`` and ``linkat`` counted as calls);
* the disk's filesystem, and for ext4 whether it has a journal. Without one (a VM image
  mounted ``nojournal``), ext4 looks past every inode freed in the last minute (five when
  its inode table block is still dirty) for each inode it allocates (``recently_deleted``
  in ``fs/ext4/ialloc.c``), so runs that follow many deletions cost more system time:
  back-to-back runs of this benchmark slow down (in one such state, ``perf`` put 37% of
  all samples in that scan), and every inode a run removes slows the runs after it.

``--root`` picks the disk (default: a temporary folder, usually the system disk).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_runs(root: Path, runs: int, rows: int, workers: int = 1) -> tuple[float, float, float]:
    """Starts and closes ``runs`` runs of ``rows`` rows below ``root``, one after another
    in each of ``workers`` threads (an auto-tuner's trials side by side); returns wall,
    user CPU and system CPU seconds (the whole process: the writer's threads count)."""
    import threading

    import numpy as np

    from flightlog import Field, Schema, TelemetryManager

    schema = Schema([Field("iter", "i64", nullable=False)] + [Field(f, "f64") for f in ("E", "g", "h")])
    cols = {"iter": np.arange(rows), "E": np.ones(rows), "g": np.zeros(rows), "h": np.full(rows, 0.5)}

    def work(worker: int) -> None:
        for k in range(worker, runs, workers):
            with TelemetryManager(root, "bench", run_id=f"r{k:06d}", schema=schema, max_rows=None) as tm:
                tm.extend(**cols)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    cpu0, t0 = os.times(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu1 = time.perf_counter() - t0, os.times()
    made = sum(1 for p in root.iterdir() if (p / "telemetry.parquet").is_file()) if root.is_dir() else 0
    if made != runs:
        raise RuntimeError(f"{made} finished runs in {root}, expected {runs}")
    return wall, cpu1.user - cpu0.user, cpu1.system - cpu0.system


def filesystem(path: Path) -> str:
    """The filesystem holding ``path`` (from /proc/mounts), and for ext4 whether it has a
    journal (a journaled ext4 has a ``/proc/fs/jbd2/<device>-*`` entry)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    target = str(path.resolve())
    best = max(
        (m for m in mounts if len(m) > 2 and (target == m[1] or target.startswith(m[1].rstrip("/") + "/"))),
        key=lambda m: len(m[1]),
        default=None,
    )
    if best is None:
        return "unknown"
    device, mount, kind = best[0], best[1], best[2]
    text = f"{kind} on {mount} ({device})"
    if kind == "ext4":
        name = Path(device).name
        journaled = any(p.name.startswith(name + "-") for p in Path("/proc/fs/jbd2").glob("*"))
        text += ", with a journal" if journaled else ", without a journal"
    return text


def rate(runs: int, measured: tuple[float, float, float]) -> str:
    wall, user, system = measured
    return (
        f"{runs / wall:.0f} ({runs} runs in {wall:.2f} s; CPU per run {1e3 * (user + system) / runs:.2f} ms: "
        f"user {1e3 * user / runs:.2f}, system {1e3 * system / runs:.2f})"
    )


def rounds_rate(runs: int, rounds: list[tuple[float, float, float]]) -> str:
    """The median round (by wall time) in full, then every round's runs/s."""
    ordered = sorted(rounds)
    median = ordered[len(ordered) // 2]
    if len(rounds) == 1:
        return rate(runs, median)
    each = ", ".join(f"{runs / wall:.0f}" for wall, _, _ in rounds)
    return f"{rate(runs, median)}; rounds in order: {each} runs/s"


#: System calls counted per run; for those whose failures create or remove nothing
#: (``mkdir`` of a folder that exists, ``unlink`` of a temp file already gone), the
#: successful calls are what a run creates or removes.
TRACED = ("fsync", "fdatasync", "mkdir", "rmdir", "unlink", "unlinkat", "openat", "rename", "linkat")


def syscalls_per_run(root: Path, runs: int, rows: int) -> tuple[str, str]:
    """fsync + fdatasync calls per run, and the file-system operations per run, counted by
    strace over a child making ``runs`` runs, less a child making none (its own start and
    imports open files too)."""
    strace = shutil.which("strace")
    if strace is None:
        missing = "not measured: strace is not installed (apt-get install strace)"
        return missing, missing
    try:
        made = _traced_calls(strace, root, "strace-runs", runs, rows)
        idle = _traced_calls(strace, root, "strace-idle", 0, rows)
    except RuntimeError as e:
        failed = f"not measured: {e}"
        return failed, failed

    def per_run(name: str, *, ok: bool = False) -> float:
        calls, errors = made.get(name, (0, 0))
        idle_calls, idle_errors = idle.get(name, (0, 0))
        if ok:
            calls, idle_calls = calls - errors, idle_calls - idle_errors
        return (calls - idle_calls) / runs

    fsyncs = per_run("fsync") + per_run("fdatasync")
    total = sum(made.get(name, (0, 0))[0] - idle.get(name, (0, 0))[0] for name in ("fsync", "fdatasync"))
    ops = (
        f"folders made {per_run('mkdir', ok=True):.1f} (of {per_run('mkdir'):.1f} mkdir calls), "
        f"names removed: rmdir {per_run('rmdir', ok=True):.1f}, unlink and unlinkat "
        f"{per_run('unlink', ok=True) + per_run('unlinkat', ok=True):.1f} (a file linked under its final "
        f"name frees no inode when its temp name goes), "
        f"openat {per_run('openat'):.1f}, rename {per_run('rename'):.1f}, linkat {per_run('linkat'):.1f}"
    )
    return f"{fsyncs:.2f} ({total} calls over {runs} runs)", ops


def _traced_calls(strace: str, root: Path, name: str, runs: int, rows: int) -> dict[str, tuple[int, int]]:
    """``{syscall: (calls, errors)}`` from ``strace -f -c`` over a child making ``runs`` runs."""
    out = root / f"{name}.txt"
    child = [sys.executable, __file__, "--child", "--runs", str(runs), "--rows", str(rows), "--root", str(root / name)]
    proc = subprocess.run(
        [strace, "-f", "-c", "-e", "trace=" + ",".join(TRACED), "-o", str(out), *child],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"strace exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    counts: dict[str, tuple[int, int]] = {}
    for line in out.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$", line)
        if m and m.group(3) in TRACED:
            counts[m.group(3)] = (int(m.group(1)), int(m.group(2) or 0))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rows", type=int, default=10)
    ap.add_argument("--root", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=2, help="threads of the side-by-side measure (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each disk measure, alternating (default 3)")
    ap.add_argument("--out", type=Path, default=None, help="append the Markdown section to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        make_runs(args.root, args.runs, args.rows)
        return
    base = args.root if args.root is not None else Path(tempfile.mkdtemp(prefix="flightlog-bench-runs-"))
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=base))
    ram = Path("/dev/shm")
    in_ram = None
    try:
        make_runs(work / "warmup", 5, args.rows)
        # Alternating rounds: the disk's state (see the module doc) drifts over seconds,
        # and both measures should see the same drift.
        on_disk, side_by_side = [], []
        for k in range(max(1, args.rounds)):
            on_disk.append(make_runs(work / f"timed-{k}", args.runs, args.rows))
            side_by_side.append(make_runs(work / f"threads-{k}", args.runs, args.rows, args.workers))
        fsyncs, file_ops = syscalls_per_run(work, min(args.runs, 50), args.rows)
        if ram.is_dir() and os.access(ram, os.W_OK):
            ram_work = Path(tempfile.mkdtemp(prefix="flightlog-bench-runs-", dir=ram))
            try:
                in_ram = make_runs(ram_work / "timed", args.runs, args.rows)
            finally:
                shutil.rmtree(ram_work, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "",
        f"## Short runs ({args.rows} rows each, local disk)",
        "",
        f"- runs started and closed per second, one after another: {rounds_rate(args.runs, on_disk)}",
        f"- the same runs in {args.workers} threads of one process (trials side by side; each run's fsyncs "
        f"then overlap another's work): {rounds_rate(args.runs, side_by_side)}",
        f"- one after another in RAM ({ram}, no disk): {rate(args.runs, in_ram) if in_ram else 'not measured (no /dev/shm)'}",
        f"- fsync + fdatasync per run (strace -f -c): {fsyncs}",
        f"- file-system operations per run (same trace): {file_ops}",
        f"- disk: {base}: {filesystem(base)} ({os.uname().sysname})",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()

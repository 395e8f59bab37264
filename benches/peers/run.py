"""flightlog against the loggers people use today: one workload, every peer in a fresh process.

    python benches/peers/run.py --out benches/PEERS.md     # the full run (about 20 minutes, callgrind included)
    python benches/peers/run.py --smoke                     # tiny N, 1 repeat: checks the harness (CI)
    python benches/peers/run.py --list                      # the peers and whether they are importable

The workload (see ``common.py``): a loop logging ``iter`` + 9 floats + ``phase``
per step. For every peer, each repeat is a fresh process that imports the
library, times the same loop without the log statement (the baseline), resets
the peak-RSS mark, then times setup, the instrumented loop, finish/close and an
fsync of every file written; then reads the rows back from disk and checks them.
A separate process runs the loop again and SIGKILLs itself right after logging
step N/2; a fresh reader then counts the rows readable (after the peer's own
recovery, where it has one). Peers whose package is not importable are skipped
with the reason. Repeats are interleaved across peers (round robin) so machine
noise spreads over all of them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import Peer  # noqa: E402

PEER_MODULES = [
    "peer_flightlog",
    "peer_pyarrow",
    "peer_polars",
    "peer_pandas",
    "peer_duckdb",
    "peer_tensorboardx",
    "peer_mlflow",
    "peer_trackio",
    "peer_aim",
    "peer_rerun",
]
#: Kill tests in smoke mode (each costs two more processes): flightlog's two recovery paths.
SMOKE_KILL = ("flightlog-record", "flightlog-manager-log")
MARK = "@@RESULT "
CHILD_TIMEOUT = 900


def all_peers() -> list[Peer]:
    out: list[Peer] = []
    for mod in PEER_MODULES:
        out.extend(importlib.import_module(mod).PEERS)
    return out


def missing_module(peer: Peer) -> str | None:
    for m in peer.requires:
        try:
            if importlib.util.find_spec(m) is None:
                return m
        except (ImportError, ValueError):
            return m
    return None


# =========================================================================== child side


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def child(args: argparse.Namespace) -> None:
    if args.child in ("floor", "overhead"):
        import overhead

        emit(getattr(overhead, args.child)(args.smoke))
        return
    if args.child == "instructions":  # the sizes the overhead child calibrated, not recalibrated
        import overhead

        sizes = list(zip((10e-6, 100e-6), (int(x) for x in args.sizes.split(",")), strict=False))
        emit(overhead.instructions(sizes, 5_000))
        return
    peer = next(p for p in all_peers() if p.name == args.child)
    out, n = Path(args.out), args.n
    try:
        for m in peer.requires:
            importlib.import_module(m)
    except Exception as e:
        emit({"skipped": f"import {m} failed: {type(e).__name__}: {e}"})
        return
    if args.mode == "read":
        rb = peer.read(out, n, True)
        emit({"rows": rb.rows, "ok": rb.ok, "detail": rb.detail})
        return

    import gc

    from common import fsync_tree, make_loop, peak_rss_bytes, reset_peak_rss, rss_bytes, tree_bytes

    version = importlib.metadata.version(peer.dist) if peer.dist else "-"
    out.mkdir(parents=True, exist_ok=True)
    if args.mode == "kill":
        sink = peer.setup(out, n)
        loop = make_loop(peer.log, sink.names, kill=True)
        loop(n, n // 2, *sink.names.values())  # never returns
        emit({"error": "the loop was not killed"})
        return

    baseline = make_loop("", [])
    t0 = time.perf_counter()
    baseline(n, -1)
    t_base = time.perf_counter() - t0
    gc.collect()
    reset_ok = reset_peak_rss()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    sink = peer.setup(out, n)
    t1 = time.perf_counter()
    loop = make_loop(peer.log, sink.names)  # compiled outside the timed parts
    values = list(sink.names.values())
    t2 = time.perf_counter()
    loop(n, -1, *values)
    t3 = time.perf_counter()
    sink.finish()
    t4 = time.perf_counter()
    fsync_tree(out)
    t5 = time.perf_counter()
    peak = peak_rss_bytes()
    stats = sink.info() if sink.info is not None else {}
    del sink, values, loop
    rb = peer.read(out, n, False)
    emit(
        {
            "version": version,
            "n": n,
            "baseline_s": t_base,
            "setup_s": t1 - t0,
            "loop_s": t3 - t2,
            "finish_s": t4 - t3,
            "fsync_s": t5 - t4,
            "rss_growth": max(0, peak - rss0),
            "rss_method": "VmHWM reset" if reset_ok else "ru_maxrss",
            "bytes": tree_bytes(out),
            "rows": rb.rows,
            "ok": rb.ok,
            "detail": rb.detail,
            "stats": stats,
        }
    )


# =========================================================================== parent side


def busy_cores(interval: float = 0.5) -> float:
    """CPU cores busy over ``interval`` (from /proc/stat); the parent is idle meanwhile, so this is everyone else."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return idle, sum(vals[:8])

    try:
        i0, t0 = sample()
        time.sleep(interval)
        i1, t1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    total = max(t1 - t0, 1)
    return (1.0 - (i1 - i0) / total) * (os.cpu_count() or 1)


#: Before each timed child: wait up to this many seconds for the rest of the machine to use < QUIET_CORES.
QUIET_WAIT = 0.0
QUIET_CORES = 0.25


def wait_quiet() -> float:
    """Waits (up to QUIET_WAIT s) until other processes use fewer than QUIET_CORES cores; returns the last reading."""
    if QUIET_WAIT <= 0:
        return float("nan")  # smoke mode: not measured
    deadline = time.monotonic() + QUIET_WAIT
    while True:
        busy = busy_cores()
        if busy < QUIET_CORES or time.monotonic() >= deadline:
            return busy
        time.sleep(1.0)


def spawn(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Runs one child; returns its result (or an error with the end of its stderr)."""
    e = dict(os.environ)
    e.update(env or {})
    e.setdefault("PYTHONHASHSEED", "0")
    busy = wait_quiet()
    try:
        p = subprocess.run(
            [sys.executable, str(HERE / "run.py"), *args],
            capture_output=True,
            text=True,
            env=e,
            cwd=cwd,
            timeout=CHILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT} s", "others_busy": busy}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(MARK):
            res: dict[str, Any] = json.loads(line[len(MARK) :])
            res["others_busy"] = busy
            res["returncode"] = p.returncode
            return res
    tail = " | ".join(p.stderr.strip().splitlines()[-3:])[-400:]
    return {"error": f"exit {p.returncode}: {tail}", "returncode": p.returncode, "others_busy": busy}


def peer_env(peer: Peer, out: Path) -> dict[str, str]:
    return {k: v.format(out=out) for k, v in peer.env.items()}


def run_repeat(peer: Peer, n: int, work: Path, rep: int, keep: bool) -> dict[str, Any]:
    out = work / peer.name / f"r{rep}"
    out.mkdir(parents=True)
    res = spawn(
        ["--child", peer.name, "--mode", "run", "--n", str(n), "--out", str(out)], env=peer_env(peer, out), cwd=out
    )
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return res


def run_kill(peer: Peer, n: int, work: Path, keep: bool) -> dict[str, Any]:
    out = work / peer.name / "kill"
    out.mkdir(parents=True)
    env = peer_env(peer, out)
    res = spawn(["--child", peer.name, "--mode", "kill", "--n", str(n), "--out", str(out)], env=env, cwd=out)
    killed = res.get("returncode") == -9
    logged = n // 2 + 1
    if not killed:
        result = {"error": f"child was not killed by SIGKILL: {res.get('error') or res.get('returncode')}"}
    else:
        rb = spawn(["--child", peer.name, "--mode", "read", "--n", str(n), "--out", str(out)], env=env, cwd=out)
        result = {"logged": logged, **rb}
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def machine_info(work: Path) -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    fs = "?"
    try:
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, typ = line.split()[:3]
            if str(work).startswith(mnt) and len(mnt) > len(best):
                best, fs = mnt, f"{typ} ({dev} on {mnt})"
    except OSError:
        pass
    import numpy

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "flightlog": importlib.metadata.version("flightlog"),
        "workdir_fs": fs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the Markdown report here (e.g. benches/PEERS.md)")
    ap.add_argument("--json", type=Path, help="also write the raw results as JSON")
    ap.add_argument("--smoke", action="store_true", help="tiny N, 1 repeat, 2 jobs: checks that the harness works")
    ap.add_argument("--repeats", type=int, help="repeats per peer (default 5; smoke 1)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every peer's N")
    ap.add_argument("--peers", help="comma-separated names or prefixes (default: all)")
    ap.add_argument("--no-kill", action="store_true", help="skip the kill -9 tests")
    ap.add_argument("--no-overhead", action="store_true", help="skip the floor and overhead figures")
    ap.add_argument(
        "--no-instructions",
        action="store_true",
        help="skip the overhead loop's instruction counts (callgrind: 12 children, several minutes; never in smoke)",
    )
    ap.add_argument("--jobs", type=int, help="children run at once (default 1; smoke 2). >1 distorts timings")
    ap.add_argument("--workdir", type=Path, help="where the peers write (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the files the peers wrote")
    ap.add_argument("--list", action="store_true", help="list the peers and exit")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help=f"before each child, wait up to this many seconds for other processes to use < {QUIET_CORES} cores "
        "(default 10; smoke 0)",
    )
    # child side (internal)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="run", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0

    from report import render

    peers = all_peers()
    if args.peers:
        wanted = [w.strip() for w in args.peers.split(",") if w.strip()]
        peers = [p for p in peers if any(p.name == w or p.name.startswith(w) or p.family == w for w in wanted)]
    if args.list:
        for p in peers:
            miss = missing_module(p)
            print(f"{p.name:28} N={p.n:>9,}  {'ok' if miss is None else 'skip: ' + miss + ' not importable'}")
        return 0
    global QUIET_WAIT
    QUIET_WAIT = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.smoke else 10.0)
    repeats = args.repeats or (1 if args.smoke else 5)
    jobs = args.jobs or (2 if args.smoke else 1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="flightlog-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_start = os.getloadavg()

    skipped: dict[str, str] = {}
    runnable: list[Peer] = []
    for p in peers:
        miss = missing_module(p)
        if miss is not None:
            skipped[p.name] = f"`{miss}` is not importable (pip install 'flightlog[bench]')"
            print(f"skip {p.name}: {skipped[p.name]}", flush=True)
        else:
            runnable.append(p)
    if args.smoke:  # every flightlog variant, and one variant per peer library
        seen: set[str] = set()
        kept = []
        for p in runnable:
            if p.family == "flightlog" or p.family not in seen:
                kept.append(p)
                seen.add(p.family)
        runnable = kept
    ns = {p.name: max(1, int((p.smoke_n if args.smoke else p.n) * args.scale)) for p in runnable}

    results: dict[str, list[dict[str, Any]]] = {p.name: [] for p in runnable}
    kills: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {}

    def log(msg: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {msg}", flush=True)

    tasks: list[tuple[str, Any]] = []
    if not args.no_overhead:
        tasks.append(("floor", lambda: spawn(["--child", "floor"] + (["--smoke"] if args.smoke else []), cwd=work)))
    for rep in range(repeats):
        for p in runnable:
            tasks.append(
                (
                    f"{p.name} #{rep + 1}",
                    lambda p=p, rep=rep: ("run", p, run_repeat(p, ns[p.name], work, rep, args.keep)),
                )
            )
    if not args.no_kill:
        for p in runnable:
            if p.kill_test and (not args.smoke or p.name in SMOKE_KILL):
                tasks.append((f"{p.name} kill -9", lambda p=p: ("kill", p, run_kill(p, ns[p.name], work, args.keep))))
    if not args.no_overhead:
        ov_env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        tasks.append(
            (
                "overhead",
                lambda: spawn(["--child", "overhead"] + (["--smoke"] if args.smoke else []), env=ov_env, cwd=work),
            )
        )
    if not args.no_overhead and not args.no_instructions and not args.smoke and jobs <= 1:

        def instructions() -> dict[str, Any]:
            ov = extra.get("overhead")  # run just before (one job: the tasks run in order)
            if not isinstance(ov, dict) or "error" in ov:
                return {"error": "no overhead sizes to count at"}
            sizes = ",".join(str(s["n"]) for s in ov["sizes"])
            return spawn(["--child", "instructions", "--sizes", sizes], env=ov_env, cwd=work)

        tasks.append(("instructions", instructions))

    def collect(label: str, res: Any) -> None:
        if label in ("floor", "overhead", "instructions"):
            extra[label] = res
            log(f"{label}: {'error: ' + res['error'] if 'error' in res else res.get('skipped', 'done')}")
            return
        kind, p, r = res
        if kind == "run":
            if "skipped" in r:
                skipped[p.name] = r["skipped"]
            results[p.name].append(r)
            if "error" in r:
                log(f"{label}: ERROR {r['error']}")
            elif "skipped" not in r:
                net = (r["loop_s"] - r["baseline_s"]) / r["n"] * 1e9
                log(
                    f"{label}: N={r['n']:,} loop {r['loop_s']:.3f}s base {r['baseline_s']:.3f}s ({net:,.0f} ns/step) rows {r['rows']:,} ok={r['ok']} others busy {r['others_busy']:.2f} cores"
                )
        else:
            kills[p.name] = r
            log(f"{label}: {r}")

    if jobs <= 1:
        for label, fn in tasks:
            collect(label, fn())
    else:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            futs = {pool.submit(fn): label for label, fn in tasks}
            for fut in concurrent.futures.as_completed(futs):
                collect(futs[fut], fut.result())

    info = machine_info(work)
    info["load_start"] = load_start
    info["load_end"] = os.getloadavg()
    info["seconds"] = time.time() - started
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    config = {
        "smoke": args.smoke,
        "repeats": repeats,
        "jobs": jobs,
        "scale": args.scale,
        "quiet_wait": QUIET_WAIT,
        "quiet_cores": QUIET_CORES,
    }
    text = render(runnable, ns, results, kills, skipped, extra, info, config)
    print(text)
    if args.out:
        args.out.write_text(text)
        log(f"wrote {args.out}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"results": results, "kills": kills, "skipped": skipped, "extra": extra, "machine": info}, indent=1
            )
        )
    if not args.workdir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    # flightlog's own rows must come back intact; a peer library failing is reported, not fatal.
    own = [p.name for p in runnable if p.family == "flightlog"]
    failed = [n for n in own if any("error" in r or not r.get("ok", False) for r in results[n])]
    failed += [n for n in own if n in kills and ("error" in kills[n] or not kills[n].get("ok", False))]
    if failed:
        print(f"FAILED: {', '.join(sorted(set(failed)))}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""What every peer shares: the workload loop, the clock, RSS, fsync and disk accounting.

The workload is one instrumented loop. Every step computes ``iter`` + 9 floats and
a ``phase`` string (cheap arithmetic, about as much Python work as a real
recorder call site has around it), then runs the peer's *log statement*. The
loop is generated from :data:`LOOP_TEMPLATE` so that the baseline (the same loop
without the log statement) is byte-for-byte the same code otherwise.

Values are closed-form in ``i`` so a reader can check every row it gets back:
``E == 1 / (iter + 1)``, ``grad_norm == E * 0.5``, ``phase`` by thirds of N.
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The 9 float fields, in order (``iter`` first, ``phase`` last in table-style peers).
FLOATS = ["t_wall_ms", "E", "grad_norm", "eta_dd", "gamma", "alpha", "phi_residual", "invariant_drift_max", "step_len"]
COLUMNS = ["iter", *FLOATS, "phase"]
PHASES = ("RED", "AMBER", "GREEN")

LOOP_TEMPLATE = """
def _loop(n, kill_at{params}):
    perf = _perf_counter
    n1 = n // 3
    n2 = 2 * n // 3
    eta_dd = -0.25
    gamma = 1.9
    alpha = 1.9e-4
    t0 = perf()
    for i in range(n):
        t_wall_ms = (perf() - t0) * 1000.0
        E = 1.0 / (i + 1)
        grad_norm = E * 0.5
        phi_residual = grad_norm * 1e-3
        invariant_drift_max = 1e-12 * i
        step_len = alpha * grad_norm
        phase = "RED" if i < n1 else ("AMBER" if i < n2 else "GREEN")
{log}
{kill}
"""

KILL_STMT = """
        if i == kill_at:
            _kill(_getpid(), 9)
"""


def make_loop(log: str, names: Iterable[str], *, kill: bool = False) -> Callable[..., None]:
    """``_loop(n, kill_at, *names)`` running ``log`` (statements, may be empty) each step."""
    names = list(names)
    params = "".join(f", {n}" for n in names)
    body = textwrap.indent(textwrap.dedent(log).strip("\n"), " " * 8) if log.strip() else ""
    src = LOOP_TEMPLATE.format(params=params, log=body, kill=KILL_STMT if kill else "")
    ns: dict[str, Any] = {"_perf_counter": time.perf_counter, "_kill": os.kill, "_getpid": os.getpid}
    exec(compile(src, f"<loop {log.strip().splitlines()[0] if log.strip() else 'baseline'}>", "exec"), ns)
    return ns["_loop"]  # type: ignore[no-any-return]


def expected_phase_counts(n: int) -> dict[str, int]:
    n1, n2 = n // 3, 2 * n // 3
    return {"RED": n1, "AMBER": n2 - n1, "GREEN": n - n2}


@dataclass
class Sink:
    """What a peer's ``setup`` returns: the names the log statement uses, and how to finish."""

    names: dict[str, Any]
    finish: Callable[[], None]
    info: Callable[[], dict[str, Any]] | None = None  # after finish: counters worth reporting


@dataclass
class ReadBack:
    """Rows readable from disk, and whether every one of them checked out."""

    rows: int
    ok: bool
    detail: str = ""


@dataclass
class Peer:
    """One way of logging the workload.

    ``log`` is the statement run each step (loop locals: ``i``, the 9 floats, ``phase``;
    plus the names ``setup`` returns). ``setup(out, n)`` creates the sink in folder
    ``out``; ``read(out, n, killed)`` reads back what is on disk (after a crash,
    the documented recovery is part of reading).
    """

    name: str
    family: str
    requires: tuple[str, ...]  # importable modules, imported before the RSS baseline
    dist: str | None  # distribution whose version is reported
    n: int  # rows per full repeat
    smoke_n: int
    log: str
    setup: Callable[[Path, int], Sink]
    read: Callable[[Path, int, bool], ReadBack]
    notes: str
    env: dict[str, str] = field(default_factory=dict)
    style: str = "table"  # "table": 11 columns incl. phase; "metric": 9 floats with iter as step
    kill_test: bool = True


# --------------------------------------------------------------------------- memory


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


# --------------------------------------------------------------------------- disk


def walk_files(root: Path) -> list[Path]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out.extend(Path(dirpath) / f for f in files)
    return out


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (and ``root`` itself)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue  # a socket, or removed meanwhile
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def tree_bytes(root: Path) -> int:
    total = 0
    for p in walk_files(root):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------- checks


def check_table(cols: dict[str, Any], n: int, *, killed: bool, with_phase: bool = True) -> ReadBack:
    """Checks columns read back from a table-style peer (numpy arrays or lists).

    Complete run: exactly ``iter`` 0..n-1. After a kill: a prefix 0..k-1 (any order).
    Every row: ``E == 1/(iter+1)``, ``grad_norm == E/2``, ``phase`` by thirds of n.
    """
    import numpy as np

    it = np.asarray(cols["iter"], dtype=np.int64)
    rows = len(it)
    if rows == 0:
        return ReadBack(0, killed, "no rows")
    order = np.argsort(it, kind="stable")
    it = it[order]
    want = rows if killed else n
    problems = []
    if rows != want or not np.array_equal(it, np.arange(want)):
        problems.append(f"iter is not 0..{want - 1} ({rows} rows)")
    E = np.asarray(cols["E"], dtype=np.float64)[order]
    if not np.array_equal(E, 1.0 / (it + 1)):
        problems.append("E != 1/(iter+1)")
    g = np.asarray(cols["grad_norm"], dtype=np.float64)[order]
    if not np.array_equal(g, E * 0.5):
        problems.append("grad_norm != E/2")
    if with_phase and "phase" in cols:
        ph = np.asarray([str(p) for p in cols["phase"]], dtype=object)[order]
        n1, n2 = n // 3, 2 * n // 3
        exp = np.where(it < n1, "RED", np.where(it < n2, "AMBER", "GREEN")).astype(object)
        if not np.array_equal(ph, exp):
            problems.append("phase mismatch")
    return ReadBack(rows, not problems, "; ".join(problems))


def check_metrics(steps: dict[int, dict[str, float]], n: int, *, killed: bool, rel_tol: float = 0.0) -> ReadBack:
    """Checks metric-style read-back: ``{step: {name: value}}``; a row is a step with all 9 floats.

    ``rel_tol``: peers that store float32 (tensorboardX) are compared within 1e-6.
    """
    complete = {s: v for s, v in steps.items() if all(k in v for k in FLOATS)}
    rows = len(complete)
    problems = []
    want = rows if killed else n
    if sorted(complete) != list(range(want)):
        problems.append(f"complete steps are not 0..{want - 1} ({rows} complete, {len(steps)} partial or complete)")

    def off(got: float, exp: float) -> bool:
        return abs(got - exp) > rel_tol * abs(exp)

    bad = [s for s, v in complete.items() if off(v["E"], 1.0 / (s + 1)) or off(v["grad_norm"], 0.5 / (s + 1))]
    if bad:
        problems.append(f"{len(bad)} steps with wrong E/grad_norm (first: step {min(bad)})")
    return ReadBack(rows, not problems, "; ".join(problems))

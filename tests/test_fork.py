"""Fork safety (issue 18): a forked child does not own its parent's recorders.

In the child, ``record()``/``log()``/``extend()``/``event()``/``flush()`` raise a
:class:`flightlog.FlightlogError` naming the parent; ``close()`` and the exit hooks
do nothing to the parent's files and never block. Each scenario runs in its own
process group under a timeout (a regression is a hang).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import run_child_json

PYTHON = sys.executable
TIMEOUT = 120


def _run(script: str, *args: str) -> dict:
    return run_child_json(script, *args, timeout=TIMEOUT)


_CHILD_RECORDS = r"""
import json, os, sys
import numpy as np
import pyarrow.parquet as pq
from flightlog import Field, FlightRecorder, FlightlogError, Schema
path = sys.argv[1]
s = Schema([Field("who", "i64", nullable=False), Field("i", "i64", nullable=False)])
rec = FlightRecorder(path, s, flush_interval=0.01, ring_capacity=4)
for i in range(1000):
    rec.record(1, i)
parent = os.getpid()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    seen = {}
    calls = {
        "record": lambda: [rec.record(2, i) for i in range(10_000)],  # a 4-row ring: blocked forever before
        "log": lambda: rec.log(who=2, i=0),
        "extend": lambda: rec.extend(who=np.zeros(3, dtype=np.int64), i=np.arange(3)),
        "event": lambda: rec.event("X", {"a": 1}),
        "flush": lambda: rec.flush(),
    }
    for name, call in calls.items():
        try:
            call()
            seen[name] = "no error"
        except FlightlogError as e:
            seen[name] = str(e)
    rec.close()  # does nothing here, never blocks
    seen["closed_ok"] = True
    os.write(w, json.dumps(seen).encode())
    os.close(w)
    os._exit(0)
os.close(w)
data = b""
while chunk := os.read(r, 65536):
    data += chunk
_, status = os.waitpid(pid, 0)
child = json.loads(data)
for i in range(1000, 2000):
    rec.record(1, i)
rec.close()
t = pq.read_table(os.path.join(path, "telemetry.parquet"))
print(json.dumps({"parent": parent, "child": child, "status": status, "rows": t.num_rows,
                  "who": sorted(set(t.column("who").to_pylist())), "written": rec.stats()["rows_written"]}))
"""


def test_a_forked_child_that_records_raises_and_the_parent_keeps_every_row(tmp_path: Path) -> None:
    out = _run(_CHILD_RECORDS, str(tmp_path / "r"))
    assert out["status"] == 0
    expected = f"this recorder belongs to process {out['parent']}"
    for name in ("record", "log", "extend", "event", "flush"):
        msg = out["child"][name]
        assert expected in msg, (name, msg)
        assert "TelemetryManager per worker" in msg, msg
    assert out["child"]["closed_ok"] is True
    assert out["rows"] == 2000 and out["written"] == 2000
    assert out["who"] == [1]


_CHILD_EXITS = r"""
import json, os, sys, tomllib
import pyarrow.parquet as pq
from flightlog import FlightRecorder, TelemetryManager
root = sys.argv[1]
tm = TelemetryManager(root, "flow", run_id="p", flush_interval=0.01)
bare = FlightRecorder(os.path.join(root, "bare"), None, flush_interval=0.01)
for i in range(5000):
    tm.log(iter=i, E=float(i))
    bare.log(iter=i)
tm.flush()
bare.flush()
pid = os.fork()
if pid == 0:
    sys.exit(0)  # atexit hooks run here: they must not close the parent's run
_, status = os.waitpid(pid, 0)
manifest = os.path.join(tm.run_path, "manifest.toml")
with open(manifest, "rb") as f:
    during = tomllib.load(f)["status"]
segments_left = len(os.listdir(os.path.join(tm.run_path, "segments")))
for i in range(5000, 6000):
    tm.log(iter=i, E=float(i))
    bare.log(iter=i)
tm.close()
bare.close()
with open(manifest, "rb") as f:
    final = tomllib.load(f)
print(json.dumps({"status": status, "during": during, "segments_left": segments_left,
                  "final": final["status"], "rows": final["counts"]["rows_written"],
                  "file_rows": pq.ParquetFile(os.path.join(tm.run_path, "telemetry.parquet")).metadata.num_rows,
                  "bare_rows": pq.ParquetFile(os.path.join(root, "bare", "telemetry.parquet")).metadata.num_rows}))
"""


def test_a_forked_child_that_just_exits_does_not_hang_or_touch_the_parents_run(tmp_path: Path) -> None:
    out = _run(_CHILD_EXITS, str(tmp_path))
    assert out["status"] == 0
    assert out["during"] == "running"  # the child's exit did not finish the parent's run
    assert out["segments_left"] > 0  # nor merge and delete its segments
    assert out["final"] == "finished"
    assert out["rows"] == out["file_rows"] == 6000
    assert out["bare_rows"] == 6000


_POOL = r"""
import json, multiprocessing as mp, os, sys
import pyarrow.parquet as pq
from flightlog import TelemetryManager
root = sys.argv[1]

def work(k):
    with TelemetryManager(root, "flow", run_id=f"w{k}", flush_interval=0.01) as tm:
        for i in range(1000 + k):
            tm.log(iter=i, E=float(k))
    return os.getpid()

if __name__ == "__main__":
    # The parent records too while the pool forks: its workers inherit it.
    parent = TelemetryManager(root, "flow", run_id="parent", flush_interval=0.01)
    for i in range(3000):
        parent.log(iter=i, E=-1.0)
    with mp.get_context("fork").Pool(4) as pool:
        pids = pool.map(work, range(8))
    for i in range(3000, 4000):
        parent.log(iter=i, E=-1.0)
    parent.close()
    counts = {}
    for k in [*(f"w{k}" for k in range(8)), "parent"]:
        counts[k] = pq.ParquetFile(os.path.join(root, f"fda_run_{k}", "telemetry.parquet")).metadata.num_rows
    print(json.dumps({"counts": counts, "workers": len(set(pids))}))
"""


def test_a_fork_pool_whose_workers_record_through_their_own_managers_gives_exact_counts(tmp_path: Path) -> None:
    res = run_child_json(_POOL, str(tmp_path / "root"), timeout=TIMEOUT)
    assert res["counts"] == {**{f"w{k}": 1000 + k for k in range(8)}, "parent": 4000}


_FORK_DURING_CLOSE = r"""
import json, os, signal, sys, threading
import numpy as np
import pyarrow.parquet as pq
from flightlog import FlightlogError, TelemetryManager
root = sys.argv[1]
tm = TelemetryManager(root, "f", run_id="x", flush_interval=0.05)
tm.log(a=0.0, b=0)
n = 100_000
for k in range(5):
    tm.extend(a=np.arange(n, dtype=np.float64), b=np.arange(n))
    tm.flush()
inside = threading.Event()
real_finish = tm._finish_manifest
def finish(*a, **k):  # the closing thread holds the manager's lock from here on
    inside.set()
    return real_finish(*a, **k)
tm._finish_manifest = finish
t = threading.Thread(target=tm.close)
t.start()
inside.wait(60)
pid = os.fork()
if pid == 0:
    signal.alarm(20)  # a regression is a hang: the child dies of SIGALRM
    seen = {}
    for name, call in {"event": lambda: tm.event("CHILD", {}), "log": lambda: tm._ensure_recorder()}.items():
        try:
            call()
            seen[name] = "no error"
        except FlightlogError as e:
            seen[name] = str(e)
    os._exit(0 if all("forked child" in v for v in seen.values()) else 3)
_, status = os.waitpid(pid, 0)
t.join()
rows = pq.read_table(os.path.join(tm.run_path, "telemetry.parquet")).num_rows
print(json.dumps({"status": status, "rows": rows, "manifest": tm.manifest["status"]}))
"""


def test_a_child_forked_while_the_parent_closes_its_run_raises_instead_of_blocking(tmp_path: Path) -> None:
    """The manager's own lock, held by a closing thread at the fork, is never
    released in the child: a call that waited on it blocked forever."""
    out = _run(_FORK_DURING_CLOSE, str(tmp_path))
    assert os.WIFEXITED(out["status"]) and os.WEXITSTATUS(out["status"]) == 0, out
    assert out["rows"] == 1 + 5 * 100_000 and out["manifest"] == "finished"

"""trackio: ``trackio.log(dict, step)`` per step into local SQLite (a background thread batches)."""

from __future__ import annotations

import json
from pathlib import Path

from common import FLOATS, Peer, ReadBack, Sink, check_table

METRICS = "{" + ", ".join(f"'{f}': {f}" for f in FLOATS) + ", 'phase': phase}"


def setup(out: Path, n: int) -> Sink:
    import trackio

    # TRACKIO_DIR (set by the harness) points at `out`; no system-metrics thread.
    trackio.init(project="bench", name="bench", auto_log_cpu=False, auto_log_gpu=False)
    return Sink({"log": trackio.log}, trackio.finish)


def read(out: Path, n: int, killed: bool) -> ReadBack:
    import sqlite3

    path = out / "trackio" / "bench.db"
    if not path.exists():
        return ReadBack(0, killed, "no database")
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT step, metrics FROM metrics").fetchall()
    finally:
        con.close()
    cols: dict[str, list[object]] = {"iter": [], "E": [], "grad_norm": [], "phase": []}
    for step, blob in rows:
        m = json.loads(blob)
        cols["iter"].append(step)
        for k in ("E", "grad_norm", "phase"):
            cols[k].append(m.get(k))
    return check_table(cols, n, killed=killed)


PEERS = [
    Peer(
        "trackio-log",
        family="trackio",
        requires=("trackio",),
        dist="trackio",
        n=50_000,
        smoke_n=500,
        log=f"log({METRICS}, step=i)",
        setup=setup,
        read=read,
        env={"TRACKIO_DIR": "{out}/trackio"},
        notes="trackio.log(dict9+phase, step) per step; a background thread batches into local SQLite (JSON per row)",
    ),
]

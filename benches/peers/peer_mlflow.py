"""MLflow tracking on a local SQLite store: ``log_metrics`` per step (phase not logged)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from common import FLOATS, Peer, ReadBack, Sink, check_metrics

METRICS = "{" + ", ".join(f"'{f}': {f}" for f in FLOATS) + "}"


def setup(synchronous: bool) -> Any:
    def make(out: Path, n: int) -> Sink:
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
        exp = mlflow.create_experiment("bench", artifact_location=(out / "artifacts").as_uri())
        mlflow.start_run(experiment_id=exp)
        log_metrics = mlflow.log_metrics if synchronous else functools.partial(mlflow.log_metrics, synchronous=False)
        return Sink({"log_metrics": log_metrics}, mlflow.end_run)

    return make


def read(out: Path, n: int, killed: bool) -> ReadBack:
    import sqlite3

    path = out / "mlflow.db"
    if not path.exists():
        return ReadBack(0, killed, "no database")
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT step, key, value FROM metrics").fetchall()
    finally:
        con.close()
    steps: dict[int, dict[str, float]] = {}
    for step, key, value in rows:
        steps.setdefault(step, {})[key] = value
    return check_metrics(steps, n, killed=killed)


_common = {
    "family": "mlflow",
    "requires": ("mlflow",),
    "dist": "mlflow",
    "style": "metric",
    "read": read,
    "env": {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"},
}

PEERS = [
    Peer(
        "mlflow-log_metrics",
        **_common,
        n=1_000,
        smoke_n=20,
        log=f"log_metrics({METRICS}, step=i)",
        setup=setup(True),
        notes="sqlite backend, mlflow.log_metrics(dict9, step) per step; phase not logged",
    ),
    Peer(
        "mlflow-async",
        **_common,
        n=1_000,
        smoke_n=20,
        log=f"log_metrics({METRICS}, step=i)",
        setup=setup(False),
        notes="sqlite backend, log_metrics(..., synchronous=False) per step; end_run() drains the queue",
    ),
]

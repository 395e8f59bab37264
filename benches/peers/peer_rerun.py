"""rerun: ``rr.log(Scalars)`` per field per step to an .rrd file, or ``send_columns`` at the end (phase not logged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import FLOATS, Peer, ReadBack, Sink, check_metrics

LOGS = "set_time('step', sequence=i)\n" + "\n".join(f"log('{f}', Scalars({f}))" for f in FLOATS)
COL_APPENDS = "c_iter(i)\n" + "\n".join(f"c_{f}({f})" for f in FLOATS)


def _start(out: Path) -> Any:
    import rerun as rr

    rr.init("bench", spawn=False)
    rr.save(str(out / "r.rrd"))
    return rr


def setup_log(out: Path, n: int) -> Sink:
    rr = _start(out)
    return Sink({"set_time": rr.set_time, "log": rr.log, "Scalars": rr.Scalars}, rr.disconnect)


def setup_columns(out: Path, n: int) -> Sink:
    import numpy as np

    rr = _start(out)
    lists: dict[str, list[Any]] = {name: [] for name in ["iter", *FLOATS]}

    def finish() -> None:
        steps = np.asarray(lists["iter"], dtype=np.int64)
        for f in FLOATS:
            rr.send_columns(
                f,
                indexes=[rr.TimeColumn("step", sequence=steps)],
                columns=rr.Scalars.columns(scalars=np.asarray(lists[f], dtype=np.float64)),
            )
        rr.disconnect()

    return Sink({f"c_{name}": lst.append for name, lst in lists.items()}, finish)


def read(out: Path, n: int, killed: bool) -> ReadBack:
    from rerun.chunk import RrdReader

    path = out / "r.rrd"
    if not path.exists():
        return ReadBack(0, killed, "no file")
    steps: dict[int, dict[str, float]] = {}
    try:
        for chunk in RrdReader(path).stream():
            if chunk.is_static:
                continue
            name = chunk.entity_path.lstrip("/")
            if name not in FLOATS:
                continue
            rb = chunk.to_record_batch()
            names = rb.schema.names
            idx = rb.column(names.index("step")).to_pylist()
            vals = rb.column(next(k for k, c in enumerate(names) if c.endswith("scalars"))).to_pylist()
            for s, v in zip(idx, vals, strict=True):
                if v:
                    steps.setdefault(int(s), {})[name] = float(v[0])
    except Exception as e:  # a file cut by a crash may end in a partial message
        rb = check_metrics(steps, n, killed=killed)
        rb.detail = (rb.detail + "; " if rb.detail else "") + f"reader stopped: {type(e).__name__}: {e}"[:200]
        return rb
    return check_metrics(steps, n, killed=killed)


_common = {"family": "rerun", "requires": ("rerun",), "dist": "rerun-sdk", "style": "metric", "read": read}

PEERS = [
    Peer(
        "rerun-log",
        **_common,
        n=5_000,
        smoke_n=100,
        log=LOGS,
        setup=setup_log,
        notes="rr.set_time + 9x rr.log(Scalars) per step, .rrd file sink (rr.save); phase not logged",
    ),
    Peer(
        "rerun-send_columns",
        **_common,
        n=1_000_000,
        smoke_n=20_000,
        log=COL_APPENDS,
        setup=setup_columns,
        notes="10 per-field lists, 9x rr.send_columns at the end to an .rrd file; phase not logged",
    ),
]

"""tensorboardX: 9 ``add_scalar`` calls per step into a TFRecord event file (phase not logged)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from common import FLOATS, Peer, ReadBack, Sink, check_metrics

ADD_SCALARS = "\n".join(f"add('{f}', {f}, i)" for f in FLOATS)


def setup(max_queue: int) -> Any:
    def make(out: Path, n: int) -> Sink:
        from tensorboardX import SummaryWriter

        w = SummaryWriter(str(out / "tb"), max_queue=max_queue)
        return Sink({"add": w.add_scalar}, w.close)

    return make


def read(out: Path, n: int, killed: bool) -> ReadBack:
    """Reads every event file record by record; a truncated last record (a crash) ends the file."""
    from tensorboardX.proto import event_pb2

    steps: dict[int, dict[str, float]] = {}
    truncated = 0
    for path in sorted((out / "tb").glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            end = pos + 12 + length + 4
            if end > len(data):
                truncated += 1
                break
            ev = event_pb2.Event()
            ev.ParseFromString(data[pos + 12 : pos + 12 + length])
            for v in ev.summary.value:
                steps.setdefault(ev.step, {})[v.tag] = v.simple_value
            pos = end
    rb = check_metrics(steps, n, killed=killed, rel_tol=1e-6)  # simple_value is float32
    if truncated:
        rb.detail = (rb.detail + "; " if rb.detail else "") + "truncated last record skipped"
    return rb


_common = {
    "family": "tensorboardX",
    "requires": ("tensorboardX",),
    "dist": "tensorboardX",
    "style": "metric",
    "read": read,
}

PEERS = [
    Peer(
        "tbx-add_scalar",
        **_common,
        n=5_000,
        smoke_n=100,
        log=ADD_SCALARS,
        setup=setup(10),
        notes="9x add_scalar per step, default max_queue=10 (float32 values); phase not logged",
    ),
    Peer(
        "tbx-add_scalar-maxq100000",
        **_common,
        n=5_000,
        smoke_n=100,
        log=ADD_SCALARS,
        setup=setup(100_000),
        notes="9x add_scalar per step, max_queue=100000; phase not logged",
    ),
]

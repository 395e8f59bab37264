"""pyarrow: accumulate Python lists during the loop, build a table and write Parquet at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import COLUMNS, Peer, ReadBack, Sink, check_table

ROW = "(i, t_wall_ms, E, grad_norm, eta_dd, gamma, alpha, phi_residual, invariant_drift_max, step_len, phase)"
# One list per column: c0 = iter ... c10 = phase (bound appends, as a careful user writes it).
COL_APPENDS = "\n".join(f"c{k}({v.strip()})" for k, v in enumerate(ROW.strip("()").split(",")))


def read_parquet(path: Path, n: int, killed: bool) -> ReadBack:
    import pyarrow.parquet as pq

    if not path.exists():
        return ReadBack(0, killed, "no file (written only at the end)")
    t = pq.read_table(path)
    cols: dict[str, Any] = {c: t.column(c).to_numpy() for c in COLUMNS if c != "phase"}
    cols["phase"] = t.column("phase").to_pylist()
    return check_table(cols, n, killed=killed)


def read(out: Path, n: int, killed: bool) -> ReadBack:
    return read_parquet(out / "t.parquet", n, killed)


def setup_tuples(out: Path, n: int) -> Sink:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[tuple[Any, ...]] = []

    def finish() -> None:
        cols = zip(*rows, strict=True)
        table = pa.table({name: pa.array(col) for name, col in zip(COLUMNS, cols, strict=True)})
        pq.write_table(table, out / "t.parquet")

    return Sink({"append": rows.append}, finish)


def setup_cols(out: Path, n: int) -> Sink:
    import pyarrow as pa
    import pyarrow.parquet as pq

    lists: list[list[Any]] = [[] for _ in COLUMNS]

    def finish() -> None:
        table = pa.table({name: pa.array(col) for name, col in zip(COLUMNS, lists, strict=True)})
        pq.write_table(table, out / "t.parquet")

    return Sink({f"c{k}": lst.append for k, lst in enumerate(lists)}, finish)


_common = {"family": "pyarrow", "requires": ("pyarrow", "pyarrow.parquet"), "dist": "pyarrow"}

PEERS = [
    Peer(
        "pyarrow-tuples",
        **_common,
        n=1_000_000,
        smoke_n=20_000,
        log=f"append({ROW})",
        setup=setup_tuples,
        read=read,
        notes="list of 11-tuples -> pa.table -> pq.write_table at the end (default snappy)",
    ),
    Peer(
        "pyarrow-cols",
        **_common,
        n=1_000_000,
        smoke_n=20_000,
        log=COL_APPENDS,
        setup=setup_cols,
        read=read,
        notes="11 per-column lists (bound appends) -> pa.table -> pq.write_table at the end",
    ),
]

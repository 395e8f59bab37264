"""polars: accumulate Python lists, one DataFrame and ``write_parquet`` at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import COLUMNS, Peer, Sink
from peer_pyarrow import COL_APPENDS, ROW, read


def setup_rows(out: Path, n: int) -> Sink:
    import polars as pl

    rows: list[tuple[Any, ...]] = []

    def finish() -> None:
        pl.DataFrame(rows, schema=COLUMNS, orient="row").write_parquet(out / "t.parquet")

    return Sink({"append": rows.append}, finish)


def setup_cols(out: Path, n: int) -> Sink:
    import polars as pl

    lists: list[list[Any]] = [[] for _ in COLUMNS]

    def finish() -> None:
        pl.DataFrame(dict(zip(COLUMNS, lists, strict=True))).write_parquet(out / "t.parquet")

    return Sink({f"c{k}": lst.append for k, lst in enumerate(lists)}, finish)


_common = {"family": "polars", "requires": ("polars", "pyarrow.parquet"), "dist": "polars"}

PEERS = [
    Peer(
        "polars-rows",
        **_common,
        n=1_000_000,
        smoke_n=20_000,
        log=f"append({ROW})",
        setup=setup_rows,
        read=read,
        notes="list of 11-tuples -> pl.DataFrame(orient='row') -> write_parquet at the end (default zstd)",
    ),
    Peer(
        "polars-cols",
        **_common,
        n=1_000_000,
        smoke_n=20_000,
        log=COL_APPENDS,
        setup=setup_cols,
        read=read,
        notes="11 per-column lists -> pl.DataFrame(dict) -> write_parquet at the end",
    ),
]

"""pandas: a list of dict rows, one DataFrame and ``to_parquet`` at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import FLOATS, Peer, Sink
from peer_pyarrow import read

DICT_ROW = "{'iter': i, " + ", ".join(f"'{f}': {f}" for f in FLOATS) + ", 'phase': phase}"


def setup_rows(out: Path, n: int) -> Sink:
    import pandas as pd

    rows: list[dict[str, Any]] = []

    def finish() -> None:
        pd.DataFrame(rows).to_parquet(out / "t.parquet", engine="pyarrow")

    return Sink({"append": rows.append}, finish)


PEERS = [
    Peer(
        "pandas-rows",
        family="pandas",
        requires=("pandas", "pyarrow.parquet"),
        dist="pandas",
        n=1_000_000,
        smoke_n=20_000,
        log=f"append({DICT_ROW})",
        setup=setup_rows,
        read=read,
        notes="list of 11-key dicts -> pd.DataFrame -> to_parquet at the end (pyarrow, snappy)",
    ),
]

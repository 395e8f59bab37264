"""DuckDB: one bulk insert at the end, or one INSERT per step (in one transaction, or autocommit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import COLUMNS, FLOATS, Peer, ReadBack, Sink, check_table
from peer_pyarrow import ROW

DDL = "CREATE TABLE t (iter BIGINT, " + ", ".join(f"{f} DOUBLE" for f in FLOATS) + ", phase VARCHAR)"
INSERT = "INSERT INTO t VALUES (" + ", ".join("?" for _ in COLUMNS) + ")"


def _connect(out: Path) -> Any:
    import duckdb

    con = duckdb.connect(str(out / "t.duckdb"))
    con.execute(DDL)
    return con


def setup_bulk(out: Path, n: int) -> Sink:
    import pyarrow as pa

    con = _connect(out)
    rows: list[tuple[Any, ...]] = []

    def finish() -> None:
        cols = zip(*rows, strict=True)
        tbl = pa.table({name: pa.array(col) for name, col in zip(COLUMNS, cols, strict=True)})
        con.register("tbl", tbl)
        con.execute("INSERT INTO t SELECT * FROM tbl")
        con.execute("CHECKPOINT")
        con.close()

    return Sink({"append": rows.append}, finish)


def setup_row(transaction: bool) -> Any:
    def setup(out: Path, n: int) -> Sink:
        con = _connect(out)
        if transaction:
            con.execute("BEGIN TRANSACTION")
        ex = con.execute

        def finish() -> None:
            if transaction:
                con.execute("COMMIT")
            con.execute("CHECKPOINT")
            con.close()

        return Sink({"ex": ex, "sql": INSERT}, finish)

    return setup


def read(out: Path, n: int, killed: bool) -> ReadBack:
    import duckdb

    path = out / "t.duckdb"
    if not path.exists():
        return ReadBack(0, killed, "no database")
    con = duckdb.connect(str(path))  # read-write: replays the WAL after a crash
    try:
        cols = con.execute("SELECT * FROM t").fetchnumpy()
    finally:
        con.close()
    return check_table({k: list(v) if k == "phase" else v for k, v in cols.items()}, n, killed=killed)


_common = {"family": "duckdb", "requires": ("duckdb", "pyarrow"), "dist": "duckdb"}

PEERS = [
    Peer(
        "duckdb-bulk",
        **_common,
        n=1_000_000,
        smoke_n=20_000,
        log=f"append({ROW})",
        setup=setup_bulk,
        read=read,
        notes="list of 11-tuples -> Arrow -> one INSERT..SELECT at the end into a .duckdb file",
    ),
    Peer(
        "duckdb-row-txn",
        **_common,
        n=5_000,
        smoke_n=200,
        log=f"ex(sql, {ROW})",
        setup=setup_row(True),
        read=read,
        notes="INSERT per step inside one transaction; COMMIT + CHECKPOINT at the end",
    ),
    Peer(
        "duckdb-row-autocommit",
        **_common,
        n=5_000,
        smoke_n=200,
        log=f"ex(sql, {ROW})",
        setup=setup_row(False),
        read=read,
        notes="INSERT per step, autocommit (one transaction per row, WAL)",
    ),
]

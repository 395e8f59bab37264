"""flightlog itself: ``record``, ``log``, ``TelemetryManager.log``, ``extend`` per block, and the call floor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import COLUMNS, FLOATS, Peer, ReadBack, Sink, check_table

BLOCK = 4096  # rows per extend() call in the block variant (a power of two: the step test is a mask)


def schema() -> Any:
    from flightlog import Field, Schema
    from flightlog.schemas import PHASES

    return Schema(
        [Field("iter", "i64", nullable=False)]
        + [Field(f, "f64", nullable=False) for f in FLOATS]
        + [Field("phase", PHASES, nullable=False)]
    )


UNITS = {"phi_residual": {"unit": "1", "method": "bench"}, "invariant_drift_max": {"unit": "1", "method": "bench"}}


def _recorder(out: Path) -> Any:
    from flightlog import FlightRecorder

    return FlightRecorder(out, schema())


def _stats(rec: Any) -> Any:
    keys = ("producer_stalls", "segments", "rows_dropped", "rows_lost")
    return lambda: {k: v for k, v in rec.stats().items() if k in keys}


def setup_record(out: Path, n: int) -> Sink:
    rec = _recorder(out)
    return Sink({"record": rec.record}, rec.close, _stats(rec))


def setup_noop(out: Path, n: int) -> Sink:
    rec = _recorder(out)
    return Sink({"record": rec._native._noop}, rec.close)


def setup_log(out: Path, n: int) -> Sink:
    rec = _recorder(out)
    return Sink({"log": rec.log}, rec.close, _stats(rec))


def setup_manager(out: Path, n: int) -> Sink:
    from flightlog import TelemetryManager

    tm = TelemetryManager(out, "bench", schema=schema(), max_rows=None, units=UNITS)
    return Sink({"log": tm.log}, tm.close, _stats(tm))


def setup_extend(out: Path, n: int) -> Sink:
    rec = _recorder(out)
    rows: list[tuple[Any, ...]] = []
    extend = rec.extend

    def flush_block() -> None:
        if rows:
            extend(**dict(zip(COLUMNS, zip(*rows, strict=True), strict=True)))
            rows.clear()

    def finish() -> None:
        flush_block()
        rec.close()

    return Sink({"append": rows.append, "flush_block": flush_block}, finish, _stats(rec))


def _telemetry(out: Path, killed: bool, manager: bool) -> Path | None:
    if killed:
        if manager:
            import flightlog

            flightlog.recover(out)
        else:
            from flightlog import _core

            _core.recover_run_dir(str(out))
    if manager:
        found = sorted(out.glob("fda_run_*/telemetry.parquet"))
        return found[0] if found else None
    p = out / "telemetry.parquet"
    return p if p.exists() else None


def _reader(manager: bool = False) -> Any:
    def read(out: Path, n: int, killed: bool) -> ReadBack:
        import pyarrow.parquet as pq

        path = _telemetry(out, killed, manager)
        if path is None:
            return ReadBack(0, killed, "no telemetry.parquet")
        t = pq.read_table(path)
        cols = {c: t.column(c).to_numpy() for c in COLUMNS if c != "phase"}
        cols["phase"] = t.column("phase").to_pylist()
        return check_table(cols, n, killed=killed)

    return read


def read_nothing(out: Path, n: int, killed: bool) -> ReadBack:
    return ReadBack(0, True, "stores nothing")


RECORD = "record(i, t_wall_ms, E, grad_norm, eta_dd, gamma, alpha, phi_residual, invariant_drift_max, step_len, phase)"
LOG = (
    "log(iter=i, t_wall_ms=t_wall_ms, E=E, grad_norm=grad_norm, eta_dd=eta_dd, gamma=gamma, alpha=alpha, "
    "phi_residual=phi_residual, invariant_drift_max=invariant_drift_max, step_len=step_len, phase=phase)"
)
APPEND = (
    "append((i, t_wall_ms, E, grad_norm, eta_dd, gamma, alpha, phi_residual, invariant_drift_max, step_len, phase))"
)

_common = {"family": "flightlog", "requires": ("flightlog",), "dist": "flightlog"}

PEERS = [
    Peer(
        "floor-noop",
        **_common,
        n=5_000_000,
        smoke_n=20_000,
        log=RECORD,
        setup=setup_noop,
        read=read_nothing,
        notes="the recorder's native no-op method with record()'s 11 arguments: the call floor, nothing stored",
        kill_test=False,
    ),
    Peer(
        "flightlog-record",
        **_common,
        n=5_000_000,
        smoke_n=20_000,
        log=RECORD,
        setup=setup_record,
        read=_reader(),
        notes="FlightRecorder.record(11 positional values); zstd Parquet segments every 1 s, merged at close()",
    ),
    Peer(
        "flightlog-log",
        **_common,
        n=3_000_000,
        smoke_n=20_000,
        log=LOG,
        setup=setup_log,
        read=_reader(),
        notes="FlightRecorder.log(**11 keywords)",
    ),
    Peer(
        "flightlog-manager-log",
        **_common,
        n=3_000_000,
        smoke_n=20_000,
        log=LOG,
        setup=setup_manager,
        read=_reader(manager=True),
        notes="TelemetryManager(mode='run').log(**11 keywords); + run_id/flow_name columns, manifest, events; "
        "kill -9 read back after flightlog.recover()",
    ),
    Peer(
        "flightlog-extend",
        **_common,
        n=3_000_000,
        smoke_n=20_000,
        log=APPEND + f"\nif i & {BLOCK - 1} == {BLOCK - 1}:\n    flush_block()",
        setup=setup_extend,
        read=_reader(),
        notes=f"list.append(11-tuple) per step, extend(**columns) every {BLOCK} rows (zip(*rows) to columns)",
    ),
]

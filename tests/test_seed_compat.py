"""The seed project's (CFS) usage: a recorder given a ``.parquet`` file path, read back
before and after close (issue 14, part 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flightlog
from flightlog import FlightRecorder, RunClaimedError


def test_seed_snippet_verbatim(tmp_path: Path) -> None:
    # The seed's test, unchanged but for the fields its "..." stands for.
    rec = FlightRecorder(path=str(tmp_path / "telemetry.parquet"))
    for i in range(5):
        rec.log(
            run_id="test_run_001",
            flow_name="dummy_flow",
            phase="GREEN",
            iter=i,
            t_wall_ms=float(i),
            E=1.0 / (i + 1),
            grad_norm=0.1,
            eta_dd=0.01,
            gamma=0.5,
            alpha=0.1,
            phi_residual=0.0,
            invariant_drift_max=0.0,
        )
    df = rec.to_dataframe()  # expects the 5 rows logged so far
    assert len(df) == 5
    assert df["iter"].tolist() == [0, 1, 2, 3, 4]
    assert len(rec) == 5
    rec.close()
    table = pq.read_table(tmp_path / "telemetry.parquet")  # expects a Parquet file at that path
    assert table.num_rows == 5
    assert table.column("run_id").to_pylist() == ["test_run_001"] * 5
    assert len(rec.to_dataframe()) == 5
    assert len(rec) == 5
    # Nothing else among the user's files matches *.parquet; the rest is hidden, and a
    # dataset reader of the folder (which skips hidden folders) sees the 5 rows only.
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == ["telemetry.parquet"]
    assert pq.read_table(tmp_path).num_rows == 5
    sidecar = tmp_path / ".telemetry.parquet.flightlog"
    assert sidecar.is_dir()
    assert not list(sidecar.glob("*.parquet.*")), "no temp files left"
    assert not (sidecar / "segments").exists()


def test_reads_include_rows_not_yet_flushed(tmp_path: Path) -> None:
    # A long flush interval: without the flush in to_arrow() nothing would be durable.
    with FlightRecorder(tmp_path / "t.parquet", flush_interval=3600) as rec:
        for i in range(3):
            rec.log(iter=i, E=float(i))
        rec.event("CERT_PASS", {"gap": 0.1})
        assert len(rec) == 3
        rec.log(iter=3, E=3.0)
        assert rec.to_arrow().num_rows == 4
        assert pa.table(rec.events_to_arrow()).column("event").to_pylist()[-1] == "CERT_PASS"
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 4


def test_segments_live_in_the_hidden_sibling_while_running(tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    with FlightRecorder(out) as rec:
        rec.log(iter=0, E=1.0)
        rec.flush()
        assert not out.exists()
        segs = list((tmp_path / ".t.parquet.flightlog" / "segments").glob("telemetry-*.parquet"))
        assert len(segs) == 1
        assert (tmp_path / ".t.parquet.flightlog" / ".flightlog.lock").exists()
        assert sorted(tmp_path.glob("*.parquet")) == []
        # One writer per output file.
        with pytest.raises(RunClaimedError):
            FlightRecorder(out)
    assert out.is_file()


def test_existing_output_says_what_to_do(tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    with FlightRecorder(out) as rec:
        rec.log(iter=0, E=1.0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        FlightRecorder(out)
    assert pq.read_table(out).num_rows == 1


def test_overwrite_replaces_only_at_close(tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    with FlightRecorder(out) as rec:
        rec.log(iter=0, E=1.0)
        rec.event("OLD")
    rec = FlightRecorder(out, overwrite=True)
    for i in range(3):
        rec.log(iter=i, E=2.0)
    rec.event("NEW")
    rec.flush()
    # The old file is intact (and readable) until the new recording closes.
    assert pq.read_table(out).num_rows == 1
    assert rec.to_arrow().num_rows == 3
    rec.close()
    assert pq.read_table(out).column("E").to_pylist() == [2.0, 2.0, 2.0]
    assert rec.to_arrow().num_rows == 3
    names = pa.table(rec.events_to_arrow()).column("event").to_pylist()
    assert "NEW" in names and "OLD" not in names
    assert str(out) in [f["path"] for f in rec.files]
    assert not (tmp_path / ".t.parquet.flightlog" / "replacement").exists()
    # And again, with the same result.
    with FlightRecorder(out, overwrite=True) as rec:
        rec.log(iter=0, E=3.0)
    assert pq.read_table(out).column("E").to_pylist() == [3.0]


def test_overwrite_is_only_for_output_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is for an output file"):
        FlightRecorder(tmp_path / "run", overwrite=True)
    with pytest.raises(TypeError, match="overwrite"):
        FlightRecorder(tmp_path / "t.parquet", overwrite="yes")  # type: ignore[arg-type]


def test_an_existing_folder_named_parquet_stays_a_run_folder(tmp_path: Path) -> None:
    # Recordings made before the output-file form: such a folder keeps working as one.
    folder = tmp_path / "old.parquet"
    folder.mkdir()
    with FlightRecorder(folder) as rec:
        rec.log(iter=0, E=1.0)
    assert (folder / "telemetry.parquet").is_file()


KILLED = textwrap.dedent(
    """
    import sys
    from flightlog import FlightRecorder
    rec = FlightRecorder(sys.argv[1], overwrite=sys.argv[2] == "1", flush_interval=3600)
    for i in range(100):
        rec.log(iter=i, E=2.0)
    rec.flush()
    print("flushed", flush=True)
    sys.stdin.read()   # until killed
    """
)


def _record_and_kill(out: Path, overwrite: bool) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(out), "1" if overwrite else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flushed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("overwrite", [False, True])
def test_recover_finalises_a_killed_file_recording(tmp_path: Path, overwrite: bool) -> None:
    out = tmp_path / "t.parquet"
    if overwrite:
        with FlightRecorder(out) as rec:
            rec.log(iter=0, E=1.0)
    _record_and_kill(out, overwrite)
    # The old file (if any) is untouched by the killed recording.
    assert pq.read_table(out).num_rows == 1 if overwrite else not out.exists()
    report = flightlog.recover(out)
    assert not report.errors and not report.live
    assert len(report.recovered) == 1 and report.recovered[0]["telemetry_rows"] == 100
    table = pq.read_table(out)
    assert table.num_rows == 100 and set(table.column("E").to_pylist()) == {2.0}
    assert not list((tmp_path / ".t.parquet.flightlog").rglob("telemetry-*.parquet"))
    # Idempotent.
    assert flightlog.recover(out).recovered == []
    assert pq.read_table(out).num_rows == 100


def test_recover_leaves_a_live_file_recording_alone(tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    with FlightRecorder(out) as rec:
        rec.log(iter=0, E=1.0)
        rec.flush()
        report = flightlog.recover(out)
        assert report.live == [str(out)] and report.recovered == []
    assert pq.read_table(out).num_rows == 1


def test_cli_recover_takes_an_output_file(tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    _record_and_kill(out, False)
    env = dict(os.environ, FLIGHTLOG_PLAIN="1")
    proc = subprocess.run(
        [sys.executable, "-m", "flightlog.cli", "recover", str(out), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"telemetry_rows": 100' in proc.stdout
    assert pq.read_table(out).num_rows == 100


def test_write_manifest_never_replaces_the_output_file(tmp_path: Path) -> None:
    out = tmp_path / "telemetry.parquet"
    with FlightRecorder(out) as rec:
        rec.log(iter=0, E=1.0)
    with pytest.raises(ValueError, match="Parquet file"):
        flightlog.write_manifest(out, {"run_id": "r"})
    assert pq.read_table(out).num_rows == 1
    # The seed's manifest beside its file: the folder.
    flightlog.write_manifest(tmp_path, {"run_id": "test_run_001", "params": {"alpha": 0.1, "tags": ["a"]}})
    assert flightlog.read_manifest(tmp_path)["params"] == {"alpha": 0.1, "tags": ["a"]}


CONCURRENT_CLOSE = textwrap.dedent(
    """
    import sys, threading
    from flightlog import FlightRecorder
    out = sys.argv[1]
    with FlightRecorder(out) as rec:
        rec.log(iter=0, E=1.0)
    for round in range(20):
        rec = FlightRecorder(out, overwrite=True)
        for i in range(1000):
            rec.log(iter=i, E=float(round))
        start = threading.Barrier(3)
        def close():
            start.wait()
            rec.close()
        threads = [threading.Thread(target=close) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert rec.to_arrow().num_rows == 1000
    print("ok", flush=True)
    """
)


def test_concurrent_closes_of_a_replacing_recorder_replace_once(tmp_path: Path) -> None:
    # Three threads closing one overwrite=True recorder at once: one replaces the file,
    # the others wait for it (without holding the GIL it needs), none deadlocks.
    out = tmp_path / "t.parquet"
    proc = subprocess.Popen(
        [sys.executable, "-c", CONCURRENT_CLOSE, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "ok"
    assert set(pq.read_table(out).column("E").to_pylist()) == {19.0}

"""``_core.publish_bytes``: the one atomic writer, shared by the recorder's files and
the manifests (``atomic_file::publish_bytes``), seen from Python: real files, and
strace for what reaches the kernel."""

from __future__ import annotations

import os

import pytest

from conftest import strace_child
from flightlog import _core
from flightlog.runs.manifest import create_manifest, read_manifest, write_manifest


def test_replace_and_create_only(tmp_path) -> None:
    target = tmp_path / "doc.toml"
    assert _core.publish_bytes(target, b"a = 1\n") == 6
    assert target.read_bytes() == b"a = 1\n"
    assert _core.publish_bytes(str(target), b"a = 2\n", False) == 6
    assert target.read_bytes() == b"a = 2\n"
    with pytest.raises(FileExistsError) as info:
        _core.publish_bytes(target, b"a = 3\n", True)
    assert info.value.filename == str(target)
    assert target.read_bytes() == b"a = 2\n"
    assert os.listdir(tmp_path) == ["doc.toml"]  # no temp file left by either
    _core.publish_bytes(tmp_path / "new.toml", b"", create_only=True)
    assert (tmp_path / "new.toml").read_bytes() == b""


def test_errors_are_oserrors_by_errno_naming_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        _core.publish_bytes(tmp_path / "missing" / "doc.toml", b"x")
    assert "missing" in str(info.value.filename)
    (tmp_path / "dir.toml").mkdir()
    (tmp_path / "dir.toml" / "inside").write_bytes(b"")
    with pytest.raises(OSError) as info:  # renaming a file over a folder
        _core.publish_bytes(tmp_path / "dir.toml", b"x")
    assert isinstance(info.value, (IsADirectoryError, OSError)) and info.value.errno is not None
    assert sorted(os.listdir(tmp_path)) == ["dir.toml"]
    with pytest.raises(TypeError):
        _core.publish_bytes(tmp_path / "doc.toml", "text, not bytes")  # type: ignore[arg-type]


def test_concurrent_create_only_publishes_have_one_winner(tmp_path) -> None:
    import threading

    target = tmp_path / "claim.toml"
    barrier = threading.Barrier(8)
    results: list[object] = [None] * 8

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = _core.publish_bytes(target, f"winner = {i}\n".encode(), True)
        except FileExistsError as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [i for i, r in enumerate(results) if not isinstance(r, FileExistsError)]
    assert len(winners) == 1, results
    assert target.read_bytes() == f"winner = {winners[0]}\n".encode()
    assert os.listdir(tmp_path) == ["claim.toml"]


def test_manifests_go_through_the_core_writer(tmp_path) -> None:
    write_manifest(tmp_path, {"status": "running"})
    with pytest.raises(FileExistsError):
        create_manifest(tmp_path / "manifest.toml", {"status": "other"})
    create_manifest(tmp_path / "r2.toml", {"status": "running"})
    assert read_manifest(tmp_path) == {"status": "running"}
    assert read_manifest(tmp_path / "r2.toml") == {"status": "running"}
    assert sorted(os.listdir(tmp_path)) == ["manifest.toml", "r2.toml"]


def test_one_publish_is_two_fsyncs(tmp_path) -> None:
    """The file, then its folder: counted by strace (what the kernel is asked)."""
    inside = _strace_lines(
        "import sys; from flightlog import _core; "
        "print('START', file=sys.stderr, flush=True); "
        f"_core.publish_bytes({str(tmp_path / 'a.toml')!r}, b'x', True); "
        f"_core.publish_bytes({str(tmp_path / 'a.toml')!r}, b'y', False); "
        "print('END', file=sys.stderr, flush=True)"
    )
    fsyncs = [line for line in inside.splitlines() if "fsync(" in line]
    assert len(fsyncs) == 4, inside  # per publish: the temp file, then the folder
    assert (tmp_path / "a.toml").read_bytes() == b"y"


def _strace_lines(script: str) -> str:
    """What ``script`` asks the kernel between its START and END markers (fsyncs,
    links, renames), file descriptors shown with their paths (``strace -y``)."""
    trace = "fsync,fdatasync,link,linkat,rename,renameat,renameat2,write"
    return strace_child(script, trace=trace, paths=True).split("START", 1)[1].split("END", 1)[0]


def test_durable_false_places_without_any_fsync(tmp_path) -> None:
    target = tmp_path / "a.toml"
    inside = _strace_lines(
        "import sys; from flightlog import _core; "
        "print('START', file=sys.stderr, flush=True); "
        f"_core.publish_bytes({str(target)!r}, b'x', True, durable=False); "
        f"_core.publish_bytes({str(target)!r}, b'y', False, durable=False); "
        "print('END', file=sys.stderr, flush=True)"
    )
    assert "fsync(" not in inside, inside
    assert target.read_bytes() == b"y"
    assert os.listdir(tmp_path) == ["a.toml"]
    with pytest.raises(FileExistsError):
        _core.publish_bytes(target, b"z", True, durable=False)
    with pytest.raises(ValueError, match="durable=True"):
        _core.publish_bytes(target, b"z", False, tmp_path, False)
    assert target.read_bytes() == b"y"


_SHORT_RUN = """
import sys
import numpy as np
from flightlog import Field, Schema, TelemetryManager
schema = {schema}
print('START', file=sys.stderr, flush=True)
tm = TelemetryManager({root!r}, "flow", run_id="r1", schema=schema, max_rows=None)
print('STARTED', file=sys.stderr, flush=True)
tm.log(iter=1, E=0.5)
tm.close()
print('END', file=sys.stderr, flush=True)
"""


def test_a_run_leaves_its_start_manifest_fsyncs_to_its_first_file(tmp_path) -> None:
    """A run whose schema is known at the start waits for no fsync there: its close
    fsyncs the start manifest (and the root, which names the run folder) in the same
    wait as the final files' data, before any of their names is placed."""
    schema = 'Schema([Field("iter", "i64"), Field("E", "f64")])'
    inside = _strace_lines(_SHORT_RUN.format(schema=schema, root=str(tmp_path)))
    start, close = inside.split("STARTED", 1)
    assert "fsync(" not in start, start
    lines = close.splitlines()
    first_link = next(i for i, line in enumerate(lines) if "link" in line and "telemetry.parquet" in line)
    synced_first = [line for line in lines[:first_link] if "fsync(" in line]
    assert any("/fda_run_r1/manifest.toml>" in line for line in synced_first), close
    assert any(f"<{tmp_path}>" in line for line in synced_first), close
    assert any(".telemetry.parquet.tmp-" in line for line in synced_first), close
    from flightlog.runs.manifest import read_manifest

    assert read_manifest(tmp_path / "fda_run_r1")["status"] == "finished"


def test_a_lazy_run_makes_its_start_manifest_durable_at_once(tmp_path) -> None:
    """Without a schema, no recorder starts with the run (nor may one ever): the start
    manifest is fsynced before the constructor returns, as any manifest."""
    inside = _strace_lines(_SHORT_RUN.format(schema="None", root=str(tmp_path)))
    start = inside.split("STARTED", 1)[0]
    fsyncs = [line for line in start.splitlines() if "fsync(" in line]
    assert any("manifest.toml" in line for line in fsyncs), start
    assert any("/fda_run_r1>" in line for line in fsyncs), start


def test_a_failed_sync_first_fails_the_first_write_once(tmp_path) -> None:
    """``_sync_first`` reaches the core: a path that cannot be fsynced fails the first
    write (rows kept, the error names the path), and is not tried again (a failed fsync
    is never retried blindly): the next flush publishes the kept rows."""
    import flightlog
    from flightlog import Field, FlightRecorder, Schema

    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")  # "blocker/x" cannot even be looked up: ENOTDIR
    run = tmp_path / "run"
    rec = FlightRecorder(run, Schema([Field("iter", "i64")]), flush_interval=3600.0, _sync_first=[blocker / "x"])
    rec.extend(iter=list(range(5)))
    with pytest.raises(flightlog.WriteError, match="blocker"):
        rec.flush()
    assert not (run / "segments").exists() or not any((run / "segments").iterdir())
    rec.flush()
    rec.close()
    import pyarrow.parquet as pq

    assert pq.read_table(run / "telemetry.parquet")["iter"].to_pylist() == [0, 1, 2, 3, 4]

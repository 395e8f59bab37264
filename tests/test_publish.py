"""``_core.publish_bytes``: the one atomic writer, shared by the recorder's files and
the manifests (``atomic_file::publish_bytes``), seen from Python: real files, and
strace for what reaches the kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

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
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    script = (
        "import sys; from flightlog import _core; "
        "print('START', file=sys.stderr, flush=True); "
        f"_core.publish_bytes({str(tmp_path / 'a.toml')!r}, b'x', True); "
        f"_core.publish_bytes({str(tmp_path / 'a.toml')!r}, b'y', False); "
        "print('END', file=sys.stderr, flush=True)"
    )
    out = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,write", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0 and "ptrace" in out.stderr:
        pytest.skip(f"strace cannot trace here: {out.stderr[-200:]}")
    assert out.returncode == 0, out.stderr[-2000:]
    inside = out.stderr.split("START", 1)[1].split("END", 1)[0]
    fsyncs = [line for line in inside.splitlines() if "fsync(" in line]
    assert len(fsyncs) == 4, inside  # per publish: the temp file, then the folder
    assert (tmp_path / "a.toml").read_bytes() == b"y"

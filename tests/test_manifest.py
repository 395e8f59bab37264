"""Manifests: TOML conversion, atomic writes, reading errors, provenance, git info."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import errno
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import strace_child
from flightlog import FlightlogError, read_manifest, write_manifest
from flightlog.runs.manifest import (
    ManifestError,
    _git_dirty,
    create_manifest,
    git_info,
    provenance,
    to_toml_table,
)


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Config:
    lr: float
    shape: tuple[int, int]
    note: str | None = None


CONVERSIONS = [
    ("python scalars", {"a": 1, "b": 1.5, "c": "x", "d": True}, {"a": 1, "b": 1.5, "c": "x", "d": True}),
    ("None is dropped", {"a": None, "b": 1}, {"b": 1}),
    ("numpy scalars", {"i": np.int64(3), "f": np.float64(0.25), "b": np.bool_(True)}, {"i": 3, "f": 0.25, "b": True}),
    ("float32 keeps its shortest repr", {"f": np.float32(0.1)}, {"f": 0.1}),
    ("numpy arrays", {"v": np.arange(3), "m": np.eye(2)}, {"v": [0, 1, 2], "m": [[1.0, 0.0], [0.0, 1.0]]}),
    ("0-d array", {"x": np.array(2.5)}, {"x": 2.5}),
    ("tuples", {"t": (1, (2, 3))}, {"t": [1, [2, 3]]}),
    ("sets sorted", {"s": {3, 1, 2}, "f": frozenset({"b", "a"})}, {"s": [1, 2, 3], "f": ["a", "b"]}),
    (
        "nested dicts",
        {"opt": {"lr": 0.1, "beta": {"b1": 0.9, "skip": None}}},
        {"opt": {"lr": 0.1, "beta": {"b1": 0.9}}},
    ),
    ("enum", {"c": Color.RED}, {"c": "red"}),
    ("path", {"p": pathlib.PurePosixPath("/data/x")}, {"p": "/data/x"}),
    ("dataclass", {"cfg": Config(0.1, (2, 3))}, {"cfg": {"lr": 0.1, "shape": [2, 3]}}),
    ("int keys", {"layers": {0: "conv", 1: "relu"}}, {"layers": {"0": "conv", "1": "relu"}}),
    (
        "datetime",
        {"when": dt.datetime(2025, 10, 20, 15, 30, tzinfo=dt.UTC)},
        {"when": dt.datetime(2025, 10, 20, 15, 30, tzinfo=dt.UTC)},
    ),
]


@pytest.mark.parametrize(("case", "params", "expected"), CONVERSIONS, ids=[c[0] for c in CONVERSIONS])
def test_params_convert_and_read_back(tmp_path, case, params, expected):
    write_manifest(tmp_path, {"run_id": "r", "params": params})
    assert read_manifest(tmp_path) == {"run_id": "r", "params": expected}


def test_nan_and_inf_round_trip(tmp_path):
    write_manifest(tmp_path / "m.toml", {"x": float("nan"), "y": float("-inf")})
    back = read_manifest(tmp_path / "m.toml")
    assert np.isnan(back["x"]) and back["y"] == float("-inf")


REJECTED = [
    ({"a": object()}, "params.a"),
    ({"a": {"b": [1, object()]}}, "params.a.b[1]"),
    ({"a": [1, None]}, "params.a[1]"),
    ({"a": b"bytes"}, "params.a"),
    ({"a": {(1, 2): "tuple key"}}, "params.a"),
    ({"a": np.array([b"x"])}, "params.a"),
]


@pytest.mark.parametrize(("params", "where"), REJECTED)
def test_unconvertible_values_are_rejected_before_writing(tmp_path, params, where):
    write_manifest(tmp_path, {"run_id": "old"})
    before = (tmp_path / "manifest.toml").read_bytes()
    with pytest.raises(TypeError) as info:
        write_manifest(tmp_path, {"run_id": "new", "params": params})
    assert where in str(info.value)
    assert (tmp_path / "manifest.toml").read_bytes() == before
    assert os.listdir(tmp_path) == ["manifest.toml"]


def test_to_toml_table_needs_a_mapping():
    with pytest.raises(TypeError, match="params must be a mapping"):
        to_toml_table([1, 2], "params")  # type: ignore[arg-type]


def test_write_is_atomic_when_rename_fails(tmp_path):
    # The manifest is published by the core (_core.publish_bytes), which Python cannot
    # patch: a real failure instead. A file-size limit makes the temp file's write fail
    # (EFBIG), in a child process so that the limit and SIGXFSZ stay there.
    write_manifest(tmp_path, {"status": "running"})
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        from flightlog import write_manifest
        try:
            write_manifest({str(tmp_path)!r}, {{"status": "finished", "note": "x" * 1000}})
        except OSError as e:
            print(type(e).__name__, e.errno, e.filename)
            sys.exit(0)
        sys.exit("no error")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    name, err, filename = out.stdout.split()
    assert name == "OSError", out.stdout  # EFBIG has no subclass of its own
    assert int(err) == errno.EFBIG and ".manifest.toml.tmp-" in filename, out.stdout
    assert read_manifest(tmp_path) == {"status": "running"}
    assert os.listdir(tmp_path) == ["manifest.toml"]  # the temp file is gone


def test_temp_file_is_dot_prefixed_and_exclusive(tmp_path):
    # Seen from the kernel (strace): the core's writer creates the temp file O_EXCL
    # under a dot-name, then renames it over the manifest.
    script = f"from flightlog import write_manifest; write_manifest({str(tmp_path)!r}, {{'a': 1}})"
    traced = strace_child(script, trace="openat,rename,renameat,renameat2")
    opens = [line for line in traced.splitlines() if "openat(" in line and ".manifest.toml.tmp-" in line]
    assert opens, traced[-2000:]
    assert "O_CREAT" in opens[0] and "O_EXCL" in opens[0], opens[0]
    assert re.search(r'"[^"]*/\.manifest\.toml\.tmp-[0-9a-f]+"', opens[0]), opens[0]
    renames = [line for line in traced.splitlines() if "rename" in line and ".manifest.toml.tmp-" in line]
    assert renames and renames[0].rstrip().endswith("= 0"), renames
    assert read_manifest(tmp_path) == {"a": 1}


def test_read_manifest_errors_name_the_file(tmp_path):
    bad = tmp_path / "manifest.toml"
    bad.write_text("status = [unclosed\n")
    with pytest.raises(ManifestError, match=str(bad)) as info:
        read_manifest(tmp_path)
    assert isinstance(info.value, FlightlogError) and isinstance(info.value, ValueError)
    bad.write_text("")
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(bad)
    bad.write_bytes(b"a = '\xff'\n")
    with pytest.raises(ManifestError, match="UTF-8"):
        read_manifest(bad)
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "nope")


def test_create_manifest_is_exclusive(tmp_path):
    create_manifest(tmp_path / "r1.toml", {"run_id": "r1"})
    with pytest.raises(FileExistsError):
        create_manifest(tmp_path / "r1.toml", {"run_id": "other"})
    assert read_manifest(tmp_path / "r1.toml") == {"run_id": "r1"}
    assert sorted(os.listdir(tmp_path)) == ["r1.toml"]


def test_manifest_text_is_readable_toml(tmp_path):
    write_manifest(tmp_path, {"run_id": "r", "status": "finished", "params": {"lr": 0.1}, "files": [{"path": "a"}]})
    text = (tmp_path / "manifest.toml").read_text()
    assert 'run_id = "r"' in text and "[params]" in text and "files = [" in text


def test_provenance_fields():
    p = provenance()
    for key in ("host", "pid", "user", "argv", "cwd", "python", "platform", "flightlog_version"):
        assert key in p, key
    assert p["pid"] == os.getpid()
    import flightlog

    assert p["flightlog_version"] == flightlog.__version__
    assert p["numpy_version"] == np.__version__
    assert None not in p.values()


def test_provenance_does_not_import_numpy():
    code = textwrap.dedent(
        """
        import sys
        import flightlog
        had = "numpy" in sys.modules
        from flightlog.runs.manifest import provenance
        p = provenance()
        print(had, "numpy" in sys.modules, "numpy_version" in p)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out[0] == "False":
        assert out[1] == "False"
    assert out[2] == "True"


def _git(cwd, *args):
    env = dict(
        os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@e"
    )
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_info_from_files(tmp_path):
    repo = tmp_path / "repo"
    sub = repo / "a" / "b"
    sub.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "f.txt").write_text("1")
    _git(repo, "add", "f.txt")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    _git_dirty.cache_clear()
    info = git_info(sub)
    assert info == {"git_commit": head, "git_branch": "main", "git_dirty": False}

    # packed refs
    _git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert git_info(sub)["git_commit"] == head

    # dirty flag (cached per process: clear the cache to see the change)
    (repo / "f.txt").write_text("2")
    assert git_info(sub)["git_dirty"] is False
    _git_dirty.cache_clear()
    assert git_info(sub)["git_dirty"] is True

    # detached HEAD
    _git(repo, "checkout", "-q", "--detach")
    info = git_info(sub)
    assert info["git_commit"] == head and "git_branch" not in info

    # linked work tree (.git is a file pointing at .git/worktrees/<name>)
    _git(repo, "checkout", "-q", "main")
    _git(repo, "worktree", "add", "-q", "-b", "side", str(tmp_path / "wt"))
    info = git_info(tmp_path / "wt")
    assert info["git_commit"] == head and info["git_branch"] == "side"

    # outside any repository
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_info(outside) == {} or git_info(outside).get("git_commit") != head


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_info_rereads_only_changed_files(tmp_path):
    """git_info remembers HEAD and the refs it read with their (inode, mtime, size);
    a commit, a branch switch or a packed ref is seen at the next call."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "one")
    first = _git(repo, "rev-parse", "HEAD")
    gitdir = repo / ".git"

    def age_all() -> None:
        # Files younger than 2 s are never trusted (one may be written while it is read).
        old = time.time() - 60
        for p in [gitdir / "HEAD", gitdir / "refs" / "heads" / "main", gitdir / "refs" / "heads" / "side"]:
            if p.exists():
                os.utime(p, (old, old))

    age_all()
    assert git_info(repo)["git_commit"] == first
    assert git_info(repo)["git_commit"] == first  # from what it remembered

    _git(repo, "commit", "-q", "--allow-empty", "-m", "two")
    second = _git(repo, "rev-parse", "HEAD")
    age_all()  # even with an old mtime: the ref was replaced (another inode)
    assert git_info(repo)["git_commit"] == second

    _git(repo, "branch", "side", first)
    _git(repo, "checkout", "-q", "side")
    age_all()
    info = git_info(repo)
    assert (info["git_branch"], info["git_commit"]) == ("side", first)

    _git(repo, "pack-refs", "--all")
    age_all()
    assert git_info(repo)["git_commit"] == first
    _git(repo, "commit", "-q", "--allow-empty", "-m", "three")  # a loose ref again, over the packed one
    age_all()
    assert git_info(repo)["git_commit"] == _git(repo, "rev-parse", "HEAD")

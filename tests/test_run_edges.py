"""Edges of run management (issue 19, items 5, 11, 12, 13 and 18): names measured in
bytes, Ctrl-C during ``close()``, a manager dropped without ``close()``, ``sys.exit``
inside the ``with`` block, event payloads that are not plain JSON, and ``--param``
values out of a float's range."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import flightlog
from conftest import assert_one_line_error
from flightlog import Field, FlightRecorder, Schema, TelemetryManager, read_manifest

PYTHON_DIR = str(Path(flightlog.__file__).resolve().parent.parent)
SCHEMA = Schema([Field("i", "i64", nullable=False)])
NAME_MAX_BYTES = 255  # NAME_MAX of Linux file systems


def child_env(root: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", FLIGHTLOG_ROOT=str(root))
    env["PYTHONPATH"] = PYTHON_DIR + os.pathsep + env.get("PYTHONPATH", "")
    return env


def tree(root: Path) -> list[str]:
    """Every path below ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def strict_json(text: str):
    """``json.loads`` that refuses the non-standard constants NaN/Infinity."""

    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def event_payloads(path: Path, name: str) -> list[str]:
    t = pq.read_table(path)
    return [p for n, p in zip(t.column("event").to_pylist(), t.column("payload").to_pylist(), strict=True) if n == name]


# --------------------------------------------------------------------------- 5. names in bytes


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        # 220 bytes: the dev part's temp name `.part-<id>-000001.parquet.tmp-...` exceeds 255 bytes
        (dict(run_id="é" * 110, mode="dev"), "run_id"),
        (dict(run_id="é" * 110, mode="tuner", trial_id="t"), "run_id"),
        # 256 bytes: fda_run_<id> exceeds 255 bytes
        (dict(run_id="é" * 128), "run_id"),
        # 400 bytes: flows/<flow_name> exceeds 255 bytes, in every mode
        (dict(flow_name="😀" * 100, mode="dev"), "flow_name"),
        (dict(flow_name="😀" * 100), "flow_name"),
        # the folder of a default id (YYYYMMDD_HHMMSS) with a long prefix
        (dict(run_prefix="é" * 120), "run_prefix"),
        (dict(run_prefix="é" * 70, run_id="x" * 120), "run_prefix"),
    ],
)
def test_names_too_long_in_bytes_are_refused_before_the_disk(tmp_path: Path, kwargs: dict, needle: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    flow = kwargs.pop("flow_name", "f")
    with pytest.raises(ValueError, match=needle) as err:
        TelemetryManager(root, flow, schema=SCHEMA, **kwargs)
    assert "bytes" in str(err.value)
    assert tree(root) == []  # nothing was created


@pytest.mark.parametrize("mode", ["run", "dev"])
def test_longest_accepted_names_work_end_to_end(tmp_path: Path, mode: str) -> None:
    """Names at the limits (128 ASCII characters, the most a name may have) write every
    row, through segments, temp files and the merge; a taken id gets `_2`."""
    for rid, expected in (("r" * 128, "r" * 128), ("s" * 126, "s" * 126), ("s" * 126, "s" * 126 + "_2")):
        with TelemetryManager(tmp_path, "f" * 128, run_id=rid, mode=mode, schema=SCHEMA, segment_rows=100) as tm:
            for i in range(1000):
                tm.log(i=i)
            tm.event("E" * 64, {"x": 1})
        assert tm.run_id == expected
        assert tm.status == "finished" and tm.manifest["counts"]["rows_written"] == 1000
    longest = max(len(os.fsencode(p.name)) for p in tmp_path.rglob("*"))
    assert longest <= NAME_MAX_BYTES


def test_byte_limit_counts_the_prefix(tmp_path: Path) -> None:
    # 4-byte characters: 60 of them is 240 bytes, fine alone, too long with the id.
    prefix = "😀" * 60
    with pytest.raises(ValueError, match="bytes"):
        TelemetryManager(tmp_path, "f", run_id="abcdefghij", run_prefix=prefix, schema=SCHEMA)
    with TelemetryManager(tmp_path, "f", run_id="a", run_prefix="😀" * 20, schema=SCHEMA) as tm:
        tm.log(i=1)
    assert tm.run_path.name == "😀" * 20 + "a" and tm.status == "finished"


# --------------------------------------------------------------------------- 11. Ctrl-C in close()

# A real SIGINT, sent to itself by the child exactly when the manager's close() calls the
# native recorder's close (a profile hook on that call): os.kill raises KeyboardInterrupt
# at once, so the native close has not run yet when the interrupt unwinds.
INTERRUPT_AT_NATIVE_CLOSE = """
import os, signal, sys
from flightlog import Field, Schema, TelemetryManager
tm = TelemetryManager(None, "ki", run_id="ki", schema=Schema([Field("i", "i64", nullable=False)]))
for i in range(20_000):
    tm.log(i=i)
native_close = tm.recorder._native.close

def hook(frame, event, arg):
    if event == "c_call" and arg == native_close:
        sys.setprofile(None)
        os.kill(os.getpid(), signal.SIGINT)

sys.setprofile(hook)
try:
    tm.close()
except KeyboardInterrupt:
    print("interrupted", tm.status)
tm.close()  # a second close() is harmless
print("closed", tm.status)
"""


def test_keyboard_interrupt_in_close_finalises_the_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPT_AT_NATIVE_CLOSE],
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["interrupted", "failed", "closed", "failed"], proc.stdout
    m = read_manifest(tmp_path / "fda_run_ki")
    assert m["status"] == "failed" and m["error_type"] == "KeyboardInterrupt", m
    assert m["counts"]["rows_written"] == 20_000
    assert pq.read_metadata(tmp_path / "fda_run_ki" / "telemetry.parquet").num_rows == 20_000
    # RUN_FINISHED was recorded before the interrupt (with the status intended then), once.
    assert len(event_payloads(tmp_path / "fda_run_ki" / "events.parquet", "RUN_FINISHED")) == 1


SLOW_CLOSE = """
import sys
import numpy as np
from flightlog import Field, Schema, TelemetryManager
schema = Schema([Field(n, "f64", nullable=False) for n in "abcdefgh"])
tm = TelemetryManager(None, "slow", run_id="slow", schema=schema, segment_rows=50_000, max_rows=None)
col = np.arange(%(rows)d, dtype=np.float64)
tm.extend(**{n: col for n in "abcdefgh"})
tm.flush()
print("closing", flush=True)
tm.close()
print("not interrupted", flush=True)
"""


def test_sigint_during_a_slow_close_still_ends_the_run(tmp_path: Path) -> None:
    """SIGINT from outside while close() merges many segments (sent when the merge's temp
    file appears): the child dies of the interrupt, and the run ends `failed`
    (KeyboardInterrupt) with every row."""
    rows = 2_000_000
    run = tmp_path / "fda_run_slow"
    with subprocess.Popen(
        [sys.executable, "-c", SLOW_CLOSE % {"rows": rows}],
        env=child_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as p:
        try:
            assert p.stdout.readline().strip() == "closing", p.stderr.read()
            deadline = time.monotonic() + 120
            while not any(run.glob(".telemetry.parquet.tmp-*")) and p.poll() is None:
                assert time.monotonic() < deadline, "the merge never started"
                time.sleep(0.001)  # polling the disk for the merge's temp file
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=300)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    m = read_manifest(run)
    assert m["status"] != "running", m
    assert m["counts"]["rows_written"] == rows
    assert pq.read_metadata(run / "telemetry.parquet").num_rows == rows
    if "not interrupted" in out:  # the merge ended before the signal was handled
        assert m["status"] == "finished"
    else:
        assert "KeyboardInterrupt" in err
        assert m["status"] == "failed" and m["error_type"] == "KeyboardInterrupt", m


# --------------------------------------------------------------------------- 12. dropped unclosed


@pytest.mark.parametrize("cycle", [False, True], ids=["refcount", "cycle"])
def test_manager_collected_without_close_is_finished(tmp_path: Path, cycle: bool) -> None:
    tm = TelemetryManager(tmp_path, "gc", run_id="gc", schema=SCHEMA)
    for i in range(1000):
        tm.log(i=i)
    if cycle:  # the cyclic collector clears weak references (the exit hook's WeakSet) first
        tm.me = tm
    run_path = tm.run_path
    del tm
    gc.collect()
    m = read_manifest(run_path)
    assert m["status"] == "finished" and m["counts"]["rows_written"] == 1000, m
    assert len(event_payloads(run_path / "events.parquet", "RUN_FINISHED")) == 1


def test_dev_manager_collected_without_close_is_finished(tmp_path: Path) -> None:
    tm = TelemetryManager(tmp_path, "gc", run_id="gcdev", mode="dev", schema=SCHEMA, sampling=None)
    for i in range(10):
        tm.log(i=i)
    path = tm.manifest_path
    del tm
    gc.collect()
    m = read_manifest(path)
    assert m["status"] == "finished" and m["counts"]["rows_written"] == 10, m


def test_manager_alive_at_exit_in_a_cycle_is_finished(tmp_path: Path) -> None:
    code = """
    from flightlog import Field, Schema, TelemetryManager
    tm = TelemetryManager(None, "x", run_id="x", schema=Schema([Field("i", "i64", nullable=False)]))
    tm.me = tm
    for i in range(100):
        tm.log(i=i)
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    m = read_manifest(tmp_path / "fda_run_x")
    assert m["status"] == "finished" and m["counts"]["rows_written"] == 100


# The collector runs finalisers wherever an allocation triggers it, even inside a section
# of this thread that holds a lock close() needs: finishing a run there must not deadlock.
COLLECTED_UNDER_LOCKS = """
import gc, sys, threading
from flightlog import Field, Schema, TelemetryManager, _recorder
from flightlog.runs.ids import file_lock, flow_dir

def dropped(**kw):
    tm = TelemetryManager(None, "held", **kw)
    tm.me = tm  # only the cyclic collector frees it
    tm.log(i=1)
    return tm.manifest_path

path_a = dropped(run_id="a", schema=Schema([Field("i", "i64", nullable=False)]))
with _recorder._open_lock:  # held by this thread while the collector finishes run a
    gc.collect()
for t in threading.enumerate():
    if t.name == "flightlog-close-collected":
        t.join()
# A lazily typed dev run updates the flow manifest under its lock at close.
path_b = dropped(run_id="b", mode="dev")
with file_lock(flow_dir(sys.argv[1], "held") / ".manifest.lock"):
    gc.collect()
print(path_a)
print(path_b)
"""


def test_collected_inside_a_section_holding_locks_does_not_deadlock(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", COLLECTED_UNDER_LOCKS, str(tmp_path)],
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for path in proc.stdout.split():
        m = read_manifest(path)
        assert m["status"] == "finished" and m["counts"]["rows_written"] == 1, m


# --------------------------------------------------------------------------- 13. sys.exit / GeneratorExit


@pytest.mark.parametrize(
    ("code", "status"), [(0, "finished"), (None, "finished"), (False, "finished"), (3, "failed"), ("bye", "failed")]
)
def test_sys_exit_inside_the_with_block(tmp_path: Path, code, status: str) -> None:
    with pytest.raises(SystemExit):
        with TelemetryManager(tmp_path, "ex", schema=SCHEMA) as tm:
            tm.log(i=1)
            sys.exit(code)
    m = read_manifest(tm.run_path)
    assert m["status"] == status, m
    if status == "finished":
        assert "error_type" not in m
    else:
        assert m["error_type"] == "SystemExit" and m["error_message"] == str(code)
    assert m["counts"]["rows_written"] == 1


def test_generator_exit_inside_the_with_block_finishes(tmp_path: Path) -> None:
    def rows():
        with TelemetryManager(tmp_path, "gen", run_id="gen", schema=SCHEMA) as tm:
            for i in range(100):
                tm.log(i=i)
                yield i

    g = rows()
    assert [next(g) for _ in range(5)] == list(range(5))
    g.close()  # GeneratorExit at the yield, inside the with block
    m = read_manifest(tmp_path / "fda_run_gen")
    assert m["status"] == "finished" and "error_type" not in m and m["counts"]["rows_written"] == 5


def test_keyboard_interrupt_inside_the_with_block_still_fails(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with TelemetryManager(tmp_path, "kb", run_id="kb", schema=SCHEMA):
            raise KeyboardInterrupt
    assert read_manifest(tmp_path / "fda_run_kb")["error_type"] == "KeyboardInterrupt"


# --------------------------------------------------------------------------- 18. payloads and params

NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "list": [1.5, float("nan")]}


def test_non_finite_payload_values_are_stored_as_standard_json(tmp_path: Path) -> None:
    with TelemetryManager(tmp_path, "nan", run_id="nan") as tm:
        tm.event("BEFORE_SCHEMA", NON_FINITE)  # buffered until the first log()
        tm.log(i=1)
        tm.event("AFTER", NON_FINITE)
    np = pytest.importorskip("numpy")
    with FlightRecorder(tmp_path / "bare", SCHEMA) as rec:
        rec.event("BARE", {"a": np.array([np.nan, 1.0]), "b": np.float64("inf")})
    expected = {"nan": "NaN", "inf": "Infinity", "ninf": "-Infinity", "list": [1.5, "NaN"]}
    for name in ("BEFORE_SCHEMA", "AFTER"):
        [text] = event_payloads(tmp_path / "fda_run_nan" / "events.parquet", name)
        assert strict_json(text) == expected
    [text] = event_payloads(tmp_path / "bare" / "events.parquet", "BARE")
    assert strict_json(text) == {"a": ["NaN", 1.0], "b": "Infinity"}


def _nested(depth: int):
    p: list = []
    for _ in range(depth):
        p = [p]
    return p


@pytest.mark.parametrize("where", ["buffered", "recorder", "bare"])
def test_deeply_nested_payload_raises_type_error(tmp_path: Path, where: str) -> None:
    deep = {"a": _nested(5000)}
    if where == "bare":
        with FlightRecorder(tmp_path / "bare", SCHEMA) as rec, pytest.raises(TypeError, match="nested"):
            rec.event("DEEP", deep)
        return
    with TelemetryManager(tmp_path, "deep", schema=None if where == "buffered" else SCHEMA) as tm:
        with pytest.raises(TypeError, match="nested"):
            tm.event("DEEP", deep)
        with pytest.raises(TypeError, match="nested"):
            tm.event("DEEP", [float("nan"), _nested(5000)])  # the non-finite path too
        tm.event("OK", _nested(50))
        tm.log(i=1)
    assert tm.status == "finished"


def test_param_out_of_float_range_is_refused(tmp_path: Path) -> None:
    from flightlog.cli._errors import CLIError
    from flightlog.cli.catalog import _parse_param

    for text in ("a=1e400", "a=-1e400", "a=1" + "0" * 400 + ".0"):
        with pytest.raises(CLIError, match="out of range"):
            _parse_param(text)
    assert _parse_param("a=1e300") == ("a", 1e300)
    assert _parse_param("a=12") == ("a", 12)
    assert _parse_param("a=x") == ("a", "x")
    with TelemetryManager(tmp_path, "f", run_id="q", schema=SCHEMA) as tm:
        tm.log(i=1)
    env = dict(os.environ, FLIGHTLOG_PLAIN="1")
    base = [sys.executable, "-m", "flightlog.cli"]
    proc = subprocess.run(
        [*base, "consolidate", "-q", "--root", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [*base, "query", "select $a as a", "--param", "a=1e400", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert_one_line_error(proc, "--param", "1e400", "out of range")


def test_events_docstring_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import doctest
    import tempfile

    import flightlog.events

    # The examples' tempfile.mkdtemp() folders land in tmp_path, removed with it.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = doctest.testmod(flightlog.events, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

"""Two runs on an object store whose locations differ only in punctuation
(``s3://b/team.a`` and ``s3://b/team_a``, run id ``r1`` each; run folders, or
dev-mode parts) are killed before their first flush: their rows are in this host's spools only, in two spool
folders of one name (the location with every character but letters, digits,
``-`` and ``_`` turned into ``_``). ``recover`` of each root must publish that
run's rows, and only those."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import flightlog

CHILD = textwrap.dedent(
    """
    import sys, json, time
    from flightlog import TelemetryManager, Schema, Field
    root, opts, first, mode = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    schema = Schema([Field("iter", "i64", nullable=False), Field("E", "f64", nullable=False)])
    tm = TelemetryManager(root, "f", run_id="r1", mode=mode, schema=schema, storage_options=opts,
                          flush_interval=3600.0)
    for i in range(first, first + 300):
        tm.record(i, 1.0)
    print(tm.run_id, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("mode", ["run", "dev"])
def test_recover_of_one_root_never_takes_the_rows_of_a_root_whose_name_differs_in_punctuation(
    s3_bucket, child_env, mode
) -> None:
    opts = s3_bucket.storage_options
    roots = {"team.a": 0, "team_a": 1000}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, s3_bucket.url(prefix), json.dumps(opts), str(first), mode],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env,
        )
        for prefix, first in roots.items()
    ]
    try:
        # Both recorded their 300 rows (the calls returned) before the kill.
        assert [p.stdout.readline().strip() for p in procs] == ["r1", "r1"]  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.communicate()
    for prefix, first in roots.items():
        rep = flightlog.recover(s3_bucket.url(prefix), storage_options=opts)
        assert not rep.errors, rep.errors
        if mode == "run":
            keys = [f"{prefix}/fda_run_r1/telemetry.parquet"]
        else:  # append-mode parts: the dead recorder's rows are salvaged as one last part
            keys = [k for k in s3_bucket.keys(f"{prefix}/flows/f/dev_telemetry/") if "/part-r1-" in k]
        got: list[int] = []
        for key in keys:
            body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
            got += pq.read_table(io.BytesIO(body))["iter"].to_pylist()
        assert got == list(range(first, first + 300)), prefix
        manifest = f"{prefix}/fda_run_r1/manifest.toml" if mode == "run" else f"{prefix}/flows/f/runs/r1.toml"
        m = tomllib.loads(s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=manifest)["Body"].read().decode())
        assert (m["status"], m["counts"]["rows_written"]) == ("crashed", 300), prefix


BARE = textwrap.dedent(
    """
    import sys, json, time
    from flightlog import FlightRecorder, Schema, Field
    url, opts = sys.argv[1], json.loads(sys.argv[2])
    rec = FlightRecorder(url, Schema([Field("iter", "i64", nullable=False)]), storage_options=opts,
                         flush_interval=3600.0)
    for i in range(100):
        rec.record(i)
    print("recorded", flush=True)  # after the calls returned
    time.sleep(600)
    """
)


def test_a_bare_recorder_on_a_bucket_killed_before_its_first_flush_is_recovered(s3_bucket, child_env) -> None:
    opts = s3_bucket.storage_options
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE, s3_bucket.url("bare/run1"), json.dumps(opts)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "recorded"
        # While its recorder lives, its spool is not recover's to take.
        live = flightlog.recover(s3_bucket.url("bare"), storage_options=opts, stale_after=0)
        assert live.recovered == [] and not live.errors, live
        assert s3_bucket.keys("bare/") == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    rep = flightlog.recover(s3_bucket.url("bare"), storage_options=opts, stale_after=0)
    assert not rep.errors, rep.errors
    key = "bare/run1/telemetry.parquet"
    assert key in s3_bucket.keys("bare/"), rep
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
    assert pq.read_table(io.BytesIO(body))["iter"].to_pylist() == list(range(100))
    again = flightlog.recover(s3_bucket.url("bare"), storage_options=opts, stale_after=0)
    assert again.recovered == [] and not again.errors, again


def test_the_shared_spool_folder_is_the_cores_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python finds object-store spools where the core puts them: an explicit folder, else
    $FLIGHTLOG_SPOOL_DIR, else flightlog/spool in the user's cache folder."""
    from flightlog import _core

    monkeypatch.delenv("FLIGHTLOG_SPOOL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert _core.shared_spool_dir() == tmp_path / "cache" / "flightlog" / "spool"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _core.shared_spool_dir() == tmp_path / "home" / ".cache" / "flightlog" / "spool"
    monkeypatch.setenv("FLIGHTLOG_SPOOL_DIR", str(tmp_path / "spools"))
    assert _core.shared_spool_dir() == tmp_path / "spools"
    assert _core.shared_spool_dir(tmp_path / "mine") == tmp_path / "mine"

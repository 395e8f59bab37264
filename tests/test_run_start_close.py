"""A run's start and close as a caller sees them: when ``TelemetryManager(...)``
returns, the run's ``running`` manifest is in place; when ``close()`` returns, the run
folder holds its final files and manifest and neither spool nor claim; a start that
cannot write its manifest leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flightlog import Field, Schema, TelemetryManager, read_manifest

SCHEMA = Schema([Field("iter", "i64", nullable=False), Field("E", "f64")])


def _rows(n: int) -> dict[str, np.ndarray]:
    return {"iter": np.arange(n), "E": np.linspace(0.0, 1.0, n)}


def test_a_run_is_in_place_when_started_and_clean_when_closed(tmp_path) -> None:
    for k in range(20):
        tm = TelemetryManager(tmp_path, "flow", run_id=f"r{k}", schema=SCHEMA, max_rows=None)
        assert read_manifest(tm.run_path)["status"] == "running"
        assert tm._manifest_etag is not None  # the version of the manifest in place
        tm.extend(**_rows(10))
        tm.close()
        run = Path(tm.run_path)
        assert sorted(os.listdir(run)) == ["events.parquet", "manifest.toml", "telemetry.parquet"]
        m = read_manifest(run)
        assert m["status"] == "finished" and m["counts"]["rows_written"] == 10
        assert pq.read_table(run / "telemetry.parquet").column("iter").to_pylist() == list(range(10))


def test_a_first_manifest_that_cannot_be_written_undoes_the_claim(tmp_path) -> None:
    """The manifest's temp file cannot be made (its path is longer than PATH_MAX while
    the run folder's is not): the constructor raises that error and the claimed folder
    is removed."""
    limit = os.pathconf(tmp_path, "PC_PATH_MAX")
    room = len(f"/fda_run_r0/.manifest.toml.tmp-{'0' * 14}") - 8
    root = tmp_path
    while len(os.fspath(root)) + room + 200 < limit:
        root = root / ("d" * 200)
    root = root / ("e" * (limit - len(os.fspath(root)) - room - 1))
    root.mkdir(parents=True)
    assert len(os.fspath(root / "fda_run_r0" / "manifest.toml")) < limit
    with pytest.raises(OSError):
        TelemetryManager(root, "flow", run_id="r0", schema=SCHEMA, max_rows=None)
    assert os.listdir(root) == []

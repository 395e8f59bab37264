"""flightlog.runs.layout: the layout names come from the core (one owner), and the
patterns built from them match what the recorder really writes."""

from __future__ import annotations

import os

from flightlog import Field as F
from flightlog import FlightRecorder, Schema, TelemetryManager
from flightlog.runs import layout

SIMPLE = Schema([F("iter", "i64"), F("E", "f64")])


def test_names_are_the_cores() -> None:
    assert layout.SEGMENTS_DIR == "segments"
    assert (layout.TELEMETRY_FILE, layout.EVENTS_FILE) == ("telemetry.parquet", "events.parquet")
    assert (layout.TELEMETRY_SEGMENT_PREFIX, layout.EVENTS_SEGMENT_PREFIX) == ("telemetry-", "events-")
    assert layout.TEMP_MARKER == ".tmp-"
    assert (layout.RUN_LOCK_NAME, layout.SPOOL_DIR_NAME) == (".flightlog.lock", ".flightlog.spool")
    assert layout.part_lock_name("r1") == ".part-r1-flightlog.lock"
    assert (layout.parts_dir_name("dev", "events"), layout.compacted_name("tuner", "telemetry")) == (
        "dev_events",
        "tuner_telemetry.parquet",
    )


def test_part_patterns_take_only_real_part_names() -> None:
    m = layout.PART_RE.match("part-20250101_000000_2-00000007000003.parquet")
    assert m is not None and (m["run_id"], m["seq"]) == ("20250101_000000_2", "00000007000003")
    assert layout.PART_RE.match("part-r-000001.parquet")
    # Fewer than six digits is no part the core writes (the drift of `\d+` elsewhere).
    assert layout.PART_RE.match("part-r-1.parquet") is None
    assert layout.PART_RE.match(".part-r-000001.parquet.tmp-abc") is None
    pat = layout.part_pattern("a")
    assert pat.match("part-a-000001.parquet")
    assert not pat.match("part-a-1-000001.parquet")  # run "a-1", not "a"
    assert layout.is_temp_name(".part-a-000001.parquet.tmp-12ab") and not layout.is_temp_name("part-a-000001.parquet")


def test_the_patterns_match_what_the_recorder_writes(tmp_path) -> None:
    with TelemetryManager(tmp_path, "gd", mode="dev", schema=SIMPLE, run_id="20250101_000000") as tm:
        tm.record(1, 0.5)
        tm.flush()
        held = sorted(os.listdir(tmp_path / "flows" / "gd" / layout.parts_dir_name("dev", "telemetry")))
    parts = [n for n in held if not n.startswith(".")]
    assert parts and all(layout.part_pattern("20250101_000000").match(n) for n in parts), held
    assert layout.part_lock_name("20250101_000000") in held  # the claim, while the run was open
    with FlightRecorder(tmp_path / "run", schema=SIMPLE) as rec:
        rec.record(1, 0.5)
        rec.flush()
        segs = os.listdir(tmp_path / "run" / layout.SEGMENTS_DIR)
        assert segs and all(s.startswith(layout.TELEMETRY_SEGMENT_PREFIX) for s in segs if "telemetry" in s)
    assert sorted(n for n in os.listdir(tmp_path / "run") if not n.startswith(".")) == [
        layout.EVENTS_FILE,
        layout.TELEMETRY_FILE,
    ]

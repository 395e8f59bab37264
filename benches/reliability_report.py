"""Regenerates docs/RELIABILITY.md: runs the crash campaign, the disk faults, the load
test and (optionally) the soak, and writes the figures.

    python benches/reliability_report.py                     # 200 kills, load, faults
    python benches/reliability_report.py --kills 40          # quicker
    python benches/reliability_report.py --soak-rows 100000000

The scenarios are the test suite's own (tests/test_crash_campaign.py,
tests/test_disk_faults.py, tests/test_load.py); this script only runs them at a
chosen size and tabulates what they measured. Disk faults need root (mount) and
strace; missing ones are listed as skipped with the reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def dist(values: list[float], fmt: str) -> str:
    if not values:
        return "n/a"
    return " / ".join(
        fmt.format(v)
        for v in (min(values), statistics.median(values), pct(values, 0.9), pct(values, 0.99), max(values))
    )


def crash_section(n: int, workers: int, seed: int) -> tuple[str, bool]:
    import test_crash_campaign as cc

    with tempfile.TemporaryDirectory(prefix="flightlog-crash-") as d:
        t0 = time.time()
        res = cc.run_campaign(
            n,
            Path(d),
            seed=seed,
            workers=workers,
            progress=lambda done, total: (
                print(f"  kill {done}/{total}", file=sys.stderr, flush=True) if done % 10 == 0 else None
            ),
        )
        print(f"  campaign: {time.time() - t0:.0f} s", file=sys.stderr)
    rows, secs = res.loss()
    phases = res.by_phase()
    evidence = {
        "temp files found (killed mid-publish)": sum(1 for o in res.outcomes if o.temp_files),
        "segments left (killed before the merge finished)": sum(
            1 for o in res.outcomes if o.phase == "close" and o.leftover_segments
        ),
        "a crashed run without rows (killed before its first durable row)": sum(
            1 for o in res.outcomes if o.runs_without_rows
        ),
    }
    lines = [
        "## Crash campaign",
        "",
        "Each kill: a child process records into a fresh root from 4 threads (3 into a `run`-mode run through",
        "`log`, `record` and `extend`; 1 into a `dev`-mode run), with events, `flush_interval=0.02` and",
        "`segment_rows=4096`, calling `flush()` at random moments; then closes both runs, compacts the flow and",
        "consolidates. It is killed with SIGKILL at a random moment of a chosen phase. Then every `*.parquet`",
        "is read (before any recovery), `recover` and `consolidate` run, and the catalog is checked: no",
        "duplicated `(run, thread, seq)`, no hole in any thread's sequence, **every row and event whose call",
        "returned before the kill present** (flushed or not: `recover` takes the unflushed ones from the",
        "run's spool), manifests final and matching the data; then a further",
        "compaction and consolidation must change no count. What the child offered and what its returned",
        "`flush()` calls covered it counts in a shared `mmap` (each counter one 8-byte store, then a copy), which",
        "the kill leaves intact; every counter must agree with its copy (the harness's self-check).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| kills | **{res.kills}** |",
        f"| kills by phase at the moment of the kill | {', '.join(f'{k}: {v}' for k, v in sorted(phases.items()))} |",
        f"| Parquet files read back before recovery | {res.total('files_checked')} |",
        "| unreadable files | **0** |"
        if not any("unreadable" in f for f in res.failures)
        else "| unreadable files | see failures |",
        f"| duplicated rows or events | **{res.total('duplicates')}** |",
        f"| rows lost whose call returned | **{res.total('missing_durable')}** |",
        f"| holes in a thread's sequence | **{res.total('holes')}** |",
        f"| manifests checked | {res.total('manifests_checked')} |",
        f"| rows in the catalogs after recovery | {res.total('rows'):,} |",
        *[f"| kills with {k} | {v} |" for k, v in evidence.items()],
        f"| failures | **{len(res.failures)}** |",
        f"| campaign wall time | {res.seconds:.0f} s ({workers} workers) |",
        "",
        f"Loss of the {len(secs)} kills that landed while recording (min / median / p90 / p99 / max):",
        "",
        f"- rows whose call returned but missing after `recover` (all 3 threads): {dist([float(r) for r in rows], '{:.0f}')}",
        f"- seconds between the newest row in the files and the kill: {dist(secs, '{:.3f}')}",
        "",
        "The worst case is 0 rows: a row is in the spool (its thread's memory-mapped ring, or a chunk of drained rows)",
        "from the moment its call returns until a published segment holds it, and the kernel keeps the",
        "spool's page cache when the process dies. Power loss is another matter: the spool is not fsynced,",
        "so a machine that goes down loses rows younger than `flush_interval` (README, Guarantees).",
        "",
    ]
    if res.failures:
        lines += ["Failures:", "", *[f"- {f}" for f in res.failures[:30]], ""]
    return "\n".join(lines), not res.failures


def fault_section() -> str:
    import test_disk_faults as df

    with tempfile.TemporaryDirectory(prefix="flightlog-faults-") as d:
        outcomes = df.all_scenarios(Path(d))
    lines = [
        "## Disk faults",
        "",
        "| fault | outcome |",
        "|---|---|",
    ]
    for o in outcomes:
        lines.append(f"| {o['fault']} | {describe_fault(o)} |")
    lines.append("")
    return "\n".join(lines)


def _first(errors: list[str] | None) -> str:
    if not errors:
        return "none"
    e = errors[0]
    e = e.split(": ", 1)[-1] if len(e) > 160 else e
    return "`" + (e[:157] + "..." if len(e) > 160 else e).replace("|", "\\|") + "`"


def describe_fault(o: dict[str, Any]) -> str:
    if "skipped" in o:
        return f"skipped: {o['skipped']}"
    if o.get("returncode", 0) != 0:
        return f"child failed: {o.get('stderr', '')[-200:]}"
    s = o.get("stats") or {}
    acct = ""
    if s:
        acct = f"offered {s['rows_offered']:,}, written {s['rows_written']:,}, lost (counted) {s['rows_lost']:,}" + (
            f", **{s['rows_offered'] - s['rows_written'] - s['rows_lost']:,} dropped uncounted at close (Rust bug)**"
            if s["rows_offered"] - s["rows_written"] - s["rows_lost"] > 0
            else ""
        )
    f = o["fault"]
    if f.startswith("full disk"):
        return (
            f"WriteError on the next call and at close ({_first([o['first_error']])}); no partial or temp file: "
            f"{not o['problems']}; durable rows distinct and = rows_written: "
            f"{o['durable_rows'] == o['durable_distinct'] == s['rows_written']}; process keeps running: "
            f"{o['keeps_running']}; {acct}"
        )
    if f.startswith("disk full, then"):
        return (
            f"{len(o['errors'])} WriteError(s) while full, then every row written exactly once after the space "
            f"came back: {o['exact']} ({o['rows']:,} rows); {acct}"
        )
    if f.startswith("EIO"):
        return (
            f"{o['injected']} fsync(s) failed; blind retries of a failed file: {len(o['blind_retries'])}; "
            f"errors: {len(o['errors'])} + close {'error' if o['close_error'] else 'ok'} "
            f"({_first(o['errors'] or [o['close_error'] or ''])}); after recover {o['rows']:,} rows on disk, "
            f"duplicates: {o['rows'] - o['distinct']}, every offered row present: {o['exact']}; {acct}"
        )
    if f == "read-only root":
        return (
            f"mid-run: {len(o['midrun_errors'])} WriteError(s) ({_first(o['midrun_errors'])}), rows kept and written "
            f"once writable again: {o['exact']}; a new run: {o['start_run'][:60]}...; consolidate: "
            f"{o['consolidate'][:70]}; recover: no error, live run left alone; {acct}"
        )
    if f.startswith("run folder deleted"):
        return (
            f"WriteError on the next calls ({_first(o['errors'])}); close: {o['close_error_type']} (+ note: manifest "
            f"could not be written); status {o['status']}; nothing re-created; process keeps running: "
            f"{o['keeps_running']}; {acct}"
        )
    if f.startswith("permissions revoked"):
        return (
            f"{len(o['errors'])} WriteError(s) ({_first(o['errors'])}); nothing partial while revoked: "
            f"{not o['problems_while']}; after restoring: every row exactly once {o['exact']}, status {o['status']}; "
            f"{acct}"
        )
    return str(o)[:300]


def load_section(rows: int) -> str:
    import test_load as tl

    out = []
    with tempfile.TemporaryDirectory(prefix="flightlog-load-") as d:
        for on_full, procs in (("block", 8), ("drop", 4)):
            res = tl.run_load(Path(d) / on_full, rows, procs=procs, on_full=on_full)
            try:
                tl.check_load(res, on_full)
                verdict = "all checks pass"
            except AssertionError as e:
                verdict = f"**check failed: {str(e)[:200]}**"
            total = sum(o["stats"]["rows_offered"] for o in res["outs"])
            written = sum(int(r[1] or 0) for r in res["runs"].values())  # from the final manifests
            dropped = sum(o["stats"]["rows_dropped"] for o in res["outs"])
            stalls = sum(o["stats"]["producer_stalls"] for o in res["outs"])
            rss = [o["rss_mb"] for o in res["outs"]]
            rate = [o["stats"]["rows_offered"] / o["secs"] for o in res["outs"]]
            out.append(
                f"| {procs} x 4, `on_full={on_full}` | {total:,} | {written:,} | {dropped:,} | {stalls:,} | "
                f"{res['duplicates']} | {res['consolidations']} (max {res['consolidate_secs_max']:.2f} s) | "
                f"{max(rss):.0f} MB | {statistics.median(rate):,.0f} | {verdict} |"
            )
    return "\n".join(
        [
            "## Load",
            "",
            f"Processes x threads recording {rows:,} rows per thread into one root (one process in four in `dev`",
            "mode) while a consolidator runs every second; counts from the catalog after a final consolidation",
            "(exact: catalog rows = rows_written per run, rows_written + rows_dropped = rows offered).",
            "",
            "| setup | rows offered | written | dropped (counted) | producer stalls | duplicates | consolidations "
            "during the load | max RSS per process | median rows/s per process | checks |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *out,
            "",
        ]
    )


def soak_section(rows: int) -> str:
    import test_load as tl

    with tempfile.TemporaryDirectory(prefix="flightlog-soak-") as d:
        out = tl.run_soak(Path(d), rows)
    samples = out["samples"]
    rss = [s[2] for s in samples]
    fds = sorted({s[3] for s in samples})
    return "\n".join(
        [
            "## Soak",
            "",
            f"`FLIGHTLOG_SOAK=1 FLIGHTLOG_SOAK_ROWS={rows} pytest tests/test_load.py -k soak` records {rows:,} rows",
            "(3 columns, `extend` of 100,000-row numpy chunks, the highest rate the flusher sustains):",
            "",
            f"- {out['rows']:,} rows in {out['secs']:.1f} s = **{out['rows'] / out['secs']:,.0f} rows/s**; "
            f"telemetry.parquet {out['file_bytes'] / 2**20:.0f} MiB with {out['file_rows']:,} rows",
            f"- RSS (MiB) over the run: first {rss[0]:.0f}, max {max(rss):.0f}, last {rss[-1]:.0f} "
            f"({len(samples)} samples)",
            f"- open file descriptors over the run: {fds}",
            f"- producer stalls: {out['stats']['producer_stalls']:,}, flush time {out['stats']['flush_secs']:.1f} s",
            "",
        ]
    )


# The defects found by trying to break flightlog as a hostile but legal user would
# (issues 18 and 19): each has a regression test that failed before its fix.
HOSTILE_FILES = [
    "tests/test_one_writer.py",
    "tests/test_fork.py",
    "tests/test_close_races.py",
    "tests/test_extend_inputs.py",
    "tests/test_api_edges.py",
    "tests/test_catalog_edges.py",
    "tests/test_cli_edges.py",
    "tests/test_run_edges.py",
    "tests/test_object_spool_names.py",
    "tests/test_kill_extend_policies.py",
    "tests/test_fork_then_kill.py",
    "tests/test_kill_lazy_events.py",
    "tests/test_first_log_hostile.py",
    "tests/test_pending_spool_hostile.py",
]
HOSTILE_CASES = [
    (
        "two recorders on one folder (threads, processes, a finished run)",
        "test_one_writer.py::test_two_recorders_*, *_another_thread_*, *_another_process_*, *_finished_run_*",
    ),
    ("a forked child records, exits, or runs a fork `Pool`", "test_fork.py (3 tests)"),
    ("a final publish never replaces a finished file", "rust/flightlog-core/tests/one_writer.rs"),
    (
        "19.1 producers blocked on a full ring never woke after `close()`",
        "test_close_races.py::test_producers_blocked_*, *_shared_manager_wake_*",
    ),
    ("19.2 a FIFO in a run folder hung consolidate/show/tail/runs/recover", "test_cli_edges.py::test_fifo_*"),
    ("19.3 `close()` racing producers lost rows whose call returned", "test_close_races.py::test_close_racing_*"),
    ("19.4 `recover` finalised a live bare recorder", "test_one_writer.py::test_recover_leaves_a_live_*"),
    (
        "19.5 names checked in characters, not bytes",
        "test_run_edges.py::test_names_too_long_in_bytes_*, *_longest_accepted_*, *_byte_limit_*",
    ),
    ("19.6 column names differing only in case stopped consolidation", "test_catalog_edges.py::test_*case*"),
    ("19.7 `prune=True` deleted rows of live runs", "test_catalog_edges.py::test_prune_*"),
    ("19.8 a renamed or copied run folder doubled its rows", "test_catalog_edges.py::test_renamed_*, test_copied_*"),
    (
        "19.9 symlinked files in a run folder were followed; rows_written unchecked",
        "test_catalog_edges.py::test_symlinked_*, *_rows_written_*",
    ),
    (
        "19.10 time-zone-aware results crashed queries (pytz)",
        "test_catalog_edges.py::test_time_zone_*, *_read_text_*; test_cli_edges.py::test_query_time_zone_aware",
    ),
    (
        "19.11 Ctrl-C during `close()` left the run `running`",
        "test_run_edges.py::test_keyboard_interrupt_in_close_*, *_sigint_during_a_slow_close_*",
    ),
    (
        "19.12 a manager collected without `close()` stayed `running`",
        "test_run_edges.py::test_*collected*, *_alive_at_exit_*",
    ),
    (
        "19.13 `sys.exit(0)`/`GeneratorExit` in the block marked the run failed",
        "test_run_edges.py::test_sys_exit_*, *_generator_exit_*, *_keyboard_interrupt_inside_*",
    ),
    ("19.14 concurrent `flightlog recover` reported false errors", "test_one_writer.py::test_concurrent_recovers_*"),
    (
        "19.15 a mistyped `--root` was created",
        "test_catalog_edges.py::test_missing_root_*; test_cli_edges.py::test_a_missing_root_*, *_demo_still_creates_*",
    ),
    ("19.16 `compare --tol nan`, `--metric run_id`", "test_cli_edges.py::test_compare_*"),
    (
        "19.17 `query`'s wrapper leaked (tables, renamed columns, comments, PIVOT)",
        "test_catalog_edges.py::test_query_*; test_cli_edges.py::test_query_is_run_as_is",
    ),
    (
        "19.18 bad manifests hidden; NaN payloads; deep payloads; `--param 1e400`",
        "test_cli_edges.py::test_runs_lists_bad_manifests; test_run_edges.py::test_non_finite_*, *_deeply_nested_*, *_param_out_of_*",
    ),
    (
        "19.19 `extend()` of strided/structured numpy fields wrote garbage",
        "test_extend_inputs.py::test_every_stride_shape_*, *_structured_*, *_broadcast, *_different_shapes_*",
    ),
    ("19.20 a huge `flush_interval` hung flush/close/exit", "test_close_races.py::test_huge_flush_interval_*"),
    ("19.21 masks of masked arrays and `pd.NA` ignored", "test_extend_inputs.py::test_masked_*, *_pandas_*"),
    ("19.22 `to_arrow()` racing `close()`", "test_close_races.py::test_to_arrow_racing_close_*"),
    (
        "19.23 `event()` before the schema failed",
        "test_api_edges.py::test_events_before_*, *_closing_without_a_schema_*",
    ),
    ("19.24 `extend()` peak memory 2x the input", "test_extend_inputs.py::test_extend_peak_memory_is_flat"),
    (
        "19.25 enums with many labels O(labels) per row; 1 MB messages",
        "test_api_edges.py::test_enum_cost_*, *_bad_enum_label_*",
    ),
    ("19.26 `log()` with many fields O(fields) per key", "test_api_edges.py::test_log_cost_per_key_*, *_wide_schema_*"),
    ("19.27 reserved `flightlog.*` metadata keys forgeable", "test_api_edges.py::test_reserved_metadata_*"),
    (
        "adversarial pass: a FIFO or symbolic link planted as `.flightlog.lock` hung the constructor and "
        "`recover`, or was followed",
        "test_one_writer.py::test_an_odd_lock_file_*; claim.rs unit tests",
    ),
    (
        "adversarial pass: a child forked while its parent closed the run blocked in `event()`",
        "test_fork.py::test_a_child_forked_while_the_parent_closes_*",
    ),
    (
        "adversarial pass: `compact` merged a symbolic-link part (another run's rows, counted twice)",
        "test_catalog_edges.py::test_compact_never_merges_*",
    ),
    (
        "adversarial pass: `extend()` interrupted by `close()` did not say that part of its rows were recorded",
        "test_close_races.py::test_extend_racing_close_says_how_many_*",
    ),
    (
        "19.28 inconsistent coercion in `extend()` (datetime64, dict, set)",
        "test_extend_inputs.py::test_coercion_rule_*, *_arrays_or_sequences, *_datetime_lists_*",
    ),
    (
        "kill pass: a lane file left empty by a kill (a thread creating its ring) made every `recover` fail",
        "spool_kill_threads.rs::a_kill_while_a_thread_creates_*, threads_that_come_and_go_*; "
        "spool.rs::an_empty_lane_file_holds_no_row",
    ),
    (
        "kill pass: `close` killed between its two final files: `recover` refused to merge (events salvaged "
        "twice) or dropped the spool's newer events",
        "spool_kill_threads.rs::close_killed_midway_*, close_killed_after_its_events_file_*, "
        "close_killed_after_its_telemetry_file_*",
    ),
    (
        "kill pass: two `s3://` locations differing only in punctuation shared one local spool folder: "
        "`recover` of one published the other's rows and removed its spool",
        "test_object_spool_names.py::test_recover_of_one_root_never_takes_*; object_spool_names.rs",
    ),
    (
        "kill pass: dev/tuner parts on `s3://` killed before their first flush: `recover` salvaged nothing "
        "(the manifest said 0 rows)",
        "test_object_spool_names.py::test_recover_of_one_root_never_takes_* (dev mode)",
    ),
    (
        "kill pass: a bare `FlightRecorder` on `s3://` killed before its first flush was never found by `recover`",
        "test_object_spool_names.py::test_a_bare_recorder_on_a_bucket_*",
    ),
    (
        "kill pass: an `event()` before the first `log()` of an inferred schema was in process memory only "
        "(lost on a kill); now in an events-only spool the recorder adopts",
        "test_kill_lazy_events.py; pending.rs::early_events_are_spooled_*, *_dropped_leaves_no_spool",
    ),
    (
        "pending-spool pass: `event()` or a second first `log()` racing the first `log()` of a bare schema-less "
        "recorder deadlocked (a mutex held across the released interpreter lock)",
        "test_pending_spool_hostile.py::test_a_bare_recorder_event_racing_*, *_two_threads_racing_*",
    ),
    (
        "pending-spool pass: a forked child's early `event()` was written into its parent's spool",
        "test_pending_spool_hostile.py::test_a_forked_childs_event_*",
    ),
    (
        "pending-spool pass: an event time of NaN or infinity was lost on a kill (JSON `null` in the spool)",
        "test_pending_spool_hostile.py::test_an_early_event_with_a_non_finite_time_*; spool.rs::non_finite_*",
    ),
    (
        "pending-spool pass: an `overwrite=True` output file killed before its first row was half replaced",
        "test_pending_spool_hostile.py::test_a_replacing_output_file_killed_*",
    ),
    (
        "pending-spool pass: a schema-less recorder in a folder holding a dead recording's spool accepted events "
        "it could not keep",
        "test_pending_spool_hostile.py::test_a_schema_less_recorder_in_a_folder_with_a_dead_spool_*",
    ),
    (
        "pending-spool pass: `now_ms()` before the first `log()` of an inferred schema counted from the manager's "
        "creation (0 on a bare recorder), then jumped back at the first `log()`, where the recorder's clock started; "
        "early events got negative times. The clock now runs from the pending recorder's creation and the recorder "
        "continues it",
        "test_pending_spool_hostile.py::test_now_ms_before_the_first_log_*, *_clock_runs_from_its_creation_*; "
        "pending.rs::early_events_are_spooled_*, events_kept_in_memory_*",
    ),
    (
        "pending-spool pass: `flush()` of a bare recorder closed before it got a schema returned silently",
        "test_pending_spool_hostile.py::test_flush_of_a_bare_recorder_closed_without_a_schema_*",
    ),
    (
        "pending-spool pass: `log()`/`record()` with fields not in the schema on a closed run (a lazy run closed "
        'before its first row: every field) said "unknown field", not closed',
        "test_pending_spool_hostile.py::test_every_closed_run_says_closed_*",
    ),
    (
        "pending-spool pass: an `overwrite=True` output file closed before its first row left an empty "
        "`replacement/` (fixed with the row above it: no spool there before the first row; regression test)",
        "test_pending_spool_hostile.py::test_a_replacing_output_file_closed_without_a_row_*",
    ),
    (
        "pending-spool pass: a schema-less recorder in a folder holding a finished recording accepted events, "
        "then its first `log()` raised and the events went with its spool, without a warning at close "
        "(refused at construction now, as with a schema)",
        "test_pending_spool_hostile.py::test_a_schema_less_recorder_in_a_finished_folder_*; "
        "pending.rs::a_finished_folder_is_refused_*",
    ),
    (
        "a first `log()` whose start failed (a finished recording's file put in the folder after the "
        "recorder was made) took the pending state with it: the early events and their spool were gone "
        "and the recorder was neither pending nor started. The start now hands everything back; the next "
        "`log()` tries again, a kill leaves the events to `recover`",
        "test_kill_lazy_events.py::test_a_first_log_whose_start_fails_*, test_a_failed_start_killed_*; "
        "pending.rs::a_failed_start_keeps_*",
    ),
    (
        '`FlightRecorder("x.parquet")` closed before any row left an empty hidden `.x.parquet.flightlog/`',
        "test_kill_lazy_events.py::test_an_output_file_closed_without_a_row_*",
    ),
    (
        "first-log pass: two threads taking one output file in turn, each closing it without a row, got "
        "WriteError (the claim's folder went between its creation and the lock file); now retried",
        "test_first_log_hostile.py::test_two_threads_on_one_output_file_*",
    ),
    (
        "first-log pass: a first value whose `__float__` called back into the recorder (`now_ms()`, `event()`) "
        "hung the thread (the values were converted under the recorder's lock); an exception of a value's own "
        "`__index__`/`__float__` (Ctrl-C among them) became a TypeError",
        "test_first_log_hostile.py::test_a_first_value_calling_back_*, *_keyboard_interrupt_*",
    ),
    (
        "first-log pass: `TelemetryManager.close()` of a run whose start failed kept the run claimed (recover "
        "took it for live); a recorder garbage-collected before its first row dropped its events without the "
        "warning close() gives; close() in a forked child warned of the parent's events",
        "test_first_log_hostile.py::test_manager_close_with_the_folder_still_unfit_*, "
        "*_garbage_collected_*, *_forked_child_*",
    ),
    (
        "first-log pass: an `overwrite=True` output file let go of its claim before its recording moved into "
        "place; a recorder of the same file made in between got FileExistsError (the core's close now moves "
        "it while it holds the claim)",
        "test_first_log_hostile.py::test_a_replacing_recorder_closing_never_refuses_*",
    ),
]


def hostile_section() -> str:
    """The hostile-input table: each defect and the tests that reproduce it, with the
    number of cases each test file tries (collected by pytest, parametrisations included)."""
    import subprocess

    counts: dict[str, int] = {}
    for f in HOSTILE_FILES:
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", f],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout
        counts[f] = sum(1 for line in out.splitlines() if "::" in line)
    lines = [
        "## Hostile input",
        "",
        "Defects found by trying to break flightlog as a hostile but legal user would (two recorders on one",
        "path, fork, FIFOs, symlinks, renamed folders, odd dtypes, races with `close()`): each has a regression",
        "test that failed before its fix and runs in CI.",
        "",
        "| defect | regression tests |",
        "|---|---|",
        *[f"| {what} | `{tests}` |" for what, tests in HOSTILE_CASES],
        "",
        "Cases tried (pytest items, parametrisations included): "
        + ", ".join(f"`{Path(f).name}` {n}" for f, n in counts.items())
        + f"; {sum(counts.values())} in all.",
        "",
    ]
    return "\n".join(lines)


def replace_section(doc: str, section: str) -> str:
    """``doc`` with the section whose heading is ``section``'s first line replaced (or
    inserted before the known gaps)."""
    heading = section.splitlines()[0]
    parts = doc.split("\n## ")
    head, rest = parts[0], ["## " + p for p in parts[1:]]
    for i, p in enumerate(rest):
        if p.splitlines()[0] == heading:
            rest[i] = section.rstrip() + "\n"
            break
    else:
        at = next((i for i, p in enumerate(rest) if p.startswith("## Known gaps")), len(rest))
        rest.insert(at, section.rstrip() + "\n")
    return "\n".join([head.rstrip() + "\n", *rest]).rstrip() + "\n"


def known_gaps_section() -> str:
    """The known gaps: the tests marked ``xfail(strict=True)`` (found by reading the
    test files, so the list cannot go stale)."""
    import re

    found = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        text = path.read_text()
        for m in re.finditer(r"xfail\((?:.|\n)*?\)\s*\n(?:@.*\n)*def (test_\w+)", text):
            found.append(f"- `{path.name}::{m.group(1)}`")
    body = found or ["None: no test is marked `xfail`; every gap listed in earlier reports is fixed and tested."]
    return "\n".join(["## Known gaps (xfail(strict=True) tests)", "", *body, ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--load-rows", type=int, default=100_000, help="rows per thread in the load test")
    ap.add_argument("--soak-rows", type=int, default=0, help="rows of the soak (0: skip)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "RELIABILITY.md")
    ap.add_argument(
        "--only-crash",
        action="store_true",
        help="regenerate only the crash-campaign section of an existing report",
    )
    ap.add_argument(
        "--only-hostile",
        action="store_true",
        help="regenerate only the hostile-input and known-gaps sections of an existing report (no campaign, faults or load)",
    )
    args = ap.parse_args()
    if args.only_crash:
        crash, ok = crash_section(args.kills, args.workers, args.seed)
        args.out.write_text(replace_section(args.out.read_text(), crash))
        print(f"updated the crash-campaign section of {args.out}", file=sys.stderr)
        return 0 if ok else 1
    if args.only_hostile:
        doc = replace_section(args.out.read_text(), hostile_section())
        doc = doc.split("\n## Known gaps")[0].rstrip() + "\n\n" + known_gaps_section()
        args.out.write_text(doc.rstrip() + "\n")
        print(f"updated the hostile-input section of {args.out}", file=sys.stderr)
        return 0

    import flightlog

    t0 = time.time()
    print("crash campaign...", file=sys.stderr)
    crash, ok = crash_section(args.kills, args.workers, args.seed)
    print("disk faults...", file=sys.stderr)
    faults = fault_section()
    print("load...", file=sys.stderr)
    load = load_section(args.load_rows)
    soak = ""
    if args.soak_rows:
        print("soak...", file=sys.stderr)
        soak = soak_section(args.soak_rows)
    else:
        soak = "## Soak\n\nNot run this time: `python benches/reliability_report.py --soak-rows 100000000`.\n"
    header = "\n".join(
        [
            "# flightlog reliability figures",
            "",
            "Generated by `python benches/reliability_report.py "
            + f"--kills {args.kills} --load-rows {args.load_rows}"
            + (f" --soak-rows {args.soak_rows}" if args.soak_rows else "")
            + "`; do not edit by hand.",
            "",
            f"flightlog {flightlog.__version__}, Python {platform.python_version()}, {platform.system()} "
            f"{platform.release()}, {os.cpu_count()} CPUs, "
            f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, {time.time() - t0:.0f} s in all.",
            "",
            "What is promised (DESIGN.md): a returned `flush()`/`close()` never loses a row; a reader never sees a",
            "partial file; after `kill -9`, `recover` + `consolidate` give every published row exactly once; a disk",
            "error is a `WriteError` with nothing partial published; nothing is lost without being counted.",
            "The tests that check each figure run in CI at a smaller size (`tests/test_crash_campaign.py`,",
            "`tests/test_disk_faults.py`, `tests/test_load.py`, `tests/test_hostile_input.py`,",
            "`tests/test_stateful.py`). Known gaps are the `xfail(strict=True)` tests, listed at the end.",
            "",
        ]
    )
    known = known_gaps_section()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([header, crash, faults, hostile_section(), load, soak, known]).rstrip() + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

//! Recorder behaviour through real files: flush semantics, merge, threads,
//! policies, recovery.

use std::fs;
use std::sync::Arc;

use flightlog_core::read::durable_files;
use flightlog_core::row_layout::{f64_word, i64_word};
use flightlog_core::{
    parquet_io, recover_run, DType, Field, Offer, OnFull, OutputLayout, Recorder, RecorderConfig,
    Sampling, Schema, Value,
};

fn schema() -> Schema {
    Schema::new(
        vec![
            Field::new("iter", DType::I64),
            Field::new("E", DType::F64),
            Field::new("phase", DType::Enum(vec!["RED".into(), "GREEN".into()])),
            Field::new("note", DType::Str).nullable(),
        ],
        3,
    )
    .unwrap()
}

fn config(dir: &std::path::Path) -> RecorderConfig {
    let mut cfg = RecorderConfig::new(OutputLayout::run_folder(dir));
    cfg.flush_interval_secs = 3600.0;
    cfg
}

fn row(rec: &Recorder, i: i64) -> Vec<u64> {
    let layout = rec.row_layout();
    let mut row = layout.new_row();
    row[0] = i64_word(i);
    row[1] = f64_word(i as f64 * 0.5);
    row[2] = rec
        .dictionary(2)
        .unwrap()
        .code(if i % 2 == 0 { "RED" } else { "GREEN" })
        .unwrap() as u64;
    if i % 3 == 0 {
        layout.set_null(&mut row, 3);
    } else {
        row[3] = rec
            .dictionary(3)
            .unwrap()
            .code(&format!("n{}", i % 5))
            .unwrap() as u64;
    }
    row
}

/// The `iter` column (the first) of a telemetry file, in file order.
fn iters_in(file: &std::path::Path) -> Vec<i64> {
    let (_, batches) = parquet_io::read_file(file).unwrap();
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn total_rows(files: &[std::path::PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| parquet_io::row_count(f).unwrap())
        .sum()
}

#[test]
fn flush_makes_every_earlier_row_durable_and_close_merges_by_copy() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new(schema(), config(dir.path())).unwrap();
    for round in 0..3 {
        for i in 0..1000 {
            rec.push(&row(&rec, round * 1000 + i)).unwrap();
        }
        rec.flush().unwrap();
        let files = durable_files(
            &Default::default(),
            &dir.path().join("segments"),
            "telemetry-",
            None,
        )
        .unwrap();
        assert_eq!(files.len() as i64, round + 1);
        assert_eq!(total_rows(&files), (round as u64 + 1) * 1000);
    }
    rec.event("CERT_PASS", Some("{\"gap\": 0.1}".into()), None)
        .unwrap();
    let report = rec.close().unwrap();
    assert_eq!(report.files[0].1, 3000);
    let final_path = dir.path().join("telemetry.parquet");
    assert!(!dir.path().join("segments").exists(), "segments removed");
    let kv: std::collections::HashMap<_, _> = parquet_io::read_key_values(&final_path)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(kv["schema_version"], "3");
    assert_eq!(kv["flightlog.format_version"], "1");
    // telemetry-<8-digit recorder instance><6-digit sequence>.parquet
    let listed: Vec<String> = serde_json::from_str(&kv["flightlog.segments"]).unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for (n, name) in listed.iter().enumerate() {
        assert!(name.starts_with("telemetry-") && name.len() == "telemetry-".len() + 14 + 8);
        assert!(name.ends_with(&format!("{:06}.parquet", n + 1)), "{name}");
    }
    assert_eq!(kv["flightlog.segment_rows"], "[1000,1000,1000]");
    assert!(kv["flightlog.schema"].contains("\"phase\""));
    let (_, batches) = parquet_io::read_file(&final_path).unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);
    assert_eq!(
        parquet_io::row_count(&dir.path().join("events.parquet")).unwrap(),
        1
    );
    // A second close is a no-op.
    assert!(rec.close().unwrap().files.is_empty());
    assert!(matches!(
        rec.push(&row(&rec, 0)),
        Err(flightlog_core::CoreError::Closed)
    ));
}

#[test]
fn a_single_segment_is_renamed_and_an_empty_recording_still_has_files() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new(schema(), config(dir.path())).unwrap();
    rec.push(&row(&rec, 1)).unwrap();
    rec.close().unwrap();
    let kv = parquet_io::read_key_values(&dir.path().join("telemetry.parquet")).unwrap();
    assert!(!kv.iter().any(|(k, _)| k == "flightlog.segments"));

    let empty = tempfile::tempdir().unwrap();
    let rec = Recorder::new(schema(), config(empty.path())).unwrap();
    rec.close().unwrap();
    assert_eq!(
        parquet_io::row_count(&empty.path().join("telemetry.parquet")).unwrap(),
        0
    );
    assert_eq!(
        parquet_io::row_count(&empty.path().join("events.parquet")).unwrap(),
        0
    );
}

#[test]
fn an_existing_recording_is_never_mixed_into() {
    let dir = tempfile::tempdir().unwrap();
    Recorder::new(schema(), config(dir.path()))
        .unwrap()
        .close()
        .unwrap();
    let err = Recorder::new(schema(), config(dir.path())).err().unwrap();
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn several_producer_threads_lose_nothing_through_a_tiny_ring() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ring_capacity = 8;
    cfg.segment_rows = 1000;
    cfg.flush_interval_secs = 0.005;
    let rec = Arc::new(Recorder::new(schema(), cfg).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let rec = Arc::clone(&rec);
            std::thread::spawn(move || {
                for i in 0..5000 {
                    rec.push(&row(&rec, t * 100_000 + i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats_before = rec.stats();
    rec.close().unwrap();
    let stats = rec.stats();
    assert_eq!(stats.rows_offered, 20_000);
    assert_eq!(stats.rows_written, 20_000);
    assert_eq!(stats.rows_dropped, 0);
    assert!(
        stats_before.producer_stalls > 0,
        "a ring of 8 must have stalled producers"
    );
    let mut iters = iters_in(&dir.path().join("telemetry.parquet"));
    iters.sort_unstable();
    iters.dedup();
    assert_eq!(iters.len(), 20_000, "no row lost or duplicated");
}

/// Threads that end one after another hand the first lane (which its owner
/// finds by its thread id, without its thread-local list) to the next: a new
/// thread often gets the id of the one just joined. Every row lands once, and
/// the rows of each thread stay in order, whoever owned which lane.
#[test]
fn threads_that_take_turns_on_the_first_lane_keep_every_row_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ring_capacity = 8;
    cfg.segment_rows = 700;
    cfg.flush_interval_secs = 0.002;
    let rec = Arc::new(Recorder::new(schema(), cfg).unwrap());
    let record = |rec: &Arc<Recorder>, t: i64, n: i64| {
        for i in 0..n {
            rec.push(&row(rec, t * 100_000 + i)).unwrap();
        }
    };
    for t in 0..15 {
        let rec = Arc::clone(&rec);
        std::thread::spawn(move || record(&rec, t, 300))
            .join()
            .unwrap();
    }
    // One long-lived thread beside the ones that come and go.
    let steady = {
        let rec = Arc::clone(&rec);
        std::thread::spawn(move || {
            for chunk in 0..40 {
                for i in 0..50 {
                    rec.push(&row(&rec, 99 * 100_000 + chunk * 50 + i)).unwrap();
                }
                std::thread::yield_now();
            }
        })
    };
    for t in 15..30 {
        let rec = Arc::clone(&rec);
        std::thread::spawn(move || record(&rec, t, 300))
            .join()
            .unwrap();
    }
    steady.join().unwrap();
    record(&rec, 50, 300);
    rec.close().unwrap();
    let stats = rec.stats();
    let expected = 30 * 300 + 2000 + 300;
    assert_eq!(stats.rows_offered, expected);
    assert_eq!(stats.rows_written, expected);
    let iters = iters_in(&dir.path().join("telemetry.parquet"));
    assert_eq!(iters.len() as u64, expected, "no row lost or duplicated");
    let mut next = std::collections::HashMap::new();
    for it in iters {
        let (thread, i) = (it / 100_000, it % 100_000);
        let want = next.entry(thread).or_insert(0);
        assert_eq!(i, *want, "thread {thread}'s rows out of order");
        *want += 1;
    }
    assert_eq!(next.len(), 32);
}

/// A row offered from inside another row's offer on the same thread (the
/// `fill` callback of `offer_in_place`, or `push_with`'s `on_block`, calling
/// back into the recorder) would take the slot the outer row is filling: it is
/// refused with an error, and every other row is recorded once. Through the
/// first lane (found by thread id) and through another thread's lane (found
/// through its thread-local registration: the main thread keeps lane 0).
#[test]
fn a_row_offered_from_inside_an_offer_on_the_same_thread_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recorder::new(schema(), config(dir.path())).unwrap());
    let check = |rec: &Arc<Recorder>, base: i64| {
        // From inside the in-place fill.
        let mut nested = None;
        let outer = rec
            .offer_in_place(|words| {
                nested = Some(rec.push(&row(rec, base + 900)));
                for (w, v) in words.iter().zip(row(rec, base)) {
                    w.store(v, std::sync::atomic::Ordering::Relaxed);
                }
                true
            })
            .unwrap();
        assert_eq!(outer, flightlog_core::InPlace::Offered(Offer::Accepted));
        let err = nested.unwrap().unwrap_err().to_string();
        assert!(err.contains("already inside an offer"), "{err}");
        // The lane is free again: the next row is recorded.
        rec.push(&row(rec, base + 1)).unwrap();
    };
    check(&rec, 0);
    let other = Arc::clone(&rec);
    std::thread::spawn(move || check(&other, 1000))
        .join()
        .unwrap();
    rec.close().unwrap();
    let mut iters = iters_in(&dir.path().join("telemetry.parquet"));
    iters.sort_unstable();
    assert_eq!(iters, vec![0, 1, 1000, 1001]);
    assert_eq!(rec.stats().rows_offered, 4);
}

#[test]
fn drop_policy_counts_every_dropped_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ring_capacity = 4;
    cfg.on_full = OnFull::Drop;
    let rec = Recorder::new(schema(), cfg).unwrap();
    let mut dropped = 0;
    for i in 0..10_000 {
        if rec.push(&row(&rec, i)).unwrap() == Offer::Dropped {
            dropped += 1;
        }
    }
    rec.close().unwrap();
    let s = rec.stats();
    assert_eq!(s.rows_dropped, dropped);
    assert_eq!(s.rows_written + s.rows_dropped, 10_000);
    assert_eq!(
        parquet_io::row_count(&dir.path().join("telemetry.parquet")).unwrap(),
        s.rows_written
    );
}

#[test]
fn sampling_and_budget_are_counted_and_the_budget_event_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.sampling = Some(Sampling {
        keep_first: 100,
        every: 10,
    });
    cfg.max_rows = Some(150);
    let rec = Recorder::new(schema(), cfg).unwrap();
    let mut firsts = 0;
    for i in 0..2000 {
        if let Offer::OverBudget { first: true } = rec.push(&row(&rec, i)).unwrap() {
            firsts += 1;
        }
    }
    rec.close().unwrap();
    let s = rec.stats();
    assert_eq!(firsts, 1);
    assert_eq!(s.rows_offered, 2000);
    assert_eq!(s.rows_sampled_out, 1900 - 190);
    assert_eq!(s.rows_written, 150);
    assert_eq!(s.rows_over_budget, 290 - 150);
    assert_eq!(
        parquet_io::row_count(&dir.path().join("events.parquet")).unwrap(),
        1
    );
}

#[test]
fn constant_columns_are_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new(
        vec![
            Field::new("run_id", DType::Str),
            Field::new("E", DType::F64),
        ],
        1,
    )
    .unwrap();
    let mut cfg = config(dir.path());
    cfg.constants = vec![("run_id".into(), Value::Str("r1".into()))];
    let rec = Recorder::new(schema, cfg).unwrap();
    assert_eq!(rec.row_layout().stored_len(), 1);
    rec.push(&[f64_word(2.5)]).unwrap();
    rec.close().unwrap();
    let (_, batches) = parquet_io::read_file(&dir.path().join("telemetry.parquet")).unwrap();
    let col = arrow_array::cast::AsArray::as_dictionary::<arrow_array::types::Int32Type>(
        batches[0].column(0).as_ref(),
    );
    let values = arrow_array::cast::AsArray::as_string::<i32>(col.values().as_ref());
    assert_eq!(values.value(col.keys().value(0) as usize), "r1");
}

#[test]
fn recover_merges_segments_of_a_dead_recorder_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let layout = OutputLayout::run_folder(dir.path());
    let rec = Recorder::new(schema(), config(dir.path())).unwrap();
    for i in 0..10 {
        rec.push(&row(&rec, i)).unwrap();
        rec.flush().unwrap();
    }
    // Simulate a crash: leak the recorder (no close), leave a temp file behind.
    std::mem::forget(rec);
    fs::write(
        dir.path()
            .join("segments/.telemetry-000011.parquet.tmp-dead"),
        b"partial",
    )
    .unwrap();
    let report = recover_run(&layout).unwrap();
    assert_eq!(report.temp_files_removed, 1);
    assert_eq!(report.segments_merged, 10);
    assert_eq!(report.telemetry_rows, 10);
    assert!(!dir.path().join("segments").exists());
    let again = recover_run(&layout).unwrap();
    assert_eq!(again.segments_merged, 0);
    assert_eq!(again.telemetry_rows, 10);
}

#[test]
fn leftover_segments_listed_by_the_merged_file_are_not_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let seg_dir = dir.path().join("segments");
    let rec = Recorder::new(schema(), config(dir.path())).unwrap();
    for i in 0..3 {
        rec.push(&row(&rec, i)).unwrap();
        rec.flush().unwrap();
    }
    // Keep copies of the segments, close (merge + delete), then put the copies
    // back as if the process died between publishing the merge and deleting.
    let saved: Vec<_> = fs::read_dir(&seg_dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.clone(), fs::read(&p).unwrap())
        })
        .collect();
    rec.close().unwrap();
    fs::create_dir_all(&seg_dir).unwrap();
    for (p, bytes) in &saved {
        fs::write(p, bytes).unwrap();
    }
    let files = durable_files(
        &Default::default(),
        &seg_dir,
        "telemetry-",
        Some(&dir.path().join("telemetry.parquet")),
    )
    .unwrap();
    assert_eq!(total_rows(&files), 3, "{files:?}");
    let report = recover_run(&OutputLayout::run_folder(dir.path())).unwrap();
    assert_eq!(report.leftover_segments_removed, 3);
    assert_eq!(report.telemetry_rows, 3);
}

#[test]
fn config_errors_say_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush_interval_secs = 0.0;
    let err = Recorder::new(schema(), cfg).err().unwrap().to_string();
    assert!(err.contains("flush_interval must be a positive"), "{err}");
    let mut cfg = config(dir.path());
    cfg.ring_capacity = 1;
    let err = Recorder::new(schema(), cfg).err().unwrap().to_string();
    assert!(err.contains("ring_capacity must be between 2"), "{err}");
}

#[test]
fn rows_pushed_while_a_segment_is_encoded_are_drained_in_order() {
    // Segments big enough to be encoded on the side thread, a ring much smaller
    // than a segment: producers keep going while segments are written, and
    // every row lands once, in order, across segment boundaries.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush_interval_secs = 0.005;
    cfg.segment_rows = 20_000;
    cfg.ring_capacity = 1024;
    let rec = Recorder::new(schema(), cfg).unwrap();
    let n = 150_000;
    for i in 0..n {
        rec.push(&row(&rec, i)).unwrap();
    }
    let report = rec.close().unwrap();
    assert_eq!(report.files[0].1, n as u64);
    let iters = iters_in(&dir.path().join("telemetry.parquet"));
    assert_eq!(iters, (0..n).collect::<Vec<_>>());
    assert!(rec.stats().segments >= 7, "{:?}", rec.stats());
}

#[test]
fn footers_are_read_in_bulk_each_with_its_own_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for k in 0..3 {
        let folder = dir.path().join(format!("run{k}"));
        let rec = Recorder::new(schema(), config(&folder)).unwrap();
        for i in 0..(10 * (k + 1)) {
            rec.push(&row(&rec, i)).unwrap();
        }
        rec.close().unwrap();
        paths.push(folder.join("telemetry.parquet"));
    }
    let garbage = dir.path().join("garbage.parquet");
    fs::write(&garbage, b"not parquet at all").unwrap();
    paths.push(garbage);
    paths.push(dir.path().join("missing.parquet"));
    let got = parquet_io::read_footers(&paths);
    for (k, result) in got.iter().take(3).enumerate() {
        let (rows, kv) = result.as_ref().unwrap();
        assert_eq!(*rows, 10 * (k as u64 + 1));
        assert_eq!(kv, &parquet_io::read_key_values(&paths[k]).unwrap());
        assert!(kv.iter().any(|(key, _)| key == "schema_version"), "{kv:?}");
    }
    let bad = got[3].as_ref().unwrap_err().to_string();
    assert!(bad.contains("garbage.parquet"), "{bad}");
    assert!(got[4].is_err());
}

/// `sync_first`: what the caller placed without an fsync (a run's start
/// manifest) is made durable before the recording's first file; a path that
/// cannot be synced fails that write (its rows kept) and is not tried again
/// (a failed fsync is never retried blindly): the retry publishes the rows.
#[test]
fn a_sync_first_path_that_cannot_be_synced_fails_the_first_write_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    fs::create_dir(&run).unwrap();
    let manifest = run.join("manifest.toml");
    flightlog_core::atomic_file::place_bytes(&manifest, b"a = 1\n", true).unwrap();
    // "blocker/x" cannot even be looked up while `blocker` is a file (ENOTDIR).
    let blocker = dir.path().join("blocker");
    fs::write(&blocker, b"").unwrap();
    let mut cfg = config(&run);
    cfg.sync_first = vec![manifest.clone(), run.clone(), blocker.join("x")];
    let rec = Recorder::new(schema(), cfg).unwrap();
    for i in 0..10 {
        rec.push(&row(&rec, i)).unwrap();
    }
    let err = rec.flush().unwrap_err().to_string();
    assert!(err.contains("blocker"), "{err}");
    let segments = || {
        durable_files(
            &Default::default(),
            &run.join("segments"),
            "telemetry-",
            None,
        )
        .unwrap()
    };
    assert!(segments().is_empty(), "nothing published before the syncs");
    rec.flush().unwrap();
    assert_eq!(total_rows(&segments()), 10);
    let report = rec.close().unwrap();
    assert_eq!(report.files[0].1, 10);
    assert_eq!(
        iters_in(&run.join("telemetry.parquet")),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(fs::read(&manifest).unwrap(), b"a = 1\n");
}

/// A short recording's close publishes its final files with the owed syncs in
/// the same wait; when they fail, close fails as after a failed write of those
/// files (the rows are not in the final file), and `recover` finds every row
/// in the spool.
#[test]
fn a_short_close_whose_sync_first_fails_leaves_the_rows_to_recover() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    fs::create_dir(&run).unwrap();
    let blocker = dir.path().join("blocker");
    fs::write(&blocker, b"").unwrap();
    let mut cfg = config(&run);
    cfg.sync_first = vec![blocker.join("x")];
    let rec = Recorder::new(schema(), cfg).unwrap();
    for i in 0..10 {
        rec.push(&row(&rec, i)).unwrap();
    }
    let err = rec.close().unwrap_err().to_string();
    assert!(err.contains("blocker"), "{err}");
    // No final file holding some rows only: recover never adds to one.
    assert!(!run.join("telemetry.parquet").exists());
    recover_run(&OutputLayout::run_folder(&run)).unwrap();
    assert_eq!(
        iters_in(&run.join("telemetry.parquet")),
        (0..10).collect::<Vec<_>>()
    );
}

/// Segments of more rows than a pending chunk (16,384), and not a multiple
/// of it, across several flusher chunks and refilled columns: each segment
/// is one row group of `segment_rows`, every row is in the final file once
/// and in order, with its nulls and dictionary values.
#[test]
fn segments_spanning_chunks_keep_one_row_group_and_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_rows = 40_000;
    cfg.ring_capacity = 4096;
    let rec = Recorder::new(schema(), cfg).unwrap();
    let n = 130_000;
    for i in 0..n {
        rec.push(&row(&rec, i)).unwrap();
    }
    rec.close().unwrap();
    let final_path = dir.path().join("telemetry.parquet");
    let file = fs::File::open(&final_path).unwrap();
    let meta = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    let groups: Vec<i64> = parquet::file::reader::FileReader::metadata(&meta)
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .collect();
    assert_eq!(groups, [40_000, 40_000, 40_000, 10_000]);
    assert_eq!(iters_in(&final_path), (0..n).collect::<Vec<i64>>());
    let (_, batches) = parquet_io::read_file(&final_path).unwrap();
    let mut i = 0i64;
    for b in &batches {
        let e = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        let note = b.column(3);
        for r in 0..b.num_rows() {
            assert_eq!(e.value(r), i as f64 * 0.5);
            assert_eq!(arrow_array::Array::is_null(note, r), i % 3 == 0, "row {i}");
            i += 1;
        }
    }
}

/// A spool that cannot hold a thread's ring or a chunk of drained rows (here
/// their names are taken by folders; on a real machine, a full disk) costs
/// only their protection against a crash: the recorder keeps them in memory,
/// counts each in `spool_errors`, and every row reaches the final file.
#[test]
fn a_spool_that_cannot_hold_a_ring_or_a_chunk_is_counted_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new(schema(), config(dir.path())).unwrap();
    let spools = flightlog_core::spool::spool_dirs(&dir.path().join(".flightlog.spool"));
    assert_eq!(spools.len(), 1);
    fs::create_dir(spools[0].join("lane-000.ring")).unwrap();
    fs::create_dir(spools[0].join("chunk-000000.cols")).unwrap();
    for i in 0..1_000 {
        assert_eq!(rec.push(&row(&rec, i)).unwrap(), Offer::Accepted);
    }
    rec.flush().unwrap();
    assert_eq!(rec.stats().spool_errors, 2, "{:?}", rec.stats());
    rec.close().unwrap();
    let iters = iters_in(&dir.path().join("telemetry.parquet"));
    assert_eq!(iters, (0..1_000).collect::<Vec<i64>>());
}

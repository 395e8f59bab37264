//! close() racing producers and readers (issue 19, items 1, 3, 20 and 22),
//! through real files and real threads.

use std::collections::HashSet;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use arrow_array::Int64Array;
use flightlog_core::read::read_telemetry;
use flightlog_core::row_layout::i64_word;
use flightlog_core::{
    CoreError, DType, Field, OutputLayout, Recorder, RecorderConfig, Schema, Stats,
};

fn schema() -> Schema {
    Schema::new(
        vec![
            Field::new("who", DType::I64),
            Field::new("iter", DType::I64),
        ],
        1,
    )
    .unwrap()
}

fn config(dir: &std::path::Path, ring: usize) -> RecorderConfig {
    let mut cfg = RecorderConfig::new(OutputLayout::run_folder(dir));
    cfg.ring_capacity = ring;
    cfg
}

fn accounted(s: &Stats) -> u64 {
    s.rows_written + s.rows_sampled_out + s.rows_dropped + s.rows_over_budget + s.rows_lost
}

/// (who, iter) pairs of everything durable.
fn durable_pairs(layout: &OutputLayout) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for (_, batches) in read_telemetry(layout).unwrap() {
        for b in batches {
            let col = |i: usize| {
                b.column(i)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            };
            out.extend(col(0).into_iter().zip(col(1)));
        }
    }
    out
}

/// Four producers push until the recorder refuses them; `close` runs once
/// `rows_before_close` rows were offered. Returns per-producer counts of
/// pushes that returned `Ok`, after checking that each producer stopped with
/// `Closed` (none left waiting on the full ring).
fn hammer_then_close(rec: &Arc<Recorder>, rows_before_close: u64) -> Vec<i64> {
    const PRODUCERS: usize = 4;
    let start = Arc::new(Barrier::new(PRODUCERS + 1));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|who| {
            let rec = Arc::clone(rec);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut row = rec.row_layout().new_row();
                let mut i = 0i64;
                loop {
                    row[0] = i64_word(who as i64);
                    row[1] = i64_word(i);
                    match rec.push(&row) {
                        Ok(_) => i += 1,
                        Err(CoreError::Closed) => return i,
                        Err(e) => panic!("producer {who}: {e}"),
                    }
                }
            })
        })
        .collect();
    start.wait();
    while rec.stats().rows_offered < rows_before_close {
        std::thread::yield_now();
    }
    rec.close().expect("close on a healthy disk succeeds");
    // A producer still blocked on the full ring would never finish: bound the
    // wait, and fail instead of hanging the test run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while producers.iter().any(|h| !h.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "a producer is still blocked 30 s after close()"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    producers.into_iter().map(|h| h.join().unwrap()).collect()
}

fn check_every_returned_row_is_written(rec: &Recorder, returned: &[i64]) {
    let pairs = durable_pairs(rec.layout());
    let unique: HashSet<_> = pairs.iter().copied().collect();
    assert_eq!(unique.len(), pairs.len(), "a row was written twice");
    for (who, &n) in returned.iter().enumerate() {
        for i in 0..n {
            assert!(
                unique.contains(&(who as i64, i)),
                "row {i} of producer {who} returned Ok but is not in the files"
            );
        }
    }
    let s = rec.stats();
    let total: i64 = returned.iter().sum();
    assert_eq!(pairs.len() as u64, total as u64, "{s:?}");
    assert_eq!(s.rows_written, total as u64, "{s:?}");
    assert_eq!(s.rows_offered, accounted(&s), "{s:?}");
    assert_eq!(s.rows_lost, 0, "{s:?}");
}

#[test]
fn producers_blocked_on_a_full_ring_wake_with_closed() {
    for trial in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder::new(schema(), config(dir.path(), 2)).unwrap());
        let returned = hammer_then_close(&rec, 2_000 + trial * 500);
        assert!(rec.stats().producer_stalls > 0, "the ring never filled");
        check_every_returned_row_is_written(&rec, &returned);
    }
}

#[test]
fn close_racing_producers_writes_every_row_whose_push_returned() {
    // Large enough batches that the closing write runs on the encoder thread
    // while the flusher drains (the path that left rows behind as "kept for a
    // retry"), and rings small and large.
    for (trial, ring) in [64usize, 4096, 65536].iter().cycle().take(9).enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recorder::new(schema(), config(dir.path(), *ring)).unwrap());
        let returned = hammer_then_close(&rec, 50_000 + trial as u64 * 10_000);
        check_every_returned_row_is_written(&rec, &returned);
    }
}

#[test]
fn a_push_after_close_fails_and_is_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new(schema(), config(dir.path(), 8)).unwrap();
    let row = rec.row_layout().new_row();
    rec.push(&row).unwrap();
    rec.close().unwrap();
    assert!(matches!(rec.push(&row), Err(CoreError::Closed)));
    assert!(matches!(rec.offer(&row), Err(CoreError::Closed)));
    assert!(matches!(rec.event("X", None, None), Err(CoreError::Closed)));
    let s = rec.stats();
    assert_eq!((s.rows_offered, s.rows_written), (1, 1));
}

#[test]
fn huge_flush_interval_is_refused_at_construction() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [1e20, f64::INFINITY, f64::NAN, 0.0, -1.0, 1e9 + 1.0] {
        let mut cfg = config(dir.path(), 8);
        cfg.flush_interval_secs = bad;
        let err = Recorder::new(schema(), cfg).err().expect("refused");
        let msg = err.to_string();
        assert!(matches!(err, CoreError::Config(_)), "{msg}");
        assert!(
            msg.contains("flush_interval") && msg.contains("1000000000"),
            "{msg}"
        );
    }
    let mut cfg = config(dir.path(), 8);
    cfg.flush_interval_secs = RecorderConfig::MAX_FLUSH_INTERVAL_SECS;
    let rec = Recorder::new(schema(), cfg).unwrap();
    rec.push(&rec.row_layout().new_row()).unwrap();
    rec.flush().unwrap();
    rec.close().unwrap();
    assert_eq!(rec.stats().rows_written, 1);
}

#[test]
fn reading_while_close_merges_sees_every_durable_row_once() {
    for trial in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), 1024);
        cfg.segment_rows = 500;
        let rec = Arc::new(Recorder::new(schema(), cfg).unwrap());
        // One segment (the close renames it) or several (the close merges).
        let rows = 500 * (1 + trial % 3);
        let mut row = rec.row_layout().new_row();
        for i in 0..rows {
            row[1] = i64_word(i);
            rec.push(&row).unwrap();
        }
        rec.flush().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let closer = {
            let (rec, done) = (Arc::clone(&rec), Arc::clone(&done));
            std::thread::spawn(move || {
                rec.close().unwrap();
                done.store(true, Ordering::Release);
            })
        };
        let want: Vec<i64> = (0..rows).collect();
        loop {
            let finished = done.load(Ordering::Acquire);
            let mut iters: Vec<i64> = durable_pairs(rec.layout())
                .into_iter()
                .map(|p| p.1)
                .collect();
            iters.sort_unstable();
            assert_eq!(iters, want, "trial {trial}");
            if finished {
                break;
            }
        }
        closer.join().unwrap();
    }
}

/// The moment inside a close that publishes its single segment as the final
/// file (`atomic_file::move_new`: a link, then the segment removed), when both
/// names are one file: a reader counts its rows once. A different file under
/// a segment's name (a copy) is still read, as any unlisted segment is.
#[cfg(unix)]
#[test]
fn a_segment_linked_as_the_final_file_is_read_once() {
    use flightlog_core::read::durable_files;
    let made = tempfile::tempdir().unwrap();
    let rec = Recorder::new(schema(), config(made.path(), 64)).unwrap();
    let mut row = rec.row_layout().new_row();
    for i in 0..10 {
        row[1] = i64_word(i);
        rec.push(&row).unwrap();
    }
    rec.close().unwrap();
    let published = made.path().join("telemetry.parquet");

    let run = tempfile::tempdir().unwrap();
    let segments = run.path().join("segments");
    fs::create_dir(&segments).unwrap();
    let segment = segments.join("telemetry-00000001000001.parquet");
    let final_path = run.path().join("telemetry.parquet");
    fs::copy(&published, &segment).unwrap();
    fs::hard_link(&segment, &final_path).unwrap();
    let storage = flightlog_core::Storage::Local;
    let files = durable_files(&storage, &segments, "telemetry-", Some(&final_path)).unwrap();
    assert_eq!(
        files,
        std::slice::from_ref(&final_path),
        "one file under two names, read once"
    );

    fs::remove_file(&segment).unwrap();
    fs::copy(&published, &segment).unwrap();
    let files = durable_files(&storage, &segments, "telemetry-", Some(&final_path)).unwrap();
    assert_eq!(files, [final_path, segment], "another file is another file");
}

//! The spool through a real `kill -9`: a child process (this test binary,
//! re-run with an environment variable) records from several threads, says
//! how many rows each thread's calls returned for, and is killed with SIGKILL
//! while it keeps recording; `recover` must then publish every row whose call
//! returned, once, each thread's rows in order, with its strings and events.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::Array;
use flightlog_core::row_layout::{f64_word, i64_word};
use flightlog_core::{
    parquet_io, recover_run, DType, Field, OutputLayout, Recorder, RecorderConfig, Schema,
};

const CHILD_ENV: &str = "FLIGHTLOG_SPOOL_KILL_CHILD";
const SLOW_CHILD_ENV: &str = "FLIGHTLOG_SPOOL_KILL_SLOW_CHILD";
const THREADS: i64 = 3;

fn schema() -> Schema {
    Schema::new(
        vec![
            Field::new("thread", DType::I64),
            Field::new("iter", DType::I64),
            Field::new("E", DType::F64),
            Field::new("note", DType::Str),
        ],
        1,
    )
    .unwrap()
}

/// The child: records until killed. Each thread prints `T i` after every
/// 1,000th returned call (so the parent knows rows 0..=i of thread T returned).
fn child(dir: &std::path::Path) {
    let mut cfg = RecorderConfig::new(OutputLayout::run_folder(dir));
    // Segments now and then, so that the spool's rows, its chunks and the
    // segments all hold some of the rows when the kill comes.
    cfg.flush_interval_secs = 0.05;
    cfg.segment_rows = 5_000;
    cfg.ring_capacity = 1024;
    let rec = std::sync::Arc::new(Recorder::new(schema(), cfg).unwrap());
    rec.event("START", Some("{\"n\": 1}".into()), None).unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let rec = std::sync::Arc::clone(&rec);
            std::thread::spawn(move || {
                let notes = rec.dictionary(3).unwrap();
                for i in 0.. {
                    let code = notes.code(&format!("note-{t}-{}", i / 10_000)).unwrap();
                    let row = [i64_word(t), i64_word(i), f64_word(i as f64), code as u64];
                    rec.push(&row).unwrap();
                    if i % 1000 == 0 {
                        println!("{t} {i}");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// This test binary re-run as the child of `test` (which it recognises by
/// `env` naming its run folder), its stdout piped to the caller.
fn spawn_child(test: &str, env: &str, dir: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's lines until one ends with `word` (the harness prints the
/// test's name on the line of the first word).
fn wait_for_line(lines: &mut impl Iterator<Item = std::io::Result<String>>, word: &str) {
    loop {
        let line = lines.next().expect("the child ended early").unwrap();
        if line.trim_end().ends_with(word) {
            return;
        }
    }
}

#[test]
fn every_row_whose_call_returned_survives_kill_9() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(std::path::Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_child(
        "every_row_whose_call_returned_survives_kill_9",
        CHILD_ENV,
        dir.path(),
    );
    let mut returned: BTreeMap<i64, i64> = BTreeMap::new();
    let stdout = BufReader::new(proc.stdout.take().unwrap());
    for line in stdout.lines() {
        let line = line.unwrap();
        let mut parts = line.split_whitespace();
        let (Some(t), Some(i)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(t), Ok(i)) = (t.parse::<i64>(), i.parse::<i64>()) else {
            continue;
        };
        returned.insert(t, i);
        if returned.len() == THREADS as usize && returned.values().all(|&i| i >= 60_000) {
            break;
        }
    }
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();

    let report = recover_run(&OutputLayout::run_folder(dir.path())).unwrap();
    assert!(report.salvaged_rows > 0, "{report:?}");
    assert_eq!(report.torn_rows, 0);
    assert!(report.spools_discarded.is_empty());
    let final_path = dir.path().join("telemetry.parquet");
    let (_, batches) = parquet_io::read_file(&final_path).unwrap();
    let mut next: BTreeMap<i64, i64> = BTreeMap::new();
    for b in &batches {
        let thread = b.column(0).as_primitive::<Int64Type>();
        let iter = b.column(1).as_primitive::<Int64Type>();
        let notes = b.column(3).as_dictionary::<Int32Type>();
        let values = notes.values().as_string::<i32>();
        for r in 0..b.num_rows() {
            let (t, i) = (thread.value(r), iter.value(r));
            let expected = next.entry(t).or_insert(0);
            assert_eq!(
                i, *expected,
                "thread {t}: row {i} out of order, lost or twice"
            );
            *expected += 1;
            let note = values.value(notes.keys().value(r) as usize);
            assert_eq!(note, format!("note-{t}-{}", i / 10_000));
        }
    }
    for (t, i) in &returned {
        assert!(
            next.get(t).copied().unwrap_or(0) > *i,
            "thread {t}: row {i} returned but is not in the file ({:?})",
            next.get(t)
        );
    }
    let (_, events) = parquet_io::read_file(&dir.path().join("events.parquet")).unwrap();
    let n: usize = events.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, 1, "the START event");
    assert!(!dir.path().join(".flightlog.spool").exists());
    assert!(notes_column_is_complete(&batches));
}

fn notes_column_is_complete(batches: &[arrow_array::RecordBatch]) -> bool {
    batches.iter().all(|b| b.column(3).null_count() == 0)
}

/// Chunk files in a run folder's spool(s).
fn chunks(run: &std::path::Path) -> Vec<std::path::PathBuf> {
    let spool = run.join(".flightlog.spool");
    flightlog_core::spool::spool_dirs(&spool)
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("chunk-")
        })
        .collect()
}

/// The slow child: no segment is ever due (a long flush interval, large
/// segments). It records 200 rows (under a quarter of its 1,024-row ring),
/// waits for the flusher to drain them, says `slow` and waits for a line on
/// stdin; then records 5,000 rows (laps of the ring, whose slots the flusher
/// frees by moving their rows to its chunk), says `fast`, and waits to be
/// killed.
fn slow_child(dir: &std::path::Path) {
    let mut cfg = RecorderConfig::new(OutputLayout::run_folder(dir));
    cfg.flush_interval_secs = 1000.0;
    cfg.segment_rows = 100_000;
    cfg.ring_capacity = 1024;
    let rec = Recorder::new(schema(), cfg).unwrap();
    let notes = rec.dictionary(3).unwrap();
    let code = notes.code("n").unwrap() as u64;
    let push = |i: i64| {
        rec.push(&[i64_word(0), i64_word(i), f64_word(i as f64), code])
            .unwrap();
    };
    (0..200).for_each(push);
    // The flusher drains at least every 20 ms.
    std::thread::sleep(std::time::Duration::from_millis(300));
    println!("slow");
    // Until the parent has looked at the spool.
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    (200..5_000).for_each(push);
    println!("fast");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

/// The flusher moves drained rows into a chunk of the spool, committed there
/// before their ring slots are freed: a few rows and laps of the ring alike
/// are salvaged from the chunk (and the ring), and a kill -9 loses none.
#[test]
fn drained_rows_survive_kill_9_in_the_chunk_or_the_ring() {
    if let Some(dir) = std::env::var_os(SLOW_CHILD_ENV) {
        slow_child(std::path::Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_child(
        "drained_rows_survive_kill_9_in_the_chunk_or_the_ring",
        SLOW_CHILD_ENV,
        dir.path(),
    );
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    let mut wait_for = |word: &str| wait_for_line(&mut lines, word);
    wait_for("slow");
    let slow_chunks = chunks(dir.path());
    writeln!(proc.stdin.take().unwrap(), "go").unwrap();
    wait_for("fast");
    let fast_chunks = chunks(dir.path());
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();

    assert_eq!(slow_chunks.len(), 1, "200 drained rows: {slow_chunks:?}");
    assert_eq!(
        fast_chunks, slow_chunks,
        "5,000 rows fill the same chunk (16,384 rows), however often the ring laps"
    );
    let report = recover_run(&OutputLayout::run_folder(dir.path())).unwrap();
    assert_eq!(report.torn_rows, 0);
    let (_, batches) = parquet_io::read_file(&dir.path().join("telemetry.parquet")).unwrap();
    let iters: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let c = b.column(1).as_primitive::<Int64Type>();
            (0..b.num_rows()).map(|r| c.value(r)).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        iters,
        (0..5_000).collect::<Vec<i64>>(),
        "every row, once, in order"
    );
}

const COPIED_CHILD_ENV: &str = "FLIGHTLOG_SPOOL_KILL_COPIED_CHILD";
const COPIED_ROWS: usize = 40_000;

/// A schema whose batches copy every column (f32, bool): no batch column is
/// the chunk's own words.
fn copied_schema() -> Schema {
    Schema::new(
        vec![Field::new("x", DType::F32), Field::new("odd", DType::Bool)],
        1,
    )
    .unwrap()
}

/// Records [`COPIED_ROWS`] rows into 1,000-row segments that cannot be
/// written (`segments` is a file), so every batch is kept for a retry, says
/// `done` and waits to be killed.
fn copied_child(dir: &std::path::Path) {
    let mut cfg = RecorderConfig::new(OutputLayout::run_folder(dir));
    cfg.segment_rows = 1_000;
    cfg.flush_interval_secs = 0.05;
    let rec = Recorder::new(copied_schema(), cfg).unwrap();
    // Before the first row: no segment folder exists yet.
    std::fs::write(dir.join("segments"), b"in the way").unwrap();
    for k in 0..COPIED_ROWS {
        let row = [
            flightlog_core::row_layout::f32_word(k as f32),
            (k % 2) as u64,
        ];
        // A call that reports a write error (once each) records nothing:
        // the row is pushed again. The rows already recorded are kept.
        let mut reported = 0;
        while rec.push(&row).is_err() {
            reported += 1;
            assert!(reported < 100, "row {k} refused over and over");
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    println!("done");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

/// Batches whose columns are all copies of the chunk's words still hold their
/// chunk until a segment holds their rows: with every write failing, the
/// 40,000 rows (more than two chunks) stay in the spool, and a kill -9 loses
/// none of them.
#[test]
fn rows_of_batches_kept_for_a_retry_stay_in_their_chunks() {
    if let Some(dir) = std::env::var_os(COPIED_CHILD_ENV) {
        copied_child(std::path::Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_child(
        "rows_of_batches_kept_for_a_retry_stay_in_their_chunks",
        COPIED_CHILD_ENV,
        dir.path(),
    );
    wait_for_line(
        &mut BufReader::new(proc.stdout.take().unwrap()).lines(),
        "done",
    );
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();
    std::fs::remove_file(dir.path().join("segments")).unwrap();
    recover_run(&OutputLayout::run_folder(dir.path())).unwrap();
    let (_, batches) = parquet_io::read_file(&dir.path().join("telemetry.parquet")).unwrap();
    let xs: Vec<f32> = batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column(0)
                .as_primitive::<arrow_array::types::Float32Type>();
            (0..b.num_rows()).map(|r| c.value(r)).collect::<Vec<_>>()
        })
        .collect();
    let first_wrong = xs.iter().enumerate().find(|&(k, &x)| x != k as f32);
    assert_eq!(
        (xs.len(), first_wrong),
        (COPIED_ROWS, None),
        "every row, once, in order"
    );
}

//! One writer per folder and create-only final publishes, through real files:
//! the claim refuses a second recorder; with the claim bypassed, two recorders'
//! segments never collide and the second close never replaces the first's
//! finished file (its rows stay in its segments for recover).

use std::fs;

use flightlog_core::row_layout::i64_word;
use flightlog_core::{
    parquet_io, recover_run, CoreError, DType, Field, OutputLayout, Recorder, RecorderConfig,
    Schema,
};

fn schema() -> Schema {
    Schema::new(
        vec![Field::new("who", DType::I64), Field::new("i", DType::I64)],
        1,
    )
    .unwrap()
}

fn config(dir: &std::path::Path) -> RecorderConfig {
    let mut cfg = RecorderConfig::new(OutputLayout::run_folder(dir));
    cfg.flush_interval_secs = 3600.0;
    cfg.segment_rows = 1000;
    cfg
}

fn push(rec: &Recorder, who: i64, n: i64) {
    for i in 0..n {
        rec.push(&[i64_word(who), i64_word(i)]).unwrap();
    }
}

#[test]
fn a_second_recorder_on_the_folder_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let a = Recorder::new(schema(), config(dir.path())).unwrap();
    let err = Recorder::new(schema(), config(dir.path())).err().unwrap();
    assert!(matches!(err, CoreError::Claimed(_)), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("process {}", std::process::id())),
        "{err}"
    );
    push(&a, 1, 2500);
    let report = a.close().unwrap();
    assert_eq!(report.files[0].1, 2500);
    // Released at close: the folder has no lock file left.
    assert!(!dir.path().join(".flightlog.lock").exists());
}

#[test]
fn with_the_claim_bypassed_segments_do_not_collide_and_a_finished_file_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    // Both bypass the claim (`None`), as a buggy caller or another host could.
    let a = Recorder::new_claimed(schema(), config(dir.path()), None).unwrap();
    let b = Recorder::new_claimed(schema(), config(dir.path()), None).unwrap();
    push(&a, 1, 3000);
    push(&b, 2, 3000);
    a.flush().unwrap();
    b.flush().unwrap();
    let segs: Vec<String> = fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    assert_eq!(segs.len(), 6, "{segs:?}");
    a.close().unwrap();
    let final_path = dir.path().join("telemetry.parquet");
    let before = fs::read(&final_path).unwrap();
    assert_eq!(parquet_io::row_count(&final_path).unwrap(), 3000);
    let err = b.close().unwrap_err();
    assert!(err.to_string().contains("never replaced"), "{err}");
    assert!(err.is_write_error());
    assert_eq!(fs::read(&final_path).unwrap(), before, "a's file replaced");
    // b's rows are still in its segments.
    let left: Vec<_> = fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    let rows: u64 = left.iter().map(|p| parquet_io::row_count(p).unwrap()).sum();
    assert_eq!(rows, 3000);
    // recover refuses to guess (the final file does not list them) and
    // deletes nothing.
    assert!(recover_run(&OutputLayout::run_folder(dir.path())).is_err());
    assert_eq!(fs::read(&final_path).unwrap(), before);
}

#[test]
fn a_closing_direct_write_never_replaces_a_finished_file() {
    // Closed before any flush: the final file is written directly, create-only.
    let dir = tempfile::tempdir().unwrap();
    let a = Recorder::new_claimed(schema(), config(dir.path()), None).unwrap();
    let b = Recorder::new_claimed(schema(), config(dir.path()), None).unwrap();
    push(&a, 1, 10);
    push(&b, 2, 20);
    a.close().unwrap();
    let final_path = dir.path().join("telemetry.parquet");
    let before = fs::read(&final_path).unwrap();
    assert!(b.close().is_err());
    assert_eq!(fs::read(&final_path).unwrap(), before);
    assert_eq!(parquet_io::row_count(&final_path).unwrap(), 10);
}

#[test]
fn a_single_segment_moved_into_place_is_recovered_after_a_crash_between_link_and_unlink() {
    let dir = tempfile::tempdir().unwrap();
    let a = Recorder::new(schema(), config(dir.path())).unwrap();
    push(&a, 1, 500);
    a.flush().unwrap();
    a.close().unwrap(); // one segment: moved into place by link + unlink
    let final_path = dir.path().join("telemetry.parquet");
    // What a crash between the link and the unlink leaves: two names, one file.
    let seg_dir = dir.path().join("segments");
    fs::create_dir_all(&seg_dir).unwrap();
    fs::hard_link(
        &final_path,
        seg_dir.join("telemetry-12345678000001.parquet"),
    )
    .unwrap();
    let report = recover_run(&OutputLayout::run_folder(dir.path())).unwrap();
    assert_eq!(report.leftover_segments_removed, 1);
    assert_eq!(report.telemetry_rows, 500);
    assert_eq!(parquet_io::row_count(&final_path).unwrap(), 500);
}

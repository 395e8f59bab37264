//! The recorder on an object store (object_store's in-memory backend, which
//! honours create-only and conditional puts like S3): segments are objects,
//! close merges them into one object, recovery finishes what a crash left.
#![cfg(feature = "object-store")]

use std::path::Path;
use std::sync::Arc;

use flightlog_core::read::{read_events, read_telemetry};
use flightlog_core::row_layout::{f64_word, i64_word};
use flightlog_core::{
    recover_run, DType, Field, ObjectRoot, OutputLayout, PutKind, Recorder, RecorderConfig, Schema,
    Storage,
};

fn schema() -> Schema {
    Schema::new(
        vec![Field::new("iter", DType::I64), Field::new("E", DType::F64)],
        1,
    )
    .unwrap()
}

fn recorder(root: &Arc<ObjectRoot>, spool: &Path, key: &str, segment_rows: usize) -> Recorder {
    let layout = OutputLayout::run_folder(Path::new(key)).on(Storage::Object(Arc::clone(root)));
    let mut cfg = RecorderConfig::new(layout);
    cfg.flush_interval_secs = 3600.0;
    cfg.segment_rows = segment_rows;
    cfg.run_id = Some("r1".into());
    // The spool of an object-store recording is a local folder: one per test
    // (a temporary folder it removes), so crashed recorders stay apart.
    cfg.spool_dir = Some(spool.to_path_buf());
    Recorder::new(schema(), cfg).unwrap()
}

fn push_rows(rec: &Recorder, range: std::ops::Range<i64>) {
    for i in range {
        let mut row = rec.row_layout().new_row();
        row[0] = i64_word(i);
        row[1] = f64_word(i as f64);
        rec.push(&row).unwrap();
    }
}

fn keys(root: &ObjectRoot, prefix: &str) -> Vec<String> {
    root.list(prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

fn rows(parts: &[(arrow_schema::SchemaRef, Vec<arrow_array::RecordBatch>)]) -> usize {
    parts
        .iter()
        .flat_map(|(_, b)| b.iter())
        .map(|b| b.num_rows())
        .sum()
}

#[test]
fn segments_are_objects_and_close_merges_them() {
    let root = ObjectRoot::in_memory("bucket", 1 << 20, 1 << 20);
    let spool = tempfile::tempdir().unwrap();
    let rec = recorder(&root, spool.path(), "runs/fda_run_1", 1000);
    push_rows(&rec, 0..2500);
    rec.flush().unwrap();
    rec.event("CERT_PASS", Some("{}".into()), None).unwrap();
    push_rows(&rec, 2500..3000);
    rec.flush().unwrap();
    let during = keys(&root, "runs/fda_run_1");
    assert!(
        during
            .iter()
            .filter(|k| k.contains("segments/telemetry-"))
            .count()
            >= 2,
        "{during:?}"
    );
    assert_eq!(rows(&read_telemetry(rec.layout()).unwrap()), 3000);
    let report = rec.close().unwrap();
    assert_eq!(
        keys(&root, "runs/fda_run_1"),
        [
            "runs/fda_run_1/events.parquet",
            "runs/fda_run_1/telemetry.parquet"
        ]
    );
    assert_eq!(report.files[0].1, 3000);
    let layout = OutputLayout::run_folder(Path::new("runs/fda_run_1")).on(Storage::Object(root));
    assert_eq!(rows(&read_telemetry(&layout).unwrap()), 3000);
    assert_eq!(rows(&read_events(&layout).unwrap()), 1);
}

#[test]
fn large_merges_go_up_as_multipart_uploads() {
    // A 64-byte threshold forces every file through the multipart path.
    let root = ObjectRoot::in_memory("bucket", 64, 1024);
    let spool = tempfile::tempdir().unwrap();
    let rec = recorder(&root, spool.path(), "big", 500);
    push_rows(&rec, 0..2000);
    rec.flush().unwrap();
    push_rows(&rec, 2000..4000);
    rec.close().unwrap();
    let layout = OutputLayout::run_folder(Path::new("big")).on(Storage::Object(root));
    let parts = read_telemetry(&layout).unwrap();
    assert_eq!(rows(&parts), 4000);
    let first = parts[0].1[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(first, 0);
}

#[test]
fn a_finished_recording_is_never_overwritten() {
    let root = ObjectRoot::in_memory("bucket", 1 << 20, 1 << 20);
    let spool = tempfile::tempdir().unwrap();
    let rec = recorder(&root, spool.path(), "done", 100);
    push_rows(&rec, 0..10);
    rec.close().unwrap();
    let layout = OutputLayout::run_folder(Path::new("done")).on(Storage::Object(Arc::clone(&root)));
    let Err(err) = Recorder::new(schema(), RecorderConfig::new(layout)) else {
        panic!("a second recording over a finished one was accepted");
    };
    assert!(
        err.to_string().contains("s3://") || err.to_string().contains("memory://"),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn recovery_merges_what_a_crashed_recorder_published() {
    let root = ObjectRoot::in_memory("bucket", 1 << 20, 1 << 20);
    let spool = tempfile::tempdir().unwrap();
    let rec = recorder(&root, spool.path(), "crashed", 100);
    push_rows(&rec, 0..250);
    rec.flush().unwrap();
    // A crash: the recorder never closes (its memory is simply abandoned).
    std::mem::forget(rec);
    let layout =
        OutputLayout::run_folder(Path::new("crashed")).on(Storage::Object(Arc::clone(&root)));
    let report = recover_run(&layout).unwrap();
    assert_eq!(report.telemetry_rows, 250);
    assert!(report.segments_merged >= 1);
    assert!(keys(&root, "crashed/segments").is_empty());
    // Twice is harmless.
    let again = recover_run(&layout).unwrap();
    assert_eq!((again.segments_merged, again.telemetry_rows), (0, 250));
}

#[test]
fn recovery_removes_segments_a_published_merge_already_lists() {
    let root = ObjectRoot::in_memory("bucket", 1 << 20, 1 << 20);
    let spool = tempfile::tempdir().unwrap();
    let rec = recorder(&root, spool.path(), "half", 100);
    push_rows(&rec, 0..300);
    rec.flush().unwrap();
    let segs = keys(&root, "half/segments");
    let saved: Vec<(String, Vec<u8>)> = segs
        .iter()
        .map(|k| (k.clone(), root.get(k).unwrap().unwrap().0.to_vec()))
        .collect();
    rec.close().unwrap();
    // Put the segments back, as if the crash hit between the final put and the deletes.
    for (k, bytes) in saved {
        root.put(&k, bytes, PutKind::Create).unwrap();
    }
    let layout = OutputLayout::run_folder(Path::new("half")).on(Storage::Object(Arc::clone(&root)));
    assert_eq!(
        rows(&read_telemetry(&layout).unwrap()),
        300,
        "never counted twice"
    );
    let report = recover_run(&layout).unwrap();
    assert_eq!(report.leftover_segments_removed, segs.len());
    assert!(keys(&root, "half/segments").is_empty());
}

#[test]
fn a_folder_with_a_crashed_recordings_segments_is_refused() {
    let root = ObjectRoot::in_memory("bucket", 1 << 20, 1 << 20);
    let spool = tempfile::tempdir().unwrap();
    let rec = recorder(&root, spool.path(), "left", 100);
    push_rows(&rec, 0..150);
    rec.flush().unwrap();
    std::mem::forget(rec);
    let layout = OutputLayout::run_folder(Path::new("left")).on(Storage::Object(Arc::clone(&root)));
    let Err(err) = Recorder::new(schema(), RecorderConfig::new(layout)) else {
        panic!("a recording over a crashed one's segments was accepted");
    };
    assert!(err.to_string().contains("already holds segments"), "{err}");
    // A sibling folder whose name extends this one is not confused with it.
    let sibling = recorder(&root, spool.path(), "left2", 100);
    push_rows(&sibling, 0..5);
    sibling.close().unwrap();
}

//! The local spools of object-store recordings share one folder on a host
//! (`FLIGHTLOG_SPOOL_DIR`, the cache folder), each named after its run's
//! location with every character other than letters, digits, `-` and `_`
//! turned into `_`. Two locations that differ only in such characters
//! (`exp/a/b` and `exp/a_b`, `a.b` and `a_b`) get the same name: recovering
//! one run must still take only its own spool, never another run's rows (which
//! would publish rows that run never recorded and delete the other run's
//! protection against a crash).
#![cfg(feature = "object-store")]

use std::path::Path;
use std::sync::Arc;

use flightlog_core::read::read_telemetry;
use flightlog_core::recover::recover_run_with_spool;
use flightlog_core::row_layout::{f64_word, i64_word};
use flightlog_core::spool::spool_dirs;
use flightlog_core::{
    DType, Field, ObjectRoot, OutputLayout, Recorder, RecorderConfig, Schema, Storage,
};

fn schema() -> Schema {
    Schema::new(
        vec![Field::new("iter", DType::I64), Field::new("E", DType::F64)],
        1,
    )
    .unwrap()
}

fn layout(root: &Arc<ObjectRoot>, key: &str) -> OutputLayout {
    OutputLayout::run_folder(Path::new(key)).on(Storage::Object(Arc::clone(root)))
}

fn recorder(root: &Arc<ObjectRoot>, key: &str, spool: &Path) -> Recorder {
    let mut cfg = RecorderConfig::new(layout(root, key));
    // Nothing reaches the store before close: every row is in the spool only.
    cfg.flush_interval_secs = 3600.0;
    cfg.segment_rows = 1 << 20;
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

fn telemetry_rows(root: &Arc<ObjectRoot>, key: &str) -> usize {
    read_telemetry(&layout(root, key))
        .unwrap()
        .iter()
        .flat_map(|(_, b)| b.iter())
        .map(|b| b.num_rows())
        .sum()
}

/// The spool folders (one per recorder) under every run's folder in `spool`.
fn spools(spool: &Path) -> usize {
    std::fs::read_dir(spool)
        .map(|d| d.flatten().map(|e| spool_dirs(&e.path()).len()).sum())
        .unwrap_or(0)
}

#[test]
fn recovering_a_run_never_takes_the_spool_of_a_run_whose_location_differs_only_in_punctuation() {
    let spool = tempfile::tempdir().unwrap();
    let root = ObjectRoot::in_memory("bucket", 1 << 20, 1 << 20);
    for (mine, other) in [
        ("exp/a/b/fda_run_1", "exp/a_b/fda_run_1"),
        ("exp2/a.b/fda_run_1", "exp2/a_b/fda_run_1"),
    ] {
        // A live recording whose 100 rows are in its spool only.
        let live = recorder(&root, other, spool.path());
        push_rows(&live, 0..100);
        assert_eq!(spools(spool.path()), 1);
        // `recover` of another location (nothing was ever recorded there)
        // must not touch it.
        let report = recover_run_with_spool(&layout(&root, mine), Some(spool.path())).unwrap();
        assert_eq!(
            (report.salvaged_rows, telemetry_rows(&root, mine)),
            (0, 0),
            "recover of {mine} published the rows of {other}: {report:?}"
        );
        assert_eq!(
            spools(spool.path()),
            1,
            "recover of {mine} removed the spool of the live recording {other}"
        );
        live.close().unwrap();
        assert_eq!(telemetry_rows(&root, other), 100);
        assert_eq!(spools(spool.path()), 0);
    }
}

/// The same with a run that did record at the other location and died
/// after publishing a segment: its own spool is salvaged, the other one's is
/// kept.
#[test]
fn a_crashed_run_recovered_beside_a_live_one_with_a_colliding_spool_name_keeps_both_apart() {
    let spool = tempfile::tempdir().unwrap();
    let root = ObjectRoot::in_memory("bucket", 1 << 20, 1 << 20);
    let (mine, other) = ("e/x.y/fda_run_1", "e/x_y/fda_run_1");
    let live = recorder(&root, other, spool.path());
    push_rows(&live, 0..100);
    // The crashed one published 50 rows in a segment, then "died": its
    // recorder is leaked (no close), its spool stays as a kill leaves it.
    let crashed = recorder(&root, mine, spool.path());
    push_rows(&crashed, 0..50);
    crashed.flush().unwrap();
    push_rows(&crashed, 50..70);
    std::mem::forget(crashed);
    let report = recover_run_with_spool(&layout(&root, mine), Some(spool.path())).unwrap();
    assert_eq!(telemetry_rows(&root, mine), 70, "{report:?}");
    assert_eq!(
        spools(spool.path()),
        1,
        "recover of {mine} removed the spool of the live recording {other}: {report:?}"
    );
    live.close().unwrap();
    assert_eq!(telemetry_rows(&root, other), 100);
}

/// A recording killed before its first segment leaves its rows in this
/// host's spool only. A new recorder at the same location must refuse to
/// start (as on a local disk, where the spool is in the run folder) until
/// `recover` salvaged them: started, its segments made recover discard the
/// dead one's spool as "another recording's", and the rows whose calls had
/// returned were lost.
#[test]
fn an_unrecovered_spool_refuses_a_new_recorder_at_its_location_only() {
    let spool = tempfile::tempdir().unwrap();
    let root = ObjectRoot::in_memory("bucket", 1 << 20, 1 << 20);
    let key = "runs/fda_run_9";
    let dead = recorder(&root, key, spool.path());
    push_rows(&dead, 0..30);
    // "Killed": never closed; its spool stays as a kill leaves it.
    std::mem::forget(dead);
    let mut cfg = RecorderConfig::new(layout(&root, key));
    cfg.spool_dir = Some(spool.path().to_path_buf());
    let err = Recorder::new(schema(), cfg)
        .err()
        .expect("a second recorder started over an unrecovered spool");
    assert!(err.to_string().contains("recover"), "{err}");
    // A recorder at a location whose spool folder only shares the name is
    // not refused.
    let other = recorder(&root, "runs/fda.run.9", spool.path());
    push_rows(&other, 0..5);
    other.close().unwrap();
    assert_eq!(telemetry_rows(&root, "runs/fda.run.9"), 5);
    let report = recover_run_with_spool(&layout(&root, key), Some(spool.path())).unwrap();
    assert_eq!(report.salvaged_rows, 30, "{report:?}");
    assert_eq!(telemetry_rows(&root, key), 30);
}

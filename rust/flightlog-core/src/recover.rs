//! Finalising a recording whose process died: every published segment is
//! intact (they are published atomically), so recovery only sweeps temp files,
//! merges the segments into the final file, and removes leftovers a merge had
//! already covered.

use std::path::Path;

use crate::atomic_file::sweep_temp_files;
use crate::claim::{Claim, TryClaim};
use crate::error::{CoreError, Result};
use crate::layout::OutputLayout;
use crate::storage::Storage;

/// What recovery did to one recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverReport {
    pub temp_files_removed: usize,
    pub segments_merged: usize,
    pub leftover_segments_removed: usize,
    pub telemetry_rows: u64,
    pub event_rows: u64,
}

/// [`recover_run`] under the folder's one-writer claim (local folders): a
/// folder whose writer is alive (or that another recover is working on) is
/// left alone and reported as `Ok(None)`.
pub fn recover_run_exclusive(layout: &OutputLayout) -> Result<Option<RecoverReport>> {
    let claim = match crate::claim::lock_path(layout) {
        Some(path) if path.parent().is_some_and(Path::is_dir) => match Claim::try_path(&path)? {
            Some(TryClaim::Busy(_)) => return Ok(None),
            Some(TryClaim::Held(c)) => Some(c),
            None => None,
        },
        _ => None,
    };
    let report = recover_run(layout);
    if let Some(c) = claim {
        c.release();
    }
    report.map(Some)
}

/// Recovers a run-folder layout (`final_telemetry` set). Safe to run twice and
/// on a cleanly closed run (it then changes nothing). The caller holds the
/// folder's claim (see [`recover_run_exclusive`]), or knows its writer is
/// dead: recovering a live writer's folder would take its segments.
///
/// On an object store there are no temp files to sweep: an upload a crash
/// interrupted was never visible (a bucket lifecycle rule removes its parts).
pub fn recover_run(layout: &OutputLayout) -> Result<RecoverReport> {
    let mut report = RecoverReport::default();
    let storage = &layout.storage;
    if storage.is_local() {
        let mut dirs = vec![layout.segment_dir.as_path(), layout.events_dir.as_path()];
        if let Some(parent) = layout.final_telemetry.as_deref().and_then(Path::parent) {
            dirs.push(parent);
        }
        dirs.dedup();
        for d in &dirs {
            report.temp_files_removed += sweep_temp_files(d)?;
        }
    }
    let (Some(final_telemetry), Some(final_events)) =
        (&layout.final_telemetry, &layout.final_events)
    else {
        return Ok(report);
    };
    let (merged, removed, rows) = recover_one(
        storage,
        &layout.segment_dir,
        &layout.telemetry_prefix,
        final_telemetry,
    )?;
    report.segments_merged += merged;
    report.leftover_segments_removed += removed;
    report.telemetry_rows = rows;
    let (merged, removed, rows) = recover_one(
        storage,
        &layout.events_dir,
        &layout.events_prefix,
        final_events,
    )?;
    report.segments_merged += merged;
    report.leftover_segments_removed += removed;
    report.event_rows = rows;
    for d in [&layout.segment_dir, &layout.events_dir] {
        storage.remove_dir_if_empty(d);
    }
    Ok(report)
}

/// Returns (segments merged, leftovers removed, rows in the final file).
fn recover_one(
    storage: &Storage,
    segment_dir: &Path,
    prefix: &str,
    final_path: &Path,
) -> Result<(usize, usize, u64)> {
    let segments = storage.segments(segment_dir, prefix)?;
    if storage.exists(final_path)? {
        // The merge published the final file; segments it lists are leftovers
        // of a crash between publishing and deleting them.
        let listed = storage.listed_segments(final_path)?;
        let mut removed = 0;
        for name in &segments {
            if listed.contains(name) || same_file(storage, &segment_dir.join(name), final_path) {
                // Listed by the merge, or the other name of a single segment
                // moved into place by link + unlink (a crash between the two).
                storage.remove(&segment_dir.join(name))?;
                removed += 1;
            } else {
                return Err(CoreError::write(format!(
                    "{} exists and does not list segment {name}: refusing to guess; \
                     move one of them aside and run recover again",
                    storage.describe(final_path)
                )));
            }
        }
        if removed > 0 {
            storage.sync_dir(segment_dir)?;
        }
        return Ok((0, removed, storage.row_count(final_path)?));
    }
    if segments.is_empty() {
        return Ok((0, 0, 0));
    }
    let (rows, _) = storage.finalize(segment_dir, &segments, final_path, None, || Ok(0))?;
    Ok((segments.len(), 0, rows))
}

/// True when two local paths are links to one file.
#[cfg(unix)]
fn same_file(storage: &Storage, a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if !storage.is_local() {
        return false;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Without file ids in stable std (Windows), two names of one file are
/// recognised by equal content instead: removing the segment then loses
/// nothing either way.
#[cfg(not(unix))]
fn same_file(storage: &Storage, a: &Path, b: &Path) -> bool {
    if !storage.is_local() {
        return false;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) if x.len() == y.len() => {
            matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
        }
        _ => false,
    }
}

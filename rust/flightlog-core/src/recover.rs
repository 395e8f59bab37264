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

/// Recovers an output-file recording (`FlightRecorder("x.parquet")`, see
/// [`OutputLayout::output_file`]) under its claim: the plain form's segments
/// are merged into `file`; a replacing recording (`overwrite=True`) killed
/// before it finished is merged in its `replacement/` folder and then
/// replaces `file`, as its close would have. `Ok(None)` while a writer (or
/// another recover) holds the claim.
pub fn recover_output_file(file: &Path) -> Result<Option<RecoverReport>> {
    let plain = OutputLayout::output_file(file, false);
    let claim = match crate::claim::lock_path(&plain) {
        Some(path) if path.parent().is_some_and(Path::is_dir) => match Claim::try_path(&path)? {
            Some(TryClaim::Busy(_)) => return Ok(None),
            Some(TryClaim::Held(c)) => Some(c),
            None => None,
        },
        _ => None,
    };
    let result = (|| {
        let mut report = recover_run(&plain)?;
        let replacing = OutputLayout::output_file(file, true);
        let staging = replacing.segment_dir.parent().unwrap_or(Path::new("."));
        if staging.is_dir() {
            let r = recover_run(&replacing)?;
            report.temp_files_removed += r.temp_files_removed;
            report.segments_merged += r.segments_merged;
            report.leftover_segments_removed += r.leftover_segments_removed;
            if publish_replacement(file)? {
                report.telemetry_rows = r.telemetry_rows;
                report.event_rows = r.event_rows;
            }
        }
        Ok(report)
    })();
    if let Some(c) = claim {
        c.release();
    }
    result.map(Some)
}

/// Moves a finished replacing recording of output file `file` into place:
/// its telemetry replaces `file` and its events the sidecar's
/// `events.parquet`, each by one `rename` (atomic: a reader sees the old file
/// or the new one, never a missing or partial one), then the folder is
/// synced. Each staged file that is absent was already moved (a crash between
/// the two renames), so running this twice is safe. True if it moved anything.
pub fn publish_replacement(file: &Path) -> Result<bool> {
    let mut moved = false;
    for (staged, target) in OutputLayout::replacement_targets(file) {
        match std::fs::rename(&staged, &target) {
            Ok(()) => {
                let dir = target
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                crate::atomic_file::fsync_dir(dir)?;
                moved = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CoreError::io("replace", &target, e)),
        }
    }
    let staging = crate::layout::sidecar_dir(file).join(crate::layout::REPLACEMENT_DIR);
    // Only when empty: anything left (a segment) stays for the next recover.
    let _ = std::fs::remove_dir(&staging);
    Ok(moved)
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

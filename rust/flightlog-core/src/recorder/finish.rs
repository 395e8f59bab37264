//! A recording's final files: checked free before the first row (local and
//! object-store pre-checks), and made at `close` (the last flush, then the
//! merge of the segments, or the files the closing flush wrote directly).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::thread;

use super::batch::telemetry_props;
use super::events::{events_arrow_schema, events_props};
use super::flusher::panic_message;
use super::{lock, Recorder, Shared};
use crate::error::{CoreError, Result};
use crate::layout::OutputLayout;
use crate::storage::{key_of, Storage};
use crate::store::ObjectRoot;

/// Files a closed recorder left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Published files with their row counts and sizes.
    pub files: Vec<(PathBuf, u64, u64)>,
}

impl Recorder {
    /// Makes everything durable, stops the flusher, merges segments into the
    /// final files and removes them. Idempotent: a second call returns
    /// `Ok` with an empty report. Releases the folder's claim, also when it
    /// fails (the segments then stay for `recover`). In a forked child it does
    /// nothing: the files are the parent's.
    pub fn close(&self) -> Result<CloseReport> {
        if !self.owner.is_current() {
            return Ok(CloseReport::default());
        }
        let result = self.close_owned();
        if let Some(claim) = &self.claim {
            claim.release();
        }
        result
    }

    /// The published telemetry file's footer must hold every row written.
    fn check_final_rows(&self, report: &CloseReport) -> Result<()> {
        let layout = &self.shared.config.layout;
        let Some(final_path) = &layout.final_telemetry else {
            return Ok(());
        };
        if !report.files.iter().any(|(p, _, _)| p == final_path) {
            return Ok(());
        }
        let written = self.shared.counters.written.load(Ordering::Relaxed);
        let found = layout.storage.row_count(final_path)?;
        if found != written {
            return Err(CoreError::write(format!(
                "{} holds {found} rows in its footer, but this recorder wrote {written}: \
                 the file is not this recording's alone; run recover on the folder",
                layout.storage.describe(final_path)
            )));
        }
        Ok(())
    }

    fn close_owned(&self) -> Result<CloseReport> {
        let _guard = lock(&self.close_lock);
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(CloseReport::default());
        }
        // No push succeeds after this, producers waiting for room included
        // (they fail with `Closed`), and every push that did succeed is below
        // the closing flush's target: producers that passed the closed check
        // above before it was set cannot slip a row in after the final drain.
        let mut spins = 0u32;
        self.shared.gate.close(&self.shared.lanes, || {
            // A producer is between its closed check and its publish: a few
            // instructions, unless it was preempted there.
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        });
        // A barrier for `push_event`, which reads `closed` under this lock.
        drop(lock(&self.shared.events));
        let flush_result = self.shared.flush_and_wait(true);
        let outcome = match lock(&self.flusher).take().map(|h| h.join()) {
            Some(Ok(Ok(outcome))) => outcome,
            Some(Ok(Err(msg))) => return Err(self.flusher_died(&msg)),
            Some(Err(panic)) => return Err(self.flusher_died(&panic_message(&panic))),
            None => return Ok(CloseReport::default()),
        };
        // Every row and event is in a published file (a segment, or the final
        // file): the spool has nothing recovery would need. Otherwise it stays
        // for `recover`, which salvages what the disk refused here.
        // Nothing writes the rings or the spool's files any more (the gate is
        // closed, the flusher stopped): let go of them, so that threads that
        // recorded (their registrations outlive the recorder) hold no file.
        self.shared.spool.close_files();
        for lane in self.shared.lane_rings.iter().filter_map(OnceLock::get) {
            lane.ring.memory().release_file();
        }
        if outcome.rows_not_written == 0 && outcome.events_not_written == 0 {
            self.shared.spool.remove();
        }
        // An error the caller has not seen yet wins over the merge: the merge
        // still runs so that everything that was written ends up in one file.
        let mut earlier = self.take_error().err().or(flush_result.err());
        // Rows still held for a retry die with the recorder: count them.
        if outcome.rows_not_written > 0 || outcome.events_not_written > 0 {
            self.shared
                .counters
                .lost
                .fetch_add(outcome.rows_not_written, Ordering::Relaxed);
            let cause = earlier
                .take()
                .map(|e| {
                    e.to_string()
                        .replace("kept in memory for a retry", "not written")
                })
                .unwrap_or_else(|| "the last write failed".into());
            earlier = Some(CoreError::write(format!(
                "{cause}; the recorder is closed: {} rows and {} events that were kept for a retry \
                 are lost (counted in rows_lost)",
                outcome.rows_not_written, outcome.events_not_written
            )));
        }
        // Segments deleted behind our back (the run folder removed, a person
        // cleaning up) cannot be merged: merge the rest and say so.
        let layout = &self.shared.config.layout;
        let mut vanished = Vec::new();
        let mut telemetry_segments = Vec::new();
        for (name, rows) in &outcome.telemetry_segments {
            let present = layout
                .storage
                .exists(&layout.segment_dir.join(name))
                .unwrap_or(true);
            if present {
                telemetry_segments.push(name.clone());
            } else {
                vanished.push(name.clone());
                self.shared
                    .counters
                    .lost
                    .fetch_add(*rows, Ordering::Relaxed);
            }
        }
        let event_segments: Vec<String> = outcome
            .event_segments
            .iter()
            .filter(|n| {
                layout
                    .storage
                    .exists(&layout.events_dir.join(n))
                    .unwrap_or(true)
            })
            .cloned()
            .collect();
        let lost = self.shared.counters.lost.load(Ordering::Relaxed);
        let mut report = CloseReport::default();
        let merge = (|| -> Result<()> {
            if let (Some(final_path), Some((rows, size))) =
                (&layout.final_telemetry, outcome.final_telemetry)
            {
                report.files.push((final_path.clone(), rows, size));
            } else if let Some(final_path) = &layout.final_telemetry {
                let expected: u64 = outcome
                    .telemetry_segments
                    .iter()
                    .filter(|(n, _)| telemetry_segments.contains(n))
                    .map(|(_, rows)| rows)
                    .sum();
                let (rows, size) = layout.storage.finalize(
                    &layout.segment_dir,
                    &telemetry_segments,
                    final_path,
                    Some(expected),
                    || empty_file(final_path, &self.shared),
                )?;
                if telemetry_segments.len() != 1 || !layout.storage.is_local() {
                    // A merge (or an empty file) wrote new bytes; a rename did not.
                    self.shared
                        .counters
                        .bytes
                        .fetch_add(size, Ordering::Relaxed);
                }
                report.files.push((final_path.clone(), rows, size));
            } else {
                for (name, rows) in &outcome.telemetry_segments {
                    if telemetry_segments.contains(name) {
                        let p = layout.segment_dir.join(name);
                        let size = layout.storage.size(&p)?;
                        report.files.push((p, *rows, size));
                    }
                }
            }
            if let (Some(final_events), Some((rows, size))) =
                (&layout.final_events, outcome.final_events)
            {
                report.files.push((final_events.clone(), rows, size));
            } else if let Some(final_events) = &layout.final_events {
                let (rows, size) = layout.storage.finalize(
                    &layout.events_dir,
                    &event_segments,
                    final_events,
                    None,
                    || {
                        layout.storage.write_parquet(
                            final_events,
                            events_arrow_schema(),
                            &[],
                            events_props(&self.shared, 0),
                        )
                    },
                )?;
                report.files.push((final_events.clone(), rows, size));
            } else {
                for name in &event_segments {
                    let p = layout.events_dir.join(name);
                    let size = layout.storage.size(&p)?;
                    report
                        .files
                        .push((p.clone(), layout.storage.row_count(&p)?, size));
                }
            }
            layout.storage.remove_dir_if_empty(&layout.segment_dir);
            Ok(())
        })();
        if let Some(e) = earlier {
            return Err(e);
        }
        merge?;
        if vanished.is_empty() && lost == 0 {
            self.check_final_rows(&report)?;
        }
        if !vanished.is_empty() {
            return Err(CoreError::write(format!(
                "published segments were deleted by something else before close: {}; \
                 their rows are lost, the others are merged",
                vanished.join(", ")
            )));
        }
        if lost > 0 {
            return Err(CoreError::write(format!(
                "{lost} rows could not be written and were lost; see the earlier write errors"
            )));
        }
        Ok(report)
    }
}

impl Recorder {
    /// The flusher thread died with its state (segments not merged, rows in
    /// memory): count every accepted row not in a published file as lost, so
    /// that the counters still add up, and say what to do.
    #[cold]
    fn flusher_died(&self, msg: &str) -> CoreError {
        let c = &self.shared.counters;
        let stats = self.stats();
        let accounted = stats.rows_written
            + stats.rows_sampled_out
            + stats.rows_dropped
            + stats.rows_over_budget
            + stats.rows_lost;
        let missing = stats.rows_offered.saturating_sub(accounted);
        c.lost.fetch_add(missing, Ordering::Relaxed);
        // The panic was also recorded as the pending error; it is reported here.
        let _ = self.take_error();
        CoreError::write(format!(
            "the flusher thread panicked: {msg}; {missing} rows not yet written are lost \
             (counted in rows_lost); published segments are intact, run recover"
        ))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.owner.is_current() {
            // A forked child: the flusher thread is the parent's. Dropping its
            // handle would detach a thread that does not exist here.
            if let Ok(mut handle) = self.flusher.try_lock() {
                std::mem::forget(handle.take());
            }
            return;
        }
        // Closing at drop keeps every row; errors have nowhere to go here and
        // the published segments stay on disk for `recover` if the merge fails.
        let _ = self.close();
    }
}

pub(super) fn prepare_dirs(layout: &OutputLayout) -> Result<()> {
    // The folders that hold the segment folders exist from the start; the
    // segment folders themselves appear with the first flush (a short run
    // closed before it ever flushes never creates them). Object stores have
    // no folders.
    let storage = &layout.storage;
    if let Storage::Object(root) = storage {
        return prepare_object_layout(layout, root);
    }
    for dir in [&layout.segment_dir, &layout.events_dir] {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| CoreError::io("create directory", parent, e))?;
        }
    }
    for f in [&layout.final_telemetry, &layout.final_events]
        .into_iter()
        .flatten()
    {
        if storage.exists(f)? {
            return Err(CoreError::Exists(format!(
                "{} already exists: a recording is never appended to a finished one; use a new folder",
                storage.describe(f)
            )));
        }
    }
    if !storage
        .segments(&layout.segment_dir, &layout.telemetry_prefix)?
        .is_empty()
    {
        return Err(CoreError::Exists(format!(
            "{} already holds segments named {}*: recover or remove them, or use a new folder",
            storage.describe(&layout.segment_dir),
            layout.telemetry_prefix
        )));
    }
    Ok(())
}

/// The object-store twin of the checks above, in one listing of the run folder
/// instead of a request per file. Append-mode parts are not listed: their
/// folder holds every run's parts, so a listing per run start would grow with
/// the flow; a part name another run already took is refused by the
/// create-only put of the first flush instead (the rows stay for a retry).
fn prepare_object_layout(layout: &OutputLayout, root: &ObjectRoot) -> Result<()> {
    let (Some(final_telemetry), Some(final_events)) =
        (&layout.final_telemetry, &layout.final_events)
    else {
        return Ok(());
    };
    let Some(run_dir) = final_telemetry.parent() else {
        return Ok(());
    };
    let finals = [key_of(final_telemetry)?, key_of(final_events)?];
    let segment_prefix = format!(
        "{}/{}",
        key_of(&layout.segment_dir)?,
        layout.telemetry_prefix
    );
    for object in root.list(&key_of(run_dir)?)? {
        if finals.contains(&object.key) {
            return Err(CoreError::Exists(format!(
                "{} already exists: a recording is never appended to a finished one; use a new folder",
                root.url(&object.key)
            )));
        }
        if object.key.starts_with(&segment_prefix) && object.key.ends_with(".parquet") {
            return Err(CoreError::Exists(format!(
                "{} already holds segments named {}*: recover or remove them, or use a new folder",
                layout.storage.describe(&layout.segment_dir),
                layout.telemetry_prefix
            )));
        }
    }
    Ok(())
}

fn empty_file(path: &Path, shared: &Shared) -> Result<u64> {
    shared.config.layout.storage.write_parquet(
        path,
        Arc::clone(&shared.arrow_schema),
        &[],
        telemetry_props(shared, Vec::new()),
    )
}

//! A recording's final files: checked free before the first row (local and
//! object-store pre-checks), and made at `close` (the last flush, then the
//! merge of the segments, or the files the closing flush wrote directly).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::thread;

use super::batch::telemetry_props;
use super::chunks::Pending;
use super::events::{events_arrow_schema, events_props};
use super::flusher::{panic_message, FlusherOutcome};
use super::{lock, Recorder, Shared};
use crate::error::{CoreError, FlusherError, Result};
#[cfg(feature = "object-store")]
use crate::object_root::ObjectRoot;
use crate::output_layout::OutputLayout;
#[cfg(feature = "object-store")]
use crate::storage::{key_of, Storage};

/// Files a closed recorder left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Published files with their row counts and sizes.
    pub files: Vec<(PathBuf, u64, u64)>,
    /// Only from [`Recorder::close_deferring_folder_sync`]: the folder whose
    /// fsync the caller owes (the final files' names are in place, their data
    /// durable, the names not yet). None when close did every fsync.
    pub unsynced_folder: Option<PathBuf>,
    /// The recording replaced its output file ([`crate::OutputLayout::replaces`]):
    /// its final files are in place of the old ones.
    pub replaced: bool,
}

impl Recorder {
    /// Makes everything durable, stops the flusher, merges segments into the
    /// final files and removes them. Idempotent: a second call returns
    /// `Ok` with an empty report. Releases the folder's claim, also when it
    /// fails (the segments then stay for `recover`). In a forked child it does
    /// nothing: the files are the parent's.
    pub fn close(&self) -> Result<CloseReport> {
        self.close_with(false)
    }

    /// [`close`](Self::close), except that when the closing flush publishes
    /// the final files of a short recording together, the folder fsync that
    /// makes their names durable may be left to the caller:
    /// [`CloseReport::unsynced_folder`] then names the folder, and the
    /// caller must fsync it before anything that lists these files can be
    /// durable (a run's final manifest: `atomic_file::publish_bytes_after`
    /// runs the two fsyncs at the same time) and before it reports the
    /// recording durable. On an error nothing is owed: close fsyncs the
    /// folder itself first.
    pub fn close_deferring_folder_sync(&self) -> Result<CloseReport> {
        self.close_with(true)
    }

    fn close_with(&self, defer_folder_sync: bool) -> Result<CloseReport> {
        if !self.owner.is_current() {
            return Ok(CloseReport::default());
        }
        if defer_folder_sync {
            lock(&self.shared.flush).defer_folder_sync = true;
        }
        let mut owed = None;
        let mut result = self.close_owned(&mut owed);
        if let Some(folder) = owed {
            match &mut result {
                Ok(report) => report.unsynced_folder = Some(folder),
                // Not handed over with an error: the names the flush placed
                // are made durable here, as publish_together would have.
                Err(_) => {
                    let _ = crate::atomic_file::fsync_dir(&folder);
                }
            }
        }
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

    fn close_owned(&self, owed: &mut Option<PathBuf>) -> Result<CloseReport> {
        let _guard = lock(&self.close_lock);
        // The producers' word first (see `REFUSE_CLOSED`); set once, never
        // cleared, under `close_lock`.
        self.shared
            .row_path
            .refuse
            .fetch_or(super::REFUSE_CLOSED, Ordering::AcqRel);
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(CloseReport::default());
        }
        self.stop_producers();
        let flush_result = self.shared.flush_and_wait(true);
        let mut outcome = match lock(&self.flusher).take().map(|h| h.join()) {
            Some(Ok(Ok(outcome))) => outcome,
            Some(Ok(Err(msg))) => return Err(self.flusher_died(&msg)),
            Some(Err(panic)) => return Err(self.flusher_died(&panic_message(&panic))),
            None => return Ok(CloseReport::default()),
        };
        owed.clone_from(&outcome.unsynced_folder);
        let chunks = outcome.chunks.take();
        self.release_spool(&outcome, chunks);
        self.publish_and_check(flush_result, &outcome)
    }

    /// Step 4 of `close`: the final files, then whatever went wrong on the
    /// way (an error the caller has not seen wins).
    fn publish_and_check(
        &self,
        flush_result: Result<()>,
        outcome: &FlusherOutcome,
    ) -> Result<CloseReport> {
        // An error the caller has not seen yet wins over the merge: the merge
        // still runs so that everything that was written ends up in one file.
        let earlier = self.unreported_error(flush_result, outcome);
        let present = self.present_segments(outcome);
        let lost = self.shared.counters.lost.load(Ordering::Relaxed);
        let mut report = CloseReport::default();
        let merge = self.publish_final_files(outcome, &present, &mut report);
        if let Some(e) = earlier {
            return Err(e);
        }
        merge?;
        if present.vanished.is_empty() && lost == 0 {
            self.check_final_rows(&report)?;
        }
        if !present.vanished.is_empty() {
            return Err(CoreError::write(format!(
                "published segments were deleted by something else before close: {}; \
                 their rows or events are lost, the others are merged",
                present.vanished.join(", ")
            )));
        }
        if lost > 0 {
            return Err(CoreError::write(format!(
                "{lost} rows could not be written and were lost; see the earlier write errors"
            )));
        }
        // A replacing recording moves into place while it still holds the
        // claim (released after this, in `close_with`): a recorder that claims
        // the output file next finds it whole, never this one's staged files.
        if let Some(file) = &self.shared.config.layout.replaces {
            crate::recover::publish_replacement(file)?;
            report.replaced = true;
        }
        Ok(report)
    }

    /// Step 1 of `close`: no push succeeds after this, producers waiting for
    /// room included (they fail with `Closed`), and every push that did
    /// succeed is below the closing flush's target: producers that passed the
    /// closed check before it was set cannot slip a row in after the final
    /// drain.
    fn stop_producers(&self) {
        let mut spins = 0u32;
        // The lanes' flags are listed after the gate is closed (a thread that
        // maps its lane meanwhile and finds the gate open is found).
        let flags = || {
            self.shared
                .lane_rings
                .iter()
                .filter_map(OnceLock::get)
                .map(|lane| &lane.busy)
        };
        self.shared.gate.close(flags, || {
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
    }

    /// Step 3 of `close` (after the closing flush and the flusher's exit):
    /// every row and event is in a published file (a segment, or the final
    /// file), so the spool has nothing recovery would need and goes.
    /// Otherwise it stays for `recover`, which salvages what the disk refused
    /// here.
    ///
    /// The spool's names go at once. A long recording's chunks (tens of MB
    /// of mapped pages) are unmapped on a thread of their own: their files'
    /// pages are freed with their last mapping, which costs about what
    /// writing them did, and nothing in `close` needs to wait for it. Their
    /// names are already gone, so a process that exits meanwhile leaves
    /// nothing behind (the kernel frees the unlinked files with the process).
    fn release_spool(&self, outcome: &FlusherOutcome, chunks: Option<Pending>) {
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
        if let Some(chunks) = chunks.filter(|c| c.chunks_mapped() > 1) {
            // A spawn that fails drops the chunks (with its closure) here.
            let _ = thread::Builder::new()
                .name("flightlog-unmap".into())
                .spawn(move || drop(chunks));
        }
    }

    /// The error `close` returns before anything else: one the caller has not
    /// seen yet, or that of the closing flush; rows still held for a retry
    /// die with the recorder and are counted (and said) here.
    fn unreported_error(
        &self,
        flush_result: Result<()>,
        outcome: &FlusherOutcome,
    ) -> Option<CoreError> {
        let earlier = self.take_error().err().or(flush_result.err());
        if outcome.rows_not_written == 0 && outcome.events_not_written == 0 {
            return earlier;
        }
        self.shared
            .counters
            .lost
            .fetch_add(outcome.rows_not_written, Ordering::Relaxed);
        let cause = earlier.map(|e| match e {
            CoreError::Flusher(f) => Box::new(CoreError::Flusher(f.at_close())),
            other => Box::new(other),
        });
        Some(
            FlusherError::LostAtClose {
                cause,
                rows: outcome.rows_not_written,
                events: outcome.events_not_written,
            }
            .into(),
        )
    }

    /// The published segments still there to merge. Segments deleted behind
    /// our back (the run folder removed, a person cleaning up) cannot be
    /// merged: their rows are counted lost, and `close` merges the rest and
    /// says so.
    fn present_segments(&self, outcome: &FlusherOutcome) -> PresentSegments {
        let layout = &self.shared.config.layout;
        let mut present = PresentSegments::default();
        for (name, rows) in &outcome.telemetry_segments {
            let there = layout
                .storage
                .exists(&layout.segment_dir.join(name))
                .unwrap_or(true);
            if there {
                present.telemetry.push(name.clone());
            } else {
                present.vanished.push(name.clone());
                self.shared
                    .counters
                    .lost
                    .fetch_add(*rows, Ordering::Relaxed);
            }
        }
        // Events too: a vanished events segment makes close fail as a vanished
        // telemetry segment does (an empty events.parquet and no error would
        // hide that events the recorder had published are gone).
        for name in &outcome.event_segments {
            let there = layout
                .storage
                .exists(&layout.events_dir.join(name))
                .unwrap_or(true);
            if there {
                present.events.push(name.clone());
            } else {
                present.vanished.push(name.clone());
            }
        }
        present
    }

    /// The last step of `close`: the final telemetry and events files (merged
    /// from the segments, or already written directly by the closing flush),
    /// or, for a layout without final files, the segments themselves, into
    /// `report`.
    fn publish_final_files(
        &self,
        outcome: &FlusherOutcome,
        present: &PresentSegments,
        report: &mut CloseReport,
    ) -> Result<()> {
        self.shared.sync_first()?;
        self.publish_final_telemetry(outcome, &present.telemetry, report)?;
        self.publish_final_events(outcome, &present.events, report)?;
        let layout = &self.shared.config.layout;
        layout.storage.remove_dir_if_empty(&layout.segment_dir);
        Ok(())
    }

    fn publish_final_telemetry(
        &self,
        outcome: &FlusherOutcome,
        telemetry_segments: &[String],
        report: &mut CloseReport,
    ) -> Result<()> {
        let layout = &self.shared.config.layout;
        if let (Some(final_path), Some((rows, size))) =
            (&layout.final_telemetry, outcome.final_telemetry)
        {
            report.files.push((final_path.clone(), rows, size));
        } else if layout.final_telemetry.is_some() && outcome.rows_not_written > 0 {
            // Rows the closing flush could not write are still in the spool:
            // a final file now would hold the others only, and `recover`
            // never adds to a published final file. The segments stay;
            // `recover` salvages the spool and merges them all.
        } else if let Some(final_path) = &layout.final_telemetry {
            let expected: u64 = outcome
                .telemetry_segments
                .iter()
                .filter(|(n, _)| telemetry_segments.contains(n))
                .map(|(_, rows)| rows)
                .sum();
            let (rows, size) = layout.storage.finalize(
                &layout.segment_dir,
                telemetry_segments,
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
        Ok(())
    }

    fn publish_final_events(
        &self,
        outcome: &FlusherOutcome,
        event_segments: &[String],
        report: &mut CloseReport,
    ) -> Result<()> {
        let layout = &self.shared.config.layout;
        if let (Some(final_events), Some((rows, size))) =
            (&layout.final_events, outcome.final_events)
        {
            report.files.push((final_events.clone(), rows, size));
        } else if layout.final_events.is_some() && outcome.events_not_written > 0 {
            // As for the rows: the events stay for `recover`.
        } else if let Some(final_events) = &layout.final_events {
            let (rows, size) = layout.storage.finalize(
                &layout.events_dir,
                event_segments,
                final_events,
                None,
                || {
                    layout.storage.write_parquet(
                        final_events,
                        events_arrow_schema(),
                        &[],
                        events_props(&self.shared, 0),
                        1,
                    )
                },
            )?;
            report.files.push((final_events.clone(), rows, size));
        } else {
            for name in event_segments {
                let p = layout.events_dir.join(name);
                let size = layout.storage.size(&p)?;
                report
                    .files
                    .push((p.clone(), layout.storage.row_count(&p)?, size));
            }
        }
        Ok(())
    }
}

/// The segments `close` found still published, and those that vanished.
#[derive(Default)]
struct PresentSegments {
    telemetry: Vec<String>,
    events: Vec<String>,
    vanished: Vec<String>,
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
        FlusherError::Died {
            panic: msg.to_owned(),
            missing,
        }
        .into()
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
    if layout.storage.is_local() {
        for dir in [&layout.segment_dir, &layout.events_dir] {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| CoreError::io("create directory", parent, e))?;
            }
        }
    }
    check_fresh(layout)
}

/// Refuses a layout that holds a finished recording's final files, or
/// segments of a recording not merged yet: a recording never mixes its rows
/// with another's. Checked by a recorder at construction, also by one whose
/// schema comes with its first row (whose early events would otherwise be
/// spooled for a recording that cannot start).
pub(super) fn check_fresh(layout: &OutputLayout) -> Result<()> {
    let storage = &layout.storage;
    #[cfg(feature = "object-store")]
    if let Storage::Object(root) = storage {
        return prepare_object_layout(layout, root);
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
#[cfg(feature = "object-store")]
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
        1,
    )
}

#[cfg(test)]
mod tests {
    use crate::error::{CoreError, FlusherError};
    use crate::row_layout::{f64_word, i64_word};
    use crate::{DType, Field, OutputLayout, Recorder, RecorderConfig, Schema};

    fn recorder(run: &std::path::Path) -> Recorder {
        let schema = Schema::new(
            vec![Field::new("iter", DType::I64), Field::new("E", DType::F64)],
            1,
        )
        .unwrap();
        let mut cfg = RecorderConfig::new(OutputLayout::run_folder(run));
        cfg.flush_interval_secs = 3600.0;
        Recorder::new(schema, cfg).unwrap()
    }

    /// A write error of the flusher reaches `flush` as a value (not text),
    /// and `close` reports the rows it kept as not written, typed too.
    #[test]
    fn flusher_errors_arrive_typed_and_close_says_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let rec = recorder(&run);
        for i in 0..10 {
            rec.push(&[i64_word(i), f64_word(0.5)]).unwrap();
        }
        // The run folder vanishes: no segment folder can be made in it.
        std::fs::remove_dir_all(&run).unwrap();
        let err = rec.flush().unwrap_err();
        assert!(
            matches!(
                &err,
                CoreError::Flusher(FlusherError::Segment {
                    kept: 10,
                    lost: 0,
                    closed: false,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(err.is_write_error());
        assert!(
            err.to_string()
                .contains("10 rows kept in memory for a retry"),
            "{err}"
        );
        let err = rec.close().unwrap_err();
        let CoreError::Flusher(FlusherError::LostAtClose {
            cause: Some(cause),
            rows: 10,
            events: 0,
        }) = &err
        else {
            panic!("{err:?}");
        };
        assert!(
            matches!(
                **cause,
                CoreError::Flusher(FlusherError::Segment { closed: true, .. })
            ),
            "{cause:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("10 rows not written") && !msg.contains("kept in memory"),
            "{msg}"
        );
        assert_eq!(rec.stats().rows_lost, 10);
    }

    /// A short run's close publishes both final files at once (one folder
    /// fsync): both hold everything, and nothing else is left in the folder.
    #[test]
    fn a_short_run_closes_into_both_final_files_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let rec = recorder(dir.path());
        for i in 0..10 {
            rec.push(&[i64_word(i), f64_word(0.5)]).unwrap();
        }
        rec.event("MARK", Some("{\"k\": 1}".into()), None).unwrap();
        let report = rec.close().unwrap();
        let telemetry = dir.path().join("telemetry.parquet");
        let events = dir.path().join("events.parquet");
        assert_eq!(report.files.len(), 2, "{report:?}");
        assert_eq!((&report.files[0].0, report.files[0].1), (&telemetry, 10));
        assert_eq!((&report.files[1].0, report.files[1].1), (&events, 1));
        assert_eq!(crate::parquet_io::row_count(&telemetry).unwrap(), 10);
        assert_eq!(crate::parquet_io::row_count(&events).unwrap(), 1);
        let stats = rec.stats();
        assert_eq!(
            (stats.rows_written, stats.segments, stats.rows_lost),
            (10, 1, 0)
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // No segments folder, no temp file; the claim file may stay.
        assert!(
            names.iter().all(|n| n == "telemetry.parquet"
                || n == "events.parquet"
                || n.starts_with(".flightlog")),
            "{names:?}"
        );
    }
}

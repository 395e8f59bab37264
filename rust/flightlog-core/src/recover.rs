//! Finalising a recording whose process died: every published segment is
//! intact (they are published atomically), so recovery salvages the rows and
//! events the spool held beyond them (one last segment), sweeps temp files,
//! merges the segments into the final file, and removes leftovers a merge had
//! already covered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::atomic_file::sweep_temp_files;
use crate::claim::{Claim, TryClaim};
use crate::error::{CoreError, Result};
use crate::output_layout::OutputLayout;
use crate::recorder::{salvage_props, salvaged_batches, spool_dir, RecorderConfig};
use crate::spool::{self, EVENTS_UPTO_KEY, LANES_KEY};
use crate::storage::Storage;

/// What recovery did to one recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverReport {
    pub temp_files_removed: usize,
    pub segments_merged: usize,
    pub leftover_segments_removed: usize,
    pub telemetry_rows: u64,
    pub event_rows: u64,
    /// Rows and events taken from the spool (published after the last
    /// segment, so never written by the dead recorder itself).
    pub salvaged_rows: u64,
    pub salvaged_events: u64,
    /// Spool slots whose stamps did not match (not trusted, not salvaged).
    pub torn_rows: u64,
    /// Spools not used (written before a reboot, or unreadable), with why.
    pub spools_discarded: Vec<String>,
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
    let staging =
        crate::output_layout::sidecar_dir(file).join(crate::output_layout::REPLACEMENT_DIR);
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
    recover_run_with_spool(layout, None)
}

/// [`recover_run`], with the spool folder of an object-store recording
/// (`spool_base`: the local folder its recorder used; None: the default).
pub fn recover_run_with_spool(
    layout: &OutputLayout,
    spool_base: Option<&Path>,
) -> Result<RecoverReport> {
    let mut report = RecoverReport::default();
    let storage = &layout.storage;
    salvage_spools(layout, spool_base, &mut report)?;
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
        return leftovers_of_published(storage, segment_dir, &segments, final_path);
    }
    if segments.is_empty() {
        return Ok((0, 0, 0));
    }
    // Tests make another recover run here (two recovers racing on one run).
    fail::fail_point!("recover::before_merge");
    match storage.finalize(segment_dir, &segments, final_path, None, || Ok(0)) {
        Ok((rows, _)) => Ok((segments.len(), 0, rows)),
        // An object store has no claim to keep two recovers off one run: the
        // other one merged first (a segment vanished under this merge, or its
        // final file won the create-only put). Its file is the run's if it
        // lists every segment still here; one it does not list (a spool the
        // other salvaged after this one looked) is refused as after a crash.
        Err(e) if !storage.is_local() && matches!(storage.exists(final_path), Ok(true)) => {
            let segments = storage.segments(segment_dir, prefix).map_err(|_| e)?;
            leftovers_of_published(storage, segment_dir, &segments, final_path)
        }
        Err(e) => Err(e),
    }
}

/// The final file is published: `segments` it lists are leftovers of a crash
/// between publishing and deleting them (removed); one it does not list is an
/// error. Returns (0, leftovers removed, rows in the final file).
fn leftovers_of_published(
    storage: &Storage,
    segment_dir: &Path,
    segments: &[String],
    final_path: &Path,
) -> Result<(usize, usize, u64)> {
    let listed = storage.listed_segments(final_path)?;
    let mut removed = 0;
    for name in segments {
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
    Ok((0, removed, storage.row_count(final_path)?))
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

/// The spool folder of `layout` (see [`crate::recorder::spool_dir`]).
pub fn spool_base(layout: &OutputLayout, spool_dir_override: Option<&Path>) -> PathBuf {
    let mut config = RecorderConfig::new(layout.clone());
    config.spool_dir = spool_dir_override.map(Path::to_path_buf);
    spool_dir(&config).0
}

/// Only the salvage step of [`recover_run_with_spool`]: what the spools of
/// `layout`'s dead recorders hold beyond their segments becomes one last
/// segment each (append-mode parts, which are never merged, need only this).
pub fn salvage_spool(layout: &OutputLayout, spool_base: Option<&Path>) -> Result<RecoverReport> {
    let mut report = RecoverReport::default();
    salvage_spools(layout, spool_base, &mut report)?;
    Ok(report)
}

/// Publishes what the spools of `layout`'s dead recorders hold beyond the
/// published segments as one last segment each (telemetry and events), then
/// removes the spools. A kind (telemetry, events) whose final file is
/// published has nothing new in the spool: a close publishes it, directly
/// or merged, only once every row (event) of its kind is in it. The two are
/// published one after the other, so a process that died in between left a
/// spool whose other kind may still hold what no file does.
fn salvage_spools(
    layout: &OutputLayout,
    spool_base_override: Option<&Path>,
    report: &mut RecoverReport,
) -> Result<()> {
    let base = spool_base(layout, spool_base_override);
    let mut config = RecorderConfig::new(layout.clone());
    config.spool_dir = spool_base_override.map(Path::to_path_buf);
    let location = crate::recorder::spool_location(&config);
    // Spools of recordings at other locations whose spool folder has the
    // same name (object stores) are theirs: neither salvaged nor removed.
    let dirs: Vec<PathBuf> = spool::spool_dirs(&base)
        .into_iter()
        .filter(|d| !spool::belongs_elsewhere(d, location.as_deref()))
        .collect();
    if dirs.is_empty() {
        // A close killed between removing its spool and the folder that held
        // it leaves the folder empty: nothing to salvage, nothing to keep.
        let _ = std::fs::remove_dir(&base);
        return Ok(());
    }
    let storage = &layout.storage;
    let published = |f: &Option<PathBuf>| match f {
        Some(f) => storage.exists(f),
        None => Ok(false),
    };
    let done = Finished {
        telemetry: published(&layout.final_telemetry)?,
        events: published(&layout.final_events)?,
    };
    for dir in dirs {
        if !(done.telemetry && done.events) {
            salvage_one(layout, &dir, done, report)?;
        }
        // Another recover of the same object-store run (which takes no
        // folder claim) may have removed it, or part of it, first.
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(CoreError::io("remove spool", &dir, e));
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_dir(&base);
    Ok(())
}

/// Which kinds already have their final file.
#[derive(Debug, Clone, Copy)]
struct Finished {
    telemetry: bool,
    events: bool,
}

/// The instance number of a spool folder (its name).
fn instance_of(dir: &Path) -> Option<u64> {
    dir.file_name()?.to_str()?.parse().ok()
}

fn salvage_one(
    layout: &OutputLayout,
    dir: &Path,
    done: Finished,
    report: &mut RecoverReport,
) -> Result<()> {
    let storage = &layout.storage;
    let Some(instance) = instance_of(dir) else {
        return Ok(());
    };
    let mine = layout.clone().with_instance(instance);
    let own = |prefix: &str| format!("{prefix}{instance:08}");
    // What published segments hold: positions per lane, events below a number.
    let mut covered: BTreeMap<usize, u64> = BTreeMap::new();
    let mut last_seq = 0u64;
    let telemetry_own = own(&layout.telemetry_prefix);
    for name in storage.segments(&layout.segment_dir, &layout.telemetry_prefix)? {
        let Some(seq) = seq_of(&name, &telemetry_own) else {
            continue;
        };
        last_seq = last_seq.max(seq);
        for (k, v) in storage.key_values(&layout.segment_dir.join(&name))? {
            if k == LANES_KEY {
                for (lane, (_, end)) in spool::parse_lanes(&v) {
                    let e = covered.entry(lane).or_insert(0);
                    *e = (*e).max(end);
                }
            }
        }
    }
    let mut events_from = 0u64;
    let mut last_event_seq = 0u64;
    let events_own = own(&layout.events_prefix);
    for name in storage.segments(&layout.events_dir, &layout.events_prefix)? {
        let Some(seq) = seq_of(&name, &events_own) else {
            continue;
        };
        last_event_seq = last_event_seq.max(seq);
        for (k, v) in storage.key_values(&layout.events_dir.join(&name))? {
            if k == EVENTS_UPTO_KEY {
                events_from = events_from.max(v.parse().unwrap_or(0));
            }
        }
    }
    if last_seq == 0
        && !storage
            .segments(&layout.segment_dir, &layout.telemetry_prefix)?
            .is_empty()
    {
        // Segments here, none of them this spool's recorder's: the spool is
        // another recording's (its folder reused), not this one's to add to.
        report.spools_discarded.push(format!(
            "{}: its recorder published nothing here, another recording did",
            dir.display()
        ));
        return Ok(());
    }
    let salvaged = spool::salvage(dir, &covered, events_from)?;
    report.torn_rows += salvaged.torn_rows;
    if let Some(why) = &salvaged.discarded {
        report
            .spools_discarded
            .push(format!("{}: {why}", dir.display()));
        return Ok(());
    }
    let Some(batches) = salvaged_batches(&salvaged)? else {
        return Ok(());
    };
    let marker = |n: usize| ("flightlog.salvaged_from_spool".to_string(), n.to_string());
    if let Some(batch) = batches.telemetry.as_ref().filter(|_| !done.telemetry) {
        let path = layout
            .segment_dir
            .join(mine.telemetry_segment_name(last_seq + 1));
        storage.ensure_dir(&layout.segment_dir)?;
        let kv = vec![
            (LANES_KEY.to_string(), spool::format_lanes(&salvaged.lanes)),
            marker(batch.num_rows()),
        ];
        storage.write_parquet(
            &path,
            batches.arrow_schema.clone(),
            std::slice::from_ref(batch),
            salvage_props(&batches.arrow_schema, &batches.file_kv, kv, false),
            // Recovery is nobody's hot loop: as fast as the encoders go.
            crate::parquet_io::MAX_ENCODE_THREADS,
        )?;
        report.salvaged_rows += batch.num_rows() as u64;
    }
    if let Some(batch) = batches.events.as_ref().filter(|_| !done.events) {
        let path = layout
            .events_dir
            .join(mine.events_segment_name(last_event_seq + 1));
        storage.ensure_dir(&layout.events_dir)?;
        let kv = vec![
            (
                EVENTS_UPTO_KEY.to_string(),
                salvaged.events_upto.to_string(),
            ),
            marker(batch.num_rows()),
        ];
        let schema = crate::recorder::events_arrow_schema();
        storage.write_parquet(
            &path,
            schema.clone(),
            std::slice::from_ref(batch),
            salvage_props(&schema, &batches.file_kv, kv, true),
            1,
        )?;
        report.salvaged_events += batch.num_rows() as u64;
    }
    Ok(())
}

/// The sequence number of segment `name` when it starts with `own` (the
/// prefix and the instance): `{own}{seq}.parquet`.
fn seq_of(name: &str, own: &str) -> Option<u64> {
    name.strip_prefix(own)?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
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

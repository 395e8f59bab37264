//! Where a recorder's files go: segment and final file names, the output-file
//! form's hidden sidecar (the on-disk names' one owner; Python reads them
//! through `_core`).

use std::path::{Path, PathBuf};

use crate::storage::Storage;

/// Files of one recorder.
///
/// Segments are published in `segment_dir` as
/// `{telemetry_prefix}{instance:08}{seq:06}.parquet` and
/// `{events_prefix}{instance:08}{seq:06}.parquet`: the instance number (set by
/// each recorder, see [`crate::claim::instance_id`]) keeps two recorders'
/// segments apart even if both wrote into one folder. Layouts made for
/// reading or recovery have no instance and match segments by prefix, so
/// old-style names (`{prefix}{seq:06}.parquet`, written before instances)
/// are read and recovered too. The digits-only suffix keeps part names
/// parsable as `part-<run_id>-<digits>.parquet`. When `final_telemetry` is set,
/// `close()` merges the telemetry segments into it (and events into
/// `final_events`); when it is not (append-mode parts), segments stay as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLayout {
    pub segment_dir: PathBuf,
    pub telemetry_prefix: String,
    pub events_dir: PathBuf,
    pub events_prefix: String,
    pub final_telemetry: Option<PathBuf>,
    pub final_events: Option<PathBuf>,
    /// Local folder or object store; on an object store the paths above are
    /// keys below the bucket.
    pub storage: Storage,
    /// Per-recorder component of segment names (None: old-style names).
    pub instance: Option<u64>,
    /// Folder of the one-writer claim when it is not the final file's folder
    /// (the output-file form: the final file sits among the user's files).
    pub claim_dir: Option<PathBuf>,
    /// The output file this recording replaces when it closes
    /// ([`OutputLayout::output_file`] with `replacing`).
    pub replaces: Option<PathBuf>,
}

/// Suffix of the hidden folder kept beside an output file (`.{name}.flightlog`):
/// it never matches `*.parquet`, so a glob over the user's folder sees only
/// finished files.
pub const SIDECAR_SUFFIX: &str = ".flightlog";

/// Subfolder of the sidecar holding a recording that replaces the output file
/// when it closes (`overwrite=True`).
pub const REPLACEMENT_DIR: &str = "replacement";

/// The hidden folder kept beside output file `file`: `.{file name}.flightlog`.
pub fn sidecar_dir(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.with_file_name(format!(".{name}{SIDECAR_SUFFIX}"))
}

impl OutputLayout {
    /// The run-folder layout: `dir/segments/telemetry-NNNNNN.parquet` while
    /// running, `dir/telemetry.parquet` and `dir/events.parquet` after close.
    pub fn run_folder(dir: &Path) -> Self {
        let segments = dir.join("segments");
        OutputLayout {
            segment_dir: segments.clone(),
            telemetry_prefix: "telemetry-".into(),
            events_dir: segments,
            events_prefix: "events-".into(),
            final_telemetry: Some(dir.join("telemetry.parquet")),
            final_events: Some(dir.join("events.parquet")),
            storage: Storage::Local,
            instance: None,
            claim_dir: None,
            replaces: None,
        }
    }

    /// The output-file form (a path ending in `.parquet`): `file` is the
    /// telemetry after close; segments, temp files, the claim and
    /// `events.parquet` live in the hidden sibling [`sidecar_dir`], which
    /// never matches `*.parquet`.
    ///
    /// With `replacing`, the recording goes to `sidecar/replacement/`
    /// (segments, `telemetry.parquet`, `events.parquet`) and replaces `file`
    /// and the sidecar's `events.parquet` only when it is complete (see
    /// [`OutputLayout::replacement_targets`]): an existing file is never
    /// deleted up front, and a crash leaves it as it was. Its segments are
    /// apart from the plain form's, so a recover never mistakes them for
    /// leftovers of the existing file.
    pub fn output_file(file: &Path, replacing: bool) -> Self {
        let sidecar = sidecar_dir(file);
        let (segments, final_telemetry, final_events) = if replacing {
            let r = sidecar.join(REPLACEMENT_DIR);
            (
                r.join("segments"),
                r.join("telemetry.parquet"),
                r.join("events.parquet"),
            )
        } else {
            (
                sidecar.join("segments"),
                file.to_path_buf(),
                sidecar.join("events.parquet"),
            )
        };
        OutputLayout {
            segment_dir: segments.clone(),
            telemetry_prefix: "telemetry-".into(),
            events_dir: segments,
            events_prefix: "events-".into(),
            final_telemetry: Some(final_telemetry),
            final_events: Some(final_events),
            storage: Storage::Local,
            instance: None,
            claim_dir: Some(sidecar),
            replaces: replacing.then(|| file.to_path_buf()),
        }
    }

    /// True for the layout of a recording that replaces an output file when
    /// it closes ([`OutputLayout::output_file`] with `replacing`).
    pub fn is_replacement(&self) -> bool {
        self.storage.is_local()
            && self.claim_dir.is_some()
            && self
                .segment_dir
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == REPLACEMENT_DIR)
    }

    /// For a replacing output-file layout of `file`: the (staged, target)
    /// pairs that publishing renames, telemetry first.
    pub fn replacement_targets(file: &Path) -> [(PathBuf, PathBuf); 2] {
        let sidecar = sidecar_dir(file);
        let r = sidecar.join(REPLACEMENT_DIR);
        [
            (r.join("telemetry.parquet"), file.to_path_buf()),
            (r.join("events.parquet"), sidecar.join("events.parquet")),
        ]
    }

    /// Append-mode parts: `parts_dir/part-{run_id}-NNNNNN.parquet`, never merged.
    pub fn append_parts(parts_dir: &Path, events_dir: &Path, run_id: &str) -> Self {
        OutputLayout {
            segment_dir: parts_dir.to_path_buf(),
            telemetry_prefix: format!("part-{run_id}-"),
            events_dir: events_dir.to_path_buf(),
            events_prefix: format!("part-{run_id}-"),
            final_telemetry: None,
            final_events: None,
            storage: Storage::Local,
            instance: None,
            claim_dir: None,
            replaces: None,
        }
    }

    /// The same layout on `storage` (its paths become object keys).
    pub fn on(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// The same layout with the per-recorder instance number `instance`.
    pub fn with_instance(mut self, instance: u64) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Name of the telemetry segment with sequence number `seq`.
    pub fn telemetry_segment_name(&self, seq: u64) -> String {
        self.segment_name(&self.telemetry_prefix, seq)
    }

    /// Name of the events segment with sequence number `seq`.
    pub fn events_segment_name(&self, seq: u64) -> String {
        self.segment_name(&self.events_prefix, seq)
    }

    fn segment_name(&self, prefix: &str, seq: u64) -> String {
        match self.instance {
            Some(i) => format!("{prefix}{i:08}{seq:06}.parquet"),
            None => format!("{prefix}{seq:06}.parquet"),
        }
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn segment_names_carry_the_instance_and_keep_the_old_form_without() {
        let l = OutputLayout::run_folder(Path::new("r"));
        assert_eq!(l.telemetry_segment_name(3), "telemetry-000003.parquet");
        let l = l.with_instance(42);
        assert_eq!(
            l.telemetry_segment_name(3),
            "telemetry-00000042000003.parquet"
        );
        assert_eq!(l.events_segment_name(1), "events-00000042000001.parquet");
        let p =
            OutputLayout::append_parts(Path::new("p"), Path::new("e"), "run-1").with_instance(7);
        assert_eq!(
            p.telemetry_segment_name(2),
            "part-run-1-00000007000002.parquet"
        );
    }

    #[test]
    fn output_file_keeps_everything_but_the_file_in_a_hidden_sibling() {
        let l = OutputLayout::output_file(Path::new("d/t.parquet"), false);
        assert_eq!(l.final_telemetry.as_deref(), Some(Path::new("d/t.parquet")));
        assert_eq!(l.segment_dir, Path::new("d/.t.parquet.flightlog/segments"));
        assert_eq!(
            l.final_events.as_deref(),
            Some(Path::new("d/.t.parquet.flightlog/events.parquet"))
        );
        assert_eq!(
            crate::claim::lock_path(&l).unwrap(),
            Path::new("d/.t.parquet.flightlog/.flightlog.lock")
        );
        let r = OutputLayout::output_file(Path::new("d/t.parquet"), true);
        // One claim for both forms: a replacing and a plain writer exclude each other.
        assert_eq!(crate::claim::lock_path(&r), crate::claim::lock_path(&l));
        assert_eq!(
            r.segment_dir,
            Path::new("d/.t.parquet.flightlog/replacement/segments")
        );
        let [(staged, target), _] = OutputLayout::replacement_targets(Path::new("d/t.parquet"));
        assert_eq!(r.final_telemetry.as_deref(), Some(staged.as_path()));
        assert_eq!(target, Path::new("d/t.parquet"));
    }
}

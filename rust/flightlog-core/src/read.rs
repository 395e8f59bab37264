//! Reading what a recording has made durable, at any moment: after a flush,
//! after close, or after a crash.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::Result;
use crate::output_layout::OutputLayout;
use crate::storage::Storage;

/// The durable telemetry files of a layout, in order: the final file (if
/// any), then the segments it does not list. A merged file and the leftover
/// segments it lists are never both returned, so nothing is counted twice.
///
/// The segments are listed before the final file is looked for: a close
/// publishes the final file before it removes the segments, so whichever
/// moment the close reaches between the two looks, one of them holds every
/// row (looking the other way round, a merge in between was missed by both).
/// A listed segment may still be gone by the time it is read: see
/// [`read_durable`].
pub fn durable_files(
    storage: &Storage,
    segment_dir: &Path,
    prefix: &str,
    final_path: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let segments = storage.segments(segment_dir, prefix)?;
    let mut files = Vec::new();
    let mut listed = Vec::new();
    let mut final_id = None;
    if let Some(f) = final_path {
        if storage.exists(f)? {
            listed = storage.listed_segments(f)?;
            files.push(f.to_path_buf());
            if storage.is_local() {
                final_id = file_id(f);
            }
        }
    }
    for name in segments {
        if listed.contains(&name) {
            continue;
        }
        let path = segment_dir.join(name);
        // A close publishes a single segment as the final file by linking it
        // there, then removing the segment (`atomic_file::move_new`): between
        // the two, both names are one file, which must be read once.
        if final_id.is_some() && file_id(&path) == final_id {
            continue;
        }
        files.push(path);
    }
    // A single segment moved to the final file cannot be listed in it. If the
    // move came between the two looks, both are returned: reading the segment
    // then fails (it is gone) and `read_durable` looks again.
    Ok(files)
}

/// The identity of a local file (device and inode), to tell two names of one
/// file. None where it cannot be read (the file is gone) or on a platform
/// without inode numbers.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// How many times a read is retried because the files changed under it (a
/// close merging, a recover): each retry needs another change, and a
/// recording changes its files a handful of times at close.
const READ_ATTEMPTS: usize = 64;

/// Reads every durable file of a layout as one consistent view: when a read
/// fails and the listing changed meanwhile (a close merged and removed the
/// segments being read), it looks again; a failure with the files unchanged
/// is a real error and is returned.
fn read_durable(
    storage: &Storage,
    segment_dir: &Path,
    prefix: &str,
    final_path: Option<&Path>,
) -> Result<Vec<(SchemaRef, Vec<RecordBatch>)>> {
    let mut files = durable_files(storage, segment_dir, prefix, final_path)?;
    let mut attempt = 1;
    loop {
        let read: Result<Vec<_>> = files.iter().map(|p| storage.read_parquet(p)).collect();
        let err = match read {
            Ok(parts) => return Ok(parts),
            Err(e) => e,
        };
        let now = durable_files(storage, segment_dir, prefix, final_path)?;
        if now == files || attempt >= READ_ATTEMPTS {
            return Err(err);
        }
        files = now;
        attempt += 1;
    }
}

/// Durable telemetry of a layout.
pub fn read_telemetry(layout: &OutputLayout) -> Result<Vec<(SchemaRef, Vec<RecordBatch>)>> {
    read_durable(
        &layout.storage,
        &layout.segment_dir,
        &layout.telemetry_prefix,
        layout.final_telemetry.as_deref(),
    )
}

/// Durable events of a layout.
pub fn read_events(layout: &OutputLayout) -> Result<Vec<(SchemaRef, Vec<RecordBatch>)>> {
    read_durable(
        &layout.storage,
        &layout.events_dir,
        &layout.events_prefix,
        layout.final_events.as_deref(),
    )
}

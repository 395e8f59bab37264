//! Reading what a recording has made durable, at any moment: after a flush,
//! after close, or after a crash.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::Result;
use crate::layout::OutputLayout;
use crate::storage::Storage;

/// The durable telemetry files of a layout, in order: the final file (if
/// any), then the segments it does not list. A merged file and the leftover
/// segments it lists are never both returned, so nothing is counted twice.
pub fn durable_files(
    storage: &Storage,
    segment_dir: &Path,
    prefix: &str,
    final_path: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut listed = Vec::new();
    if let Some(f) = final_path {
        if storage.exists(f)? {
            listed = storage.listed_segments(f)?;
            files.push(f.to_path_buf());
        }
    }
    for name in storage.segments(segment_dir, prefix)? {
        if !listed.contains(&name) {
            files.push(segment_dir.join(name));
        }
    }
    // A single segment renamed to the final file cannot be listed in it; the
    // rename removed it from the segment directory, so no overlap is possible.
    Ok(files)
}

/// Durable telemetry of a layout.
pub fn read_telemetry(layout: &OutputLayout) -> Result<Vec<(SchemaRef, Vec<RecordBatch>)>> {
    durable_files(
        &layout.storage,
        &layout.segment_dir,
        &layout.telemetry_prefix,
        layout.final_telemetry.as_deref(),
    )?
    .iter()
    .map(|p| layout.storage.read_parquet(p))
    .collect()
}

/// Durable events of a layout.
pub fn read_events(layout: &OutputLayout) -> Result<Vec<(SchemaRef, Vec<RecordBatch>)>> {
    durable_files(
        &layout.storage,
        &layout.events_dir,
        &layout.events_prefix,
        layout.final_events.as_deref(),
    )?
    .iter()
    .map(|p| layout.storage.read_parquet(p))
    .collect()
}

//! Where a layout's files live: a local folder, published by fsync + rename,
//! or an object store, published by create-only puts. The recorder, recovery
//! and readers speak only to [`Storage`]; paths of an object layout are keys
//! below the bucket (`/`-separated).

use std::path::{Path, PathBuf};
#[cfg(feature = "object-store")]
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
#[cfg(feature = "object-store")]
use bytes::Bytes;
use parquet::file::properties::WriterProperties;

use crate::atomic_file::{fsync_dir, move_new};
use crate::error::{CoreError, Result};
#[cfg(feature = "object-store")]
use crate::object_root::ObjectRoot;
use crate::parquet_io;
#[cfg(feature = "object-store")]
use crate::parquet_io::MergeInput;

/// The medium of a layout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Storage {
    /// A local filesystem: temp file, fsync, rename, fsync of the folder.
    #[default]
    Local,
    /// An object store: create-only puts, multipart uploads for large files.
    #[cfg(feature = "object-store")]
    Object(Arc<ObjectRoot>),
}

/// The object key of a layout path.
pub fn key_of(path: &Path) -> Result<String> {
    path.to_str()
        .map(|s| s.trim_start_matches('/').to_string())
        .ok_or_else(|| CoreError::Config(format!("object key {path:?} is not valid UTF-8")))
}

impl Storage {
    /// True for a local filesystem.
    pub fn is_local(&self) -> bool {
        matches!(self, Storage::Local)
    }

    /// `path` as users know it: a file path, or an `s3://` URL.
    pub fn describe(&self, path: &Path) -> String {
        match self {
            Storage::Local => path.display().to_string(),
            #[cfg(feature = "object-store")]
            Storage::Object(root) => root.url(&key_of(path).unwrap_or_default()),
        }
    }

    /// Writes `batches` as a new Parquet file at `path`, atomically and never
    /// over an existing file. Returns its size in bytes.
    pub fn write_parquet(
        &self,
        path: &Path,
        schema: SchemaRef,
        batches: &[RecordBatch],
        props: WriterProperties,
        threads: usize,
    ) -> Result<u64> {
        match self {
            Storage::Local => parquet_io::write_file(path, schema, batches, props, threads),
            #[cfg(feature = "object-store")]
            Storage::Object(root) => {
                let writer = root.writer(&key_of(path)?);
                parquet_io::write_batches(writer, schema, batches, props, threads)?.finish()
            }
        }
    }

    /// Whether a file exists at `path`.
    pub fn exists(&self, path: &Path) -> Result<bool> {
        match self {
            Storage::Local => Ok(path.exists()),
            #[cfg(feature = "object-store")]
            Storage::Object(root) => root.exists(&key_of(path)?),
        }
    }

    /// Size of the file at `path` in bytes (0 if it is gone).
    pub fn size(&self, path: &Path) -> Result<u64> {
        match self {
            Storage::Local => Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)),
            #[cfg(feature = "object-store")]
            Storage::Object(root) => Ok(root.head(&key_of(path)?)?.map_or(0, |i| i.size)),
        }
    }

    /// Published segments in `dir` whose names start with `prefix`, sorted.
    pub fn segments(&self, dir: &Path, prefix: &str) -> Result<Vec<String>> {
        match self {
            Storage::Local => existing_segments(dir, prefix),
            #[cfg(feature = "object-store")]
            Storage::Object(root) => Ok(root
                .list_names(&key_of(dir)?)?
                .into_iter()
                .filter(|n| n.starts_with(prefix) && n.ends_with(".parquet"))
                .collect()),
        }
    }

    /// Rows of the Parquet file at `path` (from its footer).
    pub fn row_count(&self, path: &Path) -> Result<u64> {
        match self {
            Storage::Local => parquet_io::row_count(path),
            #[cfg(feature = "object-store")]
            Storage::Object(root) => {
                let md = root.parquet_metadata(&key_of(path)?)?;
                Ok(md.file_metadata().num_rows().max(0) as u64)
            }
        }
    }

    /// Key-value metadata of the Parquet file at `path` (only its footer is read).
    pub fn key_values(&self, path: &Path) -> Result<Vec<(String, String)>> {
        match self {
            Storage::Local => parquet_io::read_key_values(path),
            #[cfg(feature = "object-store")]
            Storage::Object(root) => Ok(parquet_io::key_values_of(
                &root.parquet_metadata(&key_of(path)?)?,
            )),
        }
    }

    /// Segment names the merged file at `path` lists (empty if none).
    pub fn listed_segments(&self, path: &Path) -> Result<Vec<String>> {
        match self {
            Storage::Local => parquet_io::listed_segments(path),
            #[cfg(feature = "object-store")]
            Storage::Object(root) => {
                let key = key_of(path)?;
                let md = root.parquet_metadata(&key)?;
                parquet_io::segments_listed_in(&md, &root.url(&key))
            }
        }
    }

    /// All rows of the Parquet file at `path`.
    pub fn read_parquet(&self, path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        match self {
            Storage::Local => parquet_io::read_file(path),
            #[cfg(feature = "object-store")]
            Storage::Object(root) => parquet_io::read_batches(self.fetch(root, path)?),
        }
    }

    #[cfg(feature = "object-store")]
    fn fetch(&self, root: &ObjectRoot, path: &Path) -> Result<Bytes> {
        let key = key_of(path)?;
        root.get(&key)?
            .map(|(bytes, _)| bytes)
            .ok_or_else(|| CoreError::write(format!("{} does not exist", root.url(&key))))
    }

    /// Removes the file at `path`; a missing file is not an error.
    pub fn remove(&self, path: &Path) -> Result<()> {
        match self {
            Storage::Local => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(CoreError::io("remove", path, e)),
            },
            #[cfg(feature = "object-store")]
            Storage::Object(root) => root.delete(&key_of(path)?),
        }
    }

    /// Makes the folder `dir` exist (local only: object stores have no folders).
    pub fn ensure_dir(&self, dir: &Path) -> Result<()> {
        match self {
            Storage::Local => ensure_dir(dir),
            #[cfg(feature = "object-store")]
            Storage::Object(_) => Ok(()),
        }
    }

    /// Removes `dir` if it is an empty folder (local only).
    pub fn remove_dir_if_empty(&self, dir: &Path) {
        if self.is_local() && std::fs::remove_dir(dir).is_ok() {
            if let Some(parent) = dir.parent() {
                let _ = fsync_dir(parent);
            }
        }
    }

    /// Makes durable after removals in `dir` (local only).
    pub fn sync_dir(&self, dir: &Path) -> Result<()> {
        match self {
            Storage::Local => fsync_dir(dir),
            #[cfg(feature = "object-store")]
            Storage::Object(_) => Ok(()),
        }
    }

    /// Turns published segments into `final_path`: none → `make_empty`, one →
    /// a create-only move (local; an object store merges it, so the final file
    /// lists it), several → merge listing their names, then delete them.
    /// Never replaces an existing `final_path`: that fails and the segments
    /// stay. With `expected_rows`, the published footer's row count must equal
    /// it, or this fails and the segments stay for `recover`.
    /// Returns (rows, bytes) of the final file.
    pub fn finalize(
        &self,
        segment_dir: &Path,
        segments: &[String],
        final_path: &Path,
        expected_rows: Option<u64>,
        make_empty: impl FnOnce() -> Result<u64>,
    ) -> Result<(u64, u64)> {
        if segments.is_empty() {
            let size = make_empty()?;
            self.check_footer(final_path, expected_rows, &[])?;
            return Ok((0, size));
        }
        let paths: Vec<PathBuf> = segments.iter().map(|n| segment_dir.join(n)).collect();
        let (rows, size) = match (self, segments) {
            (Storage::Local, [only]) => {
                let src = segment_dir.join(only);
                let rows = parquet_io::row_count(&src)?;
                if let Some(expected) = expected_rows.filter(|&e| e != rows) {
                    return Err(CoreError::write(format!(
                        "{} holds {rows} rows where the recorder wrote {expected}: \
                         not published, the segment stays for recover",
                        src.display()
                    )));
                }
                move_new(&src, final_path)?;
                let size = std::fs::metadata(final_path)
                    .map_err(|e| CoreError::io("stat", final_path, e))?
                    .len();
                return Ok((rows, size));
            }
            (Storage::Local, _) => parquet_io::merge_segments(final_path, &paths)?,
            #[cfg(feature = "object-store")]
            (Storage::Object(root), _) => {
                let mut inputs = Vec::with_capacity(paths.len());
                for p in &paths {
                    inputs.push(MergeInput::open(
                        root.url(&key_of(p)?),
                        self.fetch(root, p)?,
                    )?);
                }
                let (kv, rows) = parquet_io::segment_provenance(&inputs)?;
                let writer = root.writer(&key_of(final_path)?);
                let size = parquet_io::merge_into(writer, &inputs, kv)?.finish()?;
                (rows, size)
            }
        };
        self.check_footer(final_path, expected_rows, segments)?;
        for p in &paths {
            self.remove(p)?;
        }
        self.sync_dir(segment_dir)?;
        Ok((rows, size))
    }
}

impl Storage {
    /// Checks the row count in the footer of the just-published `path`
    /// against what the writer counted; on a mismatch the segments stay.
    fn check_footer(&self, path: &Path, expected: Option<u64>, segments: &[String]) -> Result<()> {
        let Some(expected) = expected else {
            return Ok(());
        };
        let found = self.row_count(path)?;
        if found == expected {
            return Ok(());
        }
        Err(CoreError::write(format!(
            "{} was published with {found} rows in its footer, but the recorder wrote {expected}: \
             the segments ({}) are kept for recover",
            self.describe(path),
            if segments.is_empty() {
                "none".to_string()
            } else {
                segments.join(", ")
            }
        )))
    }
}

/// Creates `dir` if it is missing (its parent must exist: a run folder that
/// was deleted is not silently recreated) and makes the new entry durable.
fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(CoreError::io("create directory", dir, e)),
    }
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Published segments in the local folder `dir` whose names start with
/// `prefix`, sorted.
pub fn existing_segments(dir: &Path, prefix: &str) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CoreError::io("list directory", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CoreError::io("list directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".parquet") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

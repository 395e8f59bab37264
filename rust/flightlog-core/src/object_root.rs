//! Object-store roots (S3 and S3-compatible servers) through the `object_store`
//! crate.
//!
//! On a local disk a file is published by fsync + rename. Object stores have no
//! rename; their atomic publish is the create-only put (`PutMode::Create`, sent
//! as `If-None-Match: *`): the object appears whole or not at all, and a second
//! writer of the same key gets [`CoreError::Exists`] instead of overwriting.
//! Files larger than the multipart threshold go up as a multipart upload, which
//! is invisible until it completes, so a crash never leaves a partial object.
//! Manifests are updated with conditional puts (`If-Match: <etag>`): a lost race
//! is [`CoreError::Conflict`], never a silent overwrite.
//!
//! The crate is async; flightlog's threads are not. One small tokio runtime per
//! process drives the requests, and callers block on them (the flusher thread,
//! or a Python call with the GIL released).

use std::fmt;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::error::{CoreError, Result};

/// S3's smallest part (every part but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// Files up to this size go up in one create-only put.
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 32 << 20;
/// Size of each part of a multipart upload.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// The process's runtime for object-store requests: two workers, created on
/// first use. Callers are plain threads and block on it.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flightlog-io")
            .enable_all()
            .build()
            .expect("a tokio runtime with two threads can be built")
    })
}

/// rustls needs a process-wide crypto provider for HTTPS (reqwest is built
/// with `rustls-no-provider`): ring, installed once. `Err` means one is
/// installed already (this library's copy of rustls is private to it).
fn install_tls_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// How a put treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutKind {
    /// Only if the key is absent (`If-None-Match: *`).
    Create,
    /// Only if the object still has this ETag (`If-Match`).
    Update(String),
    /// Unconditionally.
    Overwrite,
}

/// One listed or inspected object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key (bucket not included).
    pub key: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    pub e_tag: Option<String>,
}

impl From<object_store::ObjectMeta> for ObjectInfo {
    fn from(m: object_store::ObjectMeta) -> Self {
        ObjectInfo {
            key: m.location.to_string(),
            size: m.size,
            last_modified_ms: m.last_modified.timestamp_millis(),
            e_tag: m.e_tag,
        }
    }
}

/// A bucket (or an in-memory store in tests) that recordings are written to.
pub struct ObjectRoot {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`, for messages and URLs.
    base_url: String,
    multipart_threshold: usize,
    part_size: usize,
}

impl fmt::Debug for ObjectRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectRoot")
            .field("base_url", &self.base_url)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .finish()
    }
}

impl PartialEq for ObjectRoot {
    fn eq(&self, other: &Self) -> bool {
        self.base_url == other.base_url
    }
}
impl Eq for ObjectRoot {}

/// Splits `s3://bucket/prefix` into (`s3://bucket`, bucket, prefix).
fn split_url(url: &str) -> Result<(String, String, String)> {
    let rest = ["s3://", "s3a://"]
        .iter()
        .find_map(|s| {
            url.get(..s.len())
                .filter(|head| head.eq_ignore_ascii_case(s))
                .map(|_| &url[s.len()..])
        })
        .ok_or_else(|| {
            CoreError::Config(format!(
                "not an object-store URL (expected s3://bucket/prefix): {url:?}"
            ))
        })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(CoreError::Config(format!(
            "object-store URL {url:?} has no bucket: write s3://bucket/prefix"
        )));
    }
    let prefix: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    if prefix.iter().any(|s| *s == "." || *s == "..") {
        return Err(CoreError::Config(format!(
            "object-store URL {url:?} must not contain '.' or '..' segments"
        )));
    }
    Ok((
        format!("s3://{bucket}"),
        bucket.to_string(),
        prefix.join("/"),
    ))
}

fn parse_size(key: &str, value: &str) -> Result<usize> {
    value.trim().parse::<usize>().map_err(|_| {
        CoreError::Config(format!(
            "storage option {key} must be a size in bytes, got {value:?}"
        ))
    })
}

impl ObjectRoot {
    /// Opens the bucket of `url` (`s3://bucket/prefix`) with the `AWS_*`
    /// environment variables overridden by `options` (object_store's keys:
    /// `aws_endpoint`, `aws_region`, `aws_access_key_id`, `aws_allow_http`, ...;
    /// plus flightlog's `multipart_threshold` and `multipart_part_size`).
    /// Returns the root and the prefix key below which the recording lives.
    pub fn open_s3(url: &str, options: &[(String, String)]) -> Result<(Arc<ObjectRoot>, String)> {
        install_tls_provider();
        let (base_url, bucket, prefix) = split_url(url)?;
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
        let mut multipart_threshold = DEFAULT_MULTIPART_THRESHOLD;
        let mut part_size = DEFAULT_PART_SIZE;
        for (key, value) in options {
            match key.to_ascii_lowercase().as_str() {
                "multipart_threshold" => multipart_threshold = parse_size(key, value)?,
                "multipart_part_size" => part_size = parse_size(key, value)?,
                other => {
                    let config_key = other.parse().map_err(|_| {
                        CoreError::Config(format!(
                            "unknown storage option {key:?}: use object_store's S3 keys \
                             (aws_endpoint, aws_region, aws_access_key_id, aws_secret_access_key, \
                             aws_session_token, aws_allow_http, ...) or multipart_threshold / \
                             multipart_part_size"
                        ))
                    })?;
                    builder = builder.with_config(config_key, value.clone());
                }
            }
        }
        if part_size < MIN_PART_SIZE {
            return Err(CoreError::Config(format!(
                "multipart_part_size must be at least {MIN_PART_SIZE} bytes (S3's smallest part), got {part_size}"
            )));
        }
        let store = builder.build().map_err(|e| {
            CoreError::Config(format!("cannot configure the object store for {url}: {e}"))
        })?;
        let root = ObjectRoot {
            store: Arc::new(store),
            base_url,
            multipart_threshold,
            part_size,
        };
        Ok((Arc::new(root), prefix))
    }

    /// A store kept in this process's memory (tests, examples).
    pub fn in_memory(name: &str, multipart_threshold: usize, part_size: usize) -> Arc<ObjectRoot> {
        Arc::new(ObjectRoot {
            store: Arc::new(object_store::memory::InMemory::new()),
            base_url: format!("memory://{name}"),
            multipart_threshold,
            part_size: part_size.max(1),
        })
    }

    /// The URL of `key`, for messages and readers.
    pub fn url(&self, key: &str) -> String {
        if key.is_empty() {
            self.base_url.clone()
        } else {
            format!("{}/{key}", self.base_url)
        }
    }

    fn error(&self, op: &str, key: &str, e: object_store::Error) -> CoreError {
        let url = self.url(key);
        match e {
            object_store::Error::AlreadyExists { .. } => {
                CoreError::Exists(format!("{url} already exists (create-only put refused)"))
            }
            object_store::Error::Precondition { .. } | object_store::Error::NotModified { .. } => {
                CoreError::Conflict(format!(
                    "{url} was changed by another writer ({op} refused: its ETag no longer matches)"
                ))
            }
            other => CoreError::write(format!("object store: {op} {url}: {other}")),
        }
    }

    /// Puts `data` at `key`; returns the new ETag when the store gives one.
    pub fn put(&self, key: &str, data: impl Into<Bytes>, kind: PutKind) -> Result<Option<String>> {
        fail::fail_point!("store::put", |_| Err(CoreError::write(format!(
            "object store: put {}: injected failure",
            self.url(key)
        ))));
        let mode = match kind {
            PutKind::Create => PutMode::Create,
            PutKind::Overwrite => PutMode::Overwrite,
            PutKind::Update(e_tag) => PutMode::Update(UpdateVersion {
                e_tag: Some(e_tag),
                version: None,
            }),
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let location = ObjectPath::from(key);
        let e_tag = block_on(
            self.store
                .put_opts(&location, PutPayload::from(data.into()), opts),
        )
        .map(|r| r.e_tag)
        .map_err(|e| self.error("put", key, e))?;
        // The object is stored, but the caller hears of a failure (a timeout,
        // a dropped connection): the ambiguous outcome retries must handle.
        fail::fail_point!("store::put_response_lost", |_| Err(CoreError::write(
            format!(
                "object store: put {}: injected lost response",
                self.url(key)
            )
        )));
        Ok(e_tag)
    }

    /// The object's bytes and ETag, or `None` if it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<(Bytes, Option<String>)>> {
        let location = ObjectPath::from(key);
        let result = block_on(async {
            let got = self.store.get(&location).await?;
            let e_tag = got.meta.e_tag.clone();
            let bytes = got.bytes().await?;
            Ok::<_, object_store::Error>((bytes, e_tag))
        });
        match result {
            Ok(r) => Ok(Some(r)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("get", key, e)),
        }
    }

    /// Bytes `start..end` of an object.
    pub fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes> {
        let location = ObjectPath::from(key);
        block_on(self.store.get_range(&location, start..end)).map_err(|e| self.error("get", key, e))
    }

    /// What the store knows about `key`, or `None` if it does not exist.
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let location = ObjectPath::from(key);
        match block_on(self.store.head(&location)) {
            Ok(m) => Ok(Some(m.into())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", key, e)),
        }
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.head(key)?.is_some())
    }

    /// Every object below `prefix` (recursively), sorted by key.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let location = ObjectPath::from(prefix);
        let listed: std::result::Result<Vec<_>, _> = block_on(
            self.store
                .list(Some(&location))
                .map_ok(ObjectInfo::from)
                .try_collect(),
        );
        let mut objects = listed.map_err(|e| self.error("list", prefix, e))?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Names of the objects directly below `dir` (not recursive), sorted.
    pub fn list_names(&self, dir: &str) -> Result<Vec<String>> {
        let location = ObjectPath::from(dir);
        let listed = block_on(self.store.list_with_delimiter(Some(&location)))
            .map_err(|e| self.error("list", dir, e))?;
        let mut names: Vec<String> = listed
            .objects
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes `key`; a missing object is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        let location = ObjectPath::from(key);
        match block_on(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }

    /// A writer that publishes `key` create-only when finished.
    pub fn writer(self: &Arc<Self>, key: &str) -> ObjectWriter {
        ObjectWriter {
            root: Arc::clone(self),
            key: key.to_string(),
            buffer: Vec::new(),
            upload: None,
            stored: None,
            uploaded: 0,
        }
    }

    /// The Parquet footer of an object, read with two ranged gets (the 8-byte
    /// tail, then the metadata) instead of the whole file.
    pub fn parquet_metadata(&self, key: &str) -> Result<ParquetMetaData> {
        let info = self
            .head(key)?
            .ok_or_else(|| CoreError::write(format!("{} does not exist", self.url(key))))?;
        let bad =
            |why: &str| CoreError::write(format!("{} is not a Parquet file: {why}", self.url(key)));
        if info.size < 12 {
            return Err(bad("too short"));
        }
        let tail = self.get_range(key, info.size - 8, info.size)?;
        if &tail[4..8] != b"PAR1" {
            return Err(bad("no PAR1 footer"));
        }
        let len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
        if len + 12 > info.size {
            return Err(bad("footer length out of range"));
        }
        let footer = self.get_range(key, info.size - 8 - len, info.size - 8)?;
        Ok(ParquetMetaDataReader::decode_metadata(&footer)?)
    }
}

/// Buffers a file in memory and publishes it when finished: one create-only
/// put while it stays under the multipart threshold, else a multipart upload
/// of `part_size` parts that becomes visible only when it completes.
///
/// Dropped without [`ObjectWriter::finish`], a started upload is aborted (best
/// effort; a killed process leaves an invisible incomplete upload, which a
/// bucket lifecycle rule removes).
pub struct ObjectWriter {
    root: Arc<ObjectRoot>,
    key: String,
    buffer: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    /// Size of an object found at the key when a multipart upload was due:
    /// the file is compared with it, part by part, instead of uploaded.
    stored: Option<u64>,
    uploaded: u64,
}

impl ObjectWriter {
    fn io_error(e: CoreError) -> std::io::Error {
        std::io::Error::other(e.to_string())
    }

    fn exists_error(&self) -> CoreError {
        CoreError::Exists(format!(
            "{} already exists (create-only put refused)",
            self.root.url(&self.key)
        ))
    }

    fn start_upload(&mut self) -> Result<()> {
        // object_store completes multipart uploads unconditionally: check the
        // key first. Keys are claimed per run, so only two processes finalising
        // the same crashed run could race here, and both write the same rows.
        // An object already there is either another file (refused at the first
        // byte that differs) or this very file, stored by an attempt whose
        // response was lost (every byte matches: published already).
        if let Some(info) = self.root.head(&self.key)? {
            self.stored = Some(info.size);
            return Ok(());
        }
        let location = ObjectPath::from(self.key.as_str());
        let upload = block_on(self.root.store.put_multipart(&location))
            .map_err(|e| self.root.error("start multipart upload", &self.key, e))?;
        self.upload = Some(upload);
        Ok(())
    }

    fn send_full_parts(&mut self) -> Result<()> {
        let part_size = self.root.part_size;
        while self.buffer.len() >= part_size {
            let rest = self.buffer.split_off(part_size);
            let part = std::mem::replace(&mut self.buffer, rest);
            self.send_part(part)?;
        }
        Ok(())
    }

    fn send_part(&mut self, part: Vec<u8>) -> Result<()> {
        let n = part.len() as u64;
        if let Some(size) = self.stored {
            let end = self.uploaded + n;
            if end > size || self.root.get_range(&self.key, self.uploaded, end)? != part {
                return Err(self.exists_error());
            }
            self.uploaded = end;
            return Ok(());
        }
        let upload = self.upload.as_mut().expect("upload started");
        let fut = upload.put_part(PutPayload::from(part));
        block_on(fut).map_err(|e| self.root.error("upload part of", &self.key, e))?;
        self.uploaded += n;
        Ok(())
    }

    /// Publishes the object; returns its size in bytes.
    pub fn finish(mut self) -> Result<u64> {
        if let Some(size) = self.stored {
            let last = std::mem::take(&mut self.buffer);
            if !last.is_empty() {
                self.send_part(last)?;
            }
            return match self.uploaded == size {
                true => Ok(size),
                false => Err(self.exists_error()),
            };
        }
        match self.upload.is_some() {
            false => {
                let data = Bytes::from(std::mem::take(&mut self.buffer));
                let n = data.len() as u64;
                match self.root.put(&self.key, data.clone(), PutKind::Create) {
                    Ok(_) => Ok(n),
                    // object_store retries a put that got a 5xx; if the first
                    // attempt was stored anyway (S3 documents such 500s), the
                    // retry is refused as existing. The object holding exactly
                    // these bytes is this file published: nothing is lost, and
                    // no one else's file is taken for ours.
                    Err(CoreError::Exists(why)) => match self.root.get(&self.key)? {
                        Some((stored, _)) if stored == data => Ok(n),
                        _ => Err(CoreError::Exists(why)),
                    },
                    Err(e) => Err(e),
                }
            }
            true => {
                let last = std::mem::take(&mut self.buffer);
                if !last.is_empty() {
                    self.send_part(last)?;
                }
                fail::fail_point!("store::complete", |_| Err(CoreError::write(format!(
                    "object store: complete {}: injected failure",
                    self.root.url(&self.key)
                ))));
                let mut upload = self.upload.take().expect("upload started");
                match block_on(upload.complete()) {
                    Ok(_) => {
                        fail::fail_point!("store::complete_response_lost", |_| Err(
                            CoreError::write(format!(
                                "object store: complete {}: injected lost response",
                                self.root.url(&self.key)
                            ))
                        ));
                        Ok(self.uploaded)
                    }
                    Err(e) => {
                        let _ = block_on(upload.abort());
                        Err(self
                            .root
                            .error("complete multipart upload of", &self.key, e))
                    }
                }
            }
        }
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        let started = self.upload.is_some() || self.stored.is_some();
        if !started && self.buffer.len() > self.root.multipart_threshold {
            self.start_upload().map_err(Self::io_error)?;
        }
        if self.upload.is_some() || self.stored.is_some() {
            self.send_full_parts().map_err(Self::io_error)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            let _ = block_on(upload.abort());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_only_put_refuses_the_second_writer() {
        let root = ObjectRoot::in_memory("t", 1 << 20, 1 << 20);
        let tag = root.put("a/b", b"one".to_vec(), PutKind::Create).unwrap();
        assert!(tag.is_some());
        let err = root
            .put("a/b", b"two".to_vec(), PutKind::Create)
            .unwrap_err();
        assert!(matches!(err, CoreError::Exists(_)), "{err}");
        assert_eq!(&root.get("a/b").unwrap().unwrap().0[..], b"one");
    }

    #[test]
    fn conditional_update_needs_the_current_etag() {
        let root = ObjectRoot::in_memory("t", 1 << 20, 1 << 20);
        let first = root
            .put("m", b"1".to_vec(), PutKind::Create)
            .unwrap()
            .unwrap();
        let second = root
            .put("m", b"2".to_vec(), PutKind::Update(first.clone()))
            .unwrap()
            .unwrap();
        let err = root
            .put("m", b"3".to_vec(), PutKind::Update(first))
            .unwrap_err();
        assert!(matches!(err, CoreError::Conflict(_)), "{err}");
        root.put("m", b"3".to_vec(), PutKind::Update(second))
            .unwrap();
        assert_eq!(&root.get("m").unwrap().unwrap().0[..], b"3");
    }

    #[test]
    fn writer_switches_to_multipart_above_the_threshold() {
        let root = ObjectRoot::in_memory("t", 10, 4);
        let mut w = root.writer("big");
        for chunk in [b"0123".as_slice(), b"456789", b"abcdef", b"g"] {
            w.write_all(chunk).unwrap();
        }
        assert!(!root.exists("big").unwrap(), "invisible until finished");
        assert_eq!(w.finish().unwrap(), 17);
        assert_eq!(
            &root.get("big").unwrap().unwrap().0[..],
            b"0123456789abcdefg"
        );
        // Below the threshold: one put; and create-only either way.
        let mut small = root.writer("big");
        small.write_all(b"xy").unwrap();
        assert!(matches!(small.finish().unwrap_err(), CoreError::Exists(_)));
        let mut big_again = root.writer("big");
        let err = big_again.write_all(&[0u8; 32]).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn a_large_file_already_stored_byte_for_byte_is_published() {
        // As after a completed multipart upload whose response was lost.
        let root = ObjectRoot::in_memory("t", 10, 4);
        let data = b"0123456789abcdefg";
        let mut first = root.writer("big");
        first.write_all(data).unwrap();
        first.finish().unwrap();
        let mut again = root.writer("big");
        again.write_all(&data[..12]).unwrap();
        again.write_all(&data[12..]).unwrap();
        assert_eq!(again.finish().unwrap(), 17);
        // A byte that differs, a longer file, or a shorter one: another file.
        let mut changed = data.to_vec();
        changed[5] = b'x';
        for other in [changed, [&data[..], b"h"].concat(), data[..15].to_vec()] {
            let mut w = root.writer("big");
            let refused = w.write_all(&other).is_err() || w.finish().is_err();
            assert!(refused, "{:?}", String::from_utf8_lossy(&other));
        }
        assert_eq!(&root.get("big").unwrap().unwrap().0[..], data);
    }

    #[test]
    fn a_refused_put_of_the_very_same_bytes_is_this_file_published() {
        // As after object_store retried a put whose first attempt was stored.
        let root = ObjectRoot::in_memory("t", 1 << 20, 1 << 20);
        root.put("seg", b"rows".to_vec(), PutKind::Create).unwrap();
        let mut again = root.writer("seg");
        again.write_all(b"rows").unwrap();
        assert_eq!(again.finish().unwrap(), 4);
        // Different bytes under the key are someone else's file: refused.
        let mut other = root.writer("seg");
        other.write_all(b"more rows").unwrap();
        assert!(matches!(other.finish().unwrap_err(), CoreError::Exists(_)));
        assert_eq!(&root.get("seg").unwrap().unwrap().0[..], b"rows");
    }

    #[test]
    fn dropped_writer_publishes_nothing() {
        let root = ObjectRoot::in_memory("t", 4, 4);
        let mut w = root.writer("k");
        w.write_all(&[1u8; 64]).unwrap();
        drop(w);
        assert!(!root.exists("k").unwrap());
        assert!(root.list("").unwrap().is_empty());
    }

    #[test]
    fn lists_recursively_and_by_level() {
        let root = ObjectRoot::in_memory("t", 1 << 20, 1 << 20);
        for k in ["p/a.parquet", "p/s/b.parquet", "p/c.toml", "q/d"] {
            root.put(k, vec![1], PutKind::Overwrite).unwrap();
        }
        let all: Vec<String> = root.list("p").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(all, ["p/a.parquet", "p/c.toml", "p/s/b.parquet"]);
        assert_eq!(root.list_names("p").unwrap(), ["a.parquet", "c.toml"]);
        root.delete("p/a.parquet").unwrap();
        root.delete("p/a.parquet").unwrap();
        assert_eq!(root.list_names("p").unwrap(), ["c.toml"]);
    }

    #[test]
    fn https_endpoints_get_a_tls_client() {
        // Nothing listens on port 1: the request must fail as a connection
        // error (a TLS client was built), not panic for want of a provider.
        let opts: Vec<(String, String)> = [
            ("aws_endpoint", "https://127.0.0.1:1"),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "k"),
            ("aws_secret_access_key", "s"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (root, _) = ObjectRoot::open_s3("s3://bucket/p", &opts).unwrap();
        let err = root.head("p/x").unwrap_err();
        assert!(err.to_string().contains("s3://bucket/p/x"), "{err}");
    }

    #[test]
    fn urls_are_checked() {
        assert!(split_url("/tmp/x").is_err());
        assert!(split_url("s3:///x").is_err());
        assert!(split_url("s3://b/../x").is_err());
        let (base, bucket, prefix) = split_url("s3://bkt/a//b/").unwrap();
        assert_eq!(
            (base.as_str(), bucket.as_str(), prefix.as_str()),
            ("s3://bkt", "bkt", "a/b")
        );
    }
}

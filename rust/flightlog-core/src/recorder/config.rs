//! What a recorder is asked to do: [`RecorderConfig`] and its policies
//! ([`OnFull`], [`Sampling`]), the checks of both, and where its spool lives.

use std::path::{Path, PathBuf};

use crate::error::{CoreError, Result};
use crate::output_layout::OutputLayout;
use crate::parquet_io::Codec;
use crate::schema::{DType, Value};
use crate::spool;

/// What a producer does when the ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for the flusher (lossless; the wait is counted as a stall).
    Block,
    /// Drop the row and count it.
    Drop,
}

impl OnFull {
    /// Parses `block` or `drop`.
    pub fn parse(s: &str) -> Result<OnFull> {
        match s {
            "block" => Ok(OnFull::Block),
            "drop" => Ok(OnFull::Drop),
            other => Err(CoreError::Config(format!(
                "on_full='{other}' is not supported: use 'block' or 'drop'"
            ))),
        }
    }
}

/// Keep every row up to `keep_first`, then one row in `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    pub keep_first: u64,
    pub every: u64,
}

impl Sampling {
    pub(super) fn keeps(&self, offered_index: u64) -> bool {
        offered_index < self.keep_first
            || (offered_index - self.keep_first).is_multiple_of(self.every)
    }
}

/// Recorder settings. Units are in the names; [`RecorderConfig::validate`]
/// says what is allowed.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub layout: OutputLayout,
    pub flush_interval_secs: f64,
    pub segment_rows: usize,
    pub ring_capacity: usize,
    pub compression: Codec,
    pub on_full: OnFull,
    pub sampling: Option<Sampling>,
    pub max_rows: Option<u64>,
    pub run_id: Option<String>,
    /// Extra key-value metadata for every file.
    pub metadata: Vec<(String, String)>,
    /// Fields filled with one value in every row (e.g. `run_id`).
    pub constants: Vec<(String, Value)>,
    /// Where the spool of a recorder on an object store lives (a local
    /// folder); None: `FLIGHTLOG_SPOOL_DIR`, else the user's cache folder.
    /// A local recording's spool is always beside its claim file.
    pub spool_dir: Option<PathBuf>,
    /// Local files and folders the caller wrote without waiting for the disk
    /// ([`crate::atomic_file::place_bytes`]: a run's start manifest, its
    /// folder) that no file of this recording may be durable without: their
    /// fsyncs complete before the first file is published, in the same wait
    /// as that file's own when it can (a short run's close), and once.
    pub sync_first: Vec<PathBuf>,
}

impl RecorderConfig {
    /// Default flush interval.
    pub const DEFAULT_FLUSH_INTERVAL_SECS: f64 = 1.0;
    /// Default rows per segment (and per row group).
    pub const DEFAULT_SEGMENT_ROWS: usize = 256 * 1024;
    /// Default ring capacity in rows.
    pub const DEFAULT_RING_CAPACITY: usize = 64 * 1024;
    /// Longest flush interval: long enough to mean "only on flush() and
    /// close()", and far inside what a `Duration` holds.
    pub const MAX_FLUSH_INTERVAL_SECS: f64 = 1e9;

    /// Defaults for a run folder.
    pub fn new(layout: OutputLayout) -> Self {
        RecorderConfig {
            layout,
            flush_interval_secs: Self::DEFAULT_FLUSH_INTERVAL_SECS,
            segment_rows: Self::DEFAULT_SEGMENT_ROWS,
            ring_capacity: Self::DEFAULT_RING_CAPACITY,
            compression: Codec::Zstd,
            on_full: OnFull::Block,
            sampling: None,
            max_rows: None,
            run_id: None,
            metadata: Vec::new(),
            constants: Vec::new(),
            spool_dir: None,
            sync_first: Vec::new(),
        }
    }

    /// Checks ranges; errors say what is allowed.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CoreError::Config(m));
        if !(self.flush_interval_secs > 0.0
            && self.flush_interval_secs <= Self::MAX_FLUSH_INTERVAL_SECS)
        {
            return bad(format!(
                "flush_interval must be a positive number of seconds, at most {} (about 31 years), got {}",
                Self::MAX_FLUSH_INTERVAL_SECS,
                self.flush_interval_secs
            ));
        }
        if !(1..=(1 << 26)).contains(&self.segment_rows) {
            return bad(format!(
                "segment_rows must be between 1 and {}, got {}",
                1 << 26,
                self.segment_rows
            ));
        }
        if !(2..=(1 << 24)).contains(&self.ring_capacity) {
            return bad(format!(
                "ring_capacity must be between 2 and {}, got {}",
                1 << 24,
                self.ring_capacity
            ));
        }
        if let Some(s) = self.sampling {
            if s.every == 0 {
                return bad("sampling 'every' must be at least 1".into());
            }
        }
        // Every `flightlog.*` key is the recorder's (run id, schema, merged
        // segment lists): a user key of that name would forge or corrupt them.
        for (k, _) in &self.metadata {
            if k.starts_with("flightlog.") || k == "schema_version" {
                return bad(format!(
                    "metadata key '{k}' is reserved by flightlog (keys starting with \
                     'flightlog.', and 'schema_version'); choose another name"
                ));
            }
        }
        Ok(())
    }
}

/// Where a recorder's spool lives, and whether it is the local folder's own:
/// on a local disk beside its segments (parts: beside its claim file); for
/// an object store, in
/// `config.spool_dir`, `FLIGHTLOG_SPOOL_DIR` or the user's cache folder,
/// named after the run's location (so that `recover` on this host finds it).
pub fn spool_dir(config: &RecorderConfig) -> (PathBuf, bool) {
    let layout = &config.layout;
    if layout.storage.is_local() {
        // Beside the segments of a recording that is merged at close (a run
        // folder: `run/.flightlog.spool`), so that two layouts sharing one
        // claim (an output file and its replacement) never share a spool.
        let beside_segments = layout
            .final_telemetry
            .as_ref()
            .and(layout.segment_dir.parent())
            .filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = beside_segments {
            return (dir.join(spool::SPOOL_DIR_NAME), true);
        }
        // Append-mode parts share their folder: named after the run's claim.
        if let Some(lock) = crate::claim::lock_path(layout) {
            return (spool::spool_dir_for_lock(&lock), true);
        }
    }
    let base = shared_spool_base(config.spool_dir.as_deref());
    let mut name: String = location(layout)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.push_str(".spool");
    (base.join(name), false)
}

/// The folder that holds the spools of recordings that have no local folder
/// of their own (object stores), one `<location>.spool` folder each:
/// `override_dir`, else `$FLIGHTLOG_SPOOL_DIR`, else `flightlog/spool` in the
/// user's cache folder (`$XDG_CACHE_HOME`, `~/.cache`, the temp folder).
pub fn shared_spool_base(override_dir: Option<&Path>) -> PathBuf {
    match override_dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("FLIGHTLOG_SPOOL_DIR").map(PathBuf::from))
    {
        Some(d) => d,
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("flightlog")
            .join("spool"),
    }
}

/// The location a spool in a shared folder (see [`spool_dir`]) is named
/// after. The name keeps only letters, digits, `-` and `_` of it, so two
/// locations may share a name (`exp/a/b` and `exp/a_b`): the spool's
/// metadata keeps the location itself ([`spool_location`]), and recovery of
/// one leaves the other's spools alone.
fn location(layout: &crate::output_layout::OutputLayout) -> String {
    layout
        .storage
        .describe(&layout.segment_dir.join(&layout.telemetry_prefix))
}

/// The location of `config`'s recording when its spool lives in a folder
/// shared with other recordings' (an object store's), for the spool's
/// metadata; None for a spool in the recording's own folder.
pub fn spool_location(config: &RecorderConfig) -> Option<String> {
    (!spool_dir(config).1).then(|| location(&config.layout))
}

/// A constant's value as JSON (the spool's metadata).
pub(super) fn constant_json(v: &Value) -> serde_json::Value {
    match v {
        Value::F64(x) => serde_json::json!({"f64": x}),
        Value::I64(x) => serde_json::json!({"i64": x}),
        Value::Bool(x) => serde_json::json!({"bool": x}),
        Value::Str(x) => serde_json::json!({"str": x}),
        Value::Null => serde_json::Value::Null,
    }
}

/// The inverse of [`constant_json`].
pub(crate) fn constant_from_json(v: &serde_json::Value) -> Option<Value> {
    if v.is_null() {
        return Some(Value::Null);
    }
    let o = v.as_object()?;
    let (k, x) = o.iter().next()?;
    Some(match k.as_str() {
        "f64" => Value::F64(x.as_f64()?),
        "i64" => Value::I64(x.as_i64()?),
        "bool" => Value::Bool(x.as_bool()?),
        "str" => Value::Str(x.as_str()?.to_owned()),
        _ => return None,
    })
}

pub(super) fn check_constant(name: &str, dtype: &DType, value: &Value) -> Result<()> {
    let ok = matches!(
        (dtype, value),
        (DType::F64 | DType::F32, Value::F64(_))
            | (DType::I64, Value::I64(_))
            | (DType::Bool, Value::Bool(_))
            | (DType::Str, Value::Str(_))
    ) || matches!((dtype, value), (DType::Enum(v), Value::Str(s)) if v.contains(s));
    if ok {
        Ok(())
    } else {
        Err(CoreError::Schema(format!(
            "constant {value:?} does not fit field '{name}' of dtype {}",
            dtype.name()
        )))
    }
}

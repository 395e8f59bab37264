//! flightlog-core: a flight recorder for numeric code, in pure Rust.
//!
//! Producers push fixed-width rows into a lock-free ring ([`flightlog_ring`]);
//! a flusher thread builds Arrow batches and publishes Parquet segments
//! atomically ([`atomic_file`]); `close` merges them without re-encoding.
//!
//! ```
//! use flightlog_core::{DType, Field, OutputLayout, Recorder, RecorderConfig, Schema};
//! use flightlog_core::row_layout::{f64_word, i64_word};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let schema = Schema::new(vec![Field::new("iter", DType::I64), Field::new("E", DType::F64)], 1).unwrap();
//! let rec = Recorder::new(schema, RecorderConfig::new(OutputLayout::run_folder(dir.path()))).unwrap();
//! for i in 0..1000 {
//!     rec.push(&[i64_word(i), f64_word(1.0 / (i as f64 + 1.0))]).unwrap();
//! }
//! rec.flush().unwrap();            // every row so far is in a published segment
//! let report = rec.close().unwrap(); // segments merged into telemetry.parquet
//! assert_eq!(report.files[0].1, 1000);
//! ```
// The exceptions are `mapped` (a memory-mapped file viewed as atomics) and
// `barrier` (one system call).
#![deny(unsafe_code)]

pub mod atomic_file;
pub mod barrier;
pub mod claim;
pub mod dict;
pub mod error;
pub mod mapped;
#[cfg(feature = "object-store")]
pub mod object_root;
pub mod output_layout;
pub mod parquet_io;
mod producer;
pub mod read;
pub mod recorder;
pub mod recover;
pub mod root_scan;
pub mod row_layout;
pub mod schema;
pub mod spool;
pub mod storage;
mod thread_key;

pub use error::{CoreError, FlusherError, Result};
#[cfg(feature = "object-store")]
pub use object_root::{ObjectRoot, PutKind};
pub use output_layout::OutputLayout;
pub use parquet_io::Codec;
pub use recorder::{
    shared_spool_base, InPlace, NotStarted, Offer, OnFull, PendingRecorder, ReadyRecorder,
    Recorder, RecorderConfig, RowCall, Sampling, Stats,
};
pub use recover::{
    publish_replacement, recover_output_file, recover_run, recover_run_exclusive,
    recover_run_with_spool, salvage_spool, RecoverReport,
};
pub use row_layout::RowLayout;
pub use schema::{DType, Field, Schema, Value};
pub use storage::Storage;

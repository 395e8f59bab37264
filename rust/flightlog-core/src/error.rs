//! The one error type of the core.

use std::path::PathBuf;

/// Everything that can go wrong in flightlog-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A schema or a row does not fit: unknown or missing field, bad name, ...
    #[error("{0}")]
    Schema(String),
    /// A value does not fit its field (an enum label outside the enum, ...).
    #[error("{0}")]
    InvalidValue(String),
    /// A value of the wrong kind for its field (`None` for a non-nullable
    /// field, ...): a binding raises its type error.
    #[error("{0}")]
    WrongType(String),
    /// A configuration value is out of range; the message says what is allowed.
    #[error("{0}")]
    Config(String),
    /// Writing or publishing a file failed; the message says which file and
    /// what became of the rows (kept in memory for a retry, or lost).
    #[error("{message}")]
    Write { message: String },
    /// An I/O error on a path.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Parquet library failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed building a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The output location already holds a recording.
    #[error("{0}")]
    Exists(String),
    /// A conditional update lost a race: the object changed since it was read.
    #[error("{0}")]
    Conflict(String),
    /// Another writer (a recorder, or a recover) holds the folder's claim;
    /// the message names it (pid, host, since when).
    #[error("{0}")]
    Claimed(String),
    /// The recorder belongs to another process: this is a forked child.
    #[error("{0}")]
    Forked(String),
    /// The recorder was closed.
    #[error("the recorder is closed")]
    Closed,
    /// A call the recorder cannot serve where it was made (a row offered from
    /// inside another row's offer on the same thread); the message says which.
    #[error("{0}")]
    Misuse(String),
    /// The flusher thread failed to write (or panicked): carried typed from
    /// that thread to the producer call, `flush` or `close` that reports it.
    #[error(transparent)]
    Flusher(#[from] FlusherError),
}

/// What went wrong on a recorder's flusher thread, and what became of the
/// rows. Built there, handed across the thread as a value and reported by
/// the next producer call, `flush` or `close`; `close` turns "kept for a
/// retry" into "not written" with [`FlusherError::at_close`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlusherError {
    /// Publishing a telemetry segment failed: `kept` rows stay in memory for
    /// a retry, `lost` older ones were given up at the memory bound.
    #[error("writing segment {path}: {source}; {}", rows_fate(.kept, .lost, .closed))]
    Segment {
        path: String,
        #[source]
        source: Box<CoreError>,
        kept: usize,
        lost: usize,
        /// The recorder closed since: the kept rows are not written.
        closed: bool,
    },
    /// Publishing an events segment failed: `kept` events stay for a retry.
    #[error("writing events segment {path}: {source}; {kept} events {}", events_fate(.closed))]
    EventsSegment {
        path: String,
        #[source]
        source: Box<CoreError>,
        kept: usize,
        closed: bool,
    },
    /// Building a batch failed (cannot happen with a validated schema): its
    /// rows are lost, not retried forever.
    #[error("building a batch of {rows} rows failed, rows lost: {source}")]
    Batch {
        rows: usize,
        #[source]
        source: Box<CoreError>,
    },
    /// A flush cycle panicked; the flusher thread goes on.
    #[error("the flusher panicked: {0}; published segments are intact")]
    CyclePanicked(String),
    /// The flusher thread itself died of a panic: nothing drains the ring.
    #[error("the flusher thread panicked: {0}; published segments are intact, run recover")]
    ThreadPanicked(String),
    /// The flusher thread died with its state: the `missing` accepted rows
    /// not in a published file are counted lost.
    #[error(
        "the flusher thread panicked: {panic}; {missing} rows not yet written are lost \
         (counted in rows_lost); published segments are intact, run recover"
    )]
    Died { panic: String, missing: u64 },
    /// `close` found rows and events the disk refused to the end.
    #[error(
        "{}; the recorder is closed: {rows} rows and {events} events that were kept for a retry \
         are lost (counted in rows_lost)",
        cause_text(.cause)
    )]
    LostAtClose {
        cause: Option<Box<CoreError>>,
        rows: u64,
        events: u64,
    },
}

impl FlusherError {
    /// The same error as `close` reports it: rows and events it said were
    /// kept for a retry are now not written (the recorder is gone).
    pub fn at_close(self) -> Self {
        match self {
            FlusherError::Segment {
                path,
                source,
                kept,
                lost,
                ..
            } => FlusherError::Segment {
                path,
                source,
                kept,
                lost,
                closed: true,
            },
            FlusherError::EventsSegment {
                path, source, kept, ..
            } => FlusherError::EventsSegment {
                path,
                source,
                kept,
                closed: true,
            },
            other => other,
        }
    }
}

fn rows_fate(kept: &usize, lost: &usize, closed: &bool) -> String {
    let kept_text = if *closed {
        "not written"
    } else {
        "kept in memory for a retry"
    };
    if *lost > 0 {
        format!("{kept} rows {kept_text}, {lost} older rows lost (memory bound)")
    } else {
        format!("{kept} rows {kept_text}")
    }
}

fn events_fate(closed: &bool) -> &'static str {
    if *closed {
        "not written"
    } else {
        "kept in memory for a retry"
    }
}

fn cause_text(cause: &Option<Box<CoreError>>) -> String {
    match cause {
        Some(e) => e.to_string(),
        None => "the last write failed".into(),
    }
}

impl CoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn write(message: impl Into<String>) -> Self {
        CoreError::Write {
            message: message.into(),
        }
    }

    /// True for errors of writing data (I/O, Parquet, publish), as opposed to
    /// misuse (schema, config, closed).
    pub fn is_write_error(&self) -> bool {
        matches!(
            self,
            CoreError::Write { .. }
                | CoreError::Io { .. }
                | CoreError::Parquet(_)
                | CoreError::Flusher(_)
        )
    }
}

/// Result alias of the core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

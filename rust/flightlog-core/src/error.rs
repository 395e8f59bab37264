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
            CoreError::Write { .. } | CoreError::Io { .. } | CoreError::Parquet(_)
        )
    }
}

/// Result alias of the core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

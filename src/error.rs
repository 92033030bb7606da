//! The library's typed errors.
//!
//! Every message names a file, a row or a column, never the value of an
//! identity column (name, date of birth, passport number). The binary maps
//! each error to an exit code: 1 when the data was refused, 2 when the
//! command was used wrongly or the configuration (key, paths) is wrong.

use std::path::PathBuf;

/// Anything that can go wrong in safetally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line value or a configuration file is wrong (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The task-force key is missing, unreadable or malformed (exit code 2).
    #[error("{0}")]
    Key(String),
    /// The input data was refused; the message says what to fix (exit code 1).
    #[error("{0}")]
    Refused(String),
    /// The store is in use by another command, and waiting was not wanted
    /// (exit code 1).
    #[error("{0}")]
    Busy(String),
    /// A drop file failed verification (exit code 1).
    #[error("{path}: {reason}")]
    BadDrop {
        /// The drop that failed.
        path: PathBuf,
        /// Why it failed, in words an NGO or the secretariat can act on.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading Parquet failed.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Building Arrow arrays failed.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl Error {
    /// The process exit code this error maps to: 1 data refused, 2 usage.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Key(_) => 2,
            _ => 1,
        }
    }

    /// Wraps an IO error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

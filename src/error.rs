//! The library's typed errors.
//!
//! Every message names a file, a row or a column, never the value of an
//! identity column (name, date of birth, passport number). The binary maps
//! each error to an exit code: 1 when the data was refused, 2 when the
//! command was used wrongly or the configuration (key, paths) is wrong, 3
//! when the machine failed (disk full, permission denied, a write cut
//! short): then the data is not at fault.

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
    /// Reading or writing a file failed: exit code 3 (the machine), or 2
    /// when the file named is not there.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading Parquet failed (exit code 3 when the file system
    /// failed under it, else 1).
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Building Arrow arrays failed (exit code 3 when the file system failed
    /// under it, else 1).
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Exit code: the data was refused (fix the file).
pub const EXIT_REFUSED: i32 = 1;
/// Exit code: the command was used wrongly, or the key or configuration is
/// wrong.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the machine failed (disk full, permission denied, a write cut
/// short); the data is not at fault and nothing was half-written.
pub const EXIT_MACHINE: i32 = 3;

/// The exit code of an operating system error: a path that is not there
/// was named wrongly; any other failure is the machine's.
pub fn io_exit_code(e: &std::io::Error) -> i32 {
    if e.kind() == std::io::ErrorKind::NotFound {
        EXIT_USAGE
    } else {
        EXIT_MACHINE
    }
}

/// The operating system error inside `e`, if it wraps one.
fn io_source<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

impl Error {
    /// The process exit code this error maps to: 1 data refused, 2 usage,
    /// 3 the machine failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Key(_) => EXIT_USAGE,
            Error::Io { source, .. } => io_exit_code(source),
            Error::Parquet(parquet::errors::ParquetError::External(e)) => {
                io_source(e.as_ref()).map_or(EXIT_REFUSED, |_| EXIT_MACHINE)
            }
            Error::Arrow(arrow_schema::ArrowError::IoError(..)) => EXIT_MACHINE,
            Error::Arrow(arrow_schema::ArrowError::ExternalError(e)) => {
                io_source(e.as_ref()).map_or(EXIT_REFUSED, |_| EXIT_MACHINE)
            }
            _ => EXIT_REFUSED,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn failures_of_the_machine_exit_3_and_a_missing_path_exits_2() {
        let io = |k: ErrorKind| std::io::Error::from(k);
        for k in [
            ErrorKind::StorageFull,
            ErrorKind::PermissionDenied,
            ErrorKind::ReadOnlyFilesystem,
            ErrorKind::WriteZero,
            ErrorKind::Interrupted,
        ] {
            assert_eq!(
                Error::io("writing", io(k)).exit_code(),
                EXIT_MACHINE,
                "{k:?}"
            );
        }
        assert_eq!(
            Error::io("reading", io(ErrorKind::NotFound)).exit_code(),
            EXIT_USAGE
        );
        // Parquet and Arrow errors are the machine's when the file system
        // failed under them, else the data's.
        let full = parquet::errors::ParquetError::from(io(ErrorKind::StorageFull));
        assert_eq!(Error::Parquet(full).exit_code(), EXIT_MACHINE);
        let bad = parquet::errors::ParquetError::General("bad page".into());
        assert_eq!(Error::Parquet(bad).exit_code(), EXIT_REFUSED);
        let arrow = arrow_schema::ArrowError::from(io(ErrorKind::StorageFull));
        assert_eq!(Error::Arrow(arrow).exit_code(), EXIT_MACHINE);
        assert_eq!(Error::Refused("x".into()).exit_code(), EXIT_REFUSED);
        assert_eq!(Error::Usage("x".into()).exit_code(), EXIT_USAGE);
    }
}

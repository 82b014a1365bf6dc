//! The library's error type: every failure a user can cause gets a clear one-line message.

use std::path::PathBuf;

/// Everything that can go wrong, each with the one line a user reads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is out of its valid range; the message names it and the range.
    #[error("invalid {name}: {message}")]
    InvalidParameter {
        /// The parameter, as the library names it (the CLI shows its flag).
        name: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },

    /// A training set that cannot be read or used.
    #[error("dataset {source_name}: {message}")]
    Dataset {
        /// The file or spec it came from.
        source_name: String,
        /// What is wrong with it.
        message: String,
    },

    /// A file or folder that cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },

    /// No GPU adapter fits what was asked (why, in words).
    #[error("no GPU adapter available: {0}")]
    NoAdapter(String),

    /// The GPU failed (a lost device, an out-of-memory, a validation error).
    #[error("GPU error: {0}")]
    Gpu(String),

    /// An output that cannot be made (an image too large for its format, a folder
    /// that would mix two runs, ...).
    #[error("{0}")]
    Output(String),

    /// The run was stopped (Ctrl-C) at a step boundary; the message says where and, with
    /// checkpoints, how to resume.
    #[error("{0}")]
    Interrupted(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidParameter`] about `name`.
    pub fn invalid(name: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            message: message.into(),
        }
    }

    /// An [`Error::Io`] about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

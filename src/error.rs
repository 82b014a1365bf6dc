//! The library's error type: every failure a user can cause gets a clear one-line message.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is out of its valid range; the message names it and the range.
    #[error("invalid {name}: {message}")]
    InvalidParameter { name: &'static str, message: String },

    #[error("dataset {source_name}: {message}")]
    Dataset {
        source_name: String,
        message: String,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("no GPU adapter available: {0}")]
    NoAdapter(String),

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("{0}")]
    Output(String),

    /// The run was stopped (Ctrl-C) at a step boundary; the message says where and, with
    /// checkpoints, how to resume.
    #[error("{0}")]
    Interrupted(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(name: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

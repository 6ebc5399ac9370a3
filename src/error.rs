//! The one error type of the `facto` crate.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A command-line or configuration mistake; the message is the one line shown to the user.
    #[error("{0}")]
    Usage(String),
    /// The node's own listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    /// The local database failed.
    #[error("storage: {0}")]
    Store(String),
    /// Talking to a member failed.
    #[error("{0}")]
    Remote(String),
    /// Any other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Election(#[from] facto_elections::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

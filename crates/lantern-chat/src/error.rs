//! The error type of the chat crate.

/// What can go wrong talking to, or serving, a chat endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{url}: {what}")]
    Connect { url: String, what: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: unreadable reply: {what}")]
    Reply { url: String, what: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Lm(#[from] lantern_lm::LmError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result alias for the chat crate.
pub type Result<T, E = ChatError> = std::result::Result<T, E>;

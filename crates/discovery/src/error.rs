//! Errors from parsing a membership specification.

/// Why a `--handlers` list was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no handlers given: expected id=host:port[,id=host:port...]")]
    NoHandlers,
    #[error("handler list has an empty entry at position {position} (a stray ',')")]
    EmptyEntry { position: usize },
    #[error("handler entry {entry:?} has no '=': expected id=host:port")]
    MissingEquals { entry: String },
    #[error("handler entry {entry:?} has an empty id: expected id=host:port")]
    EmptyId { entry: String },
    #[error("handler {id:?} has a bad address {addr:?}: {reason}")]
    BadAddress {
        id: String,
        addr: String,
        reason: &'static str,
    },
    #[error("handler id {id:?} is given twice")]
    DuplicateId { id: String },
}

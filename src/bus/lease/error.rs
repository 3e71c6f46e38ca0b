//! Why the lease state machine refused an operation.

/// A refused operation; the gRPC layer maps each variant to a status code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Bad input, naming the field (INVALID_ARGUMENT).
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No such message (NOT_FOUND).
    #[error("message `{0}` not found")]
    NotFound(String),
    /// A publish reused an id (ALREADY_EXISTS).
    #[error("message `{0}` already exists")]
    Duplicate(String),
    /// The caller's lease is no longer the current one (FAILED_PRECONDITION).
    #[error("stale lease on `{message_id}`: {reason}")]
    Stale {
        /// The message.
        message_id: String,
        /// Stale epoch, other owner, expired, or not processing.
        reason: String,
    },
}

impl LeaseError {
    /// An InvalidArgument naming `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> LeaseError {
        LeaseError::InvalidArgument { field, reason: reason.into() }
    }
}

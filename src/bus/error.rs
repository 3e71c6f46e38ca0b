//! Errors of the lease state machine.
//!
//! Two families, so the gRPC layer can map them in one place (see
//! [`BusError::kind`]):
//!
//! - [`ValidationError`]: the input itself is wrong (each variant names the
//!   offending field) → `INVALID_ARGUMENT`.
//! - [`BusError::StaleLease`]: the caller's lease is no longer the current one
//!   (superseded epoch, expired, wrong owner, not leased) →
//!   `FAILED_PRECONDITION`. [`BusError::NotFound`] → `NOT_FOUND`.
//!
//! Every operation that returns an error leaves the state and the output
//! buffer exactly as they were.

use std::fmt;

use super::model::Status;

/// Longest piece of caller input quoted back in an error message, in bytes.
const QUOTE_LIMIT: usize = 64;

/// Quotes caller input in an error message, shortened so a hostile multi-MiB
/// value cannot blow up logs.
pub(crate) fn quote(value: &str) -> String {
    if value.len() <= QUOTE_LIMIT {
        return value.to_owned();
    }
    let mut end = QUOTE_LIMIT;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// An input refused before anything changed. Each variant names its field
/// (also available as [`ValidationError::field`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// `topic` was empty: every message and claim needs a queue.
    #[error("topic: must not be empty")]
    EmptyTopic,
    /// `message_id` was empty where an id is required (adopted or restored rows, lease references).
    #[error("message_id: must not be empty")]
    EmptyMessageId,
    /// `agent_id` was empty on a claim: an empty owner would mean "no lease".
    #[error("agent_id: must not be empty (it becomes the lease owner)")]
    EmptyAgentId,
    /// A field that must hold JSON does not parse.
    #[error("{field}: not valid JSON ({reason})")]
    InvalidJson {
        /// `payload_json` or `details_json`.
        field: &'static str,
        /// The parser's explanation (line and column).
        reason: String,
    },
    /// `details_json` parsed but is not a JSON object (it is merged into event details).
    #[error("{field}: must be a JSON object")]
    NotJsonObject {
        /// The field (`details_json`).
        field: &'static str,
    },
    /// `ttl_ms` was negative (0 means "never expires").
    #[error("ttl_ms: must not be negative (got {value})")]
    NegativeTtl {
        /// The refused value.
        value: i32,
    },
    /// A duration (`lease_ms`, `delay_ms`, `older_than_ms`) is outside its range.
    #[error("{field}: must be between {min} and {max} ms (got {value})")]
    DurationOutOfRange {
        /// `lease_ms`, `delay_ms` or `older_than_ms`.
        field: &'static str,
        /// The refused value.
        value: i64,
        /// Smallest value allowed.
        min: i64,
        /// Largest value allowed (e.g. [`super::model::MAX_LEASE_MS`]).
        max: i64,
    },
    /// `role` is not one of system | user | agent.
    #[error("role: unknown role `{value}` (expected system, user or agent)")]
    UnknownRole {
        /// The refused value (shortened).
        value: String,
    },
    /// `msg_type` is not one of text | json | binary | embedding_ref | signal.
    #[error("msg_type: unknown type `{value}` (expected text, json, binary, embedding_ref or signal)")]
    UnknownMsgType {
        /// The refused value (shortened).
        value: String,
    },
    /// `status` (of an adopted or restored row) is not one of the five statuses.
    #[error("status: unknown status `{value}` (expected queued, processing, done, error or expired)")]
    UnknownStatus {
        /// The refused value (shortened).
        value: String,
    },
    /// A field is longer than its documented limit.
    #[error("{field}: {len} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit ([`super::model::MAX_PAYLOAD_BYTES`] and friends).
        limit: usize,
    },
    /// The `message_id` is already known, or appears twice in one batch.
    #[error("message_id: duplicate id `{message_id}`")]
    DuplicateMessageId {
        /// The duplicated id (shortened).
        message_id: String,
    },
    /// A force release named no selector (ids, owner or age): refusing to release every lease.
    #[error("message_ids, owner, older_than_ms: at least one selector is required")]
    NoSelector,
}

impl ValidationError {
    /// The column or request field the error is about (for `BadRequest.field_violations`).
    pub fn field(&self) -> &'static str {
        match self {
            ValidationError::EmptyTopic => "topic",
            ValidationError::EmptyMessageId | ValidationError::DuplicateMessageId { .. } => "message_id",
            ValidationError::EmptyAgentId => "agent_id",
            ValidationError::InvalidJson { field, .. }
            | ValidationError::NotJsonObject { field }
            | ValidationError::DurationOutOfRange { field, .. }
            | ValidationError::TooLarge { field, .. } => field,
            ValidationError::NegativeTtl { .. } => "ttl_ms",
            ValidationError::UnknownRole { .. } => "role",
            ValidationError::UnknownMsgType { .. } => "msg_type",
            ValidationError::UnknownStatus { .. } => "status",
            ValidationError::NoSelector => "message_ids",
        }
    }
}

/// Why a lease reference was refused (all map to `FAILED_PRECONDITION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleReason {
    /// The message's `lease_epoch` moved on: the lease was settled, expired,
    /// released or claimed again since the caller got it.
    EpochSuperseded,
    /// The epoch matches but the lease deadline has passed (the expiry has not
    /// been processed yet; it will be on the next tick).
    Expired {
        /// The `lease_expires_ts` that passed, epoch ns.
        expired_at: i64,
    },
    /// The epoch matches but another agent holds the lease.
    NotOwner {
        /// The actual `lease_owner`.
        owner: String,
    },
    /// The epoch matches but the message is not leased at all.
    NotLeased {
        /// Its current status.
        status: Status,
    },
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleReason::EpochSuperseded => f.write_str("the lease epoch is stale (superseded by a newer lease change)"),
            StaleReason::Expired { expired_at } => write!(f, "the lease epoch is stale (lease expired at {expired_at})"),
            StaleReason::NotOwner { owner } => write!(f, "the lease is held by `{}`", quote(owner)),
            StaleReason::NotLeased { status } => write!(f, "the message is not leased (status {})", status.as_str()),
        }
    }
}

/// The gRPC status family an error maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `INVALID_ARGUMENT`: fix the request.
    InvalidArgument,
    /// `NOT_FOUND`: no such message.
    NotFound,
    /// `FAILED_PRECONDITION`: the lease is stale; claim again.
    FailedPrecondition,
}

/// Every error a state-machine operation returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// A request field is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// One message of a publish batch is invalid (the whole batch is refused).
    #[error("messages[{index}].{source}")]
    InvalidItem {
        /// Position of the message in the batch.
        index: usize,
        /// What is wrong with it.
        source: ValidationError,
    },
    /// The referenced message does not exist.
    #[error("message `{message_id}` not found")]
    NotFound {
        /// The id asked for (shortened).
        message_id: String,
    },
    /// The caller's lease is not the current one: fenced off.
    #[error("stale lease on message `{message_id}` (presented lease_epoch {presented_epoch}, current {current_epoch}): {reason}")]
    StaleLease {
        /// The message.
        message_id: String,
        /// The epoch the caller presented.
        presented_epoch: i64,
        /// The message's current epoch.
        current_epoch: i64,
        /// What exactly is stale.
        reason: StaleReason,
    },
}

impl BusError {
    /// The gRPC status family to answer with.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BusError::Invalid(_) | BusError::InvalidItem { .. } => ErrorKind::InvalidArgument,
            BusError::NotFound { .. } => ErrorKind::NotFound,
            BusError::StaleLease { .. } => ErrorKind::FailedPrecondition,
        }
    }

    /// The validation error inside, if this is one.
    pub fn validation(&self) -> Option<&ValidationError> {
        match self {
            BusError::Invalid(e) | BusError::InvalidItem { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

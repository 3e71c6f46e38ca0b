//! Rows of the bus as the lease state machine sees them: a message (one row of
//! `agent_messages`), an event (one row of `agent_events`), and what a
//! producer submits. Times are epoch nanoseconds; absent strings are "".

use serde::{Deserialize, Serialize};

use super::error::LeaseError;

/// Lifecycle of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    /// Waiting to be claimed.
    Queued,
    /// Leased to a consumer.
    Processing,
    /// Acknowledged (terminal).
    Done,
    /// Dead-lettered after too many retries (terminal).
    Error,
    /// Its TTL passed before it was done (terminal).
    Expired,
}

impl Status {
    /// All statuses, in display order.
    pub const ALL: [Status; 5] = [Status::Queued, Status::Processing, Status::Done, Status::Error, Status::Expired];

    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Processing => "processing",
            Status::Done => "done",
            Status::Error => "error",
            Status::Expired => "expired",
        }
    }

    /// Parses a column value.
    pub fn parse(s: &str) -> Result<Status, LeaseError> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| LeaseError::invalid("status", format!("unknown status `{s}`")))
    }

    /// No further change is possible.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Done | Status::Error | Status::Expired)
    }
}

/// Allowed `role` values.
pub const ROLES: [&str; 3] = ["system", "user", "agent"];
/// Allowed `msg_type` values.
pub const MSG_TYPES: [&str; 5] = ["text", "json", "binary", "embedding_ref", "signal"];
/// Largest accepted `payload_json` (bytes); bigger payloads belong in `payload_blob_ref`.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Longest accepted topic, id or agent name.
pub const MAX_NAME_BYTES: usize = 256;

/// One row of `agent_messages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Primary key.
    pub message_id: String,
    /// Enqueue time: claim order and TTL start.
    pub ts: i64,
    /// When dhbus accepted or adopted the row.
    pub ingest_ts: i64,
    /// Queue.
    pub topic: String,
    /// Session, for filtered claims.
    pub session_id: String,
    /// Task the message belongs to.
    pub task_id: String,
    /// Producer.
    pub agent_id: String,
    /// system | user | agent.
    pub role: String,
    /// text | json | binary | embedding_ref | signal.
    pub msg_type: String,
    /// Payload.
    pub payload_json: String,
    /// Out-of-band payload reference.
    pub payload_blob_ref: String,
    /// Higher is claimed first.
    pub priority: i32,
    /// Expiry after `ts` in ms; 0 = never.
    pub ttl_ms: i32,
    /// Current lease holder ("" when none).
    pub lease_owner: String,
    /// Lease deadline (0 when none).
    pub lease_expires_ts: i64,
    /// Lifecycle state.
    pub status: Status,
    /// Nacks and lease expiries so far.
    pub retry_count: i32,
    /// Fencing token: +1 on every lease change.
    pub lease_epoch: i64,
    /// +1 on every change of the row.
    pub version: i64,
    /// Time of the last change.
    pub updated_ts: i64,
}

impl Message {
    /// When the TTL runs out (None: never).
    pub fn ttl_deadline(&self) -> Option<i64> {
        (self.ttl_ms > 0).then(|| self.ts.saturating_add(i64::from(self.ttl_ms) * 1_000_000))
    }
}

/// One row of `agent_events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id.
    pub event_id: String,
    /// When it happened.
    pub ts: i64,
    /// The agent that caused it (lease holder for lease events).
    pub agent_id: String,
    /// Session of the message.
    pub session_id: String,
    /// Message it is about.
    pub message_id: String,
    /// publish | adopted | claimed | heartbeat | ack | nack | expired | released | force_released | dead_letter.
    pub event: &'static str,
    /// JSON object with details.
    pub details_json: String,
}

/// What a producer submits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewMessage {
    /// Optional id (generated when empty).
    pub message_id: String,
    /// Queue (required).
    pub topic: String,
    /// Session.
    pub session_id: String,
    /// Task.
    pub task_id: String,
    /// Producer.
    pub agent_id: String,
    /// Role ("" = agent).
    pub role: String,
    /// Type ("" = json).
    pub msg_type: String,
    /// Payload (must be JSON when msg_type is json).
    pub payload_json: String,
    /// Blob reference.
    pub payload_blob_ref: String,
    /// Priority.
    pub priority: i32,
    /// TTL in ms (0 = none; negative refused).
    pub ttl_ms: i32,
}

fn check_name(field: &'static str, v: &str, required: bool) -> Result<(), LeaseError> {
    if required && v.is_empty() {
        return Err(LeaseError::invalid(field, "must not be empty"));
    }
    if v.len() > MAX_NAME_BYTES {
        return Err(LeaseError::invalid(field, format!("longer than {MAX_NAME_BYTES} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(LeaseError::invalid(field, "contains control characters"));
    }
    Ok(())
}

impl NewMessage {
    /// Validates and fills defaults; errors name the field.
    pub fn validate(mut self) -> Result<NewMessage, LeaseError> {
        check_name("topic", &self.topic, true)?;
        check_name("message_id", &self.message_id, false)?;
        check_name("session_id", &self.session_id, false)?;
        check_name("task_id", &self.task_id, false)?;
        check_name("agent_id", &self.agent_id, false)?;
        if self.role.is_empty() {
            self.role = "agent".into();
        }
        if !ROLES.contains(&self.role.as_str()) {
            return Err(LeaseError::invalid("role", format!("unknown role `{}` (expected {})", self.role, ROLES.join(", "))));
        }
        if self.msg_type.is_empty() {
            self.msg_type = "json".into();
        }
        if !MSG_TYPES.contains(&self.msg_type.as_str()) {
            return Err(LeaseError::invalid("msg_type", format!("unknown msg_type `{}` (expected {})", self.msg_type, MSG_TYPES.join(", "))));
        }
        if self.ttl_ms < 0 {
            return Err(LeaseError::invalid("ttl_ms", "must not be negative"));
        }
        if self.payload_json.len() > MAX_PAYLOAD_BYTES {
            return Err(LeaseError::invalid("payload_json", format!("{} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit; use payload_blob_ref", self.payload_json.len())));
        }
        if self.msg_type == "json" && !self.payload_json.is_empty() {
            serde_json::from_str::<serde::de::IgnoredAny>(&self.payload_json)
                .map_err(|e| LeaseError::invalid("payload_json", format!("not valid JSON: {e}")))?;
        }
        Ok(self)
    }
}

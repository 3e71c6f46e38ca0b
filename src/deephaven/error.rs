//! Typed errors of the Deephaven client. Every server error is mapped here, in
//! one place, to a variant that says what failed.

use tonic::{Code, Status};

/// What went wrong talking to Deephaven.
#[derive(Debug, thiserror::Error)]
pub enum DeephavenError {
    /// The server refused the credentials or the session token.
    #[error("authentication failed against {endpoint}: {message}")]
    Auth {
        /// Server address, so the operator knows which server refused.
        endpoint: String,
        /// The server's reason.
        message: String,
    },
    /// A table named in the global scope does not exist.
    #[error("table `{name}` not found on the server")]
    TableNotFound {
        /// Scope name that could not be resolved.
        name: String,
    },
    /// Rows or a table do not match the expected schema.
    #[error("schema mismatch in column `{column}`: {detail}")]
    SchemaMismatch {
        /// The offending column.
        column: String,
        /// Expected vs found.
        detail: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("connection to {endpoint} failed: {message}")]
    Connection {
        /// Server address.
        endpoint: String,
        /// Transport error text.
        message: String,
    },
    /// A server-side script failed.
    #[error("script failed: {0}")]
    Script(String),
    /// Any other refusal by the server, with the operation that was attempted.
    #[error("{op} failed: {code:?}: {message}")]
    Server {
        /// The RPC or client operation.
        op: &'static str,
        /// gRPC status code.
        code: Code,
        /// Server message.
        message: String,
    },
    /// A name that cannot be used as a Deephaven identifier.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        /// What kind of name (table, column).
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The server sent something the client cannot interpret.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Barrage stream decoding or table-state error.
    #[error(transparent)]
    Barrage(#[from] super::barrage::error::BarrageError),
    /// Arrow encoding/decoding error.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The client was shut down.
    #[error("client is closed")]
    Closed,
}

impl DeephavenError {
    /// Maps a gRPC status from operation `op` to a typed error.
    pub fn from_status(op: &'static str, endpoint: &str, status: Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => DeephavenError::Auth {
                endpoint: endpoint.to_string(),
                message: if message.is_empty() { format!("{:?}", status.code()) } else { message },
            },
            Code::Unavailable => DeephavenError::Connection { endpoint: endpoint.to_string(), message },
            code => {
                if let Some(column) = schema_column_in(&message) {
                    return DeephavenError::SchemaMismatch { column, detail: message };
                }
                DeephavenError::Server { op, code, message }
            }
        }
    }

    /// Whether retrying the same call on a fresh connection/session may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, DeephavenError::Connection { .. })
            || matches!(self, DeephavenError::Server { code: Code::Unavailable | Code::Cancelled | Code::Unknown, .. })
    }

    /// Whether the session token was refused (the session must log in again).
    pub fn is_auth(&self) -> bool {
        matches!(self, DeephavenError::Auth { .. })
    }
}

/// Pulls the offending column name out of a server schema complaint, such as
/// "Table definition incompatibilities: ... column 'n' is different ..." or
/// "column `ts` has type long".
fn schema_column_in(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    if !(lower.contains("type") || lower.contains("schema") || lower.contains("definition") || lower.contains("compatible")) {
        return None;
    }
    let mut found: Vec<(bool, String)> = Vec::new();
    let mut rest = message;
    while let Some(idx) = rest.to_ascii_lowercase().find("column") {
        let after = &rest[idx + "column".len()..];
        let trimmed = after.trim_start_matches(|c: char| c == 's' || c == ':' || c.is_whitespace());
        let quoted = trimmed.starts_with(['`', '\'', '"', '[']);
        let body = trimmed.trim_start_matches(['`', '\'', '"', '[']);
        let name: String = body.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let tail = body[name.len()..].to_ascii_lowercase();
        // "is different" names a column whose type differs: the most useful one to report.
        let different = tail.trim_start_matches(['`', '\'', '"', ']']).trim_start().starts_with("is different");
        if !name.is_empty() && (quoted || different) {
            found.push((different, name));
        }
        rest = after;
    }
    found.iter().find(|(d, _)| *d).or(found.first()).map(|(_, n)| n.clone())
}

/// Shorthand for results of this module.
pub type Result<T, E = DeephavenError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_maps_to_auth() {
        let e = DeephavenError::from_status("x", "h:1", Status::unauthenticated("bad key"));
        assert!(e.is_auth());
        assert!(e.to_string().contains("bad key"));
    }

    #[test]
    fn column_is_extracted_from_schema_complaints() {
        assert_eq!(schema_column_in("Column `ts` has type long, expected int").as_deref(), Some("ts"));
        assert_eq!(schema_column_in("nothing here"), None);
        let dh = "Provided tables's columns are not compatible: Table definition incompatibilities: \n this column 'id' is missing in other\n column 'n' is different";
        assert_eq!(schema_column_in(dh).as_deref(), Some("n"));
    }
}

//! Deephaven tickets: export tickets (`e` + i32 LE) and scope tickets (`s/<name>`).

use super::error::{DeephavenError, Result};
use crate::proto::dh::grpc as pb;

/// A reference to a server-side object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(Vec<u8>);

impl Ticket {
    /// Export ticket number `id` of the session.
    pub fn export(id: i32) -> Ticket {
        let mut b = Vec::with_capacity(5);
        b.push(b'e');
        b.extend_from_slice(&id.to_le_bytes());
        Ticket(b)
    }

    /// The global-scope variable `name`; the name is validated as an identifier.
    pub fn scope(name: &str) -> Result<Ticket> {
        validate_identifier("table", name)?;
        Ok(Ticket(format!("s/{name}").into_bytes()))
    }

    /// The export id, for export tickets.
    pub fn export_id(&self) -> Option<i32> {
        match self.0.as_slice() {
            [b'e', a, b, c, d] => Some(i32::from_le_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }

    /// Whether this ticket is an export of the session (and so must be released).
    pub fn is_export(&self) -> bool {
        self.export_id().is_some()
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// As a protobuf ticket.
    pub fn to_proto(&self) -> pb::Ticket {
        pb::Ticket { ticket: self.0.clone() }
    }

    /// As a table reference.
    pub fn to_ref(&self) -> pb::TableReference {
        pb::TableReference { r#ref: Some(pb::table_reference::Ref::Ticket(self.to_proto())) }
    }

    /// The Flight path of an export, used as the DoPut descriptor.
    pub fn flight_path(&self) -> Option<Vec<String>> {
        self.export_id().map(|id| vec!["export".to_string(), id.to_string()])
    }
}

/// Names the server would rename (`i`, `ii`, `k` are row variables of the
/// query language) or that collide with Java/Python keywords in formulas and scripts.
const RESERVED: &[&str] = &[
    "i", "ii", "k", "abstract", "and", "as", "assert", "async", "await", "boolean", "break", "byte", "case", "catch",
    "char", "class", "const", "continue", "def", "default", "del", "do", "double", "elif", "else", "enum", "except",
    "extends", "false", "False", "final", "finally", "float", "for", "from", "global", "goto", "if", "implements",
    "import", "in", "instanceof", "int", "interface", "is", "lambda", "long", "native", "new", "None", "nonlocal",
    "not", "null", "or", "package", "pass", "private", "protected", "public", "raise", "return", "short", "static",
    "strictfp", "super", "switch", "synchronized", "this", "throw", "throws", "transient", "true", "True", "try",
    "void", "volatile", "while", "with", "yield",
];

/// Checks that `name` is a plain identifier (letters, digits, `_`, not starting
/// with a digit, at most 128 chars), so it can be used as a table or column name
/// and never smuggles anything into a script or filter.
pub fn validate_identifier(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 128 {
        Some("longer than 128 characters")
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        Some("must not start with a digit")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Some("only ASCII letters, digits and `_` are allowed")
    } else if RESERVED.contains(&name) {
        Some("reserved by Deephaven's query language, Java or Python")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DeephavenError::InvalidName { what, value: name.to_string(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_ticket_round_trips() {
        let t = Ticket::export(258);
        assert_eq!(t.bytes(), &[b'e', 2, 1, 0, 0]);
        assert_eq!(t.export_id(), Some(258));
        assert_eq!(t.flight_path().unwrap(), vec!["export", "258"]);
    }

    #[test]
    fn scope_names_are_validated() {
        assert!(Ticket::scope("agent_messages").is_ok());
        for bad in ["", "1abc", "k", "import", "a b", "x;import os", "t'", &"a".repeat(129)] {
            assert!(Ticket::scope(bad).is_err(), "{bad:?} accepted");
        }
    }
}

//! `details_json` of events: a small writer (no `serde_json::Value` on the
//! hot path) and the merge of a caller's own JSON object.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::bus::error::ValidationError;
use crate::bus::model::{check_len, Message, MAX_DETAILS_BYTES};

/// A caller's parsed `details_json` object (`None` when not given).
pub(super) type Extra = Option<Map<String, Value>>;

/// Parses a caller's `details_json`: `""` = none, otherwise a JSON object of
/// at most [`MAX_DETAILS_BYTES`].
pub(super) fn parse_extra(details_json: &str) -> Result<Extra, ValidationError> {
    if details_json.trim().is_empty() {
        return Ok(None);
    }
    check_len("details_json", details_json, MAX_DETAILS_BYTES)?;
    match serde_json::from_str::<Value>(details_json) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(ValidationError::NotJsonObject { field: "details_json" }),
        Err(e) => Err(ValidationError::InvalidJson { field: "details_json", reason: e.to_string() }),
    }
}

/// Most keys dhbus writes itself into one event's details.
const MAX_OWN_KEYS: usize = 12;

/// Builds one details object. Starts with the keys every event carries:
/// `topic`, `status`, `lease_epoch`, `retry_count`.
pub(super) struct Details {
    /// The JSON text so far, without the closing brace.
    buf: String,
    /// Keys written so far (a caller's key of the same name is dropped).
    own: [&'static str; MAX_OWN_KEYS],
    /// How many of `own` are used.
    n_own: usize,
}

impl Details {
    /// The common keys of `m` (its state after the change).
    pub(super) fn of(m: &Message) -> Details {
        let mut d = Details { buf: String::with_capacity(112 + m.topic.len()), own: [""; MAX_OWN_KEYS], n_own: 0 };
        d.buf.push('{');
        d.str("topic", &m.topic).str("status", m.status.as_str()).int("lease_epoch", m.lease_epoch).int("retry_count", i64::from(m.retry_count))
    }

    /// Adds a string value.
    pub(super) fn str(mut self, key: &'static str, value: &str) -> Details {
        self.key(key);
        self.buf.push('"');
        escape_into(&mut self.buf, value);
        self.buf.push('"');
        self
    }

    /// Adds an integer value.
    pub(super) fn int(mut self, key: &'static str, value: i64) -> Details {
        self.key(key);
        let _ = write!(self.buf, "{value}");
        self
    }

    /// Adds the caller's keys, except those dhbus already wrote.
    pub(super) fn extra(mut self, extra: &Extra) -> Details {
        let Some(map) = extra else { return self };
        for (k, v) in map {
            if self.own.get(..self.n_own).is_some_and(|own| own.contains(&k.as_str())) {
                continue;
            }
            self.buf.push(',');
            self.buf.push('"');
            escape_into(&mut self.buf, k);
            self.buf.push_str("\":");
            self.buf.push_str(&v.to_string());
        }
        self
    }

    /// The finished JSON object.
    pub(super) fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }

    fn key(&mut self, key: &'static str) {
        if self.buf.len() > 1 {
            self.buf.push(',');
        }
        self.buf.push('"');
        self.buf.push_str(key);
        self.buf.push_str("\":");
        if let Some(slot) = self.own.get_mut(self.n_own) {
            *slot = key;
            self.n_own += 1;
        }
    }
}

/// Appends `s` as the inside of a JSON string literal.
fn escape_into(buf: &mut String, s: &str) {
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        buf.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", u32::from(c));
            }
            c => buf.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_merges() {
        let mut out = String::new();
        escape_into(&mut out, "a\"b\\c\nd\u{1}é");
        let back: String = serde_json::from_str(&format!("\"{out}\"")).expect("valid JSON string");
        assert_eq!(back, "a\"b\\c\nd\u{1}é");

        let extra = parse_extra(r#"{"tokens": 12, "topic": "spoof", "nested": {"a": [1]}}"#).expect("object");
        let mut d = Details { buf: String::from("{"), own: [""; MAX_OWN_KEYS], n_own: 0 };
        d = d.str("topic", "t\"1").int("lease_epoch", -3).extra(&extra);
        let v: Value = serde_json::from_str(&d.finish()).expect("valid JSON");
        assert_eq!(v["topic"], "t\"1");
        assert_eq!(v["lease_epoch"], -3);
        assert_eq!(v["tokens"], 12);
        assert_eq!(v["nested"]["a"][0], 1);
    }

    #[test]
    fn extra_must_be_an_object() {
        assert_eq!(parse_extra("  "), Ok(None));
        assert_eq!(parse_extra("[1]"), Err(ValidationError::NotJsonObject { field: "details_json" }));
        assert!(matches!(parse_extra("{"), Err(ValidationError::InvalidJson { field: "details_json", .. })));
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_DETAILS_BYTES));
        assert!(matches!(parse_extra(&big), Err(ValidationError::TooLarge { field: "details_json", .. })));
    }
}

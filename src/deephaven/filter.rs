//! Safe filter expressions for Deephaven views. Column names are validated as
//! identifiers and every value is rendered as a quoted literal, so a value can
//! never change the shape of the expression the server parses.

use super::error::Result;
use super::ticket::validate_identifier;

/// A literal value in a filter.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    /// A string, rendered as an escaped Java string literal.
    Str(String),
    /// An integer.
    Int(i64),
}

/// Comparison of a column with a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// One filter: a column compared with a literal, or membership in a set of literals.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    /// Validated column name.
    column: String,
    /// What to compare: one value with an operator, or `in` over several.
    test: Test,
}

#[derive(Clone, Debug, PartialEq)]
enum Test {
    Cmp(FilterOp, FilterValue),
    In(Vec<FilterValue>),
}

impl Filter {
    /// `column <op> value`; fails if `column` is not an identifier.
    pub fn cmp(column: &str, op: FilterOp, value: FilterValue) -> Result<Filter> {
        validate_identifier("column", column)?;
        Ok(Filter { column: column.to_string(), test: Test::Cmp(op, value) })
    }

    /// `column == "value"`.
    pub fn eq_str(column: &str, value: &str) -> Result<Filter> {
        Self::cmp(column, FilterOp::Eq, FilterValue::Str(value.to_string()))
    }

    /// `column in values...` (an empty set matches nothing).
    pub fn is_in(column: &str, values: Vec<FilterValue>) -> Result<Filter> {
        validate_identifier("column", column)?;
        Ok(Filter { column: column.to_string(), test: Test::In(values) })
    }

    /// The expression text sent to the server.
    pub fn to_expression(&self) -> String {
        match &self.test {
            Test::Cmp(op, v) => {
                let op = match op {
                    FilterOp::Eq => "==",
                    FilterOp::Ne => "!=",
                    FilterOp::Lt => "<",
                    FilterOp::Le => "<=",
                    FilterOp::Gt => ">",
                    FilterOp::Ge => ">=",
                };
                format!("{} {} {}", self.column, op, literal(v))
            }
            Test::In(vs) if vs.is_empty() => "false".to_string(),
            Test::In(vs) => {
                let items: Vec<String> = vs.iter().map(literal).collect();
                format!("{} in {}", self.column, items.join(", "))
            }
        }
    }
}

fn literal(v: &FilterValue) -> String {
    match v {
        FilterValue::Int(i) => {
            // i64::MIN has no positive literal; write it as an expression the parser accepts.
            if *i == i64::MIN {
                "(-9223372036854775807L - 1L)".to_string()
            } else {
                format!("{i}L")
            }
        }
        FilterValue::Str(s) => quote_java_string(s),
    }
}

/// Renders `s` as a double-quoted Java string literal. Everything that is not
/// printable ASCII (and `"`, `\`, `` ` ``) becomes a `\uXXXX` escape, so the
/// literal is plain ASCII and cannot end early.
pub fn quote_java_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for unit in s.encode_utf16() {
        match unit {
            0x20..=0x7e if unit != b'"' as u16 && unit != b'\\' as u16 && unit != b'`' as u16 => {
                out.push(unit as u8 as char)
            }
            _ => out.push_str(&format!("\\u{unit:04x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renders_quoted_literals() {
        let f = Filter::eq_str("topic", "a\"b\\c").unwrap();
        assert_eq!(f.to_expression(), r#"topic == "a\u0022b\u005cc""#);
        let f = Filter::is_in("status", vec![FilterValue::Str("queued".into()), FilterValue::Int(3)]).unwrap();
        assert_eq!(f.to_expression(), r#"status in "queued", 3L"#);
    }

    #[test]
    fn rejects_bad_columns() {
        assert!(Filter::eq_str("topic == topic || true", "x").is_err());
    }

    proptest! {
        /// Whatever the value, the literal is one closed string: only its two
        /// delimiting quotes are unescaped and everything inside is printable ASCII.
        #[test]
        fn literal_cannot_escape(s in ".*") {
            let q = quote_java_string(&s);
            prop_assert!(q.starts_with('"') && q.ends_with('"'));
            let inner = &q[1..q.len() - 1];
            prop_assert!(!inner.contains('"'));
            prop_assert!(inner.bytes().all(|b| (0x20..0x7f).contains(&b)));
            // Every backslash starts a \u escape.
            let bytes = inner.as_bytes();
            for (i, b) in bytes.iter().enumerate() {
                if *b == b'\\' { prop_assert_eq!(bytes.get(i + 1), Some(&b'u')); }
            }
        }
    }
}

//! The canonical tables of the bus, loaded from `schemas/*.json` (the single
//! source of truth for bootstrap, drift checks and the Arrow schemas used to
//! write rows).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

/// Errors reading a canonical definition.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The JSON definition is malformed.
    #[error("canonical schema `{file}` is invalid: {message}")]
    Invalid {
        /// Which definition.
        file: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Which canonical table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableId {
    /// `agent_messages`
    Messages,
    /// `agent_events`
    Events,
    /// `agent_metrics`
    Metrics,
}

impl TableId {
    /// All canonical tables.
    pub const ALL: [TableId; 3] = [TableId::Messages, TableId::Events, TableId::Metrics];

    fn source(self) -> (&'static str, &'static str) {
        match self {
            TableId::Messages => ("agent_messages.json", include_str!("../schemas/agent_messages.json")),
            TableId::Events => ("agent_events.json", include_str!("../schemas/agent_events.json")),
            TableId::Metrics => ("agent_metrics.json", include_str!("../schemas/agent_metrics.json")),
        }
    }
}

/// How rows of the table are kept.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// Keyed input table: upserts and deletes by key.
    Keyed,
    /// Append-only input table.
    Append,
}

/// A column type of the canonical tables (Deephaven type names).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// java.lang.String / Arrow Utf8
    String,
    /// long / Int64
    Long,
    /// int / Int32
    Int,
    /// double / Float64
    Double,
}

impl ColumnType {
    /// The Arrow type used on the wire.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Long => DataType::Int64,
            ColumnType::Int => DataType::Int32,
            ColumnType::Double => DataType::Float64,
        }
    }
}

/// One column of a canonical table.
#[derive(Clone, Debug, Deserialize)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// What the column means (documentation only).
    #[serde(default)]
    pub doc: String,
}

/// A canonical table definition.
#[derive(Clone, Debug, Deserialize)]
pub struct TableDef {
    /// Default (unprefixed) table name.
    pub table: String,
    /// Keyed or append-only.
    pub kind: TableKind,
    /// Key columns (keyed tables).
    pub keys: Vec<String>,
    /// Columns in canonical order.
    pub columns: Vec<ColumnDef>,
}

impl TableDef {
    /// Loads the canonical definition of `id`.
    pub fn load(id: TableId) -> Result<TableDef, SchemaError> {
        let (file, text) = id.source();
        let def: TableDef = serde_json::from_str(text).map_err(|e| SchemaError::Invalid { file, message: e.to_string() })?;
        for k in &def.keys {
            if !def.columns.iter().any(|c| &c.name == k) {
                return Err(SchemaError::Invalid { file, message: format!("key `{k}` is not a column") });
            }
        }
        Ok(def)
    }

    /// The Arrow schema rows of this table are written with.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self.columns.iter().map(|c| Field::new(&c.name, c.ty.arrow(), true)).collect();
        Arc::new(Schema::new(fields))
    }

    /// Index of column `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// Table names in use: the configured names with the optional namespace prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    /// `agent_messages` table name.
    pub messages: String,
    /// `agent_events` table name.
    pub events: String,
    /// `agent_metrics` table name.
    pub metrics: String,
}

impl TableNames {
    /// Builds the names, prefixing each with `namespace_` when a namespace is set.
    pub fn new(messages: &str, events: &str, metrics: &str, namespace: Option<&str>) -> TableNames {
        let p = |n: &str| match namespace {
            Some(ns) if !ns.is_empty() => format!("{ns}_{n}"),
            _ => n.to_string(),
        };
        TableNames { messages: p(messages), events: p(events), metrics: p(metrics) }
    }

    /// The name of canonical table `id`.
    pub fn of(&self, id: TableId) -> &str {
        match id {
            TableId::Messages => &self.messages,
            TableId::Events => &self.events,
            TableId::Metrics => &self.metrics,
        }
    }
}

impl Default for TableNames {
    fn default() -> Self {
        TableNames::new("agent_messages", "agent_events", "agent_metrics", None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_definitions_load() {
        for id in TableId::ALL {
            let def = TableDef::load(id).unwrap();
            assert_eq!(def.arrow_schema().fields().len(), def.columns.len());
        }
        let m = TableDef::load(TableId::Messages).unwrap();
        assert_eq!(m.keys, vec!["message_id"]);
        assert_eq!(m.columns.len(), 20);
    }

    #[test]
    fn namespace_prefixes_names() {
        let n = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some("t1"));
        assert_eq!(n.of(TableId::Events), "t1_agent_events");
    }
}

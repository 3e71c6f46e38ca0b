//! Idempotent creation of the canonical tables, and drift checks of live
//! tables against `schemas/`.

use arrow::datatypes::{DataType, Schema};
use serde::Serialize;

use crate::deephaven::{create_input_table, DeephavenError, InputKind, Session, TableHandle};
use crate::schema::{SchemaError, TableDef, TableId, TableKind, TableNames};

/// Errors of bootstrap and drift checks.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Talking to Deephaven failed.
    #[error(transparent)]
    Deephaven(#[from] DeephavenError),
    /// A canonical definition is broken.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Live tables differ from the canonical definitions.
    #[error("schema drift:\n{0}")]
    Drift(DriftReport),
}

/// What bootstrap did to one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The table was created.
    Created,
    /// The table already existed and matches.
    Present,
}

/// One difference between a live table and its canonical definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnDiff {
    /// Table name.
    pub table: String,
    /// Column name.
    pub column: String,
    /// Canonical type (None: the column should not exist).
    pub expected: Option<String>,
    /// Live type (None: the column is missing).
    pub found: Option<String>,
}

/// All differences found by a drift check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DriftReport {
    /// Tables that do not exist.
    pub missing_tables: Vec<String>,
    /// Column-by-column differences.
    pub columns: Vec<ColumnDiff>,
}

impl DriftReport {
    /// No drift at all.
    pub fn is_clean(&self) -> bool {
        self.missing_tables.is_empty() && self.columns.is_empty()
    }
}

impl std::fmt::Display for DriftReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for t in &self.missing_tables {
            writeln!(f, "  table {t}: missing")?;
        }
        for c in &self.columns {
            let e = c.expected.as_deref().unwrap_or("(absent)");
            let g = c.found.as_deref().unwrap_or("(missing)");
            writeln!(f, "  {}.{}: expected {e}, found {g}", c.table, c.column)?;
        }
        Ok(())
    }
}

/// Creates every canonical table that does not exist; checks those that do.
/// Fails with [`BootstrapError::Drift`] when an existing table differs.
pub async fn bootstrap(session: &Session, names: &TableNames) -> Result<Vec<(String, Outcome)>, BootstrapError> {
    let mut out = Vec::new();
    let mut drift = DriftReport::default();
    for id in TableId::ALL {
        let def = TableDef::load(id)?;
        let name = names.of(id);
        match TableHandle::open(session, name).await {
            Ok(live) => {
                drift.columns.extend(compare(name, &def, &live.schema()));
                out.push((name.to_string(), Outcome::Present));
            }
            Err(DeephavenError::TableNotFound { .. }) => {
                let kind = match def.kind {
                    TableKind::Keyed => InputKind::Keyed(def.keys.clone()),
                    TableKind::Append => InputKind::AppendOnly,
                };
                create_input_table(session, name, &def.arrow_schema(), kind).await?;
                tracing::info!(table = name, "created table");
                out.push((name.to_string(), Outcome::Created));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if drift.is_clean() {
        Ok(out)
    } else {
        Err(BootstrapError::Drift(drift))
    }
}

/// Compares live tables with the canonical definitions without changing anything.
pub async fn check(session: &Session, names: &TableNames) -> Result<DriftReport, BootstrapError> {
    let mut drift = DriftReport::default();
    for id in TableId::ALL {
        let def = TableDef::load(id)?;
        let name = names.of(id);
        match TableHandle::open(session, name).await {
            Ok(live) => drift.columns.extend(compare(name, &def, &live.schema())),
            Err(DeephavenError::TableNotFound { .. }) => drift.missing_tables.push(name.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(drift)
}

/// Column-by-column comparison of a live schema with a canonical definition.
pub fn compare(table: &str, def: &TableDef, live: &Schema) -> Vec<ColumnDiff> {
    let mut diffs = Vec::new();
    for c in &def.columns {
        let expected = c.ty.arrow();
        match live.field_with_name(&c.name) {
            Err(_) => diffs.push(ColumnDiff { table: table.into(), column: c.name.clone(), expected: Some(type_name(&expected)), found: None }),
            Ok(f) if !same(f.data_type(), &expected) => diffs.push(ColumnDiff {
                table: table.into(),
                column: c.name.clone(),
                expected: Some(type_name(&expected)),
                found: Some(type_name(f.data_type())),
            }),
            Ok(_) => {}
        }
    }
    for f in live.fields() {
        if def.index_of(f.name()).is_none() {
            diffs.push(ColumnDiff { table: table.into(), column: f.name().clone(), expected: None, found: Some(type_name(f.data_type())) });
        }
    }
    diffs
}

fn same(a: &DataType, b: &DataType) -> bool {
    matches!((a, b), (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, DataType::Utf8)) || a == b
}

/// Deephaven's name for an Arrow type, for diffs an operator reads.
fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Int64 => "long".into(),
        DataType::Int32 => "int".into(),
        DataType::Int16 => "short".into(),
        DataType::Int8 => "byte".into(),
        DataType::Float64 => "double".into(),
        DataType::Float32 => "float".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Timestamp(_, _) => "Instant".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    #[test]
    fn compare_reports_each_column() {
        let def = TableDef::load(TableId::Events).unwrap();
        let mut fields: Vec<Field> = def.arrow_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.retain(|f| f.name() != "details_json");
        fields[1] = Field::new("ts", DataType::Int32, true);
        fields.push(Field::new("extra", DataType::Utf8, true));
        let diffs = compare("agent_events", &def, &Schema::new(fields));
        assert_eq!(diffs.len(), 3, "{diffs:?}");
        assert!(diffs.iter().any(|d| d.column == "ts" && d.found.as_deref() == Some("int") && d.expected.as_deref() == Some("long")));
        assert!(diffs.iter().any(|d| d.column == "details_json" && d.found.is_none()));
        assert!(diffs.iter().any(|d| d.column == "extra" && d.expected.is_none()));
    }
}

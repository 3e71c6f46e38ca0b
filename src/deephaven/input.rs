//! Input tables: creation (append-only, keyed, blink), DoPut uploads, and
//! add/delete of rows.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightDescriptor, SchemaAsIpc};
use futures::{StreamExt, TryStreamExt};

use super::error::{DeephavenError, Result};
use super::session::Session;
use super::table::TableHandle;
use super::ticket::{validate_identifier, Ticket};
use crate::proto::dh::grpc as pb;
use pb::create_input_table_request::input_table_kind::{Blink, InMemoryAppendOnly, InMemoryKeyBacked, Kind};

/// What kind of input table to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// Rows are only ever appended.
    AppendOnly,
    /// Rows are upserted and deleted by these key columns.
    Keyed(Vec<String>),
    /// Each cycle's rows replace the previous cycle's.
    Blink,
}

/// Creates an input table with `schema` and names it `name` in the global scope.
pub async fn create_input_table(session: &Session, name: &str, schema: &Schema, kind: InputKind) -> Result<TableHandle> {
    validate_identifier("table", name)?;
    for f in schema.fields() {
        validate_identifier("column", f.name())?;
    }
    let kind = match kind {
        InputKind::AppendOnly => Kind::InMemoryAppendOnly(InMemoryAppendOnly {}),
        InputKind::Keyed(keys) => {
            for k in &keys {
                if schema.field_with_name(k).is_err() {
                    return Err(DeephavenError::SchemaMismatch { column: k.clone(), detail: "key column is not in the schema".into() });
                }
            }
            Kind::InMemoryKeyBacked(InMemoryKeyBacked { key_columns: keys })
        }
        InputKind::Blink => Kind::Blink(Blink {}),
    };
    let opts = arrow_ipc::writer::IpcWriteOptions::default();
    let ipc: arrow_flight::IpcMessage = SchemaAsIpc::new(schema, &opts).try_into()?;
    let result = session.new_export();
    let req = pb::CreateInputTableRequest {
        result_id: Some(result.to_proto()),
        definition: Some(pb::create_input_table_request::Definition::Schema(ipc.0.to_vec())),
        kind: Some(pb::create_input_table_request::InputTableKind { kind: Some(kind) }),
    };
    let resp = session.table_client().create_input_table(req).await.map_err(|s| session.status_err("CreateInputTable", s))?;
    let handle = TableHandle::from_response(session, result, "CreateInputTable", resp.into_inner())?;
    handle.publish_as(name).await?;
    TableHandle::open(session, name).await
}

/// Uploads `batches` with DoPut into a new export of `session`; returns the export.
pub async fn upload(session: &Session, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<TableHandle> {
    let ticket = session.new_export();
    let path = ticket.flight_path().ok_or_else(|| DeephavenError::Protocol("upload target is not an export".into()))?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let input = futures::stream::iter(batches.into_iter().map(Ok));
    let schema_of_upload = schema.clone();
    let frames: Vec<arrow_flight::FlightData> = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_path(path)))
        .build(input)
        .try_collect()
        .await
        .map_err(|e| DeephavenError::Protocol(format!("encoding DoPut: {e}")))?;
    let resp = session.flight_client().do_put(futures::stream::iter(frames)).await.map_err(|s| session.status_err("DoPut", s))?;
    let mut results = resp.into_inner();
    while let Some(r) = results.next().await {
        r.map_err(|s| session.status_err("DoPut", s))?;
    }
    // The server acknowledged the upload: the export exists with the schema we sent.
    Ok(TableHandle::from_known_export(session, ticket, schema_of_upload, rows as i64))
}

/// Checks that `batch_schema` can be added to `table`: every column of the batch
/// exists in the table with the same type, and no table column is missing.
pub fn check_compatible(table: &Schema, batch_schema: &Schema) -> Result<()> {
    for f in batch_schema.fields() {
        match table.field_with_name(f.name()) {
            Err(_) => {
                return Err(DeephavenError::SchemaMismatch { column: f.name().clone(), detail: "column does not exist in the table".into() })
            }
            Ok(t) if !same_type(t.data_type(), f.data_type()) => {
                return Err(DeephavenError::SchemaMismatch {
                    column: f.name().clone(),
                    detail: format!("table has type {}, rows have type {}", t.data_type(), f.data_type()),
                })
            }
            Ok(_) => {}
        }
    }
    for t in table.fields() {
        if batch_schema.field_with_name(t.name()).is_err() {
            return Err(DeephavenError::SchemaMismatch { column: t.name().clone(), detail: "column missing from the rows".into() });
        }
    }
    Ok(())
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => true,
        (DataType::Timestamp(u1, _), DataType::Timestamp(u2, _)) => u1 == u2,
        _ => a == b,
    }
}

/// An input table, with its schema, ready for adds and deletes.
#[derive(Clone, Debug)]
pub struct InputTable {
    /// The table (a scope variable).
    table: TableHandle,
    /// Key columns (empty for append-only and blink tables).
    keys: Arc<Vec<String>>,
}

impl InputTable {
    /// Wraps an existing input table `handle` whose key columns are `keys`.
    pub fn new(table: TableHandle, keys: Vec<String>) -> InputTable {
        InputTable { table, keys: Arc::new(keys) }
    }

    /// The underlying table.
    pub fn table(&self) -> &TableHandle {
        &self.table
    }

    /// Adds (or, on a keyed table, upserts) the rows; returns once the server applied them.
    pub async fn add(&self, batches: Vec<RecordBatch>) -> Result<()> {
        let Some(first) = batches.first() else { return Ok(()) };
        let schema = first.schema();
        check_compatible(&self.table.schema(), &schema)?;
        let uploaded = upload(self.table.session(), schema, batches).await?;
        self.add_table(&uploaded).await
    }

    /// Adds the rows of a server-side table (e.g. an upload) without the
    /// client-side schema check; the server's refusal is mapped to a typed error.
    pub async fn add_table(&self, rows: &TableHandle) -> Result<()> {
        let session = self.table.session();
        let req = pb::AddTableRequest { input_table: Some(self.table.ticket().to_proto()), table_to_add: Some(rows.ticket().to_proto()) };
        session.input_client().add_table_to_input_table(req).await.map_err(|s| session.status_err("AddTableToInputTable", s))?;
        Ok(())
    }

    /// Deletes the rows whose keys are in `keys` (a batch of the key columns only).
    pub async fn delete(&self, keys: RecordBatch) -> Result<()> {
        if keys.num_rows() == 0 {
            return Ok(());
        }
        for f in keys.schema().fields() {
            if !self.keys.iter().any(|k| k == f.name()) {
                return Err(DeephavenError::SchemaMismatch { column: f.name().clone(), detail: "delete takes key columns only".into() });
            }
        }
        let session = self.table.session();
        let uploaded = upload(session, keys.schema(), vec![keys]).await?;
        let req = pb::DeleteTableRequest { input_table: Some(self.table.ticket().to_proto()), table_to_remove: Some(uploaded.ticket().to_proto()) };
        session
            .input_client()
            .delete_table_from_input_table(req)
            .await
            .map_err(|s| session.status_err("DeleteTableFromInputTable", s))?;
        Ok(())
    }
}

/// The scope ticket of `name` (re-exported for callers that only hold a name).
pub fn scope_ticket(name: &str) -> Result<Ticket> {
    Ticket::scope(name)
}

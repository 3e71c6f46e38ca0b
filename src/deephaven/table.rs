//! Table handles: look-ups by scope name, filtered and sorted views, and DoGet snapshots.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::FlightRecordBatchStream;
use futures::{Stream, StreamExt, TryStreamExt};

use super::error::{DeephavenError, Result};
use super::filter::Filter;
use super::session::Session;
use super::ticket::{validate_identifier, Ticket};
use crate::proto::dh::grpc as pb;

/// Releases an export ticket when the last handle to it goes away.
#[derive(Debug)]
struct ExportGuard {
    /// The session that owns the export.
    session: Session,
    /// The export to release.
    ticket: Ticket,
}

impl Drop for ExportGuard {
    fn drop(&mut self) {
        if !self.ticket.is_export() || self.session.is_closed() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let session = self.session.clone();
            let ticket = self.ticket.clone();
            rt.spawn(async move {
                if let Err(e) = session.release(&ticket).await {
                    tracing::debug!(error = %e, "release of export failed");
                }
            });
        }
    }
}

/// A table on the server: a scope variable or an export of this session.
#[derive(Clone, Debug)]
pub struct TableHandle {
    /// Session the ticket belongs to.
    session: Session,
    /// Ticket naming the table on the server.
    ticket: Ticket,
    /// Arrow schema of the table as the server describes it.
    schema: SchemaRef,
    /// Row count when the handle was made (negative when unknown).
    size: i64,
    /// Whether the table never changes.
    is_static: bool,
    /// Releases the export when the last clone is dropped.
    _guard: Arc<ExportGuard>,
}

impl TableHandle {
    /// Builds a handle from a table-creating response.
    pub(crate) fn from_response(
        session: &Session,
        ticket: Ticket,
        op: &'static str,
        resp: pb::ExportedTableCreationResponse,
    ) -> Result<TableHandle> {
        let guard = Arc::new(ExportGuard { session: session.clone(), ticket: ticket.clone() });
        if !resp.success {
            return Err(DeephavenError::Server { op, code: tonic::Code::Unknown, message: resp.error_info });
        }
        let schema = arrow_ipc::convert::try_schema_from_ipc_buffer(&resp.schema_header)?;
        Ok(TableHandle {
            session: session.clone(),
            ticket,
            schema: Arc::new(schema),
            size: resp.size,
            is_static: resp.is_static,
            _guard: guard,
        })
    }

    /// A handle for an export whose schema the caller already knows (an upload),
    /// saving the round trip that would ask the server for it.
    pub(crate) fn from_known_export(session: &Session, ticket: Ticket, schema: SchemaRef, size: i64) -> TableHandle {
        let guard = Arc::new(ExportGuard { session: session.clone(), ticket: ticket.clone() });
        TableHandle { session: session.clone(), ticket, schema, size, is_static: true, _guard: guard }
    }

    /// Looks up the global-scope table `name` (no export is created).
    pub async fn open(session: &Session, name: &str) -> Result<TableHandle> {
        let ticket = Ticket::scope(name)?;
        let resp = session
            .table_client()
            .get_exported_table_creation_response(ticket.to_proto())
            .await
            .map_err(|s| not_found_or(session, "GetExportedTableCreationResponse", name, s))?;
        Self::from_response(session, ticket, "open table", resp.into_inner())
    }

    /// The session this handle belongs to.
    pub fn session(&self) -> &Session {
        &self.session
    }
    /// The server ticket.
    pub fn ticket(&self) -> &Ticket {
        &self.ticket
    }
    /// Arrow schema (with Deephaven's field metadata).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    /// Row count when the handle was made.
    pub fn size(&self) -> i64 {
        self.size
    }
    /// Whether the table never changes.
    pub fn is_static(&self) -> bool {
        self.is_static
    }

    /// A view keeping the rows that match every filter (values are quoted by [`Filter`]).
    pub async fn filter(&self, filters: &[Filter]) -> Result<TableHandle> {
        let result = self.session.new_export();
        let req = pb::UnstructuredFilterTableRequest {
            result_id: Some(result.to_proto()),
            source_id: Some(self.ticket.to_ref()),
            filters: filters.iter().map(|f| f.to_expression()).collect(),
        };
        let resp = self.session.table_client().unstructured_filter(req).await;
        let resp = resp.map_err(|s| self.session.status_err("UnstructuredFilter", s))?;
        Self::from_response(&self.session, result, "UnstructuredFilter", resp.into_inner())
    }

    /// A view sorted by `columns` (`true` = descending).
    pub async fn sort(&self, columns: &[(&str, bool)]) -> Result<TableHandle> {
        let mut sorts = Vec::with_capacity(columns.len());
        for (name, desc) in columns {
            validate_identifier("column", name)?;
            let direction = if *desc {
                pb::sort_descriptor::SortDirection::Descending
            } else {
                pb::sort_descriptor::SortDirection::Ascending
            };
            sorts.push(pb::SortDescriptor { column_name: name.to_string(), is_absolute: false, direction: direction as i32 });
        }
        let result = self.session.new_export();
        let req = pb::SortTableRequest { result_id: Some(result.to_proto()), source_id: Some(self.ticket.to_ref()), sorts };
        let resp = self.session.table_client().sort(req).await.map_err(|s| self.session.status_err("Sort", s))?;
        Self::from_response(&self.session, result, "Sort", resp.into_inner())
    }

    /// The first `n` rows.
    pub async fn head(&self, n: i64) -> Result<TableHandle> {
        let result = self.session.new_export();
        let req = pb::HeadOrTailRequest { result_id: Some(result.to_proto()), source_id: Some(self.ticket.to_ref()), num_rows: n };
        let resp = self.session.table_client().head(req).await.map_err(|s| self.session.status_err("Head", s))?;
        Self::from_response(&self.session, result, "Head", resp.into_inner())
    }

    /// A snapshot of the table through DoGet, as a stream of record batches.
    pub async fn snapshot_stream(&self) -> Result<impl Stream<Item = Result<RecordBatch>> + Send + 'static> {
        let req = arrow_flight::Ticket { ticket: self.ticket.bytes().to_vec().into() };
        let session = self.session.clone();
        let resp = self.session.flight_client().do_get(req).await.map_err(|s| session.status_err("DoGet", s))?;
        let flight = resp.into_inner().map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s)));
        let endpoint = self.session.endpoint();
        Ok(FlightRecordBatchStream::new_from_flight_data(flight).map_err(move |e| match e {
            arrow_flight::error::FlightError::Tonic(s) => DeephavenError::from_status("DoGet", &endpoint, *s),
            arrow_flight::error::FlightError::Arrow(a) => DeephavenError::Arrow(a),
            other => DeephavenError::Protocol(other.to_string()),
        }))
    }

    /// A snapshot of the whole table as one record batch (Arrow nulls for nulls).
    pub async fn snapshot(&self) -> Result<RecordBatch> {
        let batches: Vec<RecordBatch> = self.snapshot_stream().await?.try_collect().await?;
        let schema = batches.first().map(|b| b.schema()).unwrap_or_else(|| self.schema.clone());
        Ok(arrow::compute::concat_batches(&schema, &batches)?)
    }

    /// Publishes this table as global-scope variable `name`.
    pub async fn publish_as(&self, name: &str) -> Result<()> {
        self.session.publish(&self.ticket, name).await
    }

    /// The number of rows right now (via a snapshot of no columns would still send rows; so counts a DoGet).
    pub async fn row_count(&self) -> Result<usize> {
        let mut s = Box::pin(self.snapshot_stream().await?);
        let mut n = 0;
        while let Some(b) = s.next().await {
            n += b?.num_rows();
        }
        Ok(n)
    }
}

/// Maps a failed scope look-up to `TableNotFound` when the server could not resolve the name.
pub(crate) fn not_found_or(session: &Session, op: &'static str, name: &str, s: tonic::Status) -> DeephavenError {
    let msg = s.message().to_ascii_lowercase();
    let unresolved = matches!(s.code(), tonic::Code::NotFound)
        || (matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument | tonic::Code::Unknown)
            && (msg.contains("resolve") || msg.contains("not found") || msg.contains("no such") || msg.contains("unknown")));
    if unresolved {
        DeephavenError::TableNotFound { name: name.to_string() }
    } else {
        session.status_err(op, s)
    }
}

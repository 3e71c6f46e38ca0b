//! Barrage subscriptions over Flight `DoExchange`: keeps a client-side copy of
//! a ticking table and yields every update as a typed [`TableDelta`] through a
//! `Stream`.

use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::{FlightData, FlightDescriptor};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::decode::UpdateAssembler;
use super::flatbuf::{subscription_request, SubscriptionOptions};
use super::state::{TableDelta, TableState};
use crate::deephaven::error::{DeephavenError, Result};
use crate::deephaven::table::TableHandle;

/// Magic `dphn` command that marks a Barrage exchange.
const BARRAGE_COMMAND: &[u8] = b"dphn";

/// Options of a subscription.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// Server-side coalescing interval; lower means lower latency, more messages.
    pub min_update_interval_ms: i32,
    /// Rows per record batch the server sends (0: server default).
    pub batch_size: i32,
    /// Deltas buffered before the subscription applies backpressure.
    pub buffer: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions { min_update_interval_ms: 50, batch_size: 0, buffer: 64 }
    }
}

/// A live subscription. Dropping it ends the subscription on the server.
pub struct Subscription {
    /// Deltas decoded by the background task.
    rx: mpsc::Receiver<Result<TableDelta>>,
    /// Table schema as the server announced it.
    schema: SchemaRef,
    /// The task reading the exchange; aborted on drop.
    task: tokio::task::JoinHandle<()>,
    /// The client-side copy, shared with the task (for snapshots on demand).
    state: std::sync::Arc<std::sync::Mutex<TableState>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscription {
    /// The subscribed table's schema (as the server announced it).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The client-side copy right now, rows in row-key order. It reflects
    /// every delta the task has applied, which may be ahead of what this
    /// stream has yielded so far.
    pub fn snapshot(&self) -> Result<arrow::array::RecordBatch> {
        let g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.snapshot()?)
    }

    /// How many messages the initial snapshot took: more than one when the
    /// server sent it in chunks or grew the subscription over several cycles.
    pub fn initial_messages(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).initial_messages()
    }
}

impl Stream for Subscription {
    type Item = Result<TableDelta>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Subscribes to the whole of `table`. The first delta is the snapshot
/// (`is_snapshot`), later ones are the table's changes in order.
pub async fn subscribe(table: &TableHandle, opts: SubscribeOptions) -> Result<Subscription> {
    let session = table.session().clone();
    let request = subscription_request(
        table.ticket().bytes(),
        &SubscriptionOptions {
            columns_as_list: true,
            use_deephaven_nulls: false,
            min_update_interval_ms: opts.min_update_interval_ms,
            batch_size: opts.batch_size,
            ..SubscriptionOptions::default()
        },
    );
    let first = FlightData {
        flight_descriptor: Some(FlightDescriptor::new_cmd(BARRAGE_COMMAND.to_vec())),
        app_metadata: request.into(),
        ..FlightData::default()
    };
    // The request stream must stay open for the life of the subscription.
    let (req_tx, req_rx) = mpsc::channel::<FlightData>(1);
    req_tx.send(first).await.map_err(|_| DeephavenError::Closed)?;
    let req_stream = tokio_stream::wrappers::ReceiverStream::new(req_rx);
    let resp = session.flight_client().do_exchange(req_stream).await.map_err(|s| session.status_err("DoExchange", s))?;
    let mut inbound = resp.into_inner();

    // The server starts with the table schema.
    let schema = loop {
        let msg = inbound
            .next()
            .await
            .ok_or_else(|| DeephavenError::Protocol("subscription ended before its schema".into()))?
            .map_err(|s| session.status_err("DoExchange", s))?;
        if msg.data_header.is_empty() {
            continue;
        }
        let schema = Schema::try_from(&msg).map_err(|e| DeephavenError::Protocol(format!("bad schema message: {e}")))?;
        break std::sync::Arc::new(schema);
    };

    let (tx, rx) = mpsc::channel(opts.buffer.max(1));
    let mut assembler = UpdateAssembler::new(schema.clone());
    let state = std::sync::Arc::new(std::sync::Mutex::new(TableState::new(assembler.table_schema())));
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let _keep_open = req_tx;
        while let Some(msg) = inbound.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(s) => {
                    let _ = tx.send(Err(session.status_err("DoExchange", s))).await;
                    return;
                }
            };
            let update = match assembler.push(msg) {
                Ok(Some(u)) => u,
                Ok(None) => continue,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let delta = task_state.lock().unwrap_or_else(|p| p.into_inner()).apply(update).map_err(DeephavenError::from);
            // Messages of the initial phase (a chunked or growing snapshot) are
            // applied silently: users see one complete snapshot.
            if matches!(&delta, Ok(d) if !d.snapshot_complete) {
                continue;
            }
            let failed = delta.is_err();
            if tx.send(delta).await.is_err() || failed {
                return;
            }
        }
        let _ = tx.send(Err(DeephavenError::Connection { endpoint: session.endpoint(), message: "subscription stream ended".into() })).await;
    });
    Ok(Subscription { rx, schema, task, state })
}

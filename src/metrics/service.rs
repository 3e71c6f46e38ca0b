//! The metrics component of `dhbus run`: follows `agent_events` through a
//! Barrage subscription, rolls it up (`rollup`, pure) and upserts the changed
//! windows into `agent_metrics` every second. After a restart the
//! subscription's snapshot holds every event, so the windows are recomputed
//! from scratch and upserted over the old rows: nothing is counted twice.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Builder, Int64Array, RecordBatch, StringArray};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::rollup::{EventRow, MetricsRow, Rollup};
use crate::deephaven::barrage::{subscribe, SubscribeOptions};
use crate::deephaven::{DeephavenError, InputTable, SessionPool, TableHandle};
use crate::schema::{TableDef, TableId, TableNames};

/// How often changed windows are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Windows older than this are final (late events for them are counted, not applied).
const LATENESS_HORIZON: Duration = Duration::from_secs(3600);

/// Runs the roll-up until `shutdown`, resubscribing with backoff on failures.
pub async fn run(pool: SessionPool, names: TableNames, window: Duration, shutdown: CancellationToken) {
    let mut backoff = backoff::ExponentialBackoff { max_elapsed_time: None, max_interval: Duration::from_secs(10), ..Default::default() };
    loop {
        let r = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = run_once(&pool, &names, window) => r,
        };
        if let Err(e) = r {
            metrics::counter!("dhbus_errors_total", "kind" => "metrics_rollup").increment(1);
            let wait = backoff::backoff::Backoff::next_backoff(&mut backoff).unwrap_or(Duration::from_secs(10));
            tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "metrics roll-up interrupted; restarting");
            tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(wait) => {} }
        }
    }
}

async fn run_once(pool: &SessionPool, names: &TableNames, window: Duration) -> Result<(), DeephavenError> {
    let mut rollup = Rollup::new(window).map_err(|e| DeephavenError::Protocol(e.to_string()))?;
    let session = pool.session().await;
    let events = TableHandle::open(&session, &names.events).await?;
    let out = InputTable::new(TableHandle::open(&session, &names.metrics).await?, TableDef::load(TableId::Metrics).map(|d| d.keys).unwrap_or_default());
    let mut sub = subscribe(&events, SubscribeOptions::default()).await?;
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            delta = sub.next() => {
                let Some(delta) = delta else { return Err(DeephavenError::Protocol("events subscription ended".into())) };
                let delta = delta?;
                for b in [&delta.added, &delta.modified] {
                    for ev in event_rows(b) {
                        rollup.apply(&ev);
                    }
                }
            }
            _ = flush.tick() => {
                let now = crate::bus::clock::now_ns();
                let rows = rollup.drain_dirty(now);
                if !rows.is_empty() {
                    out.add(vec![metrics_batch(&rows)?]).await?;
                    metrics::counter!("dhbus_metrics_rows_written_total").increment(rows.len() as u64);
                }
                rollup.forget_before(now - LATENESS_HORIZON.as_nanos() as i64);
            }
        }
    }
}

/// Event rows of a batch of `agent_events` (nulls read as "" / 0).
pub fn event_rows(b: &RecordBatch) -> Vec<EventRow> {
    let s = |name: &str| b.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
    let (id, agent, session, msg, event, details) = (s("event_id"), s("agent_id"), s("session_id"), s("message_id"), s("event"), s("details_json"));
    let ts = b.column_by_name("ts").and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
    let get = |c: &Option<StringArray>, i: usize| c.as_ref().filter(|c| !arrow::array::Array::is_null(*c, i)).map(|c| c.value(i).to_string()).unwrap_or_default();
    (0..b.num_rows())
        .map(|i| EventRow {
            event_id: get(&id, i),
            ts: ts.as_ref().filter(|c| !arrow::array::Array::is_null(*c, i)).map(|c| c.value(i)).unwrap_or(0),
            agent_id: get(&agent, i),
            session_id: get(&session, i),
            message_id: get(&msg, i),
            event: get(&event, i),
            details_json: get(&details, i),
        })
        .collect()
}

/// Rows of `agent_metrics` in canonical column order (a null average when no latency is known).
pub fn metrics_batch(rows: &[MetricsRow]) -> Result<RecordBatch, DeephavenError> {
    let schema = TableDef::load(TableId::Metrics).map_err(|e| DeephavenError::Protocol(e.to_string()))?.arrow_schema();
    let mut avg = Float64Builder::with_capacity(rows.len());
    for r in rows {
        avg.append_option(r.avg_latency_ms);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.window_start))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.agent_id.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.session_id.as_str()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.messages_processed))),
        Arc::new(avg.finish()),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.errors))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.token_usage))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.last_update_ts))),
    ];
    Ok(RecordBatch::try_new(schema, cols)?)
}

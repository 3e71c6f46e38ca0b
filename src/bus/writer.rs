//! Group commit: writes a batch of row changes to `agent_messages` (upsert)
//! and `agent_events` (append) together, on two sessions at once, retrying
//! with backoff until Deephaven has them. Batches are written strictly in
//! order (the caller keeps at most one in flight), so a later version of a
//! row can never be overwritten by an earlier one.

use std::time::Duration;

use arrow::array::RecordBatch;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;

use crate::deephaven::{DeephavenError, InputTable, SessionPool, TableHandle};
use crate::schema::TableNames;

/// The two input tables the bus writes.
#[derive(Clone, Debug)]
pub struct TableWriter {
    /// Pool used to reopen the tables after a reconnect.
    pool: SessionPool,
    /// Table names.
    names: TableNames,
    /// `agent_messages`, keyed by message_id.
    messages: InputTable,
    /// `agent_events`, append-only.
    events: InputTable,
}

impl TableWriter {
    /// Opens both tables (on different sessions of the pool, so their writes overlap).
    pub async fn open(pool: SessionPool, names: TableNames) -> Result<TableWriter, DeephavenError> {
        let (messages, events) = Self::open_tables(&pool, &names).await?;
        Ok(TableWriter { pool, names, messages, events })
    }

    async fn open_tables(pool: &SessionPool, names: &TableNames) -> Result<(InputTable, InputTable), DeephavenError> {
        let m = TableHandle::open(&pool.session().await, &names.messages).await?;
        let e = TableHandle::open(&pool.session().await, &names.events).await?;
        Ok((InputTable::new(m, vec!["message_id".into()]), InputTable::new(e, vec![])))
    }

    /// Writes one group commit; returns only when both tables have it. Transient
    /// failures (connection lost, session expired, server restarting) are
    /// retried with backoff, reopening the tables; a refusal of the rows
    /// themselves (schema) is returned.
    pub async fn write(&mut self, messages: Option<RecordBatch>, events: Option<RecordBatch>) -> Result<(), DeephavenError> {
        let mut backoff = ExponentialBackoff { max_elapsed_time: None, max_interval: Duration::from_secs(5), ..Default::default() };
        let mut messages_done = messages.is_none();
        let mut events_done = events.is_none();
        loop {
            let m = async {
                match (&messages, messages_done) {
                    (Some(b), false) => self.messages.add(vec![b.clone()]).await,
                    _ => Ok(()),
                }
            };
            let e = async {
                match (&events, events_done) {
                    (Some(b), false) => self.events.add(vec![b.clone()]).await,
                    _ => Ok(()),
                }
            };
            let (rm, re) = tokio::join!(m, e);
            messages_done |= rm.is_ok();
            events_done |= re.is_ok();
            let err = match (rm, re) {
                (Ok(()), Ok(())) => return Ok(()),
                (Err(e), _) | (_, Err(e)) => e,
            };
            if matches!(err, DeephavenError::SchemaMismatch { .. } | DeephavenError::InvalidName { .. }) {
                return Err(err);
            }
            metrics::counter!("dhbus_errors_total", "kind" => "deephaven_write").increment(1);
            let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
            tracing::warn!(error = %err, wait_ms = wait.as_millis() as u64, "group commit failed; retrying");
            tokio::time::sleep(wait).await;
            match Self::open_tables(&self.pool, &self.names).await {
                Ok((m, e)) => {
                    self.messages = m;
                    self.events = e;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reopening tables failed");
                    // Revive sessions through the pool's reconnect path.
                    let _ = self.pool.run(|s| async move { s.relogin().await }).await;
                }
            }
        }
    }
}

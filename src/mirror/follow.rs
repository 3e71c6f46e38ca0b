//! `dhbus replay --follow`: after the catch-up replay, keeps applying new
//! records to Deephaven — a warm standby fed from Kafka. Messages apply only
//! when their version is newer than what the standby holds (so a mirror on
//! the standby never echoes them back: the versions are already in Kafka);
//! events apply once per event_id.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::codec::{rows_to_batch, MirrorTable, RecordDecoder, Row};
use super::kafka_error::MirrorError;
use super::readback::{open, StartAt};
use super::replay::{replay_with_offsets, ReplayPlan};
use crate::deephaven::{InputTable, Session, TableHandle};

/// Records gathered before one write to Deephaven.
const MAX_BATCH: usize = 10_000;
/// Longest a record waits before it is written.
const MAX_DELAY: Duration = Duration::from_millis(200);

/// Replays, then follows the topics until the process is stopped.
pub async fn follow(session: &Session, plan: ReplayPlan) -> Result<(), MirrorError> {
    let (_, offsets) = replay_with_offsets(session, plan.clone()).await?;
    let mut tasks = Vec::new();
    for table in plan.tables.clone() {
        let start = StartAt::Offsets(offsets.get(&table).cloned().unwrap_or_default());
        tasks.push(follow_table(session.clone(), plan.clone(), table, start));
    }
    futures::future::try_join_all(tasks).await.map(|_| ())
}

async fn follow_table(session: Session, plan: ReplayPlan, table: MirrorTable, start: StartAt) -> Result<(), MirrorError> {
    let (topic, name) = match table {
        MirrorTable::Messages => (plan.topics.messages.clone(), plan.names.messages.clone()),
        MirrorTable::Events => (plan.topics.events.clone(), plan.names.events.clone()),
    };
    let handle = TableHandle::open(&session, &name).await?;
    let key = table.key_column();
    let input = InputTable::new(handle.clone(), if table == MirrorTable::Messages { vec![key.to_string()] } else { vec![] });
    // What the standby holds: versions of messages, ids of events.
    let snap = handle.snapshot().await?;
    let mut versions: HashMap<String, i64> = HashMap::new();
    let mut event_ids: HashSet<String> = HashSet::new();
    if let Some(keys) = snap.column_by_name(key).and_then(|c| c.as_any().downcast_ref::<StringArray>()) {
        let vs = snap.column_by_name("version").and_then(|c| c.as_any().downcast_ref::<Int64Array>());
        for i in 0..snap.num_rows() {
            if keys.is_null(i) {
                continue;
            }
            match (table, vs) {
                (MirrorTable::Messages, Some(v)) => {
                    versions.insert(keys.value(i).to_string(), if v.is_null(i) { i64::MIN } else { v.value(i) });
                }
                _ => {
                    event_ids.insert(keys.value(i).to_string());
                }
            }
        }
    }
    let (consumer, _) = open(&plan.bootstrap, &topic, &start)?;
    let consumer = Arc::new(consumer);
    let decoder = RecordDecoder::new().map_err(|e| MirrorError::Config(e.to_string()))?;
    tracing::info!(topic, "following");
    loop {
        let c = consumer.clone();
        let batch = tokio::task::spawn_blocking(move || {
            use rdkafka::message::Message as _;
            let mut out = Vec::new();
            let t = Instant::now();
            while out.len() < MAX_BATCH && t.elapsed() < MAX_DELAY {
                match c.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => out.push((m.partition(), m.offset(), m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec))),
                    Some(Err(e)) => return Err(MirrorError::Kafka { context: "follow", source: e }),
                    None => {}
                }
            }
            Ok(out)
        })
        .await
        .map_err(|_| MirrorError::Shutdown)??;
        let mut upserts: HashMap<String, Row> = HashMap::new();
        let mut deletes: Vec<String> = Vec::new();
        for (p, off, k, v) in batch {
            let rec = match decoder.decode(table, k.as_deref().unwrap_or_default(), v.as_deref()) {
                Ok(r) => r,
                Err(source) => return Err(MirrorError::Corrupt { topic: topic.clone(), partition: p, offset: off, source }),
            };
            match (table, rec.row) {
                (MirrorTable::Messages, None) => {
                    upserts.remove(&rec.key);
                    if versions.remove(&rec.key).is_some() {
                        deletes.push(rec.key);
                    }
                }
                (MirrorTable::Messages, Some(row)) => {
                    let v = row.version().unwrap_or(i64::MIN);
                    if versions.get(&rec.key).is_none_or(|held| v > *held) {
                        versions.insert(rec.key.clone(), v);
                        deletes.retain(|d| d != &rec.key);
                        upserts.insert(rec.key, row);
                    }
                }
                (MirrorTable::Events, Some(row)) => {
                    if event_ids.insert(rec.key.clone()) {
                        upserts.insert(rec.key, row);
                    }
                }
                (MirrorTable::Events, None) => {}
            }
        }
        if let Some(l) = &plan.ledger {
            // Noted before the write: the mirror of this standby then sees them as in Kafka.
            l.note(table, deletes.iter().map(|k| (k.clone(), None)));
            l.note(table, upserts.iter().map(|(k, r)| (k.clone(), Some(r.version().unwrap_or(i64::MIN)))));
        }
        if !deletes.is_empty() {
            let schema = Arc::new(Schema::new(vec![Field::new(key, DataType::Utf8, true)]));
            input.delete(RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(deletes))])?).await?;
        }
        if !upserts.is_empty() {
            let rows: Vec<Row> = upserts.into_values().collect();
            metrics::counter!("dhbus_replay_records_total", "table" => table.name()).increment(rows.len() as u64);
            input.add(vec![rows_to_batch(table, &rows).map_err(|e| MirrorError::Config(e.to_string()))?]).await?;
        }
    }
}

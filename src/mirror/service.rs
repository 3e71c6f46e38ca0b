//! The mirror component of `dhbus run`: Barrage deltas of `agent_messages`
//! and `agent_events` → Avro records → Kafka, reconciled on every
//! (re)subscription so that restarts of the mirror, of Deephaven or of the
//! broker lose nothing.
//!
//! Per table, one loop: read the topic back (what is already mirrored: key →
//! version, tombstones), subscribe, diff the snapshot against it and send
//! exactly the missing changes (tombstones for rows deleted meanwhile), then
//! stream deltas. Any failure restarts the loop with backoff; the bus keeps
//! running meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array, RecordBatch};
use backoff::backoff::Backoff;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::codec::{MirrorTable, RecordDecoder, RecordEncoder, EncodedRecord};
use super::durable::DurableAcks;
use super::kafka_error::MirrorError;
use super::ledger::{KafkaLedger, Mirrored};
use super::readback::{read_all, StartAt};
use super::sink::KafkaSink;
use super::topics::{ensure_topics, MirrorTopics};
use crate::deephaven::barrage::{subscribe, SubscribeOptions};
use crate::deephaven::{SessionPool, TableHandle};
use crate::ops::readiness::Readiness;
use crate::schema::TableNames;

/// Settings of the mirror.
#[derive(Clone, Debug)]
pub struct MirrorConfig {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Topic names.
    pub topics: MirrorTopics,
    /// Partitions for topics the mirror creates.
    pub partitions: i32,
    /// Deephaven table names.
    pub tables: TableNames,
    /// What Kafka holds per table (shared with a follower on a warm standby).
    pub ledger: KafkaLedger,
    /// True on a warm standby (`follow` runs in the same process): the table
    /// trails Kafka, so a (re)subscription never rewinds Kafka to the table's
    /// older versions nor tombstones rows the table does not have yet.
    pub standby: bool,
}

impl MirrorConfig {
    /// The settings of a primary's mirror, with an empty ledger.
    pub fn new(bootstrap: String, topics: MirrorTopics, partitions: i32, tables: TableNames) -> MirrorConfig {
        MirrorConfig { bootstrap, topics, partitions, tables, ledger: KafkaLedger::default(), standby: false }
    }
}


/// Runs the mirror until `shutdown`.
///
/// `durable` is set when `DHBUS_DURABLE_ACKS=1`: the mirror then reports every
/// acknowledged message version to the bus (otherwise it keeps no such record).
pub async fn run(pool: SessionPool, cfg: MirrorConfig, durable: Option<DurableAcks>, ready: Readiness, shutdown: CancellationToken) {
    let m = run_table(pool.clone(), cfg.clone(), MirrorTable::Messages, durable.clone(), ready.clone(), shutdown.clone());
    let e = run_table(pool, cfg, MirrorTable::Events, durable, ready, shutdown);
    tokio::join!(m, e);
}

async fn run_table(pool: SessionPool, cfg: MirrorConfig, table: MirrorTable, durable: Option<DurableAcks>, ready: Readiness, shutdown: CancellationToken) {
    let mut backoff = backoff::ExponentialBackoff { max_elapsed_time: None, max_interval: Duration::from_secs(10), ..Default::default() };
    loop {
        let once = mirror_once(&pool, &cfg, table, &durable, &ready);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = once => {
                let e = match r { Ok(()) => MirrorError::Shutdown, Err(e) => e };
                ready.set("mirror", false, format!("mirror of {table} interrupted: {e}"));
                metrics::counter!("dhbus_errors_total", "kind" => "mirror").increment(1);
                let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(10));
                tracing::warn!(table = %table, error = %e, wait_ms = wait.as_millis() as u64, "mirror interrupted; resuming");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(wait) => {} }
            }
        }
    }
}

fn topic_of(cfg: &MirrorConfig, table: MirrorTable) -> &str {
    match table {
        MirrorTable::Messages => &cfg.topics.messages,
        MirrorTable::Events => &cfg.topics.events,
    }
}

fn table_name(cfg: &MirrorConfig, table: MirrorTable) -> &str {
    match table {
        MirrorTable::Messages => &cfg.tables.messages,
        MirrorTable::Events => &cfg.tables.events,
    }
}

/// Reads the topic back into key → version.
pub async fn read_mirrored(bootstrap: &str, topic: &str) -> Result<Mirrored, MirrorError> {
    let bootstrap = bootstrap.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let decoder = RecordDecoder::new().map_err(|e| MirrorError::Config(e.to_string()))?;
        let mut out: Mirrored = HashMap::new();
        read_all(&bootstrap, &topic, &StartAt::Earliest, Duration::from_millis(300), |r| {
            let Some(key) = r.key.and_then(|k| String::from_utf8(k).ok()) else { return Ok(()) };
            let version = match r.value {
                None => None,
                // What we cannot decode we treat as not mirrored: it will be re-sent.
                Some(v) => match decoder.decode_value(&v) {
                    Ok(row) => row.version().or(Some(i64::MIN)),
                    Err(_) => return Ok(()),
                },
            };
            out.insert(key, version);
            Ok(())
        })?;
        Ok(out)
    })
    .await
    .map_err(|_| MirrorError::Shutdown)?
}

async fn mirror_once(pool: &SessionPool, cfg: &MirrorConfig, table: MirrorTable, durable: &Option<DurableAcks>, ready: &Readiness) -> Result<(), MirrorError> {
    let topic = topic_of(cfg, table).to_string();
    ensure_topics(&cfg.bootstrap, &cfg.topics, cfg.partitions).await?;
    let read = read_mirrored(&cfg.bootstrap, &topic).await?;
    tracing::info!(table = %table, topic, mirrored = read.len(), "mirror read back what Kafka holds");
    cfg.ledger.replace(table, read);
    let ledger = &cfg.ledger;
    let sink = KafkaSink::new(&cfg.bootstrap)?;
    let encoder = RecordEncoder::new(table, table_name(cfg, table)).map_err(|e| MirrorError::Config(e.to_string()))?;
    let session = pool.session().await;
    let handle = TableHandle::open(&session, table_name(cfg, table)).await?;
    let mut sub = subscribe(&handle, SubscribeOptions::default()).await?;
    ready.set("mirror", true, "streaming");

    // Deliveries are awaited in order on the side, one batch (a Barrage delta,
    // or a slice of a large snapshot) at a time; the read loop never blocks on
    // them. The channel is bounded in batches; librdkafka's queue bounds records.
    let (ack_tx, ack_rx) = tokio::sync::mpsc::channel::<Vec<Pending>>(256);
    let mut acker = tokio::spawn(await_deliveries(table, ack_rx, durable.clone()));
    let mut out = Outbox::new(&sink, &topic, table, ack_tx, durable.is_some());

    let mut first = true;
    let result: Result<(), MirrorError> = async {
        loop {
            let delta = tokio::select! {
                d = sub.next() => match d {
                    Some(d) => d?,
                    None => return Err(MirrorError::Config("subscription ended".into())),
                },
                // A failed delivery stops the waiter: resubscribe and reconcile.
                r = &mut acker => return Err(match r {
                    Ok(Err(e)) => e,
                    _ => MirrorError::Config("delivery waiter stopped".into()),
                }),
            };
            let received = Instant::now();
            if first || delta.is_snapshot {
                first = false;
                // Reconcile: rows whose version Kafka lacks, and tombstones for rows gone meanwhile.
                let mode = if cfg.standby { Mode::Stream } else { Mode::Reconcile };
                let live = reconcile_snapshot(&mut out, &encoder, &delta.added, ledger, mode).await?;
                if table == MirrorTable::Messages && !cfg.standby {
                    let gone: Vec<String> = ledger.with(table, |m| m.iter().filter(|(k, v)| v.is_some() && !live.contains_key(*k)).map(|(k, _)| k.clone()).collect());
                    // An empty table facing a populated topic is a Deephaven that lost its
                    // tables (restart), not an operator deleting every message: never
                    // tombstone the durable copy for that. Restore with `dhbus replay`.
                    if live.is_empty() && !gone.is_empty() {
                        out.flush().await?;
                        tracing::error!(table = %table, kafka_rows = gone.len(), "table is empty but Kafka holds rows; not mirroring them as deletions (restore with `dhbus replay`)");
                        metrics::counter!("dhbus_errors_total", "kind" => "mirror_refused_mass_delete").increment(1);
                        continue;
                    }
                    ledger.note(table, gone.iter().map(|k| (k.clone(), None)));
                    for key in gone {
                        out.send(encoder.tombstone(&key), None).await?;
                    }
                }
                out.flush().await?;
                continue;
            }
            // Barrage applies removes before adds: a key removed and re-added in one
            // update must end up present, so tombstones go first.
            if table == MirrorTable::Messages && delta.removed.num_rows() > 0 {
                // A key Kafka already holds as tombstoned (a standby applying a
                // tombstone it read from Kafka) is not tombstoned again.
                let keys: Vec<String> = encoder.encode_tombstones(&delta.removed)?.into_iter().map(|r| r.key).collect();
                let doomed: Vec<String> = ledger.with(table, |m| {
                    let mut doomed = Vec::with_capacity(keys.len());
                    for k in keys {
                        if !matches!(m.insert(k.clone(), None), Some(None)) {
                            doomed.push(k);
                        }
                    }
                    doomed
                });
                for key in doomed {
                    if let Some(d) = durable {
                        d.forget(&key);
                    }
                    out.send(encoder.tombstone(&key), None).await?;
                }
            }
            for batch in [&delta.added, &delta.modified] {
                send_batch(&mut out, &encoder, batch, ledger, Mode::Stream).await?;
            }
            out.flush().await?;
            metrics::histogram!("dhbus_mirror_encode_seconds").record(received.elapsed().as_secs_f64());
        }
    }
    .await;
    drop(out);
    acker.abort();
    result
}

/// One record waiting for its delivery report.
struct Pending {
    /// Resolves when Kafka acknowledges (or finally refuses) the record.
    fut: rdkafka::producer::DeliveryFuture,
    /// Message id and version, kept only with durable acks (the bus waits for them).
    durable: Option<(String, i64)>,
    /// When the row was committed in Deephaven (for the lag metric).
    commit_ns: Option<i64>,
}

/// Records of one table on their way to Kafka: enqueued one by one, handed
/// to the delivery waiter a batch at a time (one channel message and one
/// metric update per batch rather than per record).
struct Outbox<'a> {
    /// The producer.
    sink: &'a KafkaSink,
    /// The table's topic.
    topic: &'a str,
    /// Which table (only messages carry durable-ack versions).
    table: MirrorTable,
    /// Sent, not yet handed to the waiter.
    batch: Vec<Pending>,
    /// To the delivery waiter.
    acks: tokio::sync::mpsc::Sender<Vec<Pending>>,
    /// Whether to keep message id and version for durable acks.
    durable: bool,
}

/// Records per hand-over to the delivery waiter during large snapshots.
const OUTBOX_SLICE: usize = 10_000;

impl<'a> Outbox<'a> {
    fn new(sink: &'a KafkaSink, topic: &'a str, table: MirrorTable, acks: tokio::sync::mpsc::Sender<Vec<Pending>>, durable: bool) -> Self {
        Outbox { sink, topic, table, batch: Vec::new(), acks, durable }
    }

    async fn send(&mut self, rec: EncodedRecord, commit_ns: Option<i64>) -> Result<(), MirrorError> {
        let fut = self.sink.send(self.topic, &rec).await?;
        let durable = match (self.durable, self.table, rec.version) {
            (true, MirrorTable::Messages, Some(v)) => Some((rec.key, v)),
            _ => None,
        };
        self.batch.push(Pending { fut, durable, commit_ns });
        if self.batch.len() >= OUTBOX_SLICE {
            self.flush().await?;
        }
        Ok(())
    }

    /// Hands what was sent to the delivery waiter.
    async fn flush(&mut self) -> Result<(), MirrorError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.acks.send(batch).await.map_err(|_| MirrorError::Shutdown)
    }
}

/// Awaits delivery reports in send order: counts records, records the lag
/// (Deephaven commit to Kafka acknowledgement) and tells durable-ack waiters.
/// A failed delivery ends the mirror session (it resubscribes and reconciles).
async fn await_deliveries(table: MirrorTable, mut rx: tokio::sync::mpsc::Receiver<Vec<Pending>>, durable: Option<DurableAcks>) -> Result<(), MirrorError> {
    let records = metrics::counter!("dhbus_mirror_records_total", "table" => table.name());
    let lag = metrics::histogram!("dhbus_mirror_lag_seconds", "table" => table.name());
    while let Some(batch) = rx.recv().await {
        let n = batch.len() as u64;
        let mut acked = Vec::new();
        for p in batch {
            if !KafkaSink::await_delivery(p.fut).await? {
                return Err(MirrorError::Config("a delivery failed; resubscribing to reconcile".into()));
            }
            if let Some(c) = p.commit_ns {
                lag.record((crate::bus::clock::now_ns() - c).max(0) as f64 / 1e9);
            }
            if let Some(kv) = p.durable {
                acked.push(kv);
            }
        }
        records.increment(n);
        if let Some(d) = &durable {
            d.acked_many(acked);
        }
    }
    Ok(())
}

/// The column that tells when a row was committed (for the lag metric).
fn commit_column(table: MirrorTable, batch: &RecordBatch) -> Option<Int64Array> {
    let name = match table {
        MirrorTable::Messages => "updated_ts",
        MirrorTable::Events => "ts",
    };
    batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
}

/// How a row is compared with what Kafka holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Live deltas: a version Kafka already has (or a lower one) is not sent
    /// again — this is what stops echoes when a replay `--follow` writes the table.
    Stream,
    /// After (re)subscribing: Kafka must end up with exactly the snapshot's
    /// version; a lower version (row deleted and re-created meanwhile) is sent
    /// after a tombstone so that folding the topic keeps it.
    Reconcile,
}

/// Sends the rows of `batch` that Kafka lacks (see [`Mode`]). The decisions
/// are taken under the ledger's lock, the sends after it.
async fn send_batch(out: &mut Outbox<'_>, encoder: &RecordEncoder, batch: &RecordBatch, ledger: &KafkaLedger, mode: Mode) -> Result<(), MirrorError> {
    let table = encoder.table();
    if batch.num_rows() == 0 {
        return Ok(());
    }
    send_records(out, encoder, encoder.encode_batch(batch)?, commit_column(table, batch), ledger, mode).await
}

/// [`send_batch`] for rows already encoded (`commits`: their commit stamps, by row).
async fn send_records(
    out: &mut Outbox<'_>,
    encoder: &RecordEncoder,
    records: Vec<EncodedRecord>,
    commits: Option<Int64Array>,
    ledger: &KafkaLedger,
    mode: Mode,
) -> Result<(), MirrorError> {
    let table = encoder.table();
    // (record, tombstone first, commit stamp) of the rows to send.
    let sends: Vec<(EncodedRecord, bool, Option<i64>)> = ledger.with(table, |mirrored| {
        let mut sends = Vec::new();
        for (i, rec) in records.into_iter().enumerate() {
            let held = mirrored.get(&rec.key).copied().flatten();
            let v = rec.version.unwrap_or(i64::MIN);
            let already = match (table, mode, held) {
                // Events are immutable: present once is enough.
                (MirrorTable::Events, _, _) => mirrored.contains_key(&rec.key),
                (MirrorTable::Messages, Mode::Stream, Some(h)) => v <= h,
                (MirrorTable::Messages, Mode::Reconcile, Some(h)) => v == h,
                (MirrorTable::Messages, _, None) => false,
            };
            if already {
                continue;
            }
            let tombstone_first = matches!((table, mode, held), (MirrorTable::Messages, Mode::Reconcile, Some(h)) if v < h);
            mirrored.insert(rec.key.clone(), Some(v));
            let commit = commits.as_ref().and_then(|c| (!c.is_null(i)).then(|| c.value(i)));
            sends.push((rec, tombstone_first, commit));
        }
        sends
    });
    for (rec, tombstone_first, commit) in sends {
        if tombstone_first {
            out.send(encoder.tombstone(&rec.key), None).await?;
        }
        out.send(rec, commit).await?;
    }
    Ok(())
}

/// Sends the snapshot rows Kafka lacks; returns the live keys with versions.
async fn reconcile_snapshot(out: &mut Outbox<'_>, encoder: &RecordEncoder, snapshot: &RecordBatch, ledger: &KafkaLedger, mode: Mode) -> Result<HashMap<String, Option<i64>>, MirrorError> {
    let table = encoder.table();
    let before = ledger.with(table, |m| m.len());
    let records = if snapshot.num_rows() == 0 { Vec::new() } else { encoder.encode_batch(snapshot)? };
    let live: HashMap<String, Option<i64>> = records.iter().map(|r| (r.key.clone(), r.version)).collect();
    send_records(out, encoder, records, commit_column(table, snapshot), ledger, mode).await?;
    let after = ledger.with(table, |m| m.len());
    tracing::info!(table = %table, live = live.len(), newly_mirrored = after.saturating_sub(before), "mirror reconciled snapshot");
    Ok(live)
}

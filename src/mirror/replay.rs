//! `dhbus replay`: rebuilds `agent_messages` and `agent_events` in a (possibly
//! fresh) Deephaven from the mirror topics. Messages keep the latest version
//! per key and tombstones delete; events are deduplicated by event_id. The
//! whole range is read and folded before anything is written, so a corrupt
//! record stops the replay with nothing half-applied.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use base64::Engine as _;
use serde::Serialize;

use super::codec::{rows_to_batch, MirrorTable, RecordDecoder, RecordEncoder, Row};
use super::fold::Folder;
use super::kafka_error::MirrorError;
use super::ledger::KafkaLedger;
use super::readback::{read_all, RawRecord, StartAt};
use super::topics::MirrorTopics;
use crate::deephaven::{InputTable, Session, TableHandle};
use crate::schema::TableNames;

/// Rows per DoPut when writing the rebuilt tables.
const WRITE_CHUNK: usize = 100_000;

/// What to replay.
#[derive(Clone, Debug)]
pub struct ReplayPlan {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Mirror topics.
    pub topics: MirrorTopics,
    /// Where to start, per table.
    pub start: HashMap<MirrorTable, StartAt>,
    /// Which tables.
    pub tables: Vec<MirrorTable>,
    /// Deephaven table names to write.
    pub names: TableNames,
    /// Read and fold only; write nothing.
    pub dry_run: bool,
    /// Where corrupt records go (and replay continues); None: stop at the first.
    pub skip_corrupt: Option<std::path::PathBuf>,
    /// Show a progress bar (a terminal) or log progress lines.
    pub progress_bar: bool,
    /// On a warm standby whose tables are mirrored too: where to note what
    /// is written (it is in Kafka already), so the mirror does not echo it.
    pub ledger: Option<KafkaLedger>,
}

impl ReplayPlan {
    /// Both tables from the earliest record, written, no skipping, no
    /// progress bar, no ledger (restore at start-up, a standby's follower).
    pub fn full(bootstrap: String, topics: MirrorTopics, names: TableNames) -> ReplayPlan {
        ReplayPlan {
            bootstrap,
            topics,
            start: HashMap::new(),
            tables: vec![MirrorTable::Messages, MirrorTable::Events],
            names,
            dry_run: false,
            skip_corrupt: None,
            progress_bar: false,
            ledger: None,
        }
    }
}

/// Per-table outcome.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TableSummary {
    /// Records read from Kafka.
    pub records_read: u64,
    /// Tombstones among them.
    pub tombstones: u64,
    /// Corrupt records skipped.
    pub corrupt_skipped: u64,
    /// Rows in the rebuilt table.
    pub rows: u64,
    /// Rows written (upserted or appended) by this replay.
    pub rows_written: u64,
    /// Rows deleted by this replay (tombstoned keys present in Deephaven).
    pub rows_deleted: u64,
    /// Highest message version seen.
    pub max_version: Option<i64>,
    /// Order-independent checksum of the rebuilt table (read back from Deephaven;
    /// of the fold in a dry run).
    pub checksum: String,
}

/// The whole replay's outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplaySummary {
    /// Per table name.
    pub tables: HashMap<String, TableSummary>,
    /// Wall time, seconds.
    pub seconds: f64,
}

fn topic_of(topics: &MirrorTopics, t: MirrorTable) -> &str {
    match t {
        MirrorTable::Messages => &topics.messages,
        MirrorTable::Events => &topics.events,
    }
}

fn name_of(names: &TableNames, t: MirrorTable) -> &str {
    match t {
        MirrorTable::Messages => &names.messages,
        MirrorTable::Events => &names.events,
    }
}

/// Reads and folds one table's topic (blocking; run it off the async runtime).
pub fn fold_topic(plan: &ReplayPlan, table: MirrorTable) -> Result<Folded, MirrorError> {
    let topic = topic_of(&plan.topics, table).to_string();
    let decoder = RecordDecoder::new().map_err(|e| MirrorError::Config(e.to_string()))?;
    let mut folder = Folder::new(table);
    let mut seen_keys = HashSet::new();
    let mut next_offsets: HashMap<i32, i64> = HashMap::new();
    let mut summary = TableSummary::default();
    let mut skip = match &plan.skip_corrupt {
        Some(p) => Some(std::io::BufWriter::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?)),
        None => None,
    };
    let bar = progress(plan.progress_bar, &topic);
    let started = Instant::now();
    let mut last_log = Instant::now();
    let start = plan.start.get(&table).cloned().unwrap_or(StartAt::Earliest);
    read_all(&plan.bootstrap, &topic, &start, Duration::from_millis(500), |r: RawRecord| {
        summary.records_read += 1;
        next_offsets.insert(r.partition, r.offset + 1);
        metrics::counter!("dhbus_replay_records_total", "table" => table.name()).increment(1);
        let decoded = decoder.decode(table, r.key.as_deref().unwrap_or_default(), r.value.as_deref());
        match decoded {
            Ok(rec) => {
                seen_keys.insert(rec.key.clone());
                folder
                    .apply(&rec.key, rec.row)
                    .map_err(|e| MirrorError::Config(format!("fold at {topic}:{}:{}: {e}", r.partition, r.offset)))?;
            }
            Err(source) => match skip.as_mut() {
                Some(w) => {
                    summary.corrupt_skipped += 1;
                    let b64 = |v: &Option<Vec<u8>>| v.as_ref().map(|v| base64::engine::general_purpose::STANDARD.encode(v));
                    let line = serde_json::json!({
                        "topic": topic, "partition": r.partition, "offset": r.offset,
                        "error": source.to_string(), "key_b64": b64(&r.key), "value_b64": b64(&r.value),
                    });
                    writeln!(w, "{line}")?;
                }
                None => return Err(MirrorError::Corrupt { topic: topic.clone(), partition: r.partition, offset: r.offset, source }),
            },
        }
        if let Some(b) = &bar {
            b.inc(1);
        } else if last_log.elapsed() > Duration::from_secs(2) {
            last_log = Instant::now();
            let rate = summary.records_read as f64 / started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(topic, records = summary.records_read, rate = rate as u64, "replay reading");
        }
        Ok(())
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(mut w) = skip {
        w.flush()?;
    }
    let stats = folder.stats();
    summary.tombstones = stats.tombstones;
    summary.max_version = stats.max_version;
    summary.rows = folder.len() as u64;
    summary.checksum = format!("{:016x}", folder.checksum());
    Ok(Folded { folder, seen_keys, summary, next_offsets })
}

/// The result of reading and folding one topic.
pub struct Folded {
    /// The folded rows.
    pub folder: Folder,
    /// Every key that appeared (tombstoned ones included).
    pub seen_keys: HashSet<String>,
    /// Counters.
    pub summary: TableSummary,
    /// Per partition, the offset after the last record read (where `--follow` continues).
    pub next_offsets: HashMap<i32, i64>,
}

fn progress(enabled: bool, topic: &str) -> Option<indicatif::ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {prefix} {human_pos} records ({per_sec}) {elapsed}") {
        bar.set_style(style);
    }
    bar.set_prefix(topic.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// Runs the replay: fold every requested table, then write them.
pub async fn replay(session: &Session, plan: ReplayPlan) -> Result<ReplaySummary, MirrorError> {
    replay_with_offsets(session, plan).await.map(|(s, _)| s)
}

/// [`replay`], also returning where each table's topic was read up to.
pub async fn replay_with_offsets(session: &Session, plan: ReplayPlan) -> Result<(ReplaySummary, HashMap<MirrorTable, HashMap<i32, i64>>), MirrorError> {
    let started = Instant::now();
    let mut folded = Vec::new();
    for &table in &plan.tables {
        let p = plan.clone();
        let r = tokio::task::spawn_blocking(move || fold_topic(&p, table)).await.map_err(|_| MirrorError::Shutdown)??;
        folded.push((table, r));
    }
    let mut out = ReplaySummary::default();
    if !plan.dry_run {
        crate::bootstrap::bootstrap(session, &plan.names).await.map_err(|e| MirrorError::Config(format!("bootstrap: {e}")))?;
    }
    let mut offsets = HashMap::new();
    for (table, f) in folded {
        let Folded { folder, seen_keys, mut summary, next_offsets } = f;
        let name = name_of(&plan.names, table).to_string();
        if !plan.dry_run {
            write_table(session, table, &name, folder, &seen_keys, &mut summary, plan.ledger.as_ref()).await?;
        }
        offsets.insert(table, next_offsets);
        out.tables.insert(name, summary);
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok((out, offsets))
}

/// Key column values currently in a Deephaven table.
async fn live_keys(table: &TableHandle, key: &str) -> Result<HashSet<String>, MirrorError> {
    let snap = table.snapshot().await?;
    let mut out = HashSet::with_capacity(snap.num_rows());
    if let Some(col) = snap.column_by_name(key).and_then(|c| c.as_any().downcast_ref::<StringArray>()) {
        out.extend(col.iter().flatten().map(str::to_string));
    }
    Ok(out)
}

async fn write_table(
    session: &Session,
    table: MirrorTable,
    name: &str,
    folder: Folder,
    seen: &HashSet<String>,
    summary: &mut TableSummary,
    ledger: Option<&KafkaLedger>,
) -> Result<(), MirrorError> {
    let handle = TableHandle::open(session, name).await?;
    let key = table.key_column();
    let existing = live_keys(&handle, key).await?;
    let keys = match table {
        MirrorTable::Messages => vec![key.to_string()],
        MirrorTable::Events => vec![],
    };
    let input = InputTable::new(handle.clone(), keys);
    let rows: Vec<Row> = folder.into_rows();
    if let Some(l) = ledger {
        // Everything replayed is in Kafka: rows at their versions, the rest tombstoned.
        let live: HashSet<&str> = rows.iter().filter_map(Row::key).collect();
        let tombstoned = seen.iter().filter(|k| !live.contains(k.as_str())).map(|k| (k.clone(), None));
        l.note(table, rows.iter().filter_map(|r| Some((r.key()?.to_string(), Some(r.version().unwrap_or(i64::MIN))))).chain(tombstoned));
    }
    // Events are append-only: only those Deephaven lacks. Messages are upserts (idempotent).
    let to_write: Vec<Row> = match table {
        MirrorTable::Events => rows.into_iter().filter(|r| r.key().is_some_and(|k| !existing.contains(k))).collect(),
        MirrorTable::Messages => rows,
    };
    let live: HashSet<&str> = to_write.iter().filter_map(Row::key).collect();
    let to_delete: Vec<String> = if table == MirrorTable::Messages {
        existing.iter().filter(|k| seen.contains(*k) && !live.contains(k.as_str())).cloned().collect()
    } else {
        Vec::new()
    };
    for chunk in to_write.chunks(WRITE_CHUNK) {
        let batch = rows_to_batch(table, chunk).map_err(|e| MirrorError::Config(e.to_string()))?;
        input.add(vec![batch]).await?;
        summary.rows_written += chunk.len() as u64;
        tracing::info!(table = name, written = summary.rows_written, "replay writing");
    }
    for chunk in to_delete.chunks(WRITE_CHUNK) {
        let schema = Arc::new(Schema::new(vec![Field::new(key, DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(chunk.to_vec()))])?;
        input.delete(batch).await?;
        summary.rows_deleted += chunk.len() as u64;
    }
    // Verify: checksum of what Deephaven now holds.
    let (rows, checksum) = table_checksum(&handle, table, name).await?;
    summary.rows = rows;
    summary.checksum = format!("{checksum:016x}");
    Ok(())
}

/// Row count and order-independent checksum of a Deephaven table, computed
/// the same way as the fold's (so the two can be compared).
pub async fn table_checksum(handle: &TableHandle, table: MirrorTable, name: &str) -> Result<(u64, u64), MirrorError> {
    let snap = handle.snapshot().await?;
    let encoder = RecordEncoder::new(table, name).map_err(|e| MirrorError::Config(e.to_string()))?;
    let decoder = RecordDecoder::new().map_err(|e| MirrorError::Config(e.to_string()))?;
    let mut folder = Folder::new(table);
    if snap.num_rows() > 0 {
        for rec in encoder.encode_batch(&snap)? {
            let row = match &rec.value {
                Some(v) => Some(decoder.decode_value(v).map_err(|e| MirrorError::Config(e.to_string()))?),
                None => None,
            };
            folder.apply(&rec.key, row).map_err(|e| MirrorError::Config(e.to_string()))?;
        }
    }
    Ok((folder.len() as u64, folder.checksum()))
}

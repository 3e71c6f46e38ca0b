//! Reading a mirror topic back from the beginning: what the mirror already
//! sent (for reconciliation) and what replay folds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::kafka_error::MirrorError;

/// Where to start reading each partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// From the first retained record.
    Earliest,
    /// From the first record at or after this time (epoch ms), per partition.
    Time(i64),
    /// From explicit offsets (partitions not listed start at the beginning).
    Offsets(HashMap<i32, i64>),
}

/// One record as read, for folding or reconciliation.
#[derive(Clone, Debug)]
pub struct RawRecord {
    /// Partition it came from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Record key bytes.
    pub key: Option<Vec<u8>>,
    /// Record value (None: tombstone).
    pub value: Option<Vec<u8>>,
}

/// A consumer assigned to every partition of `topic` at `start`. Returns the
/// consumer and, per partition, the high watermark at assignment (0 where
/// there is nothing to read from the start position).
pub fn open(bootstrap: &str, topic: &str, start: &StartAt) -> Result<(BaseConsumer, HashMap<i32, i64>), MirrorError> {
    let group = format!("dhbus-readback-{}", uuid::Uuid::now_v7());
    let consumer = BaseConsumer::from_config(&super::kafka_config::consumer_config(bootstrap, &group)).map_err(MirrorError::kafka("create consumer"))?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(MirrorError::kafka("metadata"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| MirrorError::Config(format!("topic {topic} not found")))?;
    if let Some(err) = t.error() {
        return Err(MirrorError::Config(format!("topic {topic}: {err:?}")));
    }
    let mut tpl = TopicPartitionList::new();
    let mut highs = HashMap::new();
    let mut lows = HashMap::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).map_err(MirrorError::kafka("watermarks"))?;
        highs.insert(p.id(), high);
        lows.insert(p.id(), low);
        let off = match start {
            StartAt::Earliest => Offset::Beginning,
            StartAt::Offsets(m) => m.get(&p.id()).map(|o| Offset::Offset(*o)).unwrap_or(Offset::Beginning),
            StartAt::Time(ms) => Offset::Offset(*ms),
        };
        tpl.add_partition_offset(topic, p.id(), off).map_err(MirrorError::kafka("assign"))?;
    }
    if let StartAt::Time(_) = start {
        tpl = consumer.offsets_for_times(tpl, Duration::from_secs(10)).map_err(MirrorError::kafka("offsets for times"))?;
    }
    consumer.assign(&tpl).map_err(MirrorError::kafka("assign"))?;
    // Partitions with nothing to read from where they start count as read.
    let mut pending = HashMap::new();
    for e in tpl.elements() {
        let (low, high) = (lows.get(&e.partition()).copied().unwrap_or(0), highs.get(&e.partition()).copied().unwrap_or(0));
        let empty = match e.offset() {
            Offset::Offset(o) => o >= high,
            Offset::End => true,
            _ => low >= high,
        };
        pending.insert(e.partition(), if empty { 0 } else { high });
    }
    Ok((consumer, pending))
}

/// Reads `topic` from `start` until every partition has been read to its high
/// watermark and the topic has been quiet for `quiet` (the broker's watermark
/// may trail the last record, so it alone cannot say "caught up").
/// `on_record` sees each record in partition order.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    start: &StartAt,
    quiet: Duration,
    mut on_record: impl FnMut(RawRecord) -> Result<(), MirrorError>,
) -> Result<u64, MirrorError> {
    let (consumer, highs) = open(bootstrap, topic, start)?;
    let mut reached: HashMap<i32, bool> = highs.iter().map(|(p, h)| (*p, *h <= 0)).collect();
    let mut last = Instant::now();
    let mut n = 0u64;
    loop {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                last = Instant::now();
                let p = m.partition();
                if let Some(h) = highs.get(&p) {
                    if m.offset() + 1 >= *h {
                        reached.insert(p, true);
                    }
                }
                n += 1;
                on_record(RawRecord { partition: p, offset: m.offset(), key: m.key().map(<[u8]>::to_vec), value: m.payload().map(<[u8]>::to_vec) })?;
            }
            Some(Err(e)) => return Err(MirrorError::Kafka { context: "read back", source: e }),
            None => {
                if reached.values().all(|r| *r) && last.elapsed() >= quiet {
                    return Ok(n);
                }
                // A partition whose watermark was never reached but that stays quiet a long time is done too.
                if last.elapsed() >= quiet * 20 {
                    return Ok(n);
                }
            }
        }
    }
}

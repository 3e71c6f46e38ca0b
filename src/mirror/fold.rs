//! Pure folding of a table's Kafka records (in log order) into table state:
//! what replay writes back to Deephaven, and what tests compare.
//!
//! Rules (also in `schemas/avro/README.md`):
//!
//! - A record with a row replaces the held row of its key when its version
//!   ([`Row::version`]; a null `version` counts as the lowest, like
//!   Deephaven's `NULL_LONG`) is **greater than or equal to** the held one;
//!   a lower version is stale and ignored. Ties go to the later record, as
//!   Kafka log compaction keeps the last record of a key.
//! - Events all have version [`EVENT_VERSION`](super::codec::EVENT_VERSION),
//!   so an event id seen again is a duplicate: counted, and (being
//!   immutable) normally identical.
//! - A tombstone carries no version and applies in log order: it removes the
//!   key as of its offset, and a later record with any version re-creates it.
//!
//! So for messages without tombstones the result does not depend on the
//! order records with distinct versions are applied in, and folding a log
//! twice gives the same state as folding it once.

use std::collections::btree_map::{BTreeMap, Entry};

use super::codec::{crc64_avro, DecodedRecord, MirrorTable, Row};
use super::error::FoldError;

/// What applying one record did, for callers that count or trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The key was new (or re-created after a tombstone).
    Inserted,
    /// The record's version was at least the held one and replaced it.
    Replaced,
    /// The record's version was below the held one: ignored.
    Stale,
    /// A tombstone removed the key.
    Deleted,
    /// A tombstone for a key not held: nothing to do.
    Absent,
}

/// Counters of a fold, for the replay summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldStats {
    /// Records applied (rows and tombstones).
    pub records: u64,
    /// Tombstones among them.
    pub tombstones: u64,
    /// Highest version seen in any row record (`None` when no row carried one).
    pub max_version: Option<i64>,
    /// Row records whose version equalled the held row's (for events: an event
    /// id seen again). Replays and mirror restarts make these; they are harmless.
    pub duplicates: u64,
    /// Duplicates whose content differed from the held row: a sign that two
    /// writers produced the same version, which should never happen.
    pub conflicts: u64,
    /// Row records ignored because a higher version was held.
    pub stale: u64,
}

/// The folded state of one table.
#[derive(Clone, Debug)]
pub struct Folder {
    table: MirrorTable,
    rows: BTreeMap<String, Row>,
    stats: FoldStats,
}

/// The version a row is ordered by: null sorts below every real version.
fn order_version(row: &Row) -> i64 {
    row.version().unwrap_or(i64::MIN)
}

impl Folder {
    /// An empty fold of `table`.
    pub fn new(table: MirrorTable) -> Folder {
        Folder { table, rows: BTreeMap::new(), stats: FoldStats::default() }
    }

    /// The table being folded.
    pub fn table(&self) -> MirrorTable {
        self.table
    }

    /// Applies the next record of the log: `row` is `None` for a tombstone.
    /// The row must belong to the folded table and carry `key` in its key
    /// column; otherwise nothing changes and the error says why.
    pub fn apply(&mut self, key: &str, row: Option<Row>) -> Result<Applied, FoldError> {
        if let Some(r) = &row {
            if r.table() != self.table {
                return Err(FoldError::WrongTable { expected: self.table, found: r.table() });
            }
            if r.key() != Some(key) {
                return Err(FoldError::KeyMismatch { key: key.to_owned(), row_key: r.key().map(str::to_owned) });
            }
        }
        self.stats.records += 1;
        let Some(row) = row else {
            self.stats.tombstones += 1;
            return Ok(match self.rows.remove(key) {
                Some(_) => Applied::Deleted,
                None => Applied::Absent,
            });
        };
        if let Some(v) = row.version() {
            self.stats.max_version = Some(self.stats.max_version.map_or(v, |m| m.max(v)));
        }
        match self.rows.entry(key.to_owned()) {
            Entry::Vacant(slot) => {
                slot.insert(row);
                Ok(Applied::Inserted)
            }
            Entry::Occupied(mut slot) => {
                let (new, held) = (order_version(&row), order_version(slot.get()));
                if new < held {
                    self.stats.stale += 1;
                    return Ok(Applied::Stale);
                }
                if new == held {
                    self.stats.duplicates += 1;
                    if *slot.get() != row {
                        self.stats.conflicts += 1;
                    }
                }
                slot.insert(row);
                Ok(Applied::Replaced)
            }
        }
    }

    /// Applies a record as [`RecordDecoder::decode`](super::codec::RecordDecoder::decode)
    /// returns it.
    pub fn apply_record(&mut self, record: DecodedRecord) -> Result<Applied, FoldError> {
        self.apply(&record.key, record.row)
    }

    /// The counters so far.
    pub fn stats(&self) -> FoldStats {
        self.stats
    }

    /// Number of rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row held for `key`.
    pub fn get(&self, key: &str) -> Option<&Row> {
        self.rows.get(key)
    }

    /// An order-independent checksum of the folded table, to compare two
    /// replays or a replay with the live table: the wrapping sum of the
    /// CRC-64-AVRO of each row's Avro datum (0 for an empty table).
    pub fn checksum(&self) -> u64 {
        table_checksum(self.rows.values())
    }

    /// The folded rows, sorted by key.
    pub fn into_rows(self) -> Vec<Row> {
        self.rows.into_values().collect()
    }
}

/// The checksum [`Folder::checksum`] computes, for any set of rows (e.g. a
/// snapshot read from Deephaven): independent of the rows' order.
pub fn table_checksum<'a>(rows: impl IntoIterator<Item = &'a Row>) -> u64 {
    let mut buf = Vec::with_capacity(256);
    rows.into_iter().fold(0u64, |sum, row| {
        buf.clear();
        row.write_datum(&mut buf);
        sum.wrapping_add(crc64_avro(&buf))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::codec::tests::{event_row, message_row};
    use crate::mirror::codec::{EventRow, MessageRow};
    use proptest::prelude::*;

    fn msg(key: &str, version: Option<i64>, status: &str) -> Row {
        Row::Message(MessageRow {
            message_id: Some(key.into()),
            version,
            status: Some(status.into()),
            ..Default::default()
        })
    }

    fn fold(table: MirrorTable, log: &[(String, Option<Row>)]) -> Folder {
        let mut f = Folder::new(table);
        for (k, r) in log {
            f.apply(k, r.clone()).expect("apply");
        }
        f
    }

    /// Messages over a few keys, each (key, version) pair at most once.
    fn distinct_versions() -> impl Strategy<Value = Vec<(String, Option<Row>)>> {
        prop::collection::vec((0..4u8, 0..6i64, message_row()), 0..24).prop_map(|recs| {
            let mut seen = std::collections::HashSet::new();
            recs.into_iter()
                .filter(|(k, v, _)| seen.insert((*k, *v)))
                .map(|(k, v, mut row)| {
                    let key = format!("m{k}");
                    row.message_id = Some(key.clone());
                    row.version = Some(v);
                    (key, Some(Row::Message(row)))
                })
                .collect()
        })
    }

    /// Messages with arbitrary (possibly equal or null) versions and tombstones.
    fn any_log() -> impl Strategy<Value = Vec<(String, Option<Row>)>> {
        let rec = (0..4u8, prop::option::of(0..4i64), message_row(), prop::bool::weighted(0.2));
        prop::collection::vec(rec, 0..30).prop_map(|recs| {
            recs.into_iter()
                .map(|(k, v, mut row, tomb)| {
                    let key = format!("m{k}");
                    row.message_id = Some(key.clone());
                    row.version = v;
                    (key, (!tomb).then_some(Row::Message(row)))
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Without tombstones, distinct versions fold to the same table in any order.
        #[test]
        fn order_of_distinct_versions_does_not_matter((log, shuffled) in distinct_versions()
                .prop_flat_map(|log| (Just(log.clone()), Just(log).prop_shuffle()))) {
            let a = fold(MirrorTable::Messages, &log);
            let b = fold(MirrorTable::Messages, &shuffled);
            prop_assert_eq!(a.checksum(), b.checksum());
            prop_assert_eq!(a.stats().max_version, b.stats().max_version);
            prop_assert_eq!(a.clone().into_rows(), b.into_rows());
            for row in a.into_rows() {
                let best = log.iter().filter_map(|(_, r)| r.as_ref()).filter(|r| r.key() == row.key()).filter_map(Row::version).max();
                prop_assert_eq!(row.version(), best);
            }
        }

        /// Folding a log onto its own result changes nothing: replay is idempotent.
        #[test]
        fn replaying_a_log_twice_is_idempotent(log in any_log()) {
            let once = fold(MirrorTable::Messages, &log);
            let mut twice = once.clone();
            for (k, r) in &log {
                twice.apply(k, r.clone()).expect("apply");
            }
            prop_assert_eq!(once.checksum(), twice.checksum());
            prop_assert_eq!(once.into_rows(), twice.into_rows());
        }

        /// Events are deduplicated by id; the checksum ignores row order.
        #[test]
        fn events_dedupe_by_id(rows in prop::collection::vec(event_row(), 0..20), repeat in prop::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            let mut log: Vec<(String, Option<Row>)> = rows.iter().map(|r| (r.event_id.clone().unwrap_or_default(), Some(Row::Event(r.clone())))).collect();
            let n = log.len();
            if n > 0 {
                for i in &repeat {
                    log.push(log[i.index(n)].clone());
                }
            }
            let f = fold(MirrorTable::Events, &log);
            let distinct: std::collections::BTreeSet<&String> = log.iter().map(|(k, _)| k).collect();
            prop_assert_eq!(f.len(), distinct.len());
            prop_assert_eq!(f.stats().duplicates as usize, log.len() - distinct.len());
            prop_assert_eq!(f.stats().records as usize, log.len());
            let rows = f.clone().into_rows();
            let keys: Vec<&str> = rows.iter().filter_map(Row::key).collect();
            prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted by key");
            let mut reversed = rows.clone();
            reversed.reverse();
            prop_assert_eq!(table_checksum(&reversed), f.checksum());
        }
    }

    #[test]
    fn versions_tombstones_and_stats() {
        let mut f = Folder::new(MirrorTable::Messages);
        assert_eq!(f.apply("a", Some(msg("a", Some(2), "queued"))), Ok(Applied::Inserted));
        assert_eq!(f.apply("a", Some(msg("a", Some(1), "old"))), Ok(Applied::Stale));
        assert_eq!(f.apply("a", Some(msg("a", None, "null version"))), Ok(Applied::Stale));
        assert_eq!(f.apply("a", Some(msg("a", Some(3), "processing"))), Ok(Applied::Replaced));
        assert_eq!(f.apply("a", Some(msg("a", Some(3), "done"))), Ok(Applied::Replaced));
        assert_eq!(f.get("a"), Some(&msg("a", Some(3), "done")));
        assert_eq!(f.apply("a", None), Ok(Applied::Deleted));
        assert_eq!(f.apply("a", None), Ok(Applied::Absent));
        assert!(f.is_empty());
        assert_eq!(f.checksum(), 0);
        // A later record with any version re-creates the key.
        assert_eq!(f.apply("a", Some(msg("a", Some(1), "again"))), Ok(Applied::Inserted));
        let s = f.stats();
        assert_eq!((s.records, s.tombstones, s.stale, s.duplicates, s.conflicts), (8, 2, 2, 1, 1));
        assert_eq!(s.max_version, Some(3));
        assert_eq!(f.into_rows(), vec![msg("a", Some(1), "again")]);
    }

    #[test]
    fn rejects_foreign_rows_and_key_mismatch() {
        let mut f = Folder::new(MirrorTable::Events);
        let e = Row::Event(EventRow { event_id: Some("e".into()), ..Default::default() });
        assert_eq!(
            f.apply("m", Some(msg("m", Some(1), "x"))),
            Err(FoldError::WrongTable { expected: MirrorTable::Events, found: MirrorTable::Messages })
        );
        assert_eq!(f.apply("x", Some(e)), Err(FoldError::KeyMismatch { key: "x".into(), row_key: Some("e".into()) }));
        assert_eq!(f.stats(), FoldStats::default());
    }

    /// Records encoded by the codec fold through `apply_record` like typed rows.
    #[test]
    fn folds_decoded_records() {
        use crate::mirror::codec::{RecordDecoder, RecordEncoder};
        let enc = RecordEncoder::new(MirrorTable::Messages, "agent_messages").expect("enc");
        let dec = RecordDecoder::new().expect("dec");
        let mut log = Vec::new();
        for (k, v) in [("b", 2), ("a", 1), ("b", 1), ("a", 3)] {
            log.push(enc.encode_row(&msg(k, Some(v), "queued")).expect("encode"));
        }
        log.push(enc.tombstone("b"));
        let mut f = Folder::new(MirrorTable::Messages);
        for rec in &log {
            let decoded = dec.decode(MirrorTable::Messages, rec.key.as_bytes(), rec.value.as_deref()).expect("decode");
            f.apply_record(decoded).expect("apply");
        }
        assert_eq!(f.stats().stale, 1);
        assert_eq!(f.into_rows(), vec![msg("a", Some(3), "queued")]);
    }

    #[test]
    fn checksum_changes_with_content() {
        let a = [msg("a", Some(1), "queued"), msg("b", Some(1), "queued")];
        let b = [msg("a", Some(1), "queued"), msg("b", Some(1), "done")];
        assert_ne!(table_checksum(&a), table_checksum(&b));
        assert_eq!(table_checksum(&a), table_checksum(a.iter().rev()));
    }
}

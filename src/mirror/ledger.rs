//! What Kafka holds per mirrored table: key → version (`None`: tombstoned;
//! events, which have no version, hold `Some(i64::MIN)`). The mirror keeps
//! it (read back from the topics, then updated as it sends); on a warm
//! standby the follower that applies records from Kafka notes them here
//! before writing them to Deephaven, so that the mirror of the standby sees
//! those versions as already in Kafka and never sends them back (no echo).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::codec::MirrorTable;

/// Key → version already in Kafka, for one table.
pub type Mirrored = HashMap<String, Option<i64>>;

/// The ledger of every mirrored table; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct KafkaLedger {
    /// Per table; one lock, held only for in-memory lookups (never across I/O).
    inner: Arc<Mutex<HashMap<MirrorTable, Mirrored>>>,
}

impl std::fmt::Debug for KafkaLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_map().entries(g.iter().map(|(t, m)| (t.name(), m.len()))).finish()
    }
}

impl KafkaLedger {
    /// Replaces a table's ledger with what was read back from its topic.
    pub fn replace(&self, table: MirrorTable, mirrored: Mirrored) {
        self.lock().insert(table, mirrored);
    }

    /// Notes records known to be in Kafka (in topic order: later ones win).
    pub fn note(&self, table: MirrorTable, records: impl IntoIterator<Item = (String, Option<i64>)>) {
        let mut g = self.lock();
        let m = g.entry(table).or_default();
        for (k, v) in records {
            m.insert(k, v);
        }
    }

    /// Runs `f` on a table's ledger under the lock.
    pub fn with<R>(&self, table: MirrorTable, f: impl FnOnce(&mut Mirrored) -> R) -> R {
        f(self.lock().entry(table).or_default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MirrorTable, Mirrored>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_notes_win_and_replace_resets() {
        let l = KafkaLedger::default();
        l.note(MirrorTable::Messages, [("m1".to_string(), Some(1)), ("m1".to_string(), Some(2)), ("m2".to_string(), None)]);
        assert_eq!(l.with(MirrorTable::Messages, |m| m.get("m1").copied()), Some(Some(2)));
        assert_eq!(l.with(MirrorTable::Messages, |m| m.get("m2").copied()), Some(None));
        assert_eq!(l.with(MirrorTable::Events, |m| m.len()), 0);
        l.replace(MirrorTable::Messages, Mirrored::from([("m3".to_string(), Some(7))]));
        assert_eq!(l.with(MirrorTable::Messages, |m| m.len()), 1);
    }
}

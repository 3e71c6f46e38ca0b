//! Ready queues of one topic, in claim order, with a per-session index so a
//! claim filtered by session never scans other sessions' messages.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Claim order: priority descending, then `ts` ascending, then `message_id`
/// (deterministic tie-break). `ix` locates the entry and never decides order
/// (ids are unique).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ReadyKey {
    /// `-priority`, widened so `i32::MIN` negates safely: ascending = priority descending.
    neg_priority: i64,
    /// Enqueue time: older first.
    ts: i64,
    /// Message id, shared with the entry (no string copy).
    id: Arc<str>,
    /// Index of the entry in the state's arena.
    pub(super) ix: usize,
}

impl ReadyKey {
    /// The key of a message.
    pub(super) fn new(priority: i32, ts: i64, id: Arc<str>, ix: usize) -> ReadyKey {
        ReadyKey { neg_priority: -i64::from(priority), ts, id, ix }
    }
}

/// The claimable messages of one topic.
#[derive(Debug, Default)]
pub(super) struct TopicQueue {
    /// Every ready message of the topic: claims without a session pop here.
    all: BTreeSet<ReadyKey>,
    /// Ready messages by non-empty session: claims with a session pop here.
    /// Empty sets are dropped so finished sessions do not pile up.
    sessions: HashMap<String, BTreeSet<ReadyKey>>,
}

impl TopicQueue {
    /// Makes a message claimable.
    pub(super) fn insert(&mut self, key: ReadyKey, session: &str) {
        if !session.is_empty() {
            match self.sessions.get_mut(session) {
                Some(set) => {
                    set.insert(key.clone());
                }
                None => {
                    self.sessions.insert(session.to_owned(), BTreeSet::from([key.clone()]));
                }
            }
        }
        self.all.insert(key);
    }

    /// Makes a message unclaimable; false if it was not queued here.
    pub(super) fn remove(&mut self, key: &ReadyKey, session: &str) -> bool {
        if !session.is_empty() {
            self.remove_from_session(key, session);
        }
        self.all.remove(key)
    }

    /// Takes the first message in claim order (of `session`, or of any when
    /// `session` is empty); `session_of` names the session of an entry.
    pub(super) fn pop<'a>(&mut self, session: &str, session_of: impl Fn(usize) -> &'a str) -> Option<usize> {
        if session.is_empty() {
            let key = self.all.pop_first()?;
            let own = session_of(key.ix);
            if !own.is_empty() {
                self.remove_from_session(&key, own);
            }
            Some(key.ix)
        } else {
            let set = self.sessions.get_mut(session)?;
            let key = set.pop_first()?;
            if set.is_empty() {
                self.sessions.remove(session);
            }
            self.all.remove(&key);
            Some(key.ix)
        }
    }

    /// Ready messages (of `session`, or all when empty).
    pub(super) fn len(&self, session: &str) -> usize {
        if session.is_empty() {
            self.all.len()
        } else {
            self.sessions.get(session).map_or(0, BTreeSet::len)
        }
    }

    /// Ready messages in claim order (of `session`, or all when empty).
    pub(super) fn iter<'a>(&'a self, session: &str) -> Box<dyn Iterator<Item = usize> + 'a> {
        if session.is_empty() {
            Box::new(self.all.iter().map(|k| k.ix))
        } else {
            match self.sessions.get(session) {
                Some(set) => Box::new(set.iter().map(|k| k.ix)),
                None => Box::new(std::iter::empty()),
            }
        }
    }

    fn remove_from_session(&mut self, key: &ReadyKey, session: &str) {
        if let Some(set) = self.sessions.get_mut(session) {
            set.remove(key);
            if set.is_empty() {
                self.sessions.remove(session);
            }
        }
    }
}

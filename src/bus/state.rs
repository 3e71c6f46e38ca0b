//! The lease state machine: pure (no I/O, no clock, no randomness), so the
//! sequencer task owns one [`LeaseState`] and feeds it requests with `now`.
//!
//! # Rules
//!
//! - **Time.** Every operation takes `now` (epoch ns). Time never goes
//!   backwards inside the state: an earlier `now` than one already seen is
//!   taken as the latest one, so `updated_ts`, event `ts` and deadlines are
//!   monotonic. A lease is live while `now < lease_expires_ts`; a TTL, lease or
//!   nack delay whose instant is `<= now` has passed.
//! - **Deadlines.** [`LeaseState::claim`] and [`LeaseState::force_release`]
//!   first process everything due (as [`LeaseState::tick`] does), so a claim
//!   never hands out a message whose TTL has passed. Extend/ack/nack/release do
//!   not: they refuse a lease whose deadline passed (`StaleLease`, reason
//!   `Expired`) and leave its expiry to the next tick. Call `tick` at
//!   [`LeaseState::next_deadline`].
//! - **`lease_epoch`** (the fencing token) grows by exactly 1 when a lease
//!   starts (claim) and when one ends (ack, nack, release, force release,
//!   lease expiry). **Extend does not change it**: an extension keeps the same
//!   lease, so a retried heartbeat whose answer was lost still holds. A
//!   message's epoch never decreases (do not rely on its parity: adopted and
//!   restored rows keep theirs). Extend/ack/nack/release must present the
//!   current epoch and owner. TTL expiry of a queued message is no lease
//!   change and keeps the epoch.
//! - **`version`** grows by exactly 1 per operation that changes the row
//!   (even when that operation emits two events); `updated_ts = now`.
//!   Published rows start at version 1; adopted rows at their version + 1.
//! - **Retries.** A nack and a lease expiry each add 1 to `retry_count`. Then,
//!   in this order: a passed TTL makes the message `expired`; a
//!   `retry_count > max_retries` makes it `error` (`dead_letter` event);
//!   otherwise it is `queued` again. Release and force release count no retry.
//! - **Ids.** Event ids and generated message ids are UUID v7 strings from an
//!   [`IdGen`] the caller seeds (random in production, constant in tests).
//!
//! # Events per operation
//!
//! | operation | events (agent_id) |
//! |---|---|
//! | publish | `publish` (producer) |
//! | adopt | `adopted` (producer) |
//! | claim | `claimed` (consumer) |
//! | extend | `heartbeat` (holder) |
//! | ack | `ack` (holder) |
//! | nack | `nack` (holder), then `expired` if the TTL passed, else `dead_letter` if out of retries |
//! | release | `released` (holder), then `expired` if the TTL passed |
//! | force release | `force_released` (former holder), then `expired` if the TTL passed |
//! | lease expiry | `expired` (former holder; details `reason` = `"ttl"` or `"lease"`), then `dead_letter` if out of retries |
//! | TTL of a queued message | `expired` ([`SYSTEM_AGENT`](super::model::SYSTEM_AGENT), reason `"ttl"`) |
//!
//! Every event's `details_json` holds `topic`, `status`, `lease_epoch` and
//! `retry_count` after the change, plus per-event keys (`lease_expires_ts`,
//! `reason`, `delay_ms`, `lease_owner`, `enqueued_ts`, …) and the caller's
//! own `details_json` keys.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::error::{quote, BusError, StaleReason, ValidationError};
use super::model::{
    check_len, Changes, ClaimSpec, EventKind, LeaseRef, Message, NewMessage, Status, StatusCounts, DEFAULT_MAX_RETRIES, MAX_FIELD_BYTES,
    MAX_LEASE_MS, NANOS_PER_MS,
};

mod details;
mod ids;
mod lifecycle;
mod queues;
mod sweep;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use details::Details;
pub use ids::IdGen;
use queues::{ReadyKey, TopicQueue};

/// Tunables of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// A message whose `retry_count` goes past this is dead-lettered (status
    /// error): it is attempted at most `1 + max_retries` times.
    pub max_retries: u32,
}

impl Default for LeaseConfig {
    fn default() -> LeaseConfig {
        LeaseConfig { max_retries: DEFAULT_MAX_RETRIES }
    }
}

/// Which index holds a message (so it can be taken out again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In its topic's ready queue (claimable).
    Ready,
    /// In `delayed` until the instant given (nacked with a delay).
    Delayed(i64),
    /// In `leases` under the key given (normally `lease_expires_ts`).
    Leased(i64),
    /// In no queue (terminal status).
    Idle,
    /// A free arena slot (its message was forgotten); reused by the next insert.
    Free,
}

/// One managed message.
#[derive(Debug)]
struct Entry {
    /// The current row.
    msg: Message,
    /// Index of its topic in `LeaseState::topics`.
    topic: usize,
    /// Where it is indexed.
    place: Place,
}

/// Per-topic queue and counters.
#[derive(Debug)]
struct Topic {
    /// Topic name, shared by every message of the topic.
    name: Arc<str>,
    /// Claimable messages in claim order.
    queue: TopicQueue,
    /// Messages by status, for `stats()` without a scan.
    counts: StatusCounts,
}

/// The sequencer's in-memory state: every managed message and its indexes.
#[derive(Debug)]
pub struct LeaseState {
    /// Tunables.
    config: LeaseConfig,
    /// Source of event ids and generated message ids.
    ids: IdGen,
    /// Arena of messages; an index is stable until its terminal message is
    /// forgotten ([`LeaseState::forget_terminal`]), then the slot is reused.
    entries: Vec<Entry>,
    /// Free arena slots.
    free: Vec<usize>,
    /// Terminal messages in the order they became terminal, with the clock
    /// at that moment: what `forget_terminal` walks, oldest first.
    terminal: VecDeque<(i64, usize)>,
    /// `message_id` → arena index.
    by_id: HashMap<Arc<str>, usize>,
    /// Topics by index (an entry stores its topic index: no hashing per change).
    topics: Vec<Topic>,
    /// Topic name → index.
    topic_ix: HashMap<String, usize>,
    /// Live leases by deadline: lease expiry is O(expired · log n).
    leases: BTreeSet<(i64, usize)>,
    /// Nacked messages not claimable before the instant given.
    delayed: BTreeSet<(i64, usize)>,
    /// Queued (ready or delayed) messages with a TTL, by TTL deadline.
    ttls: BTreeSet<(i64, usize)>,
    /// Latest `now` seen: time never goes backwards.
    clock: i64,
    /// A shared `""` (cleared lease owners) so clearing allocates nothing.
    empty: Arc<str>,
}

impl LeaseState {
    /// An empty state.
    pub fn new(config: LeaseConfig, ids: IdGen) -> LeaseState {
        LeaseState {
            config,
            ids,
            entries: Vec::new(),
            free: Vec::new(),
            terminal: VecDeque::new(),
            by_id: HashMap::new(),
            topics: Vec::new(),
            topic_ix: HashMap::new(),
            leases: BTreeSet::new(),
            delayed: BTreeSet::new(),
            ttls: BTreeSet::new(),
            clock: i64::MIN,
            empty: Arc::from(""),
        }
    }

    /// The tunables.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The latest `now` seen (`i64::MIN` before any operation).
    pub fn clock(&self) -> i64 {
        self.clock
    }

    /// The current row of a message.
    pub fn get(&self, message_id: &str) -> Option<&Message> {
        self.by_id.get(message_id).map(|&ix| &self.entries[ix].msg)
    }

    /// Every managed message (for subscription snapshots), in arena order:
    /// arrival order until forgotten slots get reused.
    pub fn messages(&self) -> impl Iterator<Item = &Message> + '_ {
        self.entries.iter().filter(|e| e.place != Place::Free).map(|e| &e.msg)
    }

    /// Number of managed messages (terminal ones not yet forgotten included).
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// True when no message is managed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Managed message counts by topic and status (forgotten terminal
    /// messages leave the counts), topics in order of first appearance.
    pub fn stats(&self) -> impl Iterator<Item = (&str, StatusCounts)> + '_ {
        self.topics.iter().map(|t| (&*t.name, t.counts))
    }

    /// Messages a claim on `topic` (and `session_id`, `""` = any) would get
    /// right now, not counting delayed nacks; the long-poll layer retries a
    /// waiting claim when this becomes non-zero.
    pub fn ready_len(&self, topic: &str, session_id: &str) -> usize {
        self.topic_ix.get(topic).map_or(0, |&t| self.topics[t].queue.len(session_id))
    }

    /// Ids of the ready messages of a topic in claim order (diagnostics, tests).
    pub fn ready_ids<'a>(&'a self, topic: &str, session_id: &str) -> Vec<&'a str> {
        match self.topic_ix.get(topic) {
            Some(&t) => self.topics[t].queue.iter(session_id).map(|ix| &*self.entries[ix].msg.message_id).collect(),
            None => Vec::new(),
        }
    }

    /// The earliest instant at which [`LeaseState::tick`] has work (a lease
    /// or TTL to expire, a delayed nack to make claimable), if any.
    pub fn next_deadline(&self) -> Option<i64> {
        [self.leases.first(), self.delayed.first(), self.ttls.first()].into_iter().flatten().map(|&(t, _)| t).min()
    }

    /// Publishes a batch: all or nothing. Returns the message ids in batch
    /// order (generated for messages without one). Refused with
    /// [`BusError::InvalidItem`] naming the first bad message.
    pub fn publish(&mut self, now: i64, batch: Vec<NewMessage>, out: &mut Changes) -> Result<Vec<String>, BusError> {
        let now = self.at(now);
        let mut parsed = Vec::with_capacity(batch.len());
        let mut supplied: HashSet<&str> = HashSet::new();
        for (index, nm) in batch.iter().enumerate() {
            let types = nm.validate().map_err(|source| BusError::InvalidItem { index, source })?;
            if !nm.message_id.is_empty() && (self.by_id.contains_key(nm.message_id.as_str()) || !supplied.insert(&nm.message_id)) {
                let source = ValidationError::DuplicateMessageId { message_id: quote(&nm.message_id) };
                return Err(BusError::InvalidItem { index, source });
            }
            parsed.push(types);
        }
        let mut generated = Vec::new();
        for nm in &batch {
            if nm.message_id.is_empty() {
                generated.push(self.fresh_id(now, &supplied));
            }
        }
        drop(supplied);
        self.clock = now;
        let mut generated = generated.into_iter();
        let mut ids = Vec::with_capacity(batch.len());
        for (nm, (role, msg_type)) in batch.into_iter().zip(parsed) {
            let message_id = if nm.message_id.is_empty() { generated.next().unwrap_or_default() } else { nm.message_id };
            ids.push(message_id.clone());
            let msg = Message {
                message_id: Arc::from(message_id),
                ts: now,
                ingest_ts: now,
                topic: Arc::clone(&self.empty),
                session_id: Arc::from(nm.session_id),
                task_id: Arc::from(nm.task_id),
                agent_id: Arc::from(nm.agent_id),
                role,
                msg_type,
                payload_json: Arc::from(nm.payload_json),
                payload_blob_ref: Arc::from(nm.payload_blob_ref),
                priority: nm.priority,
                ttl_ms: nm.ttl_ms,
                lease_owner: Arc::clone(&self.empty),
                lease_expires_ts: 0,
                status: Status::Queued,
                retry_count: 0,
                lease_epoch: 0,
                version: 1,
                updated_ts: now,
            };
            let ix = self.insert(msg, &nm.topic);
            self.place_queued(ix, now, now);
            let m = &self.entries[ix].msg;
            let details = Details::of(m).int("priority", i64::from(m.priority)).int("ttl_ms", i64::from(m.ttl_ms)).finish();
            let producer = Arc::clone(&m.agent_id);
            self.emit(out, ix, now, EventKind::Publish, producer, details);
            self.push_row(out, ix);
        }
        Ok(ids)
    }

    /// Leases up to `spec.max_messages` ready messages of a topic (of one
    /// session when given) in claim order, after processing due deadlines.
    /// An empty answer means nothing is ready: the I/O layer long-polls.
    pub fn claim(&mut self, now: i64, spec: &ClaimSpec, out: &mut Changes) -> Result<Vec<&Message>, BusError> {
        if spec.topic.is_empty() {
            return Err(ValidationError::EmptyTopic.into());
        }
        check_len("topic", &spec.topic, MAX_FIELD_BYTES)?;
        check_len("session_id", &spec.session_id, MAX_FIELD_BYTES)?;
        check_agent(&spec.agent_id)?;
        check_duration("lease_ms", spec.lease_ms, 1, MAX_LEASE_MS)?;
        let now = self.at(now);
        self.clock = now;
        self.advance(now, out);
        let Some(&t) = self.topic_ix.get(spec.topic.as_str()) else { return Ok(Vec::new()) };
        let expires = now.saturating_add(spec.lease_ms * NANOS_PER_MS);
        let want = usize::try_from(spec.max_messages).unwrap_or(usize::MAX);
        let mut got = Vec::with_capacity(want.min(self.topics[t].queue.len(&spec.session_id)));
        let owner: Arc<str> = Arc::from(spec.agent_id.as_str());
        while got.len() < want {
            let entries = &self.entries;
            let Some(ix) = self.topics[t].queue.pop(&spec.session_id, |i| &*entries[i].msg.session_id) else { break };
            self.entries[ix].place = Place::Idle;
            self.untrack_ttl(ix);
            self.set_status(ix, Status::Processing);
            let m = &mut self.entries[ix].msg;
            m.lease_owner = Arc::clone(&owner);
            m.lease_expires_ts = expires;
            m.lease_epoch = m.lease_epoch.saturating_add(1);
            self.place_leased(ix, expires);
            self.bump(ix, now);
            let details = Details::of(&self.entries[ix].msg).int("lease_expires_ts", expires).finish();
            self.emit(out, ix, now, EventKind::Claimed, Arc::clone(&owner), details);
            self.push_row(out, ix);
            got.push(ix);
        }
        Ok(got.into_iter().map(|ix| &self.entries[ix].msg).collect())
    }

    /// `now` as the state sees it (never before the latest `now` seen).
    fn at(&self, now: i64) -> i64 {
        now.max(self.clock)
    }

    /// A generated message id unused so far and not supplied in the batch.
    fn fresh_id(&mut self, now: i64, supplied: &HashSet<&str>) -> String {
        loop {
            let id = self.ids.next_id(now);
            if !self.by_id.contains_key(id.as_str()) && !supplied.contains(id.as_str()) {
                return id;
            }
        }
    }

    /// Adds a row to the arena (not yet indexed: `Place::Idle`), counting
    /// it; its `topic` becomes the shared name of topic `topic`.
    fn insert(&mut self, mut msg: Message, topic: &str) -> usize {
        let t = match self.topic_ix.get(topic) {
            Some(&t) => t,
            None => {
                let t = self.topics.len();
                self.topics.push(Topic { name: Arc::from(topic), queue: TopicQueue::default(), counts: StatusCounts::default() });
                self.topic_ix.insert(topic.to_owned(), t);
                t
            }
        };
        msg.topic = Arc::clone(&self.topics[t].name);
        *self.topics[t].counts.slot(msg.status) += 1;
        let terminal = msg.status.is_terminal();
        let id = Arc::clone(&msg.message_id);
        let entry = Entry { msg, topic: t, place: Place::Idle };
        let ix = match self.free.pop() {
            Some(ix) => {
                self.entries[ix] = entry;
                ix
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        self.by_id.insert(id, ix);
        if terminal {
            self.terminal.push_back((self.clock, ix));
        }
        ix
    }

    /// Indexes a queued message: ready, or delayed until `available_at`; and by TTL.
    fn place_queued(&mut self, ix: usize, available_at: i64, now: i64) {
        if available_at > now {
            self.delayed.insert((available_at, ix));
            self.entries[ix].place = Place::Delayed(available_at);
        } else {
            self.make_ready(ix);
        }
        if let Some(deadline) = self.entries[ix].msg.ttl_deadline() {
            self.ttls.insert((deadline, ix));
        }
    }

    /// Puts a queued message in its topic's ready queue.
    fn make_ready(&mut self, ix: usize) {
        let e = &mut self.entries[ix];
        e.place = Place::Ready;
        let key = ReadyKey::new(e.msg.priority, e.msg.ts, Arc::clone(&e.msg.message_id), ix);
        self.topics[e.topic].queue.insert(key, &e.msg.session_id);
    }

    /// Indexes a processing message by its lease key.
    fn place_leased(&mut self, ix: usize, key: i64) {
        self.leases.insert((key, ix));
        self.entries[ix].place = Place::Leased(key);
    }

    /// Takes a message out of whatever index holds it.
    fn unplace(&mut self, ix: usize) {
        let e = &mut self.entries[ix];
        let place = std::mem::replace(&mut e.place, Place::Idle);
        match place {
            Place::Ready => {
                let key = ReadyKey::new(e.msg.priority, e.msg.ts, Arc::clone(&e.msg.message_id), ix);
                self.topics[e.topic].queue.remove(&key, &e.msg.session_id);
            }
            Place::Delayed(at) => {
                self.delayed.remove(&(at, ix));
            }
            Place::Leased(key) => {
                self.leases.remove(&(key, ix));
            }
            Place::Idle | Place::Free => {}
        }
        if matches!(place, Place::Ready | Place::Delayed(_)) {
            self.untrack_ttl(ix);
        }
    }

    /// Removes a message from the TTL index (it stops being queued).
    fn untrack_ttl(&mut self, ix: usize) {
        if let Some(deadline) = self.entries[ix].msg.ttl_deadline() {
            self.ttls.remove(&(deadline, ix));
        }
    }

    /// Changes the status, keeping the per-topic counters and the terminal
    /// list right (a terminal status never changes again).
    fn set_status(&mut self, ix: usize, status: Status) {
        let e = &mut self.entries[ix];
        let counts = &mut self.topics[e.topic].counts;
        *counts.slot(e.msg.status) = counts.slot(e.msg.status).saturating_sub(1);
        *counts.slot(status) += 1;
        e.msg.status = status;
        if status.is_terminal() {
            self.terminal.push_back((self.clock, ix));
        }
    }

    /// Records one change of the row: `version + 1`, `updated_ts = now`.
    fn bump(&mut self, ix: usize, now: i64) {
        let m = &mut self.entries[ix].msg;
        m.version = m.version.saturating_add(1);
        m.updated_ts = now;
    }

    /// Appends an event about message `ix`.
    fn emit(&mut self, out: &mut Changes, ix: usize, now: i64, event: EventKind, agent_id: Arc<str>, details_json: String) {
        let event_id = self.ids.next_id(now);
        let m = &self.entries[ix].msg;
        out.events.push(super::model::Event {
            event_id,
            ts: now,
            agent_id,
            session_id: Arc::clone(&m.session_id),
            message_id: Arc::clone(&m.message_id),
            event,
            details_json,
        });
    }

    /// Appends the current row of message `ix`.
    fn push_row(&self, out: &mut Changes, ix: usize) {
        out.messages.push(self.entries[ix].msg.clone());
    }

    /// Ends the lease of a processing message: unindexes it, clears owner and
    /// deadline, `lease_epoch + 1`. Returns the former owner. The caller sets
    /// the new status.
    fn end_lease(&mut self, ix: usize) -> Arc<str> {
        self.unplace(ix);
        let m = &mut self.entries[ix].msg;
        m.lease_epoch = m.lease_epoch.saturating_add(1);
        m.lease_expires_ts = 0;
        std::mem::replace(&mut m.lease_owner, Arc::clone(&self.empty))
    }

    /// After `end_lease`: expired when the TTL has passed, otherwise queued
    /// again (claimable from `available_at`). Returns the new status.
    fn requeue(&mut self, ix: usize, now: i64, available_at: i64) -> Status {
        if self.entries[ix].msg.ttl_deadline().is_some_and(|d| d <= now) {
            self.set_status(ix, Status::Expired);
            Status::Expired
        } else {
            self.set_status(ix, Status::Queued);
            self.place_queued(ix, available_at, now);
            Status::Queued
        }
    }

    /// The message a lease reference designates, if the reference is the
    /// current live lease at `now`.
    fn check_lease(&self, now: i64, lease: &LeaseRef) -> Result<usize, BusError> {
        if lease.message_id.is_empty() {
            return Err(ValidationError::EmptyMessageId.into());
        }
        check_agent(&lease.agent_id)?;
        let Some(&ix) = self.by_id.get(lease.message_id.as_str()) else {
            return Err(BusError::NotFound { message_id: quote(&lease.message_id) });
        };
        let m = &self.entries[ix].msg;
        let reason = if lease.lease_epoch != m.lease_epoch {
            StaleReason::EpochSuperseded
        } else if m.status != Status::Processing {
            StaleReason::NotLeased { status: m.status }
        } else if lease.agent_id != *m.lease_owner {
            StaleReason::NotOwner { owner: m.lease_owner.to_string() }
        } else if now >= m.lease_expires_ts {
            StaleReason::Expired { expired_at: m.lease_expires_ts }
        } else {
            return Ok(ix);
        };
        Err(BusError::StaleLease { message_id: m.message_id.to_string(), presented_epoch: lease.lease_epoch, current_epoch: m.lease_epoch, reason })
    }
}

/// An agent id that can own a lease: non-empty, bounded.
fn check_agent(agent_id: &str) -> Result<(), ValidationError> {
    if agent_id.is_empty() {
        return Err(ValidationError::EmptyAgentId);
    }
    check_len("agent_id", agent_id, MAX_FIELD_BYTES)
}

/// A duration in ms within `min..=max`.
fn check_duration(field: &'static str, value: i64, min: i64, max: i64) -> Result<(), ValidationError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::DurationOutOfRange { field, value, min, max })
    }
}

//! The lease state machine: every claim, extension, ack, nack, release,
//! expiry, adoption and restore, decided in memory with no I/O. Each
//! operation appends the new full states of the rows it changed and the
//! audit events to a [`Changes`] buffer that the caller group-commits.
//!
//! Rules:
//! - claim order: priority descending, then `ts` ascending, then id;
//! - `lease_epoch` +1 on every lease change (claim, extend, ack, nack,
//!   release, expiry, force release): the fencing token only grows;
//! - `version` +1 on every change of a row;
//! - extend/ack/nack/release need the current owner and epoch and an
//!   unexpired lease, else [`LeaseError::Stale`];
//! - nack and lease expiry count a retry; past `max_retries` → error +
//!   dead_letter; a message past its TTL becomes expired instead.

use std::collections::{BTreeSet, HashMap};

use super::error::LeaseError;
use super::model::{Event, Message, NewMessage, Status};

/// Tunables.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Retries (nacks + expiries) allowed before dead-lettering (DHBUS_MAX_RETRIES).
    pub max_retries: i32,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { max_retries: 5 }
    }
}

/// Rows changed by operations, to be written together.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// New full states of changed messages (in change order).
    pub messages: Vec<Message>,
    /// Audit events.
    pub events: Vec<Event>,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.events.is_empty()
    }
}

/// Claim-order key: priority descending, ts ascending, id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ReadyKey {
    neg_priority: i64,
    ts: i64,
    id: String,
}

impl ReadyKey {
    fn of(m: &Message) -> ReadyKey {
        ReadyKey { neg_priority: -i64::from(m.priority), ts: m.ts, id: m.message_id.clone() }
    }
}

/// Which leases a force release targets.
#[derive(Clone, Debug, Default)]
pub struct ForceSelector {
    /// These message ids.
    pub ids: Vec<String>,
    /// Every lease held by this agent.
    pub owner: Option<String>,
    /// Leases taken (or last extended) more than this many ns ago.
    pub older_than_ns: Option<i64>,
}

/// The whole lease state.
#[derive(Debug)]
pub struct LeaseState {
    /// Tunables.
    cfg: LeaseConfig,
    /// Every message ever seen, by id (terminal ones too: an acked message is never claimed again).
    msgs: HashMap<String, Message>,
    /// Claimable messages per topic, in claim order.
    ready: HashMap<String, BTreeSet<ReadyKey>>,
    /// Claimable messages per (topic, session), so session claims never scan a topic.
    ready_session: HashMap<(String, String), BTreeSet<ReadyKey>>,
    /// Live leases by deadline.
    leases: BTreeSet<(i64, String)>,
    /// When each live lease was taken or last extended (force release by age).
    lease_started: HashMap<String, i64>,
    /// Nacked messages waiting out their delay, by time they become claimable.
    delayed: BTreeSet<(i64, String)>,
    /// The delay end of each delayed message (to unindex it in O(log n)).
    delayed_at: HashMap<String, i64>,
    /// TTL deadlines of unfinished messages.
    ttl: BTreeSet<(i64, String)>,
    /// Message counts by (topic, status), for stats and queue-depth gauges.
    counts: HashMap<(String, Status), u64>,
    /// Prefix of event ids (unique per process run).
    event_prefix: String,
    /// Next event sequence number.
    event_seq: u64,
}

impl LeaseState {
    /// An empty state; event ids are `<event_prefix>-<seq>`.
    pub fn new(cfg: LeaseConfig, event_prefix: impl Into<String>) -> LeaseState {
        LeaseState {
            cfg,
            msgs: HashMap::new(),
            ready: HashMap::new(),
            ready_session: HashMap::new(),
            leases: BTreeSet::new(),
            lease_started: HashMap::new(),
            delayed: BTreeSet::new(),
            delayed_at: HashMap::new(),
            ttl: BTreeSet::new(),
            counts: HashMap::new(),
            event_prefix: event_prefix.into(),
            event_seq: 0,
        }
    }

    /// A message by id.
    pub fn get(&self, id: &str) -> Option<&Message> {
        self.msgs.get(id)
    }

    /// Number of messages known.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// No messages known.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// All messages (any order).
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.msgs.values()
    }

    /// Counts by (topic, status).
    pub fn counts(&self) -> &HashMap<(String, Status), u64> {
        &self.counts
    }

    /// Whether `topic` (optionally one session of it) has a claimable message.
    pub fn has_ready(&self, topic: &str, session: Option<&str>) -> bool {
        match session {
            Some(s) => self.ready_session.get(&(topic.to_string(), s.to_string())).is_some_and(|q| !q.is_empty()),
            None => self.ready.get(topic).is_some_and(|q| !q.is_empty()),
        }
    }

    /// The earliest time something happens by itself (lease expiry, end of a
    /// nack delay, TTL), so the caller knows when to call [`Self::tick`].
    pub fn next_deadline(&self) -> Option<i64> {
        [self.leases.first().map(|l| l.0), self.delayed.first().map(|d| d.0), self.ttl.first().map(|t| t.0)].into_iter().flatten().min()
    }

    // ---- bookkeeping -------------------------------------------------------

    fn count(&mut self, topic: &str, status: Status, delta: i64) {
        let key = (topic.to_string(), status);
        let c = self.counts.entry(key.clone()).or_insert(0);
        *c = c.saturating_add_signed(delta);
        if *c == 0 {
            self.counts.remove(&key);
        }
    }

    fn index_ready(&mut self, m: &Message) {
        let k = ReadyKey::of(m);
        self.ready.entry(m.topic.clone()).or_default().insert(k.clone());
        self.ready_session.entry((m.topic.clone(), m.session_id.clone())).or_default().insert(k);
    }

    fn unindex_ready(&mut self, m: &Message) {
        let k = ReadyKey::of(m);
        if let Some(q) = self.ready.get_mut(&m.topic) {
            q.remove(&k);
        }
        if let Some(q) = self.ready_session.get_mut(&(m.topic.clone(), m.session_id.clone())) {
            q.remove(&k);
        }
    }

    /// Removes `m` from every index it may be in (before a transition).
    fn unindex(&mut self, m: &Message) {
        match m.status {
            Status::Queued => {
                self.unindex_ready(m);
                if let Some(t) = self.delayed_at.remove(&m.message_id) {
                    self.delayed.remove(&(t, m.message_id.clone()));
                }
            }
            Status::Processing => {
                self.leases.remove(&(m.lease_expires_ts, m.message_id.clone()));
                self.lease_started.remove(&m.message_id);
            }
            _ => {}
        }
    }

    fn event(&mut self, now: i64, m: &Message, agent: &str, event: &'static str, details: serde_json::Value) -> Event {
        self.event_seq += 1;
        Event {
            event_id: format!("{}-{:012}", self.event_prefix, self.event_seq),
            ts: now,
            agent_id: agent.to_string(),
            session_id: m.session_id.clone(),
            message_id: m.message_id.clone(),
            event,
            details_json: details.to_string(),
        }
    }

    /// Stores `m` (a new state of a known or new message), indexes it by its
    /// status and records it in `out`.
    fn commit(&mut self, now: i64, mut m: Message, old: Option<Status>, out: &mut Changes) -> Message {
        m.version += 1;
        m.updated_ts = now;
        if let Some(s) = old {
            self.count(&m.topic, s, -1);
        }
        self.count(&m.topic, m.status, 1);
        match m.status {
            Status::Queued => self.index_ready(&m),
            Status::Processing => {
                self.leases.insert((m.lease_expires_ts, m.message_id.clone()));
            }
            _ => {
                if let Some(d) = m.ttl_deadline() {
                    self.ttl.remove(&(d, m.message_id.clone()));
                }
            }
        }
        out.messages.push(m.clone());
        self.msgs.insert(m.message_id.clone(), m.clone());
        m
    }

    /// Takes a message out of its indexes for a transition.
    fn take(&mut self, id: &str) -> Option<Message> {
        let m = self.msgs.get(id)?.clone();
        self.unindex(&m);
        Some(m)
    }

    fn holder(&self, now: i64, id: &str, agent: &str, epoch: i64) -> Result<&Message, LeaseError> {
        let m = self.msgs.get(id).ok_or_else(|| LeaseError::NotFound(id.to_string()))?;
        let stale = |reason: String| LeaseError::Stale { message_id: id.to_string(), reason };
        if m.status != Status::Processing {
            return Err(stale(format!("message is {}, not processing", m.status.as_str())));
        }
        if m.lease_owner != agent {
            return Err(stale(format!("lease is held by another agent, not `{agent}`")));
        }
        if m.lease_epoch != epoch {
            return Err(stale(format!("epoch {epoch} is stale (current {})", m.lease_epoch)));
        }
        if m.lease_expires_ts <= now {
            return Err(stale("the lease has expired".into()));
        }
        Ok(m)
    }

    // ---- operations --------------------------------------------------------

    /// Enqueues a batch (all or nothing). `new_id` makes ids for messages without one.
    pub fn publish(&mut self, now: i64, batch: Vec<NewMessage>, mut new_id: impl FnMut() -> String, out: &mut Changes) -> Result<Vec<String>, LeaseError> {
        let mut valid = Vec::with_capacity(batch.len());
        let mut seen = std::collections::HashSet::new();
        for (i, n) in batch.into_iter().enumerate() {
            let mut n = n.validate().map_err(|e| match e {
                LeaseError::InvalidArgument { field, reason } => LeaseError::InvalidArgument { field, reason: format!("message {i}: {reason}") },
                other => other,
            })?;
            if n.message_id.is_empty() {
                n.message_id = new_id();
            }
            if self.msgs.contains_key(&n.message_id) || !seen.insert(n.message_id.clone()) {
                return Err(LeaseError::Duplicate(n.message_id));
            }
            valid.push(n);
        }
        let mut ids = Vec::with_capacity(valid.len());
        for n in valid {
            let m = Message {
                message_id: n.message_id,
                ts: now,
                ingest_ts: now,
                topic: n.topic,
                session_id: n.session_id,
                task_id: n.task_id,
                agent_id: n.agent_id,
                role: n.role,
                msg_type: n.msg_type,
                payload_json: n.payload_json,
                payload_blob_ref: n.payload_blob_ref,
                priority: n.priority,
                ttl_ms: n.ttl_ms,
                lease_owner: String::new(),
                lease_expires_ts: 0,
                status: Status::Queued,
                retry_count: 0,
                lease_epoch: 0,
                version: 0,
                updated_ts: now,
            };
            if let Some(d) = m.ttl_deadline() {
                self.ttl.insert((d, m.message_id.clone()));
            }
            let ev = self.event(now, &m, &m.agent_id.clone(), "publish", serde_json::json!({"topic": m.topic, "priority": m.priority}));
            ids.push(m.message_id.clone());
            let _ = self.commit(now, m, None, out);
            out.events.push(ev);
        }
        Ok(ids)
    }

    /// Leases up to `max` claimable messages of `topic` (one session of it when
    /// given) to `agent` for `lease_ns`.
    #[allow(clippy::too_many_arguments)]
    pub fn claim(&mut self, now: i64, topic: &str, session: Option<&str>, agent: &str, max: usize, lease_ns: i64, out: &mut Changes) -> Result<Vec<Message>, LeaseError> {
        check("topic", topic)?;
        check("agent_id", agent)?;
        if lease_ns <= 0 {
            return Err(LeaseError::invalid("lease_ms", "must be positive"));
        }
        self.tick(now, out);
        let mut got = Vec::new();
        while got.len() < max {
            let next = match session {
                Some(s) => self.ready_session.get(&(topic.to_string(), s.to_string())).and_then(|q| q.first().cloned()),
                None => self.ready.get(topic).and_then(|q| q.first().cloned()),
            };
            let Some(key) = next else { break };
            let Some(mut m) = self.take(&key.id) else { break };
            let old = m.status;
            m.status = Status::Processing;
            m.lease_owner = agent.to_string();
            m.lease_expires_ts = now.saturating_add(lease_ns);
            m.lease_epoch += 1;
            self.lease_started.insert(m.message_id.clone(), now);
            let ev = self.event(now, &m, agent, "claimed", serde_json::json!({"epoch": m.lease_epoch, "lease_expires_ts": m.lease_expires_ts, "enqueue_ts": m.ts, "topic": m.topic}));
            got.push(self.commit(now, m, Some(old), out));
            out.events.push(ev);
        }
        Ok(got)
    }

    /// Extends a lease to `now + lease_ns`; returns the new state (new epoch).
    pub fn extend(&mut self, now: i64, id: &str, agent: &str, epoch: i64, lease_ns: i64, out: &mut Changes) -> Result<Message, LeaseError> {
        if lease_ns <= 0 {
            return Err(LeaseError::invalid("lease_ms", "must be positive"));
        }
        self.holder(now, id, agent, epoch)?;
        let Some(mut m) = self.take(id) else { return Err(LeaseError::NotFound(id.to_string())) };
        m.lease_expires_ts = now.saturating_add(lease_ns);
        m.lease_epoch += 1;
        self.lease_started.insert(id.to_string(), now);
        let ev = self.event(now, &m, agent, "heartbeat", serde_json::json!({"epoch": m.lease_epoch, "lease_expires_ts": m.lease_expires_ts}));
        let m = self.commit(now, m, Some(Status::Processing), out);
        out.events.push(ev);
        Ok(m)
    }

    /// Acknowledges: done. `details` (a JSON object, may be empty) is merged into the event.
    pub fn ack(&mut self, now: i64, id: &str, agent: &str, epoch: i64, details: &str, out: &mut Changes) -> Result<Message, LeaseError> {
        let extra = parse_details(details)?;
        self.holder(now, id, agent, epoch)?;
        let Some(mut m) = self.take(id) else { return Err(LeaseError::NotFound(id.to_string())) };
        m.status = Status::Done;
        m.lease_owner.clear();
        m.lease_expires_ts = 0;
        m.lease_epoch += 1;
        // The caller's details first, then the bus's own keys, which the caller cannot overwrite.
        let mut d = extra;
        merge(&mut d, serde_json::json!({"epoch": m.lease_epoch, "enqueue_ts": m.ts, "latency_ms": now.saturating_sub(m.ts) as f64 / 1e6, "topic": m.topic}));
        let ev = self.event(now, &m, agent, "ack", d);
        let m = self.commit(now, m, Some(Status::Processing), out);
        out.events.push(ev);
        Ok(m)
    }

    /// Negative ack: retry after `delay_ns`, or dead-letter past the retry limit.
    #[allow(clippy::too_many_arguments)]
    pub fn nack(&mut self, now: i64, id: &str, agent: &str, epoch: i64, delay_ns: i64, reason: &str, out: &mut Changes) -> Result<Message, LeaseError> {
        if delay_ns < 0 {
            return Err(LeaseError::invalid("delay_ms", "must not be negative"));
        }
        self.holder(now, id, agent, epoch)?;
        let Some(m) = self.take(id) else { return Err(LeaseError::NotFound(id.to_string())) };
        let details = serde_json::json!({"reason": reason, "epoch": m.lease_epoch + 1, "delay_ms": delay_ns / 1_000_000, "topic": m.topic});
        Ok(self.retry(now, m, agent, "nack", details, delay_ns, out))
    }

    /// Gives a lease back without counting a retry.
    pub fn release(&mut self, now: i64, id: &str, agent: &str, epoch: i64, out: &mut Changes) -> Result<Message, LeaseError> {
        self.holder(now, id, agent, epoch)?;
        let Some(m) = self.take(id) else { return Err(LeaseError::NotFound(id.to_string())) };
        Ok(self.requeue(now, m, agent, "released", serde_json::json!({}), out))
    }

    /// Operator override: returns matching leases to queued (no retry counted).
    pub fn force_release(&mut self, now: i64, sel: &ForceSelector, out: &mut Changes) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for (_, id) in self.leases.iter() {
            let Some(m) = self.msgs.get(id) else { continue };
            let by_id = sel.ids.iter().any(|x| x == id);
            let by_owner = sel.owner.as_deref().is_some_and(|o| o == m.lease_owner);
            let by_age = sel.older_than_ns.is_some_and(|age| self.lease_started.get(id).copied().unwrap_or(m.updated_ts) <= now - age);
            if by_id || by_owner || by_age {
                ids.push(id.clone());
            }
        }
        for id in &ids {
            if let Some(m) = self.take(id) {
                let owner = m.lease_owner.clone();
                let _ = self.requeue(now, m, "", "force_released", serde_json::json!({"previous_owner": owner}), out);
            }
        }
        ids
    }

    fn requeue(&mut self, now: i64, mut m: Message, agent: &str, event: &'static str, mut details: serde_json::Value, out: &mut Changes) -> Message {
        let old = m.status;
        m.status = Status::Queued;
        m.lease_owner.clear();
        m.lease_expires_ts = 0;
        m.lease_epoch += 1;
        merge(&mut details, serde_json::json!({"epoch": m.lease_epoch}));
        let ev = self.event(now, &m, agent, event, details);
        let m = self.commit(now, m, Some(old), out);
        out.events.push(ev);
        m
    }

    /// A retry (nack or lease expiry): expired past TTL, dead letter past the
    /// limit, else queued (after `delay_ns`).
    #[allow(clippy::too_many_arguments)]
    fn retry(&mut self, now: i64, mut m: Message, agent: &str, event: &'static str, details: serde_json::Value, delay_ns: i64, out: &mut Changes) -> Message {
        let old = m.status;
        m.retry_count += 1;
        m.lease_owner.clear();
        m.lease_expires_ts = 0;
        m.lease_epoch += 1;
        let ev = self.event(now, &m, agent, event, details);
        out.events.push(ev);
        if m.ttl_deadline().is_some_and(|d| d <= now) {
            m.status = Status::Expired;
            let ev = self.event(now, &m, agent, "expired", serde_json::json!({"kind": "ttl", "topic": m.topic}));
            out.events.push(ev);
            self.commit(now, m, Some(old), out)
        } else if m.retry_count > self.cfg.max_retries {
            m.status = Status::Error;
            let ev = self.event(now, &m, agent, "dead_letter", serde_json::json!({"retry_count": m.retry_count, "topic": m.topic}));
            out.events.push(ev);
            self.commit(now, m, Some(old), out)
        } else if delay_ns > 0 {
            m.status = Status::Queued;
            self.count(&m.topic, old, -1);
            self.count(&m.topic, Status::Queued, 1);
            // Not claimable until the delay ends: indexed by time, not in the ready queues.
            m.version += 1;
            m.updated_ts = now;
            self.delayed.insert((now + delay_ns, m.message_id.clone()));
            self.delayed_at.insert(m.message_id.clone(), now + delay_ns);
            out.messages.push(m.clone());
            self.msgs.insert(m.message_id.clone(), m.clone());
            m
        } else {
            m.status = Status::Queued;
            self.commit(now, m, Some(old), out)
        }
    }

    /// Applies everything due at `now`: expired leases, ends of nack delays, TTLs.
    pub fn tick(&mut self, now: i64, out: &mut Changes) {
        while let Some((t, id)) = self.leases.first().cloned() {
            if t > now {
                break;
            }
            if let Some(m) = self.take(&id) {
                let owner = m.lease_owner.clone();
                let details = serde_json::json!({"kind": "lease", "previous_owner": owner, "topic": m.topic});
                self.retry(now, m, &owner, "expired", details, 0, out);
            } else {
                self.leases.remove(&(t, id));
            }
        }
        while let Some((t, id)) = self.delayed.first().cloned() {
            if t > now {
                break;
            }
            self.delayed.remove(&(t, id.clone()));
            self.delayed_at.remove(&id);
            if let Some(m) = self.msgs.get(&id).cloned() {
                if m.status == Status::Queued {
                    self.index_ready(&m);
                }
            }
        }
        while let Some((t, id)) = self.ttl.first().cloned() {
            if t > now {
                break;
            }
            self.ttl.remove(&(t, id.clone()));
            let Some(m) = self.msgs.get(&id).cloned() else { continue };
            // A leased message finishes its lease; the TTL applies when it comes back.
            if m.status == Status::Queued {
                if let Some(mut m) = self.take(&id) {
                    m.status = Status::Expired;
                    m.lease_epoch += 1;
                    let ev = self.event(now, &m, "", "expired", serde_json::json!({"kind": "ttl", "topic": m.topic}));
                    let _ = self.commit(now, m, Some(Status::Queued), out);
                    out.events.push(ev);
                }
            }
        }
    }

    /// Adopts rows inserted into `agent_messages` by other clients: unknown ids
    /// with status queued become claimable. Returns how many were adopted.
    pub fn adopt(&mut self, now: i64, rows: Vec<Message>, out: &mut Changes) -> usize {
        let mut n = 0;
        for mut m in rows {
            if self.msgs.contains_key(&m.message_id) || m.status != Status::Queued || m.message_id.is_empty() || m.topic.is_empty() {
                continue;
            }
            if m.ts <= 0 {
                m.ts = now;
            }
            m.ingest_ts = now;
            if m.role.is_empty() {
                m.role = "agent".into();
            }
            if m.msg_type.is_empty() {
                m.msg_type = "json".into();
            }
            m.lease_owner.clear();
            m.lease_expires_ts = 0;
            m.version = m.version.max(0);
            m.lease_epoch = m.lease_epoch.max(0);
            m.retry_count = m.retry_count.max(0);
            m.ttl_ms = m.ttl_ms.max(0);
            if let Some(d) = m.ttl_deadline() {
                self.ttl.insert((d, m.message_id.clone()));
            }
            let ev = self.event(now, &m, &m.agent_id.clone(), "adopted", serde_json::json!({"topic": m.topic}));
            let _ = self.commit(now, m, None, out);
            out.events.push(ev);
            n += 1;
        }
        n
    }

    /// Rebuilds the state from a snapshot of `agent_messages` (on start).
    /// Live leases continue until they expire; nothing is written.
    pub fn restore(&mut self, rows: Vec<Message>) {
        for m in rows {
            if let Some(old) = self.msgs.get(&m.message_id).cloned() {
                if old.version >= m.version {
                    continue;
                }
                self.unindex(&old);
                self.count(&old.topic, old.status, -1);
            }
            self.count(&m.topic, m.status, 1);
            match m.status {
                Status::Queued => self.index_ready(&m),
                Status::Processing => {
                    self.leases.insert((m.lease_expires_ts, m.message_id.clone()));
                    self.lease_started.insert(m.message_id.clone(), m.updated_ts);
                }
                _ => {}
            }
            if let (false, Some(d)) = (m.status.is_terminal(), m.ttl_deadline()) {
                self.ttl.insert((d, m.message_id.clone()));
            }
            self.msgs.insert(m.message_id.clone(), m);
        }
    }
}

fn check(field: &'static str, v: &str) -> Result<(), LeaseError> {
    if v.is_empty() {
        Err(LeaseError::invalid(field, "must not be empty"))
    } else {
        Ok(())
    }
}

fn parse_details(details: &str) -> Result<serde_json::Value, LeaseError> {
    if details.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    match serde_json::from_str::<serde_json::Value>(details) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err(LeaseError::invalid("details_json", "must be a JSON object")),
        Err(e) => Err(LeaseError::invalid("details_json", format!("not valid JSON: {e}"))),
    }
}

/// Adds `extra`'s fields to `base` (both objects); `extra` wins.
fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    if let (serde_json::Value::Object(b), serde_json::Value::Object(e)) = (base, extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

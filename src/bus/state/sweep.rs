//! Time-driven and operator transitions: deadlines (lease expiry, delayed
//! nacks, TTL), force release, adoption of foreign rows, and restore from a
//! table snapshot.

use std::sync::Arc;

use super::details::Details;
use super::{check_duration, IdGen, LeaseConfig, LeaseState, Place};
use crate::bus::error::{quote, BusError, ValidationError};
use crate::bus::model::{
    check_len, Adoption, Changes, EventKind, ForceReleaseSpec, Message, MsgType, Rejected, Role, Status, MAX_FIELD_BYTES, NANOS_PER_MS, SYSTEM_AGENT,
};

impl LeaseState {
    /// Processes every deadline `<= now`: expired leases (retry or dead
    /// letter or TTL expiry), delayed nacks becoming claimable (no row
    /// change), TTLs of queued messages. Returns how many rows changed.
    pub fn tick(&mut self, now: i64, out: &mut Changes) -> usize {
        let now = self.at(now);
        self.clock = now;
        let before = out.messages.len();
        self.advance(now, out);
        out.messages.len() - before
    }

    /// Rebuilds the state from a snapshot of `agent_messages` (on start).
    /// Rows keep their versions and epochs (nothing is written); live leases
    /// go on until they expire, and the first tick handles whatever is already
    /// due. Invalid or duplicate rows are left out and returned. Leftovers of
    /// a lease on a non-processing row (owner, deadline) are cleared in memory.
    /// Nack delays are not in the table, so delayed messages are claimable at once.
    pub fn restore(config: LeaseConfig, ids: IdGen, rows: impl IntoIterator<Item = Message>) -> (LeaseState, Vec<Rejected>) {
        let mut state = LeaseState::new(config, ids);
        let mut rejected = Vec::new();
        for row in rows {
            let error = if let Err(e) = row.validate() {
                e
            } else if state.by_id.contains_key(&*row.message_id) {
                ValidationError::DuplicateMessageId { message_id: quote(&row.message_id) }
            } else {
                state.manage(row);
                continue;
            };
            rejected.push(Rejected { message_id: row.message_id.to_string(), error });
        }
        (state, rejected)
    }

    /// Takes under management a row another client inserted into
    /// `agent_messages`. A known `message_id` (including dhbus's own rows
    /// coming back through a subscription) is left alone, and so is a
    /// terminal row (nothing to sequence; also what a forgotten message's row
    /// looks like). A new queued or processing row is validated like a
    /// publish, stamped (`ingest_ts = now`, `ts = now` when 0, version + 1)
    /// and indexed: queued rows become claimable, processing rows keep their
    /// lease until it expires (an ownerless one expires at the next tick).
    pub fn adopt(&mut self, now: i64, row: Message, out: &mut Changes) -> Result<Adoption, BusError> {
        if self.by_id.contains_key(&*row.message_id) {
            return Ok(Adoption::AlreadyKnown);
        }
        if row.status.is_terminal() {
            return Ok(Adoption::Ignored);
        }
        row.validate()?;
        let now = self.at(now);
        self.clock = now;
        let mut row = row;
        row.version = row.version.saturating_add(1);
        row.ingest_ts = now;
        row.updated_ts = now;
        if row.ts == 0 {
            row.ts = now;
        }
        let ix = self.manage(row);
        let m = &self.entries[ix].msg;
        let details = Details::of(m).int("lease_expires_ts", m.lease_expires_ts).finish();
        let producer = Arc::clone(&m.agent_id);
        self.emit(out, ix, now, EventKind::Adopted, producer, details);
        self.push_row(out, ix);
        Ok(Adoption::Adopted)
    }

    /// Operator action: ends the leases matching every selector of `spec`
    /// (after processing due deadlines). Each goes back to queued (no retry
    /// counted) or to expired if its TTL passed. Returns the released ids.
    pub fn force_release(&mut self, now: i64, spec: &ForceReleaseSpec, out: &mut Changes) -> Result<Vec<String>, BusError> {
        if spec.message_ids.is_empty() && spec.owner.is_empty() && spec.older_than_ms == 0 {
            return Err(ValidationError::NoSelector.into());
        }
        check_duration("older_than_ms", spec.older_than_ms, 0, i64::MAX / NANOS_PER_MS)?;
        check_len("owner", &spec.owner, MAX_FIELD_BYTES)?;
        check_len("reason", &spec.reason, MAX_FIELD_BYTES)?;
        let now = self.at(now);
        self.clock = now;
        self.advance(now, out);
        let candidates: Vec<usize> = if spec.message_ids.is_empty() {
            self.leases.iter().map(|&(_, ix)| ix).collect()
        } else {
            spec.message_ids.iter().filter_map(|id| self.by_id.get(id.as_str()).copied()).collect()
        };
        let older_ns = spec.older_than_ms * NANOS_PER_MS;
        let mut released = Vec::new();
        for ix in candidates {
            let m = &self.entries[ix].msg;
            let selected = m.status == Status::Processing
                && (spec.owner.is_empty() || *m.lease_owner == *spec.owner)
                && (older_ns == 0 || now.saturating_sub(m.updated_ts) > older_ns);
            if !selected {
                continue;
            }
            let owner = self.end_lease(ix);
            let status = self.requeue(ix, now, now);
            self.bump(ix, now);
            let details = Details::of(&self.entries[ix].msg).str("lease_owner", &owner).str("reason", &spec.reason).finish();
            self.emit(out, ix, now, EventKind::ForceReleased, Arc::clone(&owner), details);
            self.emit_outcome(out, ix, now, status, owner);
            self.push_row(out, ix);
            released.push(self.entries[ix].msg.message_id.to_string());
        }
        Ok(released)
    }

    /// Forgets terminal (done, error, expired) messages that became terminal
    /// before `before_ts`, freeing their memory; returns how many. Call it
    /// periodically with `now - retention`: the state otherwise grows with
    /// every message ever seen. A forgotten message is unknown afterwards:
    /// `get` returns `None`, its row is ignored by `adopt`, and its id could
    /// be published again, so keep the retention well past any client retry
    /// window. Restored terminal rows count as terminal since forever.
    pub fn forget_terminal(&mut self, before_ts: i64) -> usize {
        let mut forgotten = 0;
        while let Some(&(at, ix)) = self.terminal.front() {
            if at >= before_ts {
                break;
            }
            self.terminal.pop_front();
            let blank = self.blank();
            let e = &mut self.entries[ix];
            let msg = std::mem::replace(&mut e.msg, blank);
            e.place = Place::Free;
            self.by_id.remove(&*msg.message_id);
            let counts = &mut self.topics[e.topic].counts;
            *counts.slot(msg.status) = counts.slot(msg.status).saturating_sub(1);
            self.free.push(ix);
            forgotten += 1;
        }
        forgotten
    }

    /// The content of a free slot: no heap memory of its own.
    fn blank(&self) -> Message {
        let empty = || Arc::clone(&self.empty);
        Message {
            message_id: empty(),
            ts: 0,
            ingest_ts: 0,
            topic: empty(),
            session_id: empty(),
            task_id: empty(),
            agent_id: empty(),
            role: Role::Agent,
            msg_type: MsgType::Json,
            payload_json: empty(),
            payload_blob_ref: empty(),
            priority: 0,
            ttl_ms: 0,
            lease_owner: empty(),
            lease_expires_ts: 0,
            status: Status::Done,
            retry_count: 0,
            lease_epoch: 0,
            version: 0,
            updated_ts: 0,
        }
    }

    /// Processes every deadline `<= now` (see [`LeaseState::tick`]).
    pub(super) fn advance(&mut self, now: i64, out: &mut Changes) {
        while let Some(&(at, ix)) = self.leases.first() {
            if at > now {
                break;
            }
            self.expire_lease(ix, now, out);
        }
        while let Some(&(at, ix)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.remove(&(at, ix));
            self.make_ready(ix);
        }
        while let Some(&(at, ix)) = self.ttls.first() {
            if at > now {
                break;
            }
            self.unplace(ix);
            self.set_status(ix, Status::Expired);
            self.bump(ix, now);
            let m = &self.entries[ix].msg;
            let details = Details::of(m).str("reason", "ttl").int("ttl_ms", i64::from(m.ttl_ms)).finish();
            self.emit(out, ix, now, EventKind::Expired, Arc::from(SYSTEM_AGENT), details);
            self.push_row(out, ix);
        }
    }

    /// A lease ran out: counts a retry; expired (TTL), error or queued again.
    fn expire_lease(&mut self, ix: usize, now: i64, out: &mut Changes) {
        let expired_at = self.entries[ix].msg.lease_expires_ts;
        let owner = self.end_lease(ix);
        let status = self.fail(ix, now, now);
        self.bump(ix, now);
        let reason = if status == Status::Expired { "ttl" } else { "lease" };
        let m = &self.entries[ix].msg;
        let details = Details::of(m).str("reason", reason).str("lease_owner", &owner).int("lease_expired_ts", expired_at).finish();
        self.emit(out, ix, now, EventKind::Expired, Arc::clone(&owner), details);
        if status == Status::Error {
            self.emit_outcome(out, ix, now, status, owner);
        }
        self.push_row(out, ix);
    }

    /// Adds a validated row with an unknown id and indexes it by status.
    fn manage(&mut self, mut row: Message) -> usize {
        if row.status != Status::Processing {
            row.lease_owner = Arc::clone(&self.empty);
            row.lease_expires_ts = 0;
        }
        // An ownerless lease cannot be settled by anyone: expire it at the next tick.
        let lease_key = if row.lease_owner.is_empty() { i64::MIN } else { row.lease_expires_ts };
        let topic = Arc::clone(&row.topic);
        let ix = self.insert(row, &topic);
        match self.entries[ix].msg.status {
            Status::Queued => self.place_queued(ix, i64::MIN, i64::MIN),
            Status::Processing => self.place_leased(ix, lease_key),
            Status::Done | Status::Error | Status::Expired => self.entries[ix].place = Place::Idle,
        }
        ix
    }
}

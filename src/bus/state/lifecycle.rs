//! Operations of a lease holder: extend, ack, nack, release. Each checks the
//! presented lease (epoch, owner, liveness) before changing anything.

use std::sync::Arc;

use super::details::{parse_extra, Details};
use super::{check_duration, LeaseState};
use crate::bus::error::BusError;
use crate::bus::model::{check_len, Changes, EventKind, LeaseRef, Message, NackSpec, Status, MAX_FIELD_BYTES, MAX_LEASE_MS, NANOS_PER_MS};

impl LeaseState {
    /// Extends a live lease to `now + lease_ms` (which may shorten it). The
    /// epoch does not change. Emits `heartbeat`.
    pub fn extend(&mut self, now: i64, lease: &LeaseRef, lease_ms: i64, out: &mut Changes) -> Result<&Message, BusError> {
        check_duration("lease_ms", lease_ms, 1, MAX_LEASE_MS)?;
        let now = self.at(now);
        let ix = self.check_lease(now, lease)?;
        self.clock = now;
        let expires = now.saturating_add(lease_ms * NANOS_PER_MS);
        self.unplace(ix);
        self.place_leased(ix, expires);
        self.entries[ix].msg.lease_expires_ts = expires;
        self.bump(ix, now);
        let details = Details::of(&self.entries[ix].msg).int("lease_expires_ts", expires).finish();
        let holder = Arc::clone(&self.entries[ix].msg.lease_owner);
        self.emit(out, ix, now, EventKind::Heartbeat, holder, details);
        self.push_row(out, ix);
        Ok(&self.entries[ix].msg)
    }

    /// Acknowledges: status done, lease cleared, epoch + 1. `details_json`
    /// (a JSON object or `""`) is merged into the `ack` event, e.g. `{"tokens": 123}`.
    pub fn ack(&mut self, now: i64, lease: &LeaseRef, details_json: &str, out: &mut Changes) -> Result<&Message, BusError> {
        let extra = parse_extra(details_json)?;
        let now = self.at(now);
        let ix = self.check_lease(now, lease)?;
        self.clock = now;
        let owner = self.end_lease(ix);
        self.set_status(ix, Status::Done);
        self.bump(ix, now);
        let m = &self.entries[ix].msg;
        let details = Details::of(m).int("enqueued_ts", m.ts).extra(&extra).finish();
        self.emit(out, ix, now, EventKind::Ack, owner, details);
        self.push_row(out, ix);
        Ok(&self.entries[ix].msg)
    }

    /// Reports failure: `retry_count + 1`, epoch + 1, then expired (TTL
    /// passed), error (retries exhausted, `dead_letter`) or queued again,
    /// claimable after `delay_ms`.
    pub fn nack(&mut self, now: i64, lease: &LeaseRef, spec: &NackSpec, out: &mut Changes) -> Result<&Message, BusError> {
        check_duration("delay_ms", spec.delay_ms, 0, MAX_LEASE_MS)?;
        check_len("reason", &spec.reason, MAX_FIELD_BYTES)?;
        let extra = parse_extra(&spec.details_json)?;
        let now = self.at(now);
        let ix = self.check_lease(now, lease)?;
        self.clock = now;
        let owner = self.end_lease(ix);
        let status = self.fail(ix, now, now.saturating_add(spec.delay_ms * NANOS_PER_MS));
        self.bump(ix, now);
        let m = &self.entries[ix].msg;
        let details = Details::of(m).str("reason", &spec.reason).int("delay_ms", spec.delay_ms).int("enqueued_ts", m.ts).extra(&extra).finish();
        self.emit(out, ix, now, EventKind::Nack, Arc::clone(&owner), details);
        self.emit_outcome(out, ix, now, status, owner);
        self.push_row(out, ix);
        Ok(&self.entries[ix].msg)
    }

    /// Gives the lease back: queued again at once (no retry counted), or
    /// expired if the TTL passed. Epoch + 1.
    pub fn release(&mut self, now: i64, lease: &LeaseRef, details_json: &str, out: &mut Changes) -> Result<&Message, BusError> {
        let extra = parse_extra(details_json)?;
        let now = self.at(now);
        let ix = self.check_lease(now, lease)?;
        self.clock = now;
        let owner = self.end_lease(ix);
        let status = self.requeue(ix, now, now);
        self.bump(ix, now);
        let details = Details::of(&self.entries[ix].msg).extra(&extra).finish();
        self.emit(out, ix, now, EventKind::Released, Arc::clone(&owner), details);
        self.emit_outcome(out, ix, now, status, owner);
        self.push_row(out, ix);
        Ok(&self.entries[ix].msg)
    }

    /// After `end_lease` of a failed attempt (nack, lease expiry): counts the
    /// retry, then expired / error / queued (from `available_at`).
    pub(super) fn fail(&mut self, ix: usize, now: i64, available_at: i64) -> Status {
        let m = &mut self.entries[ix].msg;
        m.retry_count = m.retry_count.saturating_add(1);
        let ttl_passed = m.ttl_deadline().is_some_and(|d| d <= now);
        let exhausted = i64::from(m.retry_count) > i64::from(self.config.max_retries);
        if !ttl_passed && exhausted {
            self.set_status(ix, Status::Error);
            Status::Error
        } else {
            self.requeue(ix, now, available_at)
        }
    }

    /// The follow-up event of a lease end: `expired` (TTL) or `dead_letter`.
    pub(super) fn emit_outcome(&mut self, out: &mut Changes, ix: usize, now: i64, status: Status, agent: Arc<str>) {
        let m = &self.entries[ix].msg;
        match status {
            Status::Expired => {
                let details = Details::of(m).str("reason", "ttl").int("ttl_ms", i64::from(m.ttl_ms)).finish();
                self.emit(out, ix, now, EventKind::Expired, agent, details);
            }
            Status::Error => {
                let max = i64::from(self.config.max_retries);
                let details = Details::of(m).str("reason", "max_retries").int("max_retries", max).finish();
                self.emit(out, ix, now, EventKind::DeadLetter, agent, details);
            }
            Status::Queued | Status::Processing | Status::Done => {}
        }
    }
}

//! Model-based property tests: random operation sequences (publish, claim,
//! extend, ack, nack with delays, release, force release, ticks and time
//! jumps, stale epochs, wrong owners, adoption, restore, forgetting) run
//! against [`LeaseState`] and against a naive model that scans everything.
//! After every step the two must agree on the result, the events and every
//! row, and the state's own invariants must hold.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::bus::model::SYSTEM_AGENT;

const T0: i64 = 1_700_000_000_000_000_000;
const MS: i64 = NANOS_PER_MS;
const MAX_RETRIES: u32 = 2;
const TOPICS: [&str; 2] = ["a", "b"];
const SESSIONS: [&str; 3] = ["", "s1", "s2"];
/// The last agent is empty: claims with it must be refused.
const AGENTS: [&str; 4] = ["w0", "w1", "w2", ""];

/// How a lease reference is forged from a message.
#[derive(Debug, Clone)]
struct Target {
    /// Which message (modulo the number of messages).
    pick: usize,
    /// Added to the current epoch (0 = right).
    epoch_delta: i64,
    /// `None` = the current owner (or w0 when none), else that agent.
    agent: Option<usize>,
}

#[derive(Debug, Clone)]
struct Pub {
    /// Explicit id `m<n>` (duplicates likely) or generated.
    id: Option<u8>,
    /// `None` = empty topic (invalid).
    topic: Option<usize>,
    session: usize,
    priority: i32,
    ttl_ms: i32,
}

#[derive(Debug, Clone)]
struct AdoptRow {
    /// Reuse an existing id (must be left alone) instead of a new one.
    known: Option<usize>,
    status: Status,
    owner: Option<usize>,
    lease_in_ms: i64,
    ts_zero: bool,
    version: i64,
    epoch: i64,
    retry: i32,
    pub_: Pub,
}

#[derive(Debug, Clone)]
enum Op {
    Publish(Vec<Pub>),
    Claim { topic: usize, session: usize, agent: usize, max: u32, lease_ms: i64 },
    Extend(Target, i64),
    Ack(Target),
    Nack(Target, i64),
    Release(Target),
    Force { ids: Vec<usize>, owner: Option<usize>, older_ms: i64 },
    Tick,
    Advance(i64),
    Adopt(AdoptRow),
    Restore,
    Forget(i64),
}

fn target() -> impl Strategy<Value = Target> {
    (any::<usize>(), prop_oneof![6 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64)], prop_oneof![5 => Just(None), 1 => (0..3usize).prop_map(Some)])
        .prop_map(|(pick, epoch_delta, agent)| Target { pick, epoch_delta, agent })
}

fn publ() -> impl Strategy<Value = Pub> {
    (
        prop_oneof![3 => (0..12u8).prop_map(Some), 1 => Just(None)],
        prop_oneof![20 => (0..2usize).prop_map(Some), 1 => Just(None)],
        0..3usize,
        -1..=1i32,
        prop_oneof![3 => Just(0i32), 1 => 5..200i32],
    )
        .prop_map(|(id, topic, session, priority, ttl_ms)| Pub { id, topic, session, priority, ttl_ms })
}

fn adopt_row() -> impl Strategy<Value = AdoptRow> {
    let status = prop_oneof![4 => Just(Status::Queued), 2 => Just(Status::Processing), 1 => Just(Status::Done), 1 => Just(Status::Error), 1 => Just(Status::Expired)];
    (prop_oneof![4 => Just(None), 1 => any::<usize>().prop_map(Some)], status, prop_oneof![4 => (0..3usize).prop_map(Some), 1 => Just(None)], -10..60i64, any::<bool>(), 0..5i64, 0..4i64, 0..=2i32, publ())
        .prop_map(|(known, status, owner, lease_in_ms, ts_zero, version, epoch, retry, pub_)| AdoptRow { known, status, owner, lease_in_ms, ts_zero, version, epoch, retry, pub_ })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(publ(), 1..4).prop_map(Op::Publish),
        5 => (0..2usize, 0..3usize, prop_oneof![8 => 0..3usize, 1 => Just(3usize)], 0..4u32, prop_oneof![10 => 1..60i64, 1 => Just(0i64)])
            .prop_map(|(topic, session, agent, max, lease_ms)| Op::Claim { topic, session, agent, max, lease_ms }),
        2 => (target(), 1..60i64).prop_map(|(t, ms)| Op::Extend(t, ms)),
        3 => target().prop_map(Op::Ack),
        3 => (target(), prop_oneof![1 => Just(0i64), 1 => 1..40i64]).prop_map(|(t, d)| Op::Nack(t, d)),
        1 => target().prop_map(Op::Release),
        1 => (prop::collection::vec(any::<usize>(), 0..3), prop_oneof![2 => Just(None), 1 => (0..3usize).prop_map(Some)], prop_oneof![2 => Just(0i64), 1 => 1..30i64])
            .prop_map(|(ids, owner, older_ms)| Op::Force { ids, owner, older_ms }),
        2 => Just(Op::Tick),
        4 => (0..40i64).prop_map(Op::Advance),
        2 => adopt_row().prop_map(Op::Adopt),
        1 => Just(Op::Restore),
        1 => (0..100i64).prop_map(Op::Forget),
    ]
}

/// The model: a list of rows and brute-force scans.
#[derive(Debug, Clone)]
struct MRow {
    m: Message,
    /// Queued and not claimable before this.
    available_at: i64,
    /// Key of the lease in the expiry order (MIN for ownerless leases).
    lease_key: i64,
    /// Clock when it became terminal (for forgetting).
    terminal_at: i64,
}

#[derive(Debug, Default)]
struct Model {
    /// Rows in arena order (slot reuse is mirrored through `free`).
    rows: Vec<Option<MRow>>,
    free: Vec<usize>,
    clock: i64,
    /// Order in which rows became terminal.
    terminal: VecDeque<usize>,
}

type Ev = (EventKind, String, String);

fn s(a: &Arc<str>) -> String {
    a.to_string()
}

impl Model {
    fn find(&self, id: &str) -> Option<usize> {
        self.rows.iter().position(|r| r.as_ref().is_some_and(|r| &*r.m.message_id == id))
    }
    fn row(&mut self, ix: usize) -> &mut MRow {
        self.rows[ix].as_mut().expect("live row")
    }
    fn live(&self) -> impl Iterator<Item = (usize, &MRow)> {
        self.rows.iter().enumerate().filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
    }
    fn insert(&mut self, r: MRow) -> usize {
        let terminal = r.m.status.is_terminal();
        let ix = match self.free.pop() {
            Some(ix) => {
                self.rows[ix] = Some(r);
                ix
            }
            None => {
                self.rows.push(Some(r));
                self.rows.len() - 1
            }
        };
        if terminal {
            self.mark_terminal(ix);
        }
        ix
    }
    fn mark_terminal(&mut self, ix: usize) {
        let clock = self.clock;
        self.row(ix).terminal_at = clock;
        self.terminal.push_back(ix);
    }
    fn set_status(&mut self, ix: usize, st: Status) {
        self.row(ix).m.status = st;
        if st.is_terminal() {
            self.mark_terminal(ix);
        }
    }
    fn bump(&mut self, ix: usize, now: i64) {
        let r = self.row(ix);
        r.m.version += 1;
        r.m.updated_ts = now;
    }
    fn end_lease(&mut self, ix: usize) -> String {
        let r = self.row(ix);
        r.m.lease_epoch += 1;
        r.m.lease_expires_ts = 0;
        std::mem::replace(&mut r.m.lease_owner, Arc::from("")).to_string()
    }
    fn ttl_passed(&mut self, ix: usize, now: i64) -> bool {
        self.row(ix).m.ttl_deadline().is_some_and(|d| d <= now)
    }
    fn requeue(&mut self, ix: usize, now: i64, avail: i64) -> Status {
        if self.ttl_passed(ix, now) {
            self.set_status(ix, Status::Expired);
        } else {
            self.set_status(ix, Status::Queued);
            self.row(ix).available_at = avail;
        }
        self.row(ix).m.status
    }
    fn fail(&mut self, ix: usize, now: i64, avail: i64) -> Status {
        self.row(ix).m.retry_count += 1;
        if !self.ttl_passed(ix, now) && self.row(ix).m.retry_count > MAX_RETRIES as i32 {
            self.set_status(ix, Status::Error);
            Status::Error
        } else {
            self.requeue(ix, now, avail)
        }
    }
    fn outcome(&mut self, ix: usize, st: Status, agent: &str, evs: &mut Vec<Ev>) {
        let id = s(&self.row(ix).m.message_id);
        match st {
            Status::Expired => evs.push((EventKind::Expired, id, agent.into())),
            Status::Error => evs.push((EventKind::DeadLetter, id, agent.into())),
            _ => {}
        }
    }
    fn advance(&mut self, now: i64, evs: &mut Vec<Ev>) {
        let mut due: Vec<(i64, usize)> = self.live().filter(|(_, r)| r.m.status == Status::Processing && r.lease_key <= now).map(|(i, r)| (r.lease_key, i)).collect();
        due.sort();
        for (_, ix) in due {
            let owner = self.end_lease(ix);
            let st = self.fail(ix, now, now);
            self.bump(ix, now);
            evs.push((EventKind::Expired, s(&self.row(ix).m.message_id), owner.clone()));
            if st == Status::Error {
                self.outcome(ix, st, &owner, evs);
            }
        }
        let mut due: Vec<(i64, usize)> = self
            .live()
            .filter_map(|(i, r)| r.m.ttl_deadline().filter(|&d| r.m.status == Status::Queued && d <= now).map(|d| (d, i)))
            .collect();
        due.sort();
        for (_, ix) in due {
            self.set_status(ix, Status::Expired);
            self.bump(ix, now);
            evs.push((EventKind::Expired, s(&self.row(ix).m.message_id), SYSTEM_AGENT.into()));
        }
    }
    /// Ready ids in claim order.
    fn ready(&self, topic: &str, session: &str, now: i64) -> Vec<usize> {
        let mut c: Vec<(i64, i64, String, usize)> = self
            .live()
            .filter(|(_, r)| r.m.status == Status::Queued && r.available_at <= now && &*r.m.topic == topic && (session.is_empty() || &*r.m.session_id == session))
            .map(|(i, r)| (-i64::from(r.m.priority), r.m.ts, s(&r.m.message_id), i))
            .collect();
        c.sort();
        c.into_iter().map(|x| x.3).collect()
    }
    fn check_lease(&self, now: i64, l: &LeaseRef) -> Result<usize, &'static str> {
        let ix = self.find(&l.message_id).ok_or("not_found")?;
        let m = &self.rows[ix].as_ref().expect("live").m;
        if l.lease_epoch != m.lease_epoch {
            Err("epoch")
        } else if m.status != Status::Processing {
            Err("not_leased")
        } else if *l.agent_id != *m.lease_owner {
            Err("owner")
        } else if now >= m.lease_expires_ts {
            Err("expired")
        } else {
            Ok(ix)
        }
    }
}

fn stale_kind(e: &BusError) -> &'static str {
    match e {
        BusError::NotFound { .. } => "not_found",
        BusError::StaleLease { reason: StaleReason::EpochSuperseded, .. } => "epoch",
        BusError::StaleLease { reason: StaleReason::NotLeased { .. }, .. } => "not_leased",
        BusError::StaleLease { reason: StaleReason::NotOwner { .. }, .. } => "owner",
        BusError::StaleLease { reason: StaleReason::Expired { .. }, .. } => "expired",
        _ => "invalid",
    }
}

fn new_state() -> LeaseState {
    LeaseState::new(LeaseConfig { max_retries: MAX_RETRIES }, IdGen::new(1 << 40))
}

fn evs_of(out: &Changes) -> Vec<Ev> {
    out.events.iter().map(|e| (e.event, s(&e.message_id), s(&e.agent_id))).collect()
}

/// The harness: the real state, the model, and what the checks remember.
struct Run {
    state: LeaseState,
    model: Model,
    wall: i64,
    restores: i64,
    event_ids: HashSet<String>,
}

mod run;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn state_machine_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        let mut run = Run { state: new_state(), model: Model { clock: i64::MIN, ..Model::default() }, wall: T0, restores: 0, event_ids: HashSet::new() };
        for (step, op) in ops.iter().enumerate() {
            run.step(step, op);
        }
    }
}

//! Model-based property tests of the lease state machine.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const MS: i64 = 1_000_000;

#[derive(Clone, Debug)]
enum Op {
    Publish { topic: u8, session: u8, priority: i8, ttl_ms: u16 },
    Claim { topic: u8, session: Option<u8>, agent: u8, max: u8, lease_ms: u16 },
    Extend { pick: u8, stale: bool },
    Ack { pick: u8, stale: bool },
    Nack { pick: u8, delay_ms: u16 },
    Release { pick: u8 },
    Advance { ms: u16 },
    ForceOwner { agent: u8 },
    Adopt { topic: u8 },
    Restore,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 0..3u8, any::<i8>(), prop_oneof![Just(0u16), 50..2000u16]).prop_map(|(topic, session, priority, ttl_ms)| Op::Publish { topic, session, priority, ttl_ms }),
        4 => (0..3u8, proptest::option::of(0..3u8), 0..4u8, 1..4u8, 10..500u16).prop_map(|(topic, session, agent, max, lease_ms)| Op::Claim { topic, session, agent, max, lease_ms }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(pick, stale)| Op::Extend { pick, stale }),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(pick, stale)| Op::Ack { pick, stale }),
        2 => (any::<u8>(), 0..300u16).prop_map(|(pick, delay_ms)| Op::Nack { pick, delay_ms }),
        1 => any::<u8>().prop_map(|pick| Op::Release { pick }),
        3 => (1..400u16).prop_map(|ms| Op::Advance { ms }),
        1 => (0..4u8).prop_map(|agent| Op::ForceOwner { agent }),
        1 => (0..3u8).prop_map(|topic| Op::Adopt { topic }),
        1 => Just(Op::Restore),
    ]
}

/// A lease the test's agents believe they hold.
#[derive(Clone, Debug)]
struct Held {
    id: String,
    agent: String,
    epoch: i64,
}

struct World {
    st: LeaseState,
    now: i64,
    held: Vec<Held>,
    known: HashSet<String>,
    done: HashSet<String>,
    max_epoch: HashMap<String, i64>,
    max_version: HashMap<String, i64>,
    next_id: u64,
}

impl World {
    fn check_invariants(&mut self, changes: &Changes) {
        assert_eq!(self.st.len(), self.known.len(), "no message disappears and none appears from nowhere");
        for m in self.st.messages() {
            let leased = m.status == Status::Processing;
            assert_eq!(leased, !m.lease_owner.is_empty(), "{}: lease owner iff processing", m.message_id);
            assert_eq!(leased, m.lease_expires_ts > 0, "{}: lease deadline iff processing", m.message_id);
            if m.status != Status::Expired && m.retry_count > 5 {
                assert_eq!(m.status, Status::Error, "{}: past the retry limit means dead-lettered", m.message_id);
            }
        }
        for m in &changes.messages {
            let e = self.max_epoch.entry(m.message_id.clone()).or_insert(i64::MIN);
            assert!(m.lease_epoch >= *e, "{}: epoch went back", m.message_id);
            *e = m.lease_epoch;
            let v = self.max_version.entry(m.message_id.clone()).or_insert(i64::MIN);
            assert!(m.version > *v, "{}: version must grow on every change", m.message_id);
            *v = m.version;
        }
        let mut seen = HashSet::new();
        for e in &changes.events {
            assert!(seen.insert(e.event_id.clone()), "event ids are unique");
            assert!(self.known.contains(&e.message_id));
        }
        if !changes.messages.is_empty() {
            assert!(!changes.events.is_empty(), "every change is audited");
        }
    }
}

fn pick(held: &[Held], p: u8) -> Option<Held> {
    (!held.is_empty()).then(|| held[p as usize % held.len()].clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lease_invariants_hold(ops in proptest::collection::vec(op(), 1..120)) {
        let mut w = World {
            st: LeaseState::new(LeaseConfig::default(), "t"),
            now: 1_000_000 * MS,
            held: Vec::new(),
            known: HashSet::new(),
            done: HashSet::new(),
            max_epoch: HashMap::new(),
            max_version: HashMap::new(),
            next_id: 0,
        };
        for op in ops {
            let mut ch = Changes::default();
            match op {
                Op::Publish { topic, session, priority, ttl_ms } => {
                    let n = NewMessage { topic: format!("t{topic}"), session_id: format!("s{session}"), priority: i32::from(priority), ttl_ms: i32::from(ttl_ms), payload_json: "{}".into(), ..Default::default() };
                    let id = { w.next_id += 1; format!("m{:05}", w.next_id) };
                    let ids = w.st.publish(w.now, vec![n], || id.clone(), &mut ch).unwrap();
                    w.known.extend(ids);
                }
                Op::Claim { topic, session, agent, max, lease_ms } => {
                    let topic = format!("t{topic}");
                    let session = session.map(|s| format!("s{s}"));
                    let agent = format!("a{agent}");
                    let live: HashSet<String> = w.st.messages().filter(|m| m.status == Status::Processing && m.lease_expires_ts > w.now).map(|m| m.message_id.clone()).collect();
                    let got = w.st.claim(w.now, &topic, session.as_deref(), &agent, max as usize, i64::from(lease_ms) * MS, &mut ch).unwrap();
                    let mut last: Option<(i64, i64)> = None;
                    for m in &got {
                        prop_assert!(!w.done.contains(&m.message_id), "an acked message was claimed again");
                        prop_assert_eq!(&m.topic, &topic);
                        if let Some(s) = &session { prop_assert_eq!(&m.session_id, s); }
                        prop_assert!(!live.contains(&m.message_id), "a message under a live lease was handed out again");
                        let rank = (-i64::from(m.priority), m.ts);
                        if let Some(l) = last { prop_assert!(l <= rank, "claim order: priority desc, ts asc"); }
                        last = Some(rank);
                        w.held.retain(|h| h.id != m.message_id);
                        w.held.push(Held { id: m.message_id.clone(), agent: agent.clone(), epoch: m.lease_epoch });
                    }
                    if got.len() < max as usize {
                        prop_assert!(!w.st.has_ready(&topic, session.as_deref()), "claim left claimable work behind");
                    }
                }
                Op::Extend { pick: p, stale } => if let Some(h) = pick(&w.held, p) {
                    let epoch = if stale { h.epoch - 1 } else { h.epoch };
                    match w.st.extend(w.now, &h.id, &h.agent, epoch, 100 * MS, &mut ch) {
                        Ok(m) => { prop_assert!(!stale); for x in w.held.iter_mut() { if x.id == h.id { x.epoch = m.lease_epoch; } } }
                        Err(LeaseError::Stale { .. }) => {}
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                },
                Op::Ack { pick: p, stale } => if let Some(h) = pick(&w.held, p) {
                    let epoch = if stale { h.epoch + 7 } else { h.epoch };
                    match w.st.ack(w.now, &h.id, &h.agent, epoch, r#"{"tokens": 3}"#, &mut ch) {
                        Ok(m) => { prop_assert!(!stale); prop_assert_eq!(m.status, Status::Done); w.done.insert(h.id.clone()); w.held.retain(|x| x.id != h.id); }
                        Err(LeaseError::Stale { .. }) => {}
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                },
                Op::Nack { pick: p, delay_ms } => if let Some(h) = pick(&w.held, p) {
                    let before = w.st.get(&h.id).map(|m| m.retry_count);
                    match w.st.nack(w.now, &h.id, &h.agent, h.epoch, i64::from(delay_ms) * MS, "test", &mut ch) {
                        Ok(m) => { prop_assert_eq!(Some(m.retry_count), before.map(|r| r + 1)); w.held.retain(|x| x.id != h.id); }
                        Err(LeaseError::Stale { .. }) => {}
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                },
                Op::Release { pick: p } => if let Some(h) = pick(&w.held, p) {
                    match w.st.release(w.now, &h.id, &h.agent, h.epoch, &mut ch) {
                        Ok(m) => { prop_assert_eq!(m.status, Status::Queued); w.held.retain(|x| x.id != h.id); }
                        Err(LeaseError::Stale { .. }) => {}
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                },
                Op::Advance { ms } => { w.now += i64::from(ms) * MS; w.st.tick(w.now, &mut ch); }
                Op::ForceOwner { agent } => { w.st.force_release(w.now, &ForceSelector { owner: Some(format!("a{agent}")), ..Default::default() }, &mut ch); }
                Op::Adopt { topic } => {
                    w.next_id += 1;
                    let id = format!("x{:05}", w.next_id);
                    let mut m = w.st.messages().next().cloned().unwrap_or_else(|| {
                        let mut tmp = LeaseState::new(LeaseConfig::default(), "tmp");
                        let mut c = Changes::default();
                        tmp.publish(0, vec![NewMessage { topic: "t0".into(), ..Default::default() }], || "seed".into(), &mut c).unwrap();
                        c.messages[0].clone()
                    });
                    m.message_id = id.clone(); m.topic = format!("t{topic}"); m.status = Status::Queued; m.version = 0; m.lease_owner.clear(); m.lease_expires_ts = 0; m.retry_count = 0; m.ttl_ms = 0;
                    prop_assert_eq!(w.st.adopt(w.now, vec![m.clone(), m], &mut ch), 1, "a row is adopted once");
                    w.known.insert(id);
                }
                Op::Restore => {
                    let rows: Vec<Message> = w.st.messages().cloned().collect();
                    let mut fresh = LeaseState::new(LeaseConfig::default(), format!("r{}", w.now));
                    fresh.restore(rows);
                    prop_assert_eq!(fresh.counts(), w.st.counts());
                    w.st = fresh;
                }
            }
            w.check_invariants(&ch);
        }
    }
}

#[test]
fn validation_names_the_field() {
    let mut st = LeaseState::new(LeaseConfig::default(), "v");
    let mut ch = Changes::default();
    let cases = [
        (NewMessage { topic: "".into(), ..Default::default() }, "topic"),
        (NewMessage { topic: "t".into(), payload_json: "{not json".into(), ..Default::default() }, "payload_json"),
        (NewMessage { topic: "t".into(), ttl_ms: -1, ..Default::default() }, "ttl_ms"),
        (NewMessage { topic: "t".into(), role: "boss".into(), ..Default::default() }, "role"),
        (NewMessage { topic: "t".into(), msg_type: "xml".into(), ..Default::default() }, "msg_type"),
        (NewMessage { topic: "t".into(), msg_type: "text".into(), payload_json: "x".repeat(model::MAX_PAYLOAD_BYTES + 1), ..Default::default() }, "payload_json"),
        (NewMessage { topic: "t\u{0}".into(), ..Default::default() }, "topic"),
    ];
    for (n, field) in cases {
        match st.publish(1, vec![n], || "id".into(), &mut ch) {
            Err(LeaseError::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected an error naming {field}, got {other:?}"),
        }
    }
    assert!(ch.is_empty(), "refused batches change nothing");
    assert!(matches!(st.claim(1, "t", None, "a", 1, -5, &mut ch), Err(LeaseError::InvalidArgument { field: "lease_ms", .. })));
}

#[test]
fn nack_past_the_limit_dead_letters_and_ttl_expires() {
    let mut st = LeaseState::new(LeaseConfig { max_retries: 1 }, "d");
    let mut ch = Changes::default();
    st.publish(0, vec![NewMessage { topic: "t".into(), ..Default::default() }], || "m".into(), &mut ch).unwrap();
    for i in 0..2 {
        let m = st.claim(i, "t", None, "a", 1, 10 * MS, &mut ch).unwrap().remove(0);
        st.nack(i, "m", "a", m.lease_epoch, 0, "bad", &mut ch).unwrap();
    }
    assert_eq!(st.get("m").unwrap().status, Status::Error);
    assert!(ch.events.iter().any(|e| e.event == "dead_letter"));

    st.publish(0, vec![NewMessage { topic: "t".into(), ttl_ms: 5, ..Default::default() }], || "x".into(), &mut ch).unwrap();
    st.tick(6 * MS, &mut ch);
    assert_eq!(st.get("x").unwrap().status, Status::Expired);
    assert!(st.claim(7 * MS, "t", None, "a", 1, MS, &mut ch).unwrap().is_empty());
}

#[test]
fn expired_lease_is_redelivered_and_old_epoch_refused() {
    let mut st = LeaseState::new(LeaseConfig::default(), "e");
    let mut ch = Changes::default();
    st.publish(0, vec![NewMessage { topic: "t".into(), ..Default::default() }], || "m".into(), &mut ch).unwrap();
    let first = st.claim(0, "t", None, "a", 1, 10 * MS, &mut ch).unwrap().remove(0);
    assert!(st.claim(5 * MS, "t", None, "b", 1, 10 * MS, &mut ch).unwrap().is_empty(), "a live lease is never handed out twice");
    let second = st.claim(11 * MS, "t", None, "b", 1, 10 * MS, &mut ch).unwrap().remove(0);
    assert!(second.lease_epoch > first.lease_epoch);
    assert_eq!(second.retry_count, 1, "an expired lease counts as a retry");
    assert!(matches!(st.ack(12 * MS, "m", "a", first.lease_epoch, "", &mut ch), Err(LeaseError::Stale { .. })));
    st.ack(12 * MS, "m", "b", second.lease_epoch, "", &mut ch).unwrap();
}

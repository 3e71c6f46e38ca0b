//! Unit tests: one per validation error, and the main transitions.

use super::*;
use crate::bus::error::{ErrorKind, StaleReason};
use crate::bus::model::{Adoption, ForceReleaseSpec, MsgType, NackSpec, Role, MAX_PAYLOAD_BYTES};

const T0: i64 = 1_700_000_000_000_000_000;
const MS: i64 = NANOS_PER_MS;

fn state() -> LeaseState {
    LeaseState::new(LeaseConfig::default(), IdGen::new(7))
}

fn msg(id: &str, topic: &str) -> NewMessage {
    NewMessage { message_id: id.into(), topic: topic.into(), payload_json: "{}".into(), ..NewMessage::default() }
}

fn claim_spec(topic: &str, agent: &str, n: u32) -> ClaimSpec {
    ClaimSpec { topic: topic.into(), agent_id: agent.into(), max_messages: n, lease_ms: 1000, ..ClaimSpec::default() }
}

fn lease(m: &Message) -> LeaseRef {
    LeaseRef { message_id: m.message_id.to_string(), agent_id: m.lease_owner.to_string(), lease_epoch: m.lease_epoch }
}

fn kinds(out: &Changes) -> Vec<&'static str> {
    out.events.iter().map(|e| e.event.as_str()).collect()
}

fn publish_err(m: NewMessage) -> ValidationError {
    let mut s = state();
    let mut out = Changes::new();
    let err = s.publish(T0, vec![msg("ok", "t"), m], &mut out).expect_err("must be refused");
    assert!(out.is_empty() && s.is_empty(), "a refused batch changes nothing");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    match err {
        BusError::InvalidItem { index: 1, source } => source,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn publish_validation_errors_name_their_field() {
    let cases: Vec<(NewMessage, &str)> = vec![
        (NewMessage { topic: String::new(), ..msg("a", "") }, "topic"),
        (NewMessage { payload_json: "{not json".into(), ..msg("a", "t") }, "payload_json"),
        (NewMessage { payload_json: String::new(), ..msg("a", "t") }, "payload_json"),
        (NewMessage { ttl_ms: -1, ..msg("a", "t") }, "ttl_ms"),
        (NewMessage { role: "robot".into(), ..msg("a", "t") }, "role"),
        (NewMessage { msg_type: "xml".into(), ..msg("a", "t") }, "msg_type"),
        (NewMessage { msg_type: "text".into(), payload_json: "x".repeat(MAX_PAYLOAD_BYTES + 1), ..msg("a", "t") }, "payload_json"),
        (NewMessage { session_id: "s".repeat(MAX_FIELD_BYTES + 1), ..msg("a", "t") }, "session_id"),
        (msg("ok", "t"), "message_id"),
    ];
    for (m, field) in cases {
        let err = publish_err(m);
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().starts_with(field), "message names the field: {err}");
    }
    assert!(matches!(publish_err(NewMessage { ttl_ms: -5, ..msg("a", "t") }), ValidationError::NegativeTtl { value: -5 }));
    assert!(matches!(publish_err(NewMessage { role: "robot".into(), ..msg("a", "t") }), ValidationError::UnknownRole { .. }));
    assert!(matches!(publish_err(NewMessage { msg_type: "xml".into(), ..msg("a", "t") }), ValidationError::UnknownMsgType { .. }));
    assert!(matches!(publish_err(msg("ok", "t")), ValidationError::DuplicateMessageId { .. }));
}

#[test]
fn non_json_types_skip_payload_parsing_and_defaults_apply() {
    let mut s = state();
    let mut out = Changes::new();
    let text = NewMessage { msg_type: "text".into(), payload_json: "plain".into(), role: "user".into(), ..msg("a", "t") };
    let ids = s.publish(T0, vec![text, msg("", "t")], &mut out).expect("valid");
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "a");
    assert_eq!(uuid::Uuid::parse_str(&ids[1]).map(|u| u.get_version_num()), Ok(7), "generated ids are UUID v7");
    let a = s.get("a").expect("published");
    assert_eq!((a.role, a.msg_type, a.status, a.version, a.lease_epoch), (Role::User, MsgType::Text, Status::Queued, 1, 0));
    let b = s.get(&ids[1]).expect("published");
    assert_eq!((b.role, b.msg_type), (Role::Agent, MsgType::Json));
    assert_eq!(kinds(&out), ["publish", "publish"]);
}

#[test]
fn duplicate_known_id_is_refused() {
    let mut s = state();
    let mut out = Changes::new();
    s.publish(T0, vec![msg("a", "t")], &mut out).expect("valid");
    let err = s.publish(T0, vec![msg("a", "t")], &mut out).expect_err("known id");
    assert!(matches!(err, BusError::InvalidItem { index: 0, source: ValidationError::DuplicateMessageId { .. } }));
}

#[test]
fn claim_and_lease_validation_errors() {
    let mut s = state();
    let mut out = Changes::new();
    let field = |r: Result<Vec<&Message>, BusError>| r.expect_err("refused").validation().map(ValidationError::field);
    assert_eq!(field(s.claim(T0, &claim_spec("", "w", 1), &mut out)), Some("topic"));
    assert_eq!(field(s.claim(T0, &claim_spec("t", "", 1), &mut out)), Some("agent_id"));
    for lease_ms in [0, -1, MAX_LEASE_MS + 1] {
        assert_eq!(field(s.claim(T0, &ClaimSpec { lease_ms, ..claim_spec("t", "w", 1) }, &mut out)), Some("lease_ms"));
    }
    s.publish(T0, vec![msg("a", "t")], &mut out).expect("valid");
    out.clear();
    let m = s.claim(T0, &claim_spec("t", "w", 1), &mut out).expect("claim").remove(0).clone();
    out.clear();
    let l = lease(&m);
    let f = |e: BusError| e.validation().map(ValidationError::field);
    assert_eq!(f(s.extend(T0, &l, 0, &mut out).expect_err("lease 0")), Some("lease_ms"));
    let nack = NackSpec { delay_ms: -1, ..NackSpec::default() };
    assert_eq!(f(s.nack(T0, &l, &nack, &mut out).expect_err("negative delay")), Some("delay_ms"));
    assert_eq!(f(s.ack(T0, &l, "[1]", &mut out).expect_err("not an object")), Some("details_json"));
    assert_eq!(f(s.release(T0, &l, "{", &mut out).expect_err("not JSON")), Some("details_json"));
    let nobody = LeaseRef { agent_id: String::new(), ..l.clone() };
    assert_eq!(f(s.ack(T0, &nobody, "", &mut out).expect_err("no agent")), Some("agent_id"));
    let no_id = LeaseRef { message_id: String::new(), ..l.clone() };
    assert_eq!(f(s.ack(T0, &no_id, "", &mut out).expect_err("no id")), Some("message_id"));
    let none = ForceReleaseSpec::default();
    assert_eq!(f(s.force_release(T0, &none, &mut out).expect_err("no selector")), Some("message_ids"));
    let neg = ForceReleaseSpec { older_than_ms: -1, ..ForceReleaseSpec::default() };
    assert_eq!(f(s.force_release(T0, &neg, &mut out).expect_err("negative age")), Some("older_than_ms"));
    assert!(out.is_empty(), "refusals change nothing");
    assert_eq!(s.get("a"), Some(&m));
}

#[test]
fn unknown_status_role_type_parse_errors() {
    assert_eq!("queued".parse::<Status>(), Ok(Status::Queued));
    let e = "pending".parse::<Status>().expect_err("unknown");
    assert_eq!((e.field(), e.clone()), ("status", ValidationError::UnknownStatus { value: "pending".into() }));
    assert_eq!("wizard".parse::<Role>().map_err(|e| e.field()), Err("role"));
    assert_eq!("yaml".parse::<MsgType>().map_err(|e| e.field()), Err("msg_type"));
    let long = "x".repeat(10_000);
    assert!(long.parse::<Status>().expect_err("unknown").to_string().len() < 200, "hostile values are shortened");
    for s in Status::ALL {
        assert_eq!(s.as_str().parse::<Status>(), Ok(*s));
    }
    for t in MsgType::ALL {
        assert_eq!(t.as_str().parse::<MsgType>(), Ok(*t));
    }
}

#[test]
fn claim_order_is_priority_then_ts_then_id() {
    let mut s = state();
    let mut out = Changes::new();
    s.publish(T0, vec![msg("c", "t"), msg("b", "t")], &mut out).expect("valid");
    s.publish(T0 + MS, vec![NewMessage { priority: 5, ..msg("z", "t") }, msg("a", "t")], &mut out).expect("valid");
    s.publish(T0 + 2 * MS, vec![NewMessage { priority: -1, ..msg("y", "t") }], &mut out).expect("valid");
    assert_eq!(s.ready_ids("t", ""), ["z", "b", "c", "a", "y"]);
    let got = s.claim(T0 + 3 * MS, &claim_spec("t", "w", 3), &mut out).expect("claim");
    let ids: Vec<&str> = got.iter().map(|m| &*m.message_id).collect();
    assert_eq!(ids, ["z", "b", "c"]);
    assert!(got.iter().all(|m| m.status == Status::Processing && &*m.lease_owner == "w" && m.lease_epoch == 1 && m.version == 2));
    assert_eq!(got[0].lease_expires_ts, T0 + 3 * MS + 1000 * MS);
}

#[test]
fn claim_by_session_uses_only_that_session() {
    let mut s = state();
    let mut out = Changes::new();
    let in_s = |id: &str, sess: &str| NewMessage { session_id: sess.into(), ..msg(id, "t") };
    s.publish(T0, vec![in_s("a", "s1"), in_s("b", "s2"), in_s("c", ""), in_s("d", "s1")], &mut out).expect("valid");
    assert_eq!(s.ready_len("t", "s1"), 2);
    let got = s.claim(T0, &ClaimSpec { session_id: "s1".into(), ..claim_spec("t", "w", 10) }, &mut out).expect("claim");
    assert_eq!(got.iter().map(|m| &*m.message_id).collect::<Vec<_>>(), ["a", "d"]);
    assert_eq!(s.ready_len("t", "s1"), 0);
    assert_eq!(s.ready_ids("t", ""), ["b", "c"]);
    let got = s.claim(T0, &claim_spec("t", "w", 10), &mut out).expect("claim");
    assert_eq!(got.len(), 2);
    assert_eq!(s.ready_len("t", "s2"), 0, "claiming without a session also empties the session index");
    assert!(s.claim(T0, &claim_spec("nope", "w", 1), &mut out).expect("claim").is_empty());
}

#[test]
fn extend_keeps_epoch_ack_fences_old_holder() {
    let mut s = state();
    let mut out = Changes::new();
    s.publish(T0, vec![msg("a", "t")], &mut out).expect("valid");
    let m = s.claim(T0, &claim_spec("t", "w", 1), &mut out).expect("claim").remove(0).clone();
    out.clear();
    let e = s.extend(T0 + 500 * MS, &lease(&m), 2000, &mut out).expect("extend").clone();
    assert_eq!((e.lease_epoch, e.lease_expires_ts, e.version), (m.lease_epoch, T0 + 2500 * MS, m.version + 1));
    assert_eq!(kinds(&out), ["heartbeat"]);
    let wrong = LeaseRef { agent_id: "other".into(), ..lease(&m) };
    let err = s.ack(T0 + MS, &wrong, "", &mut out).expect_err("not the owner");
    assert!(matches!(&err, BusError::StaleLease { reason: StaleReason::NotOwner { owner }, .. } if owner == "w"));
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let stale = LeaseRef { lease_epoch: m.lease_epoch - 1, ..lease(&m) };
    assert!(matches!(s.ack(T0 + MS, &stale, "", &mut out), Err(BusError::StaleLease { reason: StaleReason::EpochSuperseded, .. })));
    out.clear();
    let done = s.ack(T0 + 600 * MS, &lease(&m), r#"{"tokens": 42}"#, &mut out).expect("ack").clone();
    assert_eq!((done.status, &*done.lease_owner, done.lease_expires_ts, done.lease_epoch), (Status::Done, "", 0, m.lease_epoch + 1));
    let details: serde_json::Value = serde_json::from_str(&out.events[0].details_json).expect("JSON");
    assert_eq!((details["tokens"].as_i64(), details["status"].as_str(), details["topic"].as_str()), (Some(42), Some("done"), Some("t")));
    let err = s.ack(T0 + 700 * MS, &lease(&m), "", &mut out).expect_err("already acked");
    assert!(err.to_string().contains("stale"), "{err}");
    assert!(s.claim(T0 + 10_000 * MS, &claim_spec("t", "w", 1), &mut out).expect("claim").is_empty(), "acked is never claimed again");
    let missing = LeaseRef { message_id: "zzz".into(), ..lease(&m) };
    assert_eq!(s.ack(T0, &missing, "", &mut out).map_err(|e| e.kind()), Err(ErrorKind::NotFound));
}

#[test]
fn expired_lease_is_refused_then_retried_then_dead_lettered() {
    let mut s = LeaseState::new(LeaseConfig { max_retries: 1 }, IdGen::new(1));
    let mut out = Changes::new();
    s.publish(T0, vec![msg("a", "t")], &mut out).expect("valid");
    let m = s.claim(T0, &claim_spec("t", "w", 1), &mut out).expect("claim").remove(0).clone();
    assert_eq!(s.next_deadline(), Some(T0 + 1000 * MS));
    let err = s.ack(T0 + 1000 * MS, &lease(&m), "", &mut out).expect_err("expired");
    assert!(matches!(err, BusError::StaleLease { reason: StaleReason::Expired { expired_at }, .. } if expired_at == T0 + 1000 * MS));
    out.clear();
    assert_eq!(s.tick(T0 + 999 * MS, &mut out), 0);
    assert_eq!(s.tick(T0 + 1000 * MS, &mut out), 1);
    assert_eq!(kinds(&out), ["expired"]);
    let a = s.get("a").expect("kept");
    assert_eq!((a.status, a.retry_count, a.lease_epoch, &*a.lease_owner), (Status::Queued, 1, 2, ""));
    s.claim(T0 + 1001 * MS, &claim_spec("t", "w", 1), &mut out).expect("claim");
    out.clear();
    s.tick(T0 + 5000 * MS, &mut out);
    assert_eq!(kinds(&out), ["expired", "dead_letter"]);
    let a = s.get("a").expect("kept");
    assert_eq!((a.status, a.retry_count), (Status::Error, 2));
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn nack_delay_and_retry_limit() {
    let mut s = LeaseState::new(LeaseConfig { max_retries: 1 }, IdGen::new(1));
    let mut out = Changes::new();
    s.publish(T0, vec![msg("a", "t")], &mut out).expect("valid");
    let m = s.claim(T0, &claim_spec("t", "w", 1), &mut out).expect("claim").remove(0).clone();
    out.clear();
    let spec = NackSpec { delay_ms: 100, reason: "flaky \"tool\"".into(), details_json: String::new() };
    let n = s.nack(T0 + MS, &lease(&m), &spec, &mut out).expect("nack").clone();
    assert_eq!((n.status, n.retry_count, n.lease_epoch), (Status::Queued, 1, 2));
    let details: serde_json::Value = serde_json::from_str(&out.events[0].details_json).expect("JSON");
    assert_eq!(details["reason"], "flaky \"tool\"");
    assert_eq!(s.next_deadline(), Some(T0 + 101 * MS));
    assert!(s.claim(T0 + 100 * MS, &claim_spec("t", "w", 1), &mut out).expect("claim").is_empty(), "delayed");
    let m = s.claim(T0 + 101 * MS, &claim_spec("t", "w", 1), &mut out).expect("claim").remove(0).clone();
    out.clear();
    let n = s.nack(T0 + 102 * MS, &lease(&m), &NackSpec::default(), &mut out).expect("nack");
    assert_eq!((n.status, n.retry_count), (Status::Error, 2));
    assert_eq!(kinds(&out), ["nack", "dead_letter"]);
    assert_eq!(out.messages.len(), 1, "one row change per operation");
}

#[test]
fn ttl_expires_queued_and_leased_messages() {
    let mut s = state();
    let mut out = Changes::new();
    s.publish(T0, vec![NewMessage { ttl_ms: 50, ..msg("q", "t") }, NewMessage { ttl_ms: 50, priority: 1, ..msg("l", "t") }], &mut out).expect("ok");
    let m = s.claim(T0, &claim_spec("t", "w", 1), &mut out).expect("claim").remove(0).clone();
    assert_eq!(&*m.message_id, "l");
    out.clear();
    s.tick(T0 + 50 * MS, &mut out);
    assert_eq!(kinds(&out), ["expired"]);
    assert_eq!(&*out.events[0].agent_id, crate::bus::model::SYSTEM_AGENT);
    assert_eq!(s.get("q").map(|m| m.status), Some(Status::Expired));
    assert_eq!(s.get("l").map(|m| m.status), Some(Status::Processing), "a live lease outlives the TTL");
    out.clear();
    s.tick(T0 + 1000 * MS, &mut out);
    let l = s.get("l").expect("kept");
    assert_eq!((l.status, &*l.lease_owner, l.retry_count), (Status::Expired, "", 1));
    let details: serde_json::Value = serde_json::from_str(&out.events[0].details_json).expect("JSON");
    assert_eq!(details["reason"], "ttl");
}

#[test]
fn release_and_force_release_count_no_retry() {
    let mut s = state();
    let mut out = Changes::new();
    s.publish(T0, vec![msg("a", "t"), msg("b", "t"), msg("c", "t")], &mut out).expect("ok");
    let got: Vec<Message> = s.claim(T0, &claim_spec("t", "w1", 2), &mut out).expect("claim").into_iter().cloned().collect();
    s.claim(T0 + 10 * MS, &claim_spec("t", "w2", 1), &mut out).expect("claim");
    out.clear();
    let r = s.release(T0 + 20 * MS, &lease(&got[0]), "", &mut out).expect("release");
    assert_eq!((r.status, r.retry_count, r.lease_epoch), (Status::Queued, 0, 2));
    assert_eq!(kinds(&out), ["released"]);
    out.clear();
    let by_owner = ForceReleaseSpec { owner: "w2".into(), ..ForceReleaseSpec::default() };
    assert_eq!(s.force_release(T0 + 20 * MS, &by_owner, &mut out).expect("force"), ["c"]);
    assert_eq!(kinds(&out), ["force_released"]);
    assert_eq!(&*out.events[0].agent_id, "w2");
    let old = ForceReleaseSpec { older_than_ms: 15, ..ForceReleaseSpec::default() };
    assert_eq!(s.force_release(T0 + 20 * MS, &old, &mut out).expect("force"), ["b"]);
    let by_id = ForceReleaseSpec { message_ids: vec!["a".into(), "nope".into()], ..ForceReleaseSpec::default() };
    assert!(s.force_release(T0 + 20 * MS, &by_id, &mut out).expect("force").is_empty(), "not leased: skipped");
    assert!(s.messages().all(|m| m.status == Status::Queued && m.retry_count == 0));
}

#[test]
fn adopt_new_rows_once() {
    let mut s = state();
    let mut out = Changes::new();
    let row = Message {
        message_id: "ext".into(),
        ts: 0,
        ingest_ts: 0,
        topic: "t".into(),
        session_id: "".into(),
        task_id: "".into(),
        agent_id: "py".into(),
        role: Role::Agent,
        msg_type: MsgType::Json,
        payload_json: "{}".into(),
        payload_blob_ref: "".into(),
        priority: 0,
        ttl_ms: 0,
        lease_owner: "junk".into(),
        lease_expires_ts: 5,
        status: Status::Queued,
        retry_count: 0,
        lease_epoch: 0,
        version: 0,
        updated_ts: 0,
    };
    assert_eq!(s.adopt(T0, row.clone(), &mut out), Ok(Adoption::Adopted));
    assert_eq!(kinds(&out), ["adopted"]);
    let a = s.get("ext").expect("adopted");
    assert_eq!((a.ts, a.ingest_ts, a.version, &*a.lease_owner, a.lease_expires_ts), (T0, T0, 1, "", 0));
    out.clear();
    assert_eq!(s.adopt(T0, row.clone(), &mut out), Ok(Adoption::AlreadyKnown));
    assert!(out.is_empty());
    let bad = Message { message_id: "bad".into(), payload_json: "nope".into(), ..row.clone() };
    assert_eq!(s.adopt(T0, bad, &mut out).map_err(|e| e.validation().map(ValidationError::field)), Err(Some("payload_json")));
    let leased = Message { message_id: "held".into(), status: Status::Processing, lease_owner: "w".into(), lease_expires_ts: T0 + 5 * MS, lease_epoch: 3, ..row };
    assert_eq!(s.adopt(T0, leased, &mut out), Ok(Adoption::Adopted));
    let held = LeaseRef { message_id: "held".into(), agent_id: "w".into(), lease_epoch: 3 };
    s.extend(T0 + MS, &held, 10, &mut out).expect("the adopted lease is live");
    assert_eq!(s.claim(T0 + 2 * MS, &claim_spec("t", "w", 5), &mut out).expect("claim").len(), 1, "only the queued row");
}

#[test]
fn restore_continues_live_leases_and_rejects_bad_rows() {
    let mut s = state();
    let mut out = Changes::new();
    s.publish(T0, vec![msg("a", "t"), msg("b", "t"), NewMessage { ttl_ms: 5, ..msg("c", "t") }], &mut out).expect("ok");
    let got: Vec<Message> = s.claim(T0, &claim_spec("t", "w", 1), &mut out).expect("claim").into_iter().cloned().collect();
    let mut rows: Vec<Message> = s.messages().cloned().collect();
    rows.push(rows[1].clone());
    rows.push(Message { message_id: "".into(), ..rows[1].clone() });
    let (mut r, rejected) = LeaseState::restore(LeaseConfig::default(), IdGen::new(99), rows);
    assert_eq!(rejected.iter().map(|x| x.error.field()).collect::<Vec<_>>(), ["message_id", "message_id"]);
    assert_eq!(r.len(), 3);
    assert_eq!(r.get("a"), s.get("a"));
    out.clear();
    r.extend(T0 + MS, &lease(&got[0]), 100, &mut out).expect("the restored lease is live");
    out.clear();
    let more = r.claim(T0 + 10 * MS, &claim_spec("t", "w", 5), &mut out).expect("claim");
    assert_eq!(more.iter().map(|m| &*m.message_id).collect::<Vec<_>>(), ["b"]);
    assert_eq!(kinds(&out), ["expired", "claimed"], "c's TTL passed before the claim");
}

#[test]
fn clock_never_goes_backwards_and_stats_count() {
    let mut s = state();
    let mut out = Changes::new();
    s.publish(T0, vec![msg("a", "t"), msg("b", "u")], &mut out).expect("ok");
    let m = s.claim(T0 - 1000 * MS, &claim_spec("t", "w", 1), &mut out).expect("claim").remove(0).clone();
    assert_eq!(m.updated_ts, T0, "an earlier now is taken as the latest one");
    assert_eq!(out.events.last().map(|e| e.ts), Some(T0));
    let stats: Vec<(&str, StatusCounts)> = s.stats().collect();
    assert_eq!(stats.len(), 2);
    assert_eq!((stats[0].0, stats[0].1.processing, stats[0].1.total()), ("t", 1, 1));
    assert_eq!((stats[1].0, stats[1].1.queued), ("u", 1));
}

#[test]
fn dedup_rows_keeps_last_state() {
    let mut s = state();
    let mut out = Changes::new();
    s.publish(T0, vec![msg("a", "t"), msg("b", "t")], &mut out).expect("ok");
    let m = s.claim(T0, &claim_spec("t", "w", 1), &mut out).expect("claim").remove(0).clone();
    s.ack(T0, &lease(&m), "", &mut out).expect("ack");
    assert_eq!(out.messages.len(), 4);
    out.dedup_rows();
    let rows: Vec<(&str, i64)> = out.messages.iter().map(|m| (&*m.message_id, m.version)).collect();
    assert_eq!(rows, [("b", 1), ("a", 3)]);
    assert_eq!(out.events.len(), 4);
}

/// Rough throughput of the pure state machine: publish (batches of 100),
/// claim (batches of 100), extend, ack. Run in release with
/// `cargo test --release bench_lifecycles -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_lifecycles() {
    let rounds = 2_000;
    let batch = 100;
    let mut s = state();
    let mut out = Changes::new();
    let inputs: Vec<Vec<NewMessage>> = (0..rounds)
        .map(|_| {
            (0..batch)
                .map(|i| NewMessage { session_id: format!("s{}", i % 7), priority: (i % 3) as i32, payload_json: r#"{"q":"hello"}"#.into(), ..msg("", "t") })
                .collect()
        })
        .collect();
    let specs: Vec<ClaimSpec> = (0..4).map(|w| claim_spec("t", &format!("w{w}"), batch)).collect();
    let mut leases = Vec::with_capacity(batch as usize);
    let start = std::time::Instant::now();
    let mut now = T0;
    for (round, input) in inputs.into_iter().enumerate() {
        s.publish(now, input, &mut out).expect("publish");
        leases.clear();
        leases.extend(s.claim(now, &specs[round % 4], &mut out).expect("claim").into_iter().map(lease));
        for l in &leases {
            s.extend(now, l, 1000, &mut out).expect("extend");
        }
        for l in &leases {
            s.ack(now, l, "", &mut out).expect("ack");
        }
        s.tick(now, &mut out);
        now += MS;
        out.clear();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = rounds * batch as usize;
    assert_eq!(s.len(), n);
    // Reported through the test harness's captured output on purpose.
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{n} lifecycles (4 ops each) in {secs:.3}s: {:.0} lifecycles/s, {:.0} ops/s", n as f64 / secs, (4 * n) as f64 / secs);
    }
}

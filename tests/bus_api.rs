//! The bus API against a real Deephaven: validation errors name the field,
//! stale epochs are refused, direct inserts are adopted, injection attempts in
//! topics and filters are inert, subscriptions stream changes, API tokens.

mod common;

use std::time::Duration;

use arrow::array::{Array, StringArray};
use dhbus::bus::client::DeephavenBus;
use dhbus::bus::lease::{Message, Status};
use dhbus::bus::rows::{messages_batch, messages_from_batch};
use dhbus::deephaven::{InputTable, Session, TableHandle};
use dhbus::proto::bus::{message_change::Kind, NewMessage, SubscribeRequest};
use dhbus::schema::TableNames;
use futures::StreamExt;
use tonic::Code;

fn msg(topic: &str, payload: &str) -> NewMessage {
    NewMessage { topic: topic.into(), payload_json: payload.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_validates_fences_adopts_and_is_injection_proof() {
    let ns = common::unique_name("api");
    let p = common::DhbusProcess::start(&ns, &[("DHBUS_COMPONENTS", "bus"), ("DHBUS_API_TOKEN", "s3cret")]);
    let names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&ns));

    // The token is required.
    let anon = DeephavenBus::connect(&p.addr, None).await.unwrap();
    assert_eq!(anon.stats().await.unwrap_err().code(), Some(Code::Unauthenticated));
    let wrong = DeephavenBus::connect(&p.addr, Some("nope")).await.unwrap();
    assert_eq!(wrong.stats().await.unwrap_err().code(), Some(Code::Unauthenticated));
    let bus = DeephavenBus::connect(&p.addr, Some("s3cret")).await.unwrap();

    // Bad inputs: INVALID_ARGUMENT naming the field; nothing of the batch accepted.
    let cases = [
        (msg("", "{}"), "topic"),
        (msg("t", "{oops"), "payload_json"),
        (NewMessage { ttl_ms: -5, ..msg("t", "{}") }, "ttl_ms"),
        (NewMessage { role: "root".into(), ..msg("t", "{}") }, "role"),
        (NewMessage { msg_type: "yaml".into(), ..msg("t", "{}") }, "msg_type"),
        (NewMessage { msg_type: "text".into(), ..msg("t", &"x".repeat(2 << 20)) }, "payload_json"),
    ];
    for (m, field) in cases {
        let err = bus.publish(vec![msg("t", "{}"), m]).await.expect_err("must be refused");
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
        assert!(err.to_string().contains(field), "error must name {field}: {err}");
    }
    let err = bus.claim("", None, "a", 1, Duration::from_secs(1), Duration::ZERO).await.expect_err("empty topic");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().contains("topic"), "{err}");
    let err = bus.claim("t", None, "a", 1, Duration::ZERO, Duration::ZERO).await.expect_err("zero lease");
    assert!(err.to_string().contains("lease_ms"), "{err}");
    assert_eq!(bus.stats().await.unwrap().topics.len(), 0, "refused batches left nothing behind");

    // Fencing: a stale epoch is refused with FAILED_PRECONDITION.
    bus.publish(vec![msg("fence", "{}")]).await.unwrap();
    let m = bus.claim("fence", None, "a1", 1, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap().remove(0);
    let old = DeephavenBus::lease_of(&m);
    let extended = bus.extend(old.clone(), Duration::from_secs(30)).await.unwrap();
    assert!(extended.lease_epoch > m.lease_epoch);
    let err = bus.ack(old, "").await.expect_err("old epoch");
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(err.to_string().contains("stale"), "{err}");
    bus.ack(DeephavenBus::lease_of(&extended), r#"{"tokens": 12}"#).await.unwrap();

    // AckBatch judges each lease on its own: a stale one is reported, the others acked.
    bus.publish((0..3).map(|_| msg("batch", "{}")).collect()).await.unwrap();
    let got = bus.claim("batch", None, "a9", 3, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 3);
    let mut leases: Vec<_> = got.iter().map(DeephavenBus::lease_of).collect();
    leases[1].lease_epoch -= 1;
    let r = bus.ack_batch(leases).await.unwrap();
    assert_eq!(r.acked.len(), 2);
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].message_id, got[1].message_id);
    assert_eq!(r.failed[0].code, Code::FailedPrecondition as i32);

    // Injection attempts in topics are stored verbatim and match only themselves.
    let evil = r#"x" || true || "y"#;
    bus.publish(vec![msg(evil, "{}"), msg("x", "{}")]).await.unwrap();
    let got = bus.claim(evil, None, "a2", 10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, evil);
    let mut sub = bus.subscribe(SubscribeRequest { topic: "x\" || status != \"".into(), ..Default::default() }).await.unwrap();
    bus.publish(vec![msg("x", "{}")]).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(500), sub.next()).await.is_err(), "an injection filter matches nothing");
    let bad_status = bus.subscribe(SubscribeRequest { statuses: vec!["queued' or 1=1".into()], ..Default::default() }).await;
    assert_eq!(bad_status.unwrap_err().code(), Some(Code::InvalidArgument));
    let session = Session::connect(common::dh_config()).await.unwrap();
    let table = TableHandle::open(&session, &names.messages).await.unwrap();
    let snap = table.snapshot().await.unwrap();
    let topics = snap.column_by_name("topic").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
    assert!((0..topics.len()).any(|i| topics.value(i) == evil), "the evil topic is stored verbatim");

    // Subscriptions: current state first, then changes.
    let mut sub = bus.subscribe(SubscribeRequest { topic: "watch".into(), ..Default::default() }).await.unwrap();
    let id = bus.publish(vec![msg("watch", "{\"w\":1}")]).await.unwrap().remove(0);
    let change = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(change.kind, Kind::Upsert as i32);
    assert_eq!(change.message.unwrap().message_id, id);

    // Rows inserted directly by another Deephaven client are adopted and claimable.
    let mut direct: Message = messages_from_batch(&snap).into_iter().next().unwrap().unwrap();
    direct.message_id = "direct-1".into();
    direct.topic = "adopt".into();
    direct.status = Status::Queued;
    direct.lease_owner.clear();
    direct.lease_expires_ts = 0;
    direct.version = 0;
    let input = InputTable::new(table.clone(), vec!["message_id".into()]);
    input.add(vec![messages_batch(&[direct]).unwrap()]).await.unwrap();
    let got = bus.claim("adopt", None, "a3", 1, Duration::from_secs(30), Duration::from_secs(10)).await.unwrap();
    assert_eq!(got.len(), 1, "the direct insert was adopted");
    assert_eq!(got[0].message_id, "direct-1");
    assert!(got[0].version >= 2, "adoption and claim are versioned changes");
    bus.ack(DeephavenBus::lease_of(&got[0]), "").await.unwrap();
    session.close().await.unwrap();
}

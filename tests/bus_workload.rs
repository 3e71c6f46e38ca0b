//! The bus under concurrency, against a real Deephaven: 2 producer and 8
//! consumer processes over 20,000 messages; then Deephaven's tables are
//! compared with the sequencer's state and the audit trail is checked.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use arrow::array::{Array, StringArray};
use dhbus::bus::client::DeephavenBus;
use dhbus::bus::rows::messages_from_batch;
use dhbus::deephaven::{Session, TableHandle};
use dhbus::proto::bus::SubscribeRequest;
use dhbus::schema::TableNames;
use futures::StreamExt;

const MESSAGES: usize = 20_000;
const PRODUCERS: usize = 2;
const CONSUMERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_consumers_two_producers_every_message_exactly_once() {
    let ns = common::unique_name("wl");
    let bus_proc = common::DhbusProcess::start(&ns, &[("DHBUS_COMPONENTS", "bus")]);
    let bin = env!("CARGO_BIN_EXE_dhbus");
    let topic = "work";
    let started = Instant::now();

    // Producers: `dhbus publish --jsonl`, 10,000 messages each.
    let dir = tempfile::tempdir().unwrap();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let path = dir.path().join(format!("p{p}.jsonl"));
        let mut f = std::fs::File::create(&path).unwrap();
        for i in 0..MESSAGES / PRODUCERS {
            writeln!(f, "{}", serde_json::json!({"topic": topic, "session_id": format!("s{}", i % 7), "agent_id": format!("producer{p}"), "priority": (i % 5) as i32, "payload_json": format!("{{\"p\":{p},\"i\":{i}}}")})).unwrap();
        }
        drop(f);
        producers.push(
            Command::new(bin)
                .args(["publish", "--jsonl"])
                .arg(&path)
                .env("DHBUS_ADDR", &bus_proc.addr)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    // Consumers: `dhbus consume --ack`, until idle.
    let mut consumers = Vec::new();
    for c in 0..CONSUMERS {
        consumers.push(
            Command::new(bin)
                .args(["consume", "--topic", topic, "--agent-id", &format!("consumer{c}"), "--ack", "--idle-exit-ms", "5000", "--lease-ms", "60000", "--batch", "32"])
                .env("DHBUS_ADDR", &bus_proc.addr)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let mut published = HashSet::new();
    for p in producers {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "producer failed: {}", String::from_utf8_lossy(&out.stderr));
        for id in String::from_utf8(out.stdout).unwrap().lines() {
            assert!(published.insert(id.to_string()), "duplicate id {id} from publish");
        }
    }
    assert_eq!(published.len(), MESSAGES);
    let mut processed: HashMap<String, usize> = HashMap::new();
    for c in consumers {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "consumer failed: {}", String::from_utf8_lossy(&out.stderr));
        for id in String::from_utf8(out.stdout).unwrap().lines() {
            *processed.entry(id.to_string()).or_default() += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let duplicates: Vec<_> = processed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "messages processed more than once: {duplicates:?}");
    let lost: Vec<_> = published.iter().filter(|id| !processed.contains_key(*id)).take(5).collect();
    assert!(lost.is_empty(), "messages never processed (first 5): {lost:?}");
    assert_eq!(processed.len(), MESSAGES);
    eprintln!("workload: {MESSAGES} messages published, claimed and acked in {elapsed:.1} s ({:.0} msg/s)", MESSAGES as f64 / elapsed);

    // Deephaven's agent_messages equals the sequencer's state.
    let bus = DeephavenBus::connect(&bus_proc.addr, None).await.unwrap();
    let mut stream = bus.subscribe(SubscribeRequest::default()).await.unwrap();
    let mut seq_state = HashMap::new();
    while seq_state.len() < MESSAGES {
        let change = stream.next().await.expect("snapshot frames").unwrap();
        let m = change.message.unwrap();
        seq_state.insert(m.message_id.clone(), m);
    }
    drop(stream);
    let names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&ns));
    let session = Session::connect(common::dh_config()).await.unwrap();
    let snap = TableHandle::open(&session, &names.messages).await.unwrap().snapshot().await.unwrap();
    assert_eq!(snap.num_rows(), MESSAGES);
    for row in messages_from_batch(&snap) {
        let row = row.unwrap();
        let seq = seq_state.get(&row.message_id).expect("row known to the sequencer");
        assert_eq!(dhbus::bus::rows::to_proto(&row), *seq, "Deephaven row differs from the sequencer's state");
        assert_eq!(row.status.as_str(), "done");
    }

    // The audit trail: exactly one claimed and one ack event per message.
    let events = TableHandle::open(&session, &names.events).await.unwrap().snapshot().await.unwrap();
    let col = |n: &str| events.column_by_name(n).unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
    let (kind, msg, ids) = (col("event"), col("message_id"), col("event_id"));
    let mut per: HashMap<(&str, &str), usize> = HashMap::new();
    let mut event_ids = HashSet::new();
    for i in 0..events.num_rows() {
        *per.entry((msg.value(i), kind.value(i))).or_default() += 1;
        assert!(event_ids.insert(ids.value(i)), "duplicate event id {}", ids.value(i));
    }
    for id in &published {
        for ev in ["publish", "claimed", "ack"] {
            assert_eq!(per.get(&(id.as_str(), ev)).copied().unwrap_or(0), 1, "{id}: expected exactly one {ev} event");
        }
    }
    assert_eq!(events.num_rows(), 3 * MESSAGES, "no other events in a clean run");
    session.close().await.unwrap();
}

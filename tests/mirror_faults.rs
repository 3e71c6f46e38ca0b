//! The mirror under faults, with `dhbus run` as a process, a Deephaven and a
//! broker of the test's own: the mirror killed with `kill -9` mid-stream, the
//! broker stopped and restarted mid-stream, Deephaven restarted (tables lost)
//! and restored from Kafka. After each, the topics fold to exactly the tables.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhbus::bus::client::DeephavenBus;
use dhbus::deephaven::{ClientConfig, Session, TableHandle};
use dhbus::mirror::codec::{MirrorTable, RecordDecoder};
use dhbus::mirror::fold::Folder;
use dhbus::mirror::readback::{read_all, StartAt};
use dhbus::mirror::replay::table_checksum;
use dhbus::proto::bus::NewMessage;
use dhbus::schema::TableNames;

fn fold(bootstrap: &str, topic: &str, table: MirrorTable) -> Folder {
    let decoder = RecordDecoder::new().unwrap();
    let mut f = Folder::new(table);
    read_all(bootstrap, topic, &StartAt::Earliest, Duration::from_millis(500), |r| {
        let rec = decoder.decode(table, r.key.as_deref().unwrap(), r.value.as_deref()).unwrap();
        f.apply(&rec.key, rec.row).unwrap();
        Ok(())
    })
    .unwrap();
    f
}

/// Waits until both topics fold to the checksums of both tables.
async fn assert_mirrored(config: &ClientConfig, bootstrap: &str, names: &TableNames, base: &str, p: &common::DhbusProcess, phase: &str) -> (u64, u64) {
    let session = Session::connect(config.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        let mut ok = true;
        let mut sums = Vec::new();
        for (table, name, topic) in [(MirrorTable::Messages, &names.messages, format!("{base}.agent_messages")), (MirrorTable::Events, &names.events, format!("{base}.agent_events"))] {
            let want = table_checksum(&TableHandle::open(&session, name).await.unwrap(), table, name).await.unwrap();
            let (b, t) = (bootstrap.to_string(), topic.clone());
            let f = tokio::task::spawn_blocking(move || fold(&b, &t, table)).await.unwrap();
            if (f.len() as u64, f.checksum()) != want {
                ok = false;
                last = format!("{table}: topic {} rows / {:x}, table {} / {:x}", f.len(), f.checksum(), want.0, want.1);
            }
            sums.push(want.1);
        }
        if ok {
            let _ = session.close().await;
            return (sums[0], sums[1]);
        }
        if Instant::now() >= deadline {
            let log = p.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!("{phase}: topics never folded to the tables: {last}\nlog tail:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Publishes, claims and acks until `stop`; tolerates the bus being away.
fn workload(addr: String, stop: Arc<AtomicBool>, done: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let Ok(bus) = DeephavenBus::connect(&addr, None).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            while !stop.load(Ordering::Relaxed) {
                let batch = (0..20).map(|k| NewMessage { topic: "f".into(), payload_json: format!("{{\"i\":{}}}", i + k), ..Default::default() }).collect();
                if bus.publish(batch).await.is_err() {
                    break;
                }
                i += 20;
                let Ok(got) = bus.claim("f", None, "w", 15, Duration::from_secs(20), Duration::from_millis(100)).await else { break };
                for m in got {
                    if bus.ack(DeephavenBus::lease_of(&m), "").await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn wait_progress(done: &AtomicUsize, more: usize) {
    let target = done.load(Ordering::Relaxed) + more;
    let t = Instant::now();
    while done.load(Ordering::Relaxed) < target {
        assert!(t.elapsed() < Duration::from_secs(120), "workload stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_survives_kill_broker_restart_and_deephaven_restart() {
    let dh = common::OwnDeephaven::start(&[]);
    let kafka = common::OwnKafka::start();
    let base = "faults";
    let mut env: Vec<(String, String)> = dh.env();
    env.push(("KAFKA_BOOTSTRAP_SERVERS".into(), kafka.bootstrap.clone()));
    env.push(("DEEPHAVEN_KAFKA_MIRROR_TOPIC".into(), base.into()));
    env.push(("DHBUS_COMPONENTS".into(), "bus,mirror".into()));
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ns = "f";
    let names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(ns));
    let mut p = common::DhbusProcess::start(ns, &extra);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let w = workload(p.addr.clone(), stop.clone(), done.clone());
    wait_progress(&done, 300).await;

    // 1. kill -9 mid-stream, restart: reconciled.
    p.kill9();
    p.restart();
    wait_progress(&done, 300).await;
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    assert_mirrored(&dh.config, &kafka.bootstrap, &names, base, &p, "after kill -9").await;

    // 2. The broker stops mid-stream and comes back: the bus keeps serving, the mirror catches up.
    stop.store(false, Ordering::Relaxed);
    let w = workload(p.addr.clone(), stop.clone(), done.clone());
    wait_progress(&done, 100).await;
    kafka.stop();
    wait_progress(&done, 300).await; // the bus keeps running while Kafka is down
    kafka.start_again();
    wait_progress(&done, 100).await;
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let before = assert_mirrored(&dh.config, &kafka.bootstrap, &names, base, &p, "after the broker restart").await;

    // 3. Deephaven restarts and loses its tables; dhbus restores them from Kafka.
    p.kill9();
    dh.stop();
    dh.start_again(&[]);
    p.restart();
    let after = assert_mirrored(&dh.config, &kafka.bootstrap, &names, base, &p, "after the Deephaven restart").await;
    assert_eq!(after, before, "restored tables equal the tables before the restart, every column");
    // And the bus works on the restored state.
    let bus = DeephavenBus::connect(&p.addr, None).await.unwrap();
    // (The restored backlog is still queued; a high priority puts the new message first.)
    let ids = bus.publish(vec![NewMessage { topic: "f".into(), priority: 1000, payload_json: "{}".into(), ..Default::default() }]).await.unwrap();
    let got = bus.claim("f", None, "w", 1, Duration::from_secs(20), Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.first().map(|m| m.message_id.as_str()), Some(ids[0].as_str()), "new work is claimable after the restore");
}

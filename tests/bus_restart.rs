//! `kill -9` of `dhbus run` in the middle of a workload, then a restart:
//! nothing acked is lost or redelivered, and messages whose leases were live
//! at the kill come back only after their lease expired (counted).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dhbus::bus::client::DeephavenBus;
use dhbus::bus::rows::messages_from_batch;
use dhbus::deephaven::{Session, TableHandle};
use dhbus::proto::bus::NewMessage;
use dhbus::schema::TableNames;

const MESSAGES: usize = 3_000;
const LEASE: Duration = Duration::from_secs(4);

/// What the consumers saw, per message.
#[derive(Default)]
struct Log {
    /// Every successful claim: (agent, epoch, lease deadline ns, claim time ns).
    claims: HashMap<String, Vec<(String, i64, i64, i64)>>,
    /// Acks that the bus confirmed, with the time of the confirmation.
    acked: HashMap<String, i64>,
}

async fn connect(addr: &str) -> DeephavenBus {
    loop {
        if let Ok(b) = DeephavenBus::connect(addr, None).await {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn consumer(addr: String, agent: String, log: Arc<Mutex<Log>>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut bus = connect(&addr).await;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let got = match bus.claim("r", None, &agent, 16, LEASE, Duration::from_millis(500)).await {
            Ok(g) => g,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bus = connect(&addr).await;
                continue;
            }
        };
        let now = dhbus::bus::clock::now_ns();
        {
            let mut l = log.lock().unwrap();
            for m in &got {
                l.claims.entry(m.message_id.clone()).or_default().push((agent.clone(), m.lease_epoch, m.lease_expires_ts, now));
            }
        }
        for m in got {
            if bus.ack(DeephavenBus::lease_of(&m), "").await.is_ok() {
                log.lock().unwrap().acked.insert(m.message_id.clone(), dhbus::bus::clock::now_ns());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_nothing_and_redelivers_only_after_expiry() {
    let ns = common::unique_name("k9");
    let mut proc_ = common::DhbusProcess::start(&ns, &[("DHBUS_COMPONENTS", "bus")]);
    let bus = connect(&proc_.addr).await;
    let mut ids = Vec::new();
    for chunk in 0..MESSAGES / 500 {
        let batch = (0..500).map(|i| NewMessage { topic: "r".into(), payload_json: format!("{{\"c\":{chunk},\"i\":{i}}}"), ..Default::default() }).collect();
        ids.extend(bus.publish(batch).await.unwrap());
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4).map(|c| tokio::spawn(consumer(proc_.addr.clone(), format!("c{c}"), log.clone(), stop.clone()))).collect();

    // Let about a third be acked, then kill -9 mid-stream.
    let t = Instant::now();
    while log.lock().unwrap().acked.len() < MESSAGES / 3 {
        assert!(t.elapsed() < Duration::from_secs(120), "workload too slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proc_.kill9();
    let killed_at = dhbus::bus::clock::now_ns();
    proc_.restart();
    // Everything ends up done in Deephaven. (An ack the bus applied just before
    // the kill may never have reached its consumer: such a message is done
    // without a confirmed ack in the log; it must not be claimed again.)
    let names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&ns));
    let session = Session::connect(common::dh_config()).await.unwrap();
    let t = Instant::now();
    let rows = loop {
        let snap = TableHandle::open(&session, &names.messages).await.unwrap().snapshot().await.unwrap();
        let rows: Vec<_> = messages_from_batch(&snap).into_iter().map(Result::unwrap).collect();
        let done = rows.iter().filter(|m| m.status.as_str() == "done").count();
        if rows.len() == MESSAGES && done == MESSAGES {
            break rows;
        }
        let acked = log.lock().unwrap().acked.len();
        assert!(t.elapsed() < Duration::from_secs(180), "after the restart only {done} of {MESSAGES} done in Deephaven ({acked} acks confirmed); log:\n{}", proc_.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }

    let l = log.lock().unwrap();
    let (mut redelivered, mut unconfirmed) = (0, 0);
    for id in &ids {
        let claims = &l.claims[id];
        match l.acked.get(id) {
            // Nothing acked is redelivered: no claim after a confirmed ack.
            Some(&acked_at) => assert!(claims.iter().all(|c| c.3 <= acked_at), "{id} was claimed again after its ack was confirmed"),
            None => unconfirmed += 1,
        }
        // Claims after the first are redeliveries: only once the previous lease expired.
        for w in claims.windows(2) {
            let (prev, next) = (&w[0], &w[1]);
            assert!(next.3 >= prev.2, "{id} redelivered at {} before the previous lease expired at {}", next.3, prev.2);
            assert!(next.1 > prev.1, "{id}: epochs must grow across redeliveries");
            redelivered += 1;
        }
    }
    // Only acks in flight at the kill can lack a confirmation: at most one per consumer.
    assert!(unconfirmed <= 4, "{unconfirmed} messages done without a confirmed ack");
    assert!(redelivered > 0, "the kill must have caught live leases for this test to mean anything");
    eprintln!("kill -9: {redelivered} messages redelivered after their lease expired (lease {LEASE:?}), {unconfirmed} acked at the kill without the reply arriving, killed at {killed_at}");
    // Deephaven agrees: every message done (checked above), once each.
    assert_eq!(rows.len(), MESSAGES);
    let distinct: std::collections::HashSet<&str> = rows.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(distinct.len(), MESSAGES);
}

//! Bus benchmarks with Deephaven on the same machine: publish-to-claim
//! latency (p50/p99) with consumers already waiting, and sustained
//! full-lifecycle throughput (publish, claim, ack) in messages/s.

#[path = "common.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhbus::bus::client::DeephavenBus;
use dhbus::proto::bus::NewMessage;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_bus() -> (Proc, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_dhbus"))
        .arg("run")
        .env("DHBUS_NAMESPACE", common::unique("bb"))
        .env("DHBUS_LISTEN", format!("127.0.0.1:{port}"))
        .env("DHBUS_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("DHBUS_COMPONENTS", "bus")
        .env("RUST_LOG", "warn")
        .env_remove("DEEPHAVEN_KAFKA_MIRROR_TOPIC")
        .stdout(Stdio::null())
        .spawn()
        .expect("dhbus run");
    let addr = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    loop {
        if let Ok(b) = DeephavenBus::connect(&addr, None).await {
            if b.stats().await.is_ok() {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(60), "dhbus run did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (Proc(child), addr)
}

fn msg(topic: &str, i: usize) -> NewMessage {
    NewMessage { topic: topic.into(), session_id: format!("s{}", i % 16), payload_json: format!("{{\"task\":{i},\"text\":\"summarise the report\"}}"), ..Default::default() }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    common::print_machine("bus");
    let (_p, addr) = start_bus().await;
    let bus = DeephavenBus::connect(&addr, None).await.unwrap();

    // 1. Publish-to-claim latency, consumers waiting (long poll): each message
    // carries the instant its publish call started; a waiting consumer records
    // how long after that its claim returned it.
    let waiting = 4;
    let samples = 400;
    let origin = Instant::now();
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let consumers: Vec<_> = (0..waiting)
        .map(|c| {
            let (bus, lat) = (bus.clone(), lat.clone());
            tokio::spawn(async move {
                while lat.lock().unwrap().len() < samples {
                    let got = bus.claim("lat", None, &format!("c{c}"), 1, Duration::from_secs(30), Duration::from_millis(500)).await.unwrap();
                    let now = origin.elapsed();
                    for m in got {
                        let sent: u64 = serde_json::from_str::<serde_json::Value>(&m.payload_json).unwrap()["sent_us"].as_u64().unwrap();
                        lat.lock().unwrap().push(now.saturating_sub(Duration::from_micros(sent)));
                        bus.ack(DeephavenBus::lease_of(&m), "").await.unwrap();
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..samples {
        let sent_us = origin.elapsed().as_micros() as u64;
        let m = NewMessage { topic: "lat".into(), payload_json: format!("{{\"sent_us\":{sent_us},\"i\":{i}}}"), ..Default::default() };
        bus.publish(vec![m]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if i % 100 == 99 {
            common::progress(&format!("latency samples: {}", i + 1));
        }
    }
    for c in consumers {
        c.await.unwrap();
    }
    let mut lat = lat.lock().unwrap().clone();
    let (p50, p99) = (common::percentile(&mut lat, 50.0), common::percentile(&mut lat, 99.0));
    println!("publish-to-claim latency ({waiting} consumers waiting, {samples} messages): p50 {:.1} ms, p99 {:.1} ms", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);

    // 2. Sustained full lifecycle: 2 producers, 8 consumers, 60,000 messages.
    let total = 60_000;
    let done = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for b in 0..total / 2 / 1000 {
                    let batch = (0..1000).map(|i| msg("tp", p * total + b * 1000 + i)).collect();
                    bus.publish(batch).await.unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..8)
        .map(|c| {
            let bus = bus.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while done.load(Ordering::Relaxed) < total {
                    let got = bus.claim("tp", None, &format!("w{c}"), 500, Duration::from_secs(60), Duration::from_millis(200)).await.unwrap();
                    let n = got.len();
                    if n > 0 {
                        let r = bus.ack_batch(got.iter().map(DeephavenBus::lease_of).collect()).await.unwrap();
                        assert!(r.failed.is_empty(), "acks refused: {:?}", r.failed);
                    }
                    done.fetch_add(n, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut last = 0;
    while done.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let d = done.load(Ordering::Relaxed);
        common::progress(&format!("lifecycle: {d}/{total} acked ({:.0} msg/s last 2 s)", (d - last) as f64 / 2.0));
        last = d;
    }
    for h in producers.into_iter().chain(consumers) {
        h.await.unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!("full lifecycle (publish in batches of 1000, claim up to 500, ack_batch; 2 producers, 8 consumers): {:.0} messages/s ({total} in {s:.1} s)", total as f64 / s);
}

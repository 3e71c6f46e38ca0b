//! Rolling metrics and operator endpoints against a real Deephaven (and, for
//! outages, a Deephaven and a broker of the test's own).

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use dhbus::bus::client::DeephavenBus;
use dhbus::bus::rows::events_batch;
use dhbus::bus::lease::Event;
use dhbus::deephaven::{InputTable, Session, TableHandle};
use dhbus::metrics::rollup::{recompute, MetricsRow};
use dhbus::metrics::service::event_rows;
use dhbus::proto::bus::NewMessage;
use dhbus::schema::TableNames;

/// Parses Prometheus text exposition into `series → value` (series = name{labels} as printed).
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad metric name in: {line}");
        out.insert(series.to_string(), v);
    }
    out
}

async fn scrape(base: &str) -> HashMap<String, f64> {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    parse_prometheus(&text)
}

fn metrics_rows(b: &arrow::array::RecordBatch) -> Vec<MetricsRow> {
    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    let l = |n: &str| b.column_by_name(n).unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
    let s = |n: &str| b.column_by_name(n).unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
    let avg = b.column_by_name("avg_latency_ms").unwrap().as_any().downcast_ref::<Float64Array>().unwrap().clone();
    let (ws, agent, sess, mp, err, tok, upd) = (l("window_start"), s("agent_id"), s("session_id"), l("messages_processed"), l("errors"), l("token_usage"), l("last_update_ts"));
    let mut rows: Vec<MetricsRow> = (0..b.num_rows())
        .map(|i| MetricsRow {
            window_start: ws.value(i),
            agent_id: agent.value(i).to_string(),
            session_id: sess.value(i).to_string(),
            messages_processed: mp.value(i),
            avg_latency_ms: (!avg.is_null(i)).then(|| avg.value(i)),
            errors: err.value(i),
            token_usage: tok.value(i),
            last_update_ts: upd.value(i),
        })
        .collect();
    rows.sort_by_key(|r| r.key());
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_equal_an_independent_computation_and_metrics_endpoint_counts() {
    let ns = common::unique_name("mx");
    let window = Duration::from_secs(2);
    let p = common::DhbusProcess::start(&ns, &[("DHBUS_COMPONENTS", "bus,metrics"), ("DHBUS_METRICS_WINDOW", "2s")]);
    let bus = DeephavenBus::connect(&p.addr, None).await.unwrap();
    let (mut acks, mut nacks, mut claims) = (0u64, 0u64, 0u64);
    for round in 0..6 {
        let batch = (0..50).map(|i| NewMessage { topic: "m".into(), session_id: format!("s{}", i % 3), payload_json: "{}".into(), ..Default::default() }).collect();
        bus.publish(batch).await.unwrap();
        for c in 0..3 {
            let got = bus.claim("m", None, &format!("agent{c}"), 50, Duration::from_secs(30), Duration::from_millis(200)).await.unwrap();
            claims += got.len() as u64;
            for (i, m) in got.iter().enumerate() {
                if (i + round) % 7 == 0 {
                    bus.nack(DeephavenBus::lease_of(m), Duration::ZERO, "flaky tool").await.unwrap();
                    nacks += 1;
                } else {
                    bus.ack(DeephavenBus::lease_of(m), &format!(r#"{{"tokens": {}}}"#, 10 + i)).await.unwrap();
                    acks += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Drain what the nacks put back.
    loop {
        let got = bus.claim("m", None, "agent9", 100, Duration::from_secs(30), Duration::from_millis(300)).await.unwrap();
        if got.is_empty() {
            break;
        }
        claims += got.len() as u64;
        for m in &got {
            bus.ack(DeephavenBus::lease_of(m), "").await.unwrap();
            acks += 1;
        }
    }
    // Late events, written straight into agent_events by another client: their own (old) window.
    let names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&ns));
    let session = Session::connect(common::dh_config()).await.unwrap();
    let events_table = TableHandle::open(&session, &names.events).await.unwrap();
    // Ten minutes late: well inside the roll-up's one-hour lateness horizon.
    let old = dhbus::bus::clock::now_ns() - 600_000_000_000 + 123;
    let late: Vec<Event> = (0..5)
        .map(|i| Event {
            event_id: format!("late-{i}"),
            ts: old + i,
            agent_id: "late-agent".into(),
            session_id: "s-late".into(),
            message_id: format!("lm{i}"),
            event: "ack",
            details_json: format!(r#"{{"enqueue_ts": {}, "tokens": 5}}"#, old - 1_000_000_000),
        })
        .collect();
    InputTable::new(events_table.clone(), vec![]).add(vec![events_batch(&late).unwrap()]).await.unwrap();
    let last_event = Instant::now();

    // agent_metrics converges to an independent computation from agent_events, within 5 s.
    let metrics_table = TableHandle::open(&session, &names.metrics).await.unwrap();
    let expected = recompute(&event_rows(&events_table.snapshot().await.unwrap()), window).unwrap();
    assert!(expected.iter().any(|r| r.agent_id == "late-agent" && r.messages_processed == 5), "late events have their own window");
    loop {
        let got = metrics_rows(&metrics_table.snapshot().await.unwrap());
        let same = got.len() == expected.len() && got.iter().zip(&expected).all(|(g, e)| g.same_metrics(e, 1e-9));
        if same {
            break;
        }
        assert!(last_event.elapsed() < Duration::from_secs(5), "agent_metrics not fresh within 5 s:\ngot {got:#?}\nexpected {expected:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total_processed: i64 = expected.iter().filter(|r| r.agent_id != "late-agent").map(|r| r.messages_processed).sum();
    assert_eq!(total_processed as u64, acks);

    // /metrics: Prometheus text with the right values for this workload.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = scrape(&p.metrics).await;
    assert_eq!(m.get("dhbus_acks_total").copied(), Some(acks as f64));
    assert_eq!(m.get("dhbus_nacks_total").copied(), Some(nacks as f64));
    assert_eq!(m.get("dhbus_claims_total").copied(), Some(claims as f64));
    assert_eq!(m.get("dhbus_published_total").copied(), Some(300.0));
    assert_eq!(m.get("dhbus_queue_depth{topic=\"m\",status=\"done\"}").copied(), Some(300.0));
    assert_eq!(m.get("dhbus_queue_depth{topic=\"m\",status=\"queued\"}").copied().unwrap_or(0.0), 0.0);
    assert!(m.keys().any(|k| k.starts_with("dhbus_claim_latency_seconds")), "claim latency histogram exported");
    assert!(m.keys().all(|k| !k.contains("message_id")), "no message ids as labels");
    session.close().await.unwrap();

    // Restart: the roll-up rebuilds from agent_events without double counting.
    let mut p = p;
    p.kill9();
    p.restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let session = Session::connect(common::dh_config()).await.unwrap();
    let got = metrics_rows(&TableHandle::open(&session, &names.metrics).await.unwrap().snapshot().await.unwrap());
    assert!(got.len() == expected.len() && got.iter().zip(&expected).all(|(g, e)| g.same_metrics(e, 1e-9)), "restart changed agent_metrics");
}

async fn readyz(base: &str) -> (u16, String) {
    match reqwest::get(format!("{base}/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Waits until /readyz answers `want` and, when `dep` is given, that
/// dependency's state is `dep_ready` with a detail containing `mention`.
async fn wait_ready(base: &str, want: u16, dep: Option<(&str, bool, &str)>, within: Duration) -> String {
    let t = Instant::now();
    loop {
        let (code, body) = readyz(base).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let dep_ok = dep.is_none_or(|(name, ready, mention)| {
            let d = &v["dependencies"][name];
            d["ready"] == serde_json::Value::Bool(ready) && d["detail"].as_str().is_some_and(|s| s.contains(mention))
        });
        if code == want && dep_ok {
            return body;
        }
        assert!(t.elapsed() < within, "/readyz never became {want} with {dep:?}; last {code}: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn health(env: &[(String, String)], kafka: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dhbus"))
        .args(["health", "--json", "--timeout", "5s"])
        .envs(env.iter().cloned())
        .env("KAFKA_BOOTSTRAP_SERVERS", kafka)
        .env("DEEPHAVEN_KAFKA_MIRROR_TOPIC", "ops")
        .env("DHBUS_NAMESPACE", "ops")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_health_fail_clearly_when_a_dependency_is_down_and_recover() {
    let dh = common::OwnDeephaven::start(&[]);
    let kafka = common::OwnKafka::start();
    let mut env: Vec<(&str, String)> = vec![("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap.clone()), ("DEEPHAVEN_KAFKA_MIRROR_TOPIC", "ops".into())];
    let dh_env = dh.env();
    for (k, v) in &dh_env {
        env.push((k.as_str(), v.clone()));
    }
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = common::DhbusProcess::start("ops", &extra);
    wait_ready(&p.metrics, 200, None, Duration::from_secs(30)).await;
    let (ok, report) = health(&dh_env, &kafka.bootstrap);
    assert!(ok, "health should pass: {report}");

    // Kafka down: /readyz 503 naming kafka; health fails naming kafka; both recover.
    kafka.stop();
    wait_ready(&p.metrics, 503, Some(("kafka", false, "unreachable")), Duration::from_secs(30)).await;
    let (ok, report) = health(&dh_env, &kafka.bootstrap);
    assert!(!ok && report.contains("\"name\": \"kafka\"") && report.contains("unreachable"), "{report}");
    kafka.start_again();
    wait_ready(&p.metrics, 200, None, Duration::from_secs(60)).await;

    // Deephaven down: 503 naming deephaven; health fails at connectivity; recovery after restart + bootstrap.
    dh.stop();
    wait_ready(&p.metrics, 503, Some(("deephaven", false, "")), Duration::from_secs(30)).await;
    let (ok, report) = health(&dh_env, &kafka.bootstrap);
    assert!(!ok && report.contains("connectivity") && report.contains("failed"), "{report}");
    dh.start_again(&[]);
    // A restarted Deephaven lost its tables: /readyz says so until they are restored.
    wait_ready(&p.metrics, 503, Some(("tables", false, "dhbus bootstrap")), Duration::from_secs(60)).await;
    let st = Command::new(env!("CARGO_BIN_EXE_dhbus")).arg("bootstrap").envs(dh_env.iter().cloned()).env("DHBUS_NAMESPACE", "ops").status().unwrap();
    assert!(st.success());
    wait_ready(&p.metrics, 200, None, Duration::from_secs(60)).await;
    let (ok, report) = health(&dh_env, &kafka.bootstrap);
    assert!(ok, "health recovers: {report}");
}

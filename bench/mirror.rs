//! Mirror and replay benchmarks, each beside Deephaven's own Kafka connector
//! in the same run and against the same broker:
//! - mirror lag p50/p99 on `agent_messages` receiving a sustained 20,000 rows/s;
//! - mirror throughput (rows/s) at saturation, vs `deephaven.stream.kafka.produce`
//!   publishing a copy of the table under the same writes (ratio);
//! - replay of 1,000,000 messages from Kafka into Deephaven, vs
//!   `deephaven.stream.kafka.consume` reading the same topic.

#[path = "common.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dhbus::deephaven::{Console, InputTable, SessionPool, TableHandle};
use dhbus::mirror::codec::{rows_to_batch, MessageRow, MirrorTable, RecordEncoder, Row};
use dhbus::mirror::replay::{replay, ReplayPlan};
use dhbus::mirror::topics::{ensure_topics, MirrorTopics};
use dhbus::schema::TableNames;
use dhbus::mirror::readback::StartAt;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn row(i: usize, version: i64) -> Row {
    Row::Message(MessageRow {
        message_id: Some(format!("m{i:09}")),
        ts: Some(dhbus::bus::clock::now_ns()),
        ingest_ts: Some(dhbus::bus::clock::now_ns()),
        topic: Some(format!("topic-{}", i % 8)),
        session_id: Some(format!("s{}", i % 64)),
        task_id: Some(format!("task-{}", i / 10)),
        agent_id: Some("producer-1".into()),
        role: Some("agent".into()),
        msg_type: Some("json".into()),
        payload_json: Some(format!("{{\"step\":{i},\"prompt\":\"summarise the quarterly report for the team\"}}")),
        payload_blob_ref: None,
        priority: Some((i % 5) as i32),
        ttl_ms: Some(0),
        lease_owner: None,
        lease_expires_ts: Some(0),
        status: Some("queued".into()),
        retry_count: Some(0),
        lease_epoch: Some(0),
        version: Some(version),
        updated_ts: Some(dhbus::bus::clock::now_ns()),
    })
}

/// Histogram buckets of the lag: every 5 ms up to 1 s, then coarser.
fn lag_buckets() -> Vec<f64> {
    let mut b: Vec<f64> = (1..=200).map(|i| i as f64 * 0.005).collect();
    b.extend([2.0, 5.0, 10.0, 30.0, 60.0]);
    b
}

/// p50, p99 (upper bucket bounds, linear within the bucket), mean and count
/// of the mirror lag of `agent_messages` from the rendered histogram.
fn lag_quantiles(text: &str) -> (f64, f64, f64, f64) {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with("dhbus_mirror_lag_seconds_bucket{table=\"agent_messages\""))
        .filter_map(|l| {
            let le = l.split(",le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = prom_value(text, "dhbus_mirror_lag_seconds_count{table=\"agent_messages\"}").unwrap_or(f64::NAN);
    let sum = prom_value(text, "dhbus_mirror_lag_seconds_sum{table=\"agent_messages\"}").unwrap_or(f64::NAN);
    let q = |p: f64| {
        let target = p * count;
        let mut prev = (0.0, 0.0);
        for &(le, c) in &buckets {
            if c >= target {
                if !le.is_finite() {
                    return prev.0;
                }
                let frac = if c > prev.1 { (target - prev.1) / (c - prev.1) } else { 1.0 };
                return prev.0 + frac * (le - prev.0);
            }
            prev = (le, c);
        }
        f64::NAN
    };
    (q(0.5), q(0.99), sum / count, count)
}

/// Reads a value of the Prometheus text (`name{labels}`) rendered by the recorder.
fn prom_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

/// Counts the records of `topic` with a consumer of its own from the start,
/// in a thread started before the writes; returns when the count reaches
/// `want` (the instant it did). Fails after 60 s without a new record.
/// (Counted by reading: tansu's in-memory storage under-reports high watermarks.)
fn spawn_counter(bootstrap: &str, topic: &str, want: u64, what: &'static str) -> std::thread::JoinHandle<Instant> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    std::thread::spawn(move || {
        let (consumer, _) = dhbus::mirror::readback::open(&bootstrap, &topic, &StartAt::Earliest).unwrap();
        let (mut n, mut last, mut printed) = (0u64, Instant::now(), Instant::now());
        loop {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(_)) => {
                    n += 1;
                    last = Instant::now();
                    if n >= want {
                        return last;
                    }
                }
                Some(Err(e)) => panic!("{what}: reading {topic}: {e}"),
                None => assert!(last.elapsed() < Duration::from_secs(60), "{what}: only {n}/{want} records in {topic} after 60 s without progress"),
            }
            if printed.elapsed() > Duration::from_secs(2) {
                printed = Instant::now();
                common::progress(&format!("{what}: {n}/{want} records in Kafka"));
            }
        }
    })
}

/// Waits for a counter thread without blocking the runtime.
async fn counted(h: std::thread::JoinHandle<Instant>) -> Instant {
    tokio::task::spawn_blocking(move || h.join().expect("counter")).await.unwrap()
}

/// Writes `total` new rows (ids from `first`) in batches of 10,000, as fast as Deephaven takes them.
async fn write_fast(input: &InputTable, first: usize, total: usize) {
    for b in 0..total / 10_000 {
        let lo = first + b * 10_000;
        let rows: Vec<Row> = (lo..lo + 10_000).map(|i| row(i, 1)).collect();
        input.add(vec![rows_to_batch(MirrorTable::Messages, &rows).unwrap()]).await.unwrap();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    common::print_machine("mirror and replay");
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())).with_writer(std::io::stderr).init();
    let bootstrap = common::env("KAFKA_BOOTSTRAP_SERVERS");
    let prom = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full("dhbus_mirror_lag_seconds".into()), &lag_buckets())
        .unwrap()
        .install_recorder()
        .unwrap();
    let pool = SessionPool::connect(common::dh_config()).await.unwrap();
    let session = pool.session().await;
    let ns = common::unique("mb");
    let names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&ns));
    dhbus::bootstrap::bootstrap(&session, &names).await.unwrap();
    let topics = MirrorTopics::new(&ns).unwrap();
    let cfg = dhbus::mirror::service::MirrorConfig::new(bootstrap.clone(), topics.clone(), 3, names.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let mirror = tokio::spawn(dhbus::mirror::service::run(pool.clone(), cfg, None, Default::default(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let input = InputTable::new(TableHandle::open(&session, &names.messages).await.unwrap(), vec!["message_id".into()]);

    // 1. Lag under a sustained load below saturation: 20,000 rows/s offered
    //    (1,000 rows every 50 ms) for 15 s. Lag = the row's commit stamp
    //    (`updated_ts`, set just before the write) to Kafka's acknowledgement.
    let (rate_batch, tick, ticks) = (1_000usize, Duration::from_millis(50), 300usize);
    let counter = spawn_counter(&bootstrap, &topics.messages, (ticks * rate_batch) as u64, "mirror (lag phase)");
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for b in 0..ticks {
        interval.tick().await;
        let rows: Vec<Row> = (b * rate_batch..(b + 1) * rate_batch).map(|i| row(i, 1)).collect();
        input.add(vec![rows_to_batch(MirrorTable::Messages, &rows).unwrap()]).await.unwrap();
        if b % 40 == 39 {
            common::progress(&format!("lag phase: {} rows written", (b + 1) * rate_batch));
        }
    }
    let sustained = ticks * rate_batch;
    counted(counter).await;
    let text = prom.render();
    let (p50, p99, mean, count) = lag_quantiles(&text);
    println!(
        "dhbus mirror lag at a sustained {} rows/s: p50 {:.0} ms, p99 {:.0} ms, mean {:.0} ms ({count} rows; from the exported histogram, 5 ms buckets)",
        rate_batch as f64 / tick.as_secs_f64(),
        p50 * 1e3,
        p99 * 1e3,
        mean * 1e3
    );

    // 2. Throughput at saturation: 500,000 new rows written as fast as
    //    Deephaven takes them (batches of 10,000); timed from the first write
    //    until Kafka holds every record.
    let total = 500_000usize;
    let counter = spawn_counter(&bootstrap, &topics.messages, (sustained + total) as u64, "mirror");
    let t = Instant::now();
    write_fast(&input, sustained, total).await;
    let write_s = t.elapsed().as_secs_f64();
    let mirror_s = (counted(counter).await - t).as_secs_f64();
    let mirror_rate = total as f64 / mirror_s;
    println!("dhbus mirror: {mirror_rate:.0} rows/s ({total} rows written in {write_s:.1} s, all in Kafka after {mirror_s:.1} s)");
    stop.cancel();
    let _ = mirror.await;

    // 3. Deephaven's own producer (JSON values) mirroring a fresh copy of the
    //    table to the same broker under the same writes, timed the same way.
    let dh_ns = common::unique("mp");
    let dh_names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&dh_ns));
    dhbus::bootstrap::bootstrap(&session, &dh_names).await.unwrap();
    let dh_topic = format!("{dh_ns}.dh_producer");
    let admin_topics = MirrorTopics { messages: dh_topic.clone(), events: format!("{dh_ns}.dh_unused") };
    ensure_topics(&bootstrap, &admin_topics, 3).await.unwrap();
    let console = Console::start(&session).await.unwrap();
    let script = format!(
        "from deephaven.stream.kafka import producer as kp\n_cancel = kp.produce({table}, {{'bootstrap.servers': {bs}, 'acks': 'all', 'enable.idempotence': 'true'}}, {topic}, key_spec=kp.simple_spec('message_id'), value_spec=kp.json_spec())\n",
        table = dh_names.messages,
        bs = serde_json::to_string(&bootstrap).unwrap(),
        topic = serde_json::to_string(&dh_topic).unwrap(),
    );
    console.run(&script).await.unwrap();
    let dh_input = InputTable::new(TableHandle::open(&session, &dh_names.messages).await.unwrap(), vec!["message_id".into()]);
    let counter = spawn_counter(&bootstrap, &dh_topic, total as u64, "deephaven producer");
    let t = Instant::now();
    write_fast(&dh_input, 0, total).await;
    let dh_rate = total as f64 / (counted(counter).await - t).as_secs_f64();
    console.run("_cancel()").await.unwrap();
    println!("deephaven.stream.kafka.produce: {dh_rate:.0} rows/s (same writes, same broker, same clock)");
    println!("mirror / deephaven producer throughput ratio: {:.2}", mirror_rate / dh_rate);

    // 3. Replay 1,000,000 messages into a fresh set of tables.
    let replay_ns = common::unique("rb");
    let rtopics = MirrorTopics::new(&replay_ns).unwrap();
    ensure_topics(&bootstrap, &rtopics, 3).await.unwrap();
    let producer: FutureProducer = dhbus::mirror::kafka_config::producer_config(&bootstrap).create().unwrap();
    let enc = RecordEncoder::new(MirrorTable::Messages, "agent_messages").unwrap();
    let n = 1_000_000usize;
    let t = Instant::now();
    for chunk in 0..n / 50_000 {
        let rows: Vec<Row> = (chunk * 50_000..(chunk + 1) * 50_000).map(|i| row(i, 3)).collect();
        let recs = enc.encode_batch(&rows_to_batch(MirrorTable::Messages, &rows).unwrap()).unwrap();
        let mut futs = Vec::with_capacity(recs.len());
        for r in &recs {
            loop {
                match producer.send_result(FutureRecord::to(&rtopics.messages).key(r.key.as_str()).payload(r.value.as_deref().unwrap())) {
                    Ok(f) => {
                        futs.push(f);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        }
        for f in futs {
            f.await.unwrap().unwrap();
        }
        common::progress(&format!("replay input: {} records produced", (chunk + 1) * 50_000));
    }
    println!("(replay input: {n} records produced in {:.1} s)", t.elapsed().as_secs_f64());
    let rnames = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&replay_ns));
    let plan = ReplayPlan {
        bootstrap: bootstrap.clone(),
        topics: rtopics.clone(),
        start: HashMap::new(),
        tables: vec![MirrorTable::Messages],
        names: rnames.clone(),
        dry_run: false,
        skip_corrupt: None,
        progress_bar: false,
        ledger: None,
    };
    let t = Instant::now();
    let summary = replay(&session, plan).await.unwrap();
    let rs = t.elapsed().as_secs_f64();
    let rows = summary.tables[&rnames.messages].rows;
    assert_eq!(rows, n as u64);
    println!("dhbus replay: {n} messages in {rs:.1} s ({:.0} rows/s), checksum {}", n as f64 / rs, summary.tables[&rnames.messages].checksum);

    // 4. Deephaven's own consumer reading the same topic (raw bytes).
    let script = format!(
        "from deephaven.stream.kafka import consumer as kc\nfrom deephaven import dtypes\n_c = kc.consume({{'bootstrap.servers': {bs}, 'auto.offset.reset': 'earliest'}}, {topic}, key_spec=kc.simple_spec('key', dtypes.string), value_spec=kc.simple_spec('value', dtypes.byte_array), table_type=kc.TableType.append())\n_csize = _c.count_by('cnt')\n",
        bs = serde_json::to_string(&bootstrap).unwrap(),
        topic = serde_json::to_string(&rtopics.messages).unwrap(),
    );
    let t = Instant::now();
    console.run(&script).await.unwrap();
    loop {
        let c = TableHandle::open(&session, "_csize").await.unwrap().snapshot().await.unwrap();
        let got = c.column_by_name("cnt").and_then(|a| a.as_any().downcast_ref::<arrow::array::Int64Array>().map(|a| if a.is_empty() { 0 } else { a.value(0) })).unwrap_or(0);
        if got as usize >= n {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "deephaven consumer too slow");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dcs = t.elapsed().as_secs_f64();
    println!("deephaven.stream.kafka.consume: {n} records in {dcs:.1} s ({:.0} rows/s; raw bytes, no decoding or keying)", n as f64 / dcs);
    session.close().await.unwrap();
}

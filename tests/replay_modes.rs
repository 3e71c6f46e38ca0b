//! Replay from a point in time, `dhbus replay --follow` feeding a warm
//! standby, a standby that is mirrored too (`dhbus run` with the follow and
//! mirror components) without echoing records back, and
//! `DHBUS_DURABLE_ACKS=1` (answers only once Kafka has the change), against
//! real Deephaven servers and the real broker.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::mirror::{assert_topic_equals_table, fixture, workload};
use dhbus::bus::client::DeephavenBus;
use dhbus::deephaven::{Session, SessionPool, TableHandle};
use dhbus::mirror::codec::{MirrorTable, RecordDecoder};
use dhbus::mirror::readback::{read_all, StartAt};
use dhbus::mirror::replay::{replay, table_checksum, ReplayPlan};
use dhbus::mirror::service::{run as run_mirror, MirrorConfig};
use dhbus::mirror::topics::MirrorTopics;
use dhbus::ops::readiness::Readiness;
use dhbus::proto::bus::NewMessage;
use dhbus::schema::TableNames;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

/// Every record of `topic`: (key, version) per record; events have no version.
fn records(bootstrap: &str, topic: &str, table: MirrorTable) -> Vec<(String, Option<i64>)> {
    let decoder = RecordDecoder::new().unwrap();
    let mut out = Vec::new();
    read_all(bootstrap, topic, &StartAt::Earliest, Duration::from_millis(500), |r| {
        let rec = decoder.decode(table, r.key.as_deref().unwrap(), r.value.as_deref()).expect("decodes");
        out.push((rec.key, rec.row.and_then(|row| row.version())));
        Ok(())
    })
    .unwrap();
    out
}

/// Waits until the standby's table has the primary's rows, column for column.
async fn wait_equal(primary: &Session, standby: &Session, p_name: &str, s_name: &str, table: MirrorTable) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let want = table_checksum(&TableHandle::open(primary, p_name).await.unwrap(), table, p_name).await.unwrap();
    loop {
        if let Ok(h) = TableHandle::open(standby, s_name).await {
            let got = table_checksum(&h, table, s_name).await.unwrap();
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{table}: standby holds {got:?}, primary {want:?}");
        }
        assert!(Instant::now() < deadline, "{table}: standby table {s_name} never appeared");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A `dhbus replay --follow` process (killed on drop).
struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_a_time_and_follow_feeds_a_mirrored_standby_without_echo() {
    let bootstrap = common::kafka_servers();
    let pool = SessionPool::connect(common::dh_config()).await.unwrap();
    let f = fixture(pool.session().await).await;
    let base = f.names.messages.strip_suffix("_agent_messages").expect("namespaced table").to_string();
    assert_eq!(MirrorTopics::new(&base).unwrap(), f.topics, "fixture topics are named after the namespace");
    let cfg = MirrorConfig::new(bootstrap.clone(), f.topics.clone(), 3, f.names.clone());
    let stop = CancellationToken::new();
    let mirror = tokio::spawn(run_mirror(pool.clone(), cfg, None, Readiness::default(), stop.clone()));
    let mut rng = StdRng::seed_from_u64(21);
    let (mut next_event, mut versions) = (0u64, HashMap::new());

    // Workload A, a point in time T, workload B.
    workload(&f, &mut rng, 15, &mut next_event, &mut versions).await;
    assert_topic_equals_table(&f, &bootstrap, MirrorTable::Events).await;
    let events_before = next_event;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t_ms = (dhbus::bus::clock::now_ns() / 1_000_000) as i64;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    workload(&f, &mut rng, 15, &mut next_event, &mut versions).await;
    assert_topic_equals_table(&f, &bootstrap, MirrorTable::Messages).await;
    assert_topic_equals_table(&f, &bootstrap, MirrorTable::Events).await;

    // Replay --from T into a fresh server: the events since T, and only those.
    let standby = common::OwnDeephaven::start(&[]);
    let s_session = Session::connect(standby.config.clone()).await.unwrap();
    let at_names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&common::unique_name("at")));
    let plan = ReplayPlan {
        bootstrap: bootstrap.clone(),
        topics: f.topics.clone(),
        start: HashMap::from([(MirrorTable::Events, StartAt::Time(t_ms))]),
        tables: vec![MirrorTable::Events],
        names: at_names.clone(),
        dry_run: false,
        skip_corrupt: None,
        progress_bar: false,
        ledger: None,
    };
    let summary = replay(&s_session, plan).await.unwrap();
    let since: u64 = next_event - events_before;
    assert_eq!(summary.tables[&at_names.events].rows, since, "replay --from T holds exactly the events after T");
    let snap = TableHandle::open(&s_session, &at_names.events).await.unwrap().snapshot().await.unwrap();
    let ids: HashSet<String> = snap
        .column_by_name("event_id")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    let expected: HashSet<String> = (events_before + 1..=next_event).map(|i| format!("ev-{i:08}")).collect();
    assert_eq!(ids, expected, "replay --from T: the events after T");

    // `dhbus replay --follow` into the standby (tables of another namespace
    // there), and a mirrored standby: `dhbus run` with the follow and mirror
    // components, which must not send back what it applies from Kafka.
    let fol_ns = common::unique_name("fol");
    let fol_names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&fol_ns));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dhbus"));
    cmd.args(["replay", "--follow", "--from", "earliest"])
        .env_remove("DHBUS_COMPONENTS")
        .env("DHBUS_NAMESPACE", &fol_ns)
        .env("DEEPHAVEN_KAFKA_MIRROR_TOPIC", &base)
        .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .stdout(std::process::Stdio::null());
    for (k, v) in standby.env() {
        cmd.env(k, v);
    }
    let _follower = Follower(cmd.spawn().expect("spawn dhbus replay --follow"));
    let sby_ns = common::unique_name("sby");
    let sby_names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&sby_ns));
    let mut extra: Vec<(String, String)> = standby.env();
    extra.extend([
        ("DHBUS_COMPONENTS".to_string(), "follow,mirror".to_string()),
        ("DEEPHAVEN_KAFKA_MIRROR_TOPIC".to_string(), base.clone()),
        ("KAFKA_BOOTSTRAP_SERVERS".to_string(), bootstrap.clone()),
    ]);
    let extra_ref: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let standby_mirror = common::DhbusProcess::start(&sby_ns, &extra_ref);
    for names in [&fol_names, &sby_names] {
        wait_equal(&f.session, &s_session, &f.names.messages, &names.messages, MirrorTable::Messages).await;
        wait_equal(&f.session, &s_session, &f.names.events, &names.events, MirrorTable::Events).await;
    }

    // Workload C on the primary reaches both standbys through Kafka.
    workload(&f, &mut rng, 15, &mut next_event, &mut versions).await;
    for names in [&fol_names, &sby_names] {
        wait_equal(&f.session, &s_session, &f.names.messages, &names.messages, MirrorTable::Messages).await;
        wait_equal(&f.session, &s_session, &f.names.events, &names.events, MirrorTable::Events).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while standby_mirror.log_text().matches("mirror reconciled snapshot").count() < 2 {
        assert!(Instant::now() < deadline, "the standby's mirror never subscribed; log:\n{}", standby_mirror.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = reqwest::get(format!("{}/metrics", standby_mirror.metrics)).await.unwrap().text().await.unwrap();
    let sent: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("dhbus_mirror_records_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(sent, 0.0, "the standby's mirror sent records back to Kafka:\n{metrics}");
    // And in the topics themselves: no (key, version) twice, no event twice.
    for (table, topic) in [(MirrorTable::Messages, &f.topics.messages), (MirrorTable::Events, &f.topics.events)] {
        // (A deleted message may be created again from version 1: a tombstone starts its history anew.)
        let mut seen: HashMap<String, HashSet<Option<i64>>> = HashMap::new();
        for (k, v) in records(&bootstrap, topic, table) {
            if table == MirrorTable::Messages && v.is_none() {
                seen.remove(&k);
                continue;
            }
            assert!(seen.entry(k.clone()).or_default().insert(v), "{topic}: record {k} version {v:?} appears twice (an echo)");
        }
    }
    stop.cancel();
    mirror.await.unwrap();
    s_session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_acks_answer_only_once_kafka_has_the_change() {
    let kafka = common::OwnKafka::start();
    let ns = common::unique_name("dur");
    let p = common::DhbusProcess::start(
        &ns,
        &[
            ("DHBUS_COMPONENTS", "bus,mirror"),
            ("DHBUS_DURABLE_ACKS", "1"),
            ("DEEPHAVEN_KAFKA_MIRROR_TOPIC", &ns),
            ("KAFKA_BOOTSTRAP_SERVERS", &kafka.bootstrap),
        ],
    );
    let topics = MirrorTopics::new(&ns).unwrap();
    let bus = DeephavenBus::connect(&p.addr, None).await.unwrap();
    let version_in_kafka = |id: &str| -> Option<i64> {
        records(&kafka.bootstrap, &topics.messages, MirrorTable::Messages).into_iter().filter(|(k, _)| k == id).filter_map(|(_, v)| v).max()
    };
    // Each answer comes after Kafka acknowledged the version it reports.
    for i in 0..5 {
        let id = bus.publish(vec![NewMessage { topic: "durable".into(), payload_json: format!("{{\"i\":{i}}}"), ..Default::default() }]).await.unwrap().remove(0);
        assert_eq!(version_in_kafka(&id), Some(1), "publish of {id} answered before Kafka had version 1");
        let claimed = bus.claim("durable", None, "agent-1", 1, Duration::from_secs(30), Duration::from_secs(5)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let m = &claimed[0];
        assert_eq!(version_in_kafka(&m.message_id), Some(m.version), "claim answered before Kafka had version {}", m.version);
        bus.ack(DeephavenBus::lease_of(m), "{}").await.unwrap();
        assert_eq!(version_in_kafka(&m.message_id), Some(m.version + 1), "ack answered before Kafka had the acked version");
    }
    // With the broker down an operation does not answer; it completes once the broker is back.
    kafka.stop();
    let b2 = bus.clone();
    let pending = tokio::spawn(async move { b2.publish(vec![NewMessage { topic: "durable".into(), payload_json: "{}".into(), ..Default::default() }]).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!pending.is_finished(), "publish answered while Kafka was down");
    kafka.start_again();
    let id = tokio::time::timeout(Duration::from_secs(90), pending).await.expect("publish answers once Kafka is back").unwrap().unwrap().remove(0);
    assert_eq!(version_in_kafka(&id), Some(1), "the publish that waited is in Kafka");
    drop(p);
}

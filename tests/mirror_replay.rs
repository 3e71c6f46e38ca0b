//! The Kafka mirror and replay against a real Deephaven and the real broker:
//! fidelity of the topics, replay into a fresh server, idempotence, and
//! corrupt records.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::mirror::{assert_topic_equals_table, fixture, workload};
use dhbus::deephaven::{Session, SessionPool, TableHandle};
use dhbus::mirror::codec::MirrorTable;
use dhbus::mirror::replay::{replay, table_checksum, ReplayPlan};
use dhbus::mirror::service::{run as run_mirror, MirrorConfig};
use dhbus::ops::readiness::Readiness;
use dhbus::schema::TableNames;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_is_exact_replay_rebuilds_a_fresh_server_and_is_idempotent() {
    let bootstrap = common::kafka_servers();
    let pool = SessionPool::connect(common::dh_config()).await.unwrap();
    let f = fixture(pool.session().await).await;
    let cfg = MirrorConfig::new(bootstrap.clone(), f.topics.clone(), 3, f.names.clone());
    let stop = CancellationToken::new();
    let mirror = tokio::spawn(run_mirror(pool.clone(), cfg.clone(), None, Readiness::default(), stop.clone()));
    let mut rng = StdRng::seed_from_u64(7);
    let (mut next_event, mut versions) = (0u64, HashMap::new());
    workload(&f, &mut rng, 40, &mut next_event, &mut versions).await;
    assert_topic_equals_table(&f, &bootstrap, MirrorTable::Messages).await;
    assert_topic_equals_table(&f, &bootstrap, MirrorTable::Events).await;

    // Restart the mirror: rows changed and deleted while it was away are reconciled.
    stop.cancel();
    mirror.await.unwrap();
    workload(&f, &mut rng, 20, &mut next_event, &mut versions).await;
    let stop = CancellationToken::new();
    let mirror = tokio::spawn(run_mirror(pool.clone(), cfg.clone(), None, Readiness::default(), stop.clone()));
    assert_topic_equals_table(&f, &bootstrap, MirrorTable::Messages).await;
    assert_topic_equals_table(&f, &bootstrap, MirrorTable::Events).await;
    stop.cancel();
    mirror.await.unwrap();

    // Replay into a fresh Deephaven: every column equal (checksums of full rows), twice.
    let fresh = common::OwnDeephaven::start(&[]);
    let session = Session::connect(fresh.config.clone()).await.unwrap();
    let plan = ReplayPlan {
        bootstrap: bootstrap.clone(),
        topics: f.topics.clone(),
        start: HashMap::new(),
        tables: vec![MirrorTable::Messages, MirrorTable::Events],
        names: f.names.clone(),
        dry_run: false,
        skip_corrupt: None,
        progress_bar: false,
        ledger: None,
    };
    let first = replay(&session, plan.clone()).await.unwrap();
    let second = replay(&session, plan.clone()).await.unwrap();
    for table in [MirrorTable::Messages, MirrorTable::Events] {
        let name = match table {
            MirrorTable::Messages => &f.names.messages,
            MirrorTable::Events => &f.names.events,
        };
        let orig = table_checksum(&TableHandle::open(&f.session, name).await.unwrap(), table, name).await.unwrap();
        let rebuilt = table_checksum(&TableHandle::open(&session, name).await.unwrap(), table, name).await.unwrap();
        assert_eq!(rebuilt, orig, "{table}: replayed table differs from the original");
        assert_eq!(first.tables[name].checksum, second.tables[name].checksum, "{table}: second replay changed the table");
        assert_eq!(second.tables[name].rows, orig.0);
    }
    assert_eq!(second.tables[&f.names.events].rows_written, 0, "events already present are not appended again");

    // A corrupt record: a clear error naming where it is, nothing half-applied.
    let producer: rdkafka::producer::FutureProducer = dhbus::mirror::kafka_config::producer_config(&bootstrap).create().unwrap();
    producer
        .send(rdkafka::producer::FutureRecord::to(&f.topics.messages).key("m9999").payload(&b"\xc3\x01garbage"[..]).partition(0), Duration::from_secs(5))
        .await
        .unwrap();
    let other = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&common::unique_name("cor")));
    let corrupt_plan = ReplayPlan { names: other.clone(), tables: vec![MirrorTable::Messages], ..plan.clone() };
    let err = replay(&session, corrupt_plan.clone()).await.expect_err("a corrupt record stops replay");
    let text = err.to_string();
    assert!(text.contains(&f.topics.messages) && text.contains(":0:"), "error must name topic and partition:offset: {text}");
    assert!(matches!(TableHandle::open(&session, &other.messages).await, Err(dhbus::deephaven::DeephavenError::TableNotFound { .. })), "nothing may be written before the fold completes");
    let skip = tempfile::NamedTempFile::new().unwrap();
    let skipped = replay(&session, ReplayPlan { skip_corrupt: Some(skip.path().to_path_buf()), ..corrupt_plan }).await.unwrap();
    let line = std::fs::read_to_string(skip.path()).unwrap();
    // The broker may hold the one bad record twice (a retried produce); every skipped record must be it.
    let n = skipped.tables[&other.messages].corrupt_skipped;
    assert!(n >= 1 && line.lines().count() as u64 == n, "skip file: {line}");
    assert!(line.lines().all(|l| l.contains("bTk5OTk=")), "only the corrupt record is skipped: {line}");
    assert_eq!(skipped.tables[&other.messages].rows, versions.len() as u64);
    assert!(line.contains("\"offset\"") && line.contains("bTk5OTk="), "skip file records the corrupt record (key m9999 in base64): {line}");
    session.close().await.unwrap();
}

//! The Kafka mirror and replay against a real Deephaven and the real broker:
//! fidelity of the topics, replay into a fresh server, idempotence, and
//! corrupt records.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use dhbus::deephaven::{InputTable, Session, SessionPool, TableHandle};
use dhbus::mirror::codec::{rows_to_batch, EventRow, MessageRow, MirrorTable, RecordDecoder, Row};
use dhbus::mirror::durable::DurableAcks;
use dhbus::mirror::fold::Folder;
use dhbus::mirror::readback::{read_all, StartAt};
use dhbus::mirror::replay::{replay, table_checksum, ReplayPlan};
use dhbus::mirror::service::{run as run_mirror, MirrorConfig};
use dhbus::mirror::topics::MirrorTopics;
use dhbus::ops::readiness::Readiness;
use dhbus::schema::TableNames;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

fn message(id: &str, version: i64, status: &str, rng: &mut StdRng) -> Row {
    Row::Message(MessageRow {
        message_id: Some(id.to_string()),
        ts: Some(1_700_000_000_000_000_000 + rng.random_range(0..1_000_000_000i64)),
        ingest_ts: Some(1_700_000_000_000_000_000),
        topic: Some(format!("topic-{}", rng.random_range(0..3))),
        session_id: Some(format!("s{}", rng.random_range(0..5))),
        task_id: None,
        agent_id: Some("producer".into()),
        role: Some("agent".into()),
        msg_type: Some("json".into()),
        payload_json: Some(format!("{{\"n\":{},\"text\":\"héllo\"}}", rng.random_range(0..1000))),
        payload_blob_ref: None,
        priority: Some(rng.random_range(0..10)),
        ttl_ms: Some(0),
        lease_owner: None,
        lease_expires_ts: Some(0),
        status: Some(status.to_string()),
        retry_count: Some(0),
        lease_epoch: Some(version),
        version: Some(version),
        updated_ts: Some(dhbus::bus::clock::now_ns()),
    })
}

fn event(i: u64, msg: &str) -> Row {
    Row::Event(EventRow {
        event_id: Some(format!("ev-{i:08}")),
        ts: Some(dhbus::bus::clock::now_ns()),
        agent_id: Some("a1".into()),
        session_id: Some("s1".into()),
        message_id: Some(msg.to_string()),
        event: Some("publish".into()),
        details_json: Some("{}".into()),
    })
}

/// Folds a topic read independently of dhbus's mirror (plain consumer + decoder).
fn fold_topic(bootstrap: &str, topic: &str, table: MirrorTable) -> Folder {
    let decoder = RecordDecoder::new().unwrap();
    let mut folder = Folder::new(table);
    read_all(bootstrap, topic, &StartAt::Earliest, Duration::from_millis(500), |r| {
        let rec = decoder.decode(table, r.key.as_deref().unwrap(), r.value.as_deref()).expect("every mirrored record decodes");
        folder.apply(&rec.key, rec.row).unwrap();
        Ok(())
    })
    .unwrap();
    folder
}

struct Fixture {
    names: TableNames,
    topics: MirrorTopics,
    messages: InputTable,
    events: InputTable,
    session: Session,
}

async fn fixture(session: Session) -> Fixture {
    let ns = common::unique_name("mir");
    let names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&ns));
    dhbus::bootstrap::bootstrap(&session, &names).await.unwrap();
    let topics = MirrorTopics::new(&ns).unwrap();
    let messages = InputTable::new(TableHandle::open(&session, &names.messages).await.unwrap(), vec!["message_id".into()]);
    let events = InputTable::new(TableHandle::open(&session, &names.events).await.unwrap(), vec![]);
    Fixture { names, topics, messages, events, session }
}

/// Random workload: upserts with growing versions, deletes, events.
async fn workload(f: &Fixture, rng: &mut StdRng, rounds: usize, next_event: &mut u64, versions: &mut HashMap<String, i64>) {
    for _ in 0..rounds {
        let mut rows = Vec::new();
        for _ in 0..rng.random_range(1..40) {
            let id = format!("m{:04}", rng.random_range(0..300));
            if rows.iter().any(|r: &Row| r.key() == Some(id.as_str())) {
                continue;
            }
            let v = versions.entry(id.clone()).or_insert(0);
            *v += 1;
            let status = ["queued", "processing", "done"][rng.random_range(0..3)];
            rows.push(message(&id, *v, status, rng));
        }
        f.messages.add(vec![rows_to_batch(MirrorTable::Messages, &rows).unwrap()]).await.unwrap();
        if rng.random_bool(0.3) {
            let doomed: Vec<String> = versions.keys().take(rng.random_range(1..5)).cloned().collect();
            for d in &doomed {
                versions.remove(d);
            }
            let keys = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("message_id", DataType::Utf8, true)])),
                vec![Arc::new(StringArray::from(doomed))],
            )
            .unwrap();
            f.messages.delete(keys).await.unwrap();
        }
        let evs: Vec<Row> = (0..rng.random_range(1..20))
            .map(|_| {
                *next_event += 1;
                event(*next_event, "m0001")
            })
            .collect();
        f.events.add(vec![rows_to_batch(MirrorTable::Events, &evs).unwrap()]).await.unwrap();
    }
}

/// Waits until the topic folds to the table's checksum (the mirror is async).
async fn assert_topic_equals_table(f: &Fixture, bootstrap: &str, table: MirrorTable) {
    let (topic, name) = match table {
        MirrorTable::Messages => (&f.topics.messages, &f.names.messages),
        MirrorTable::Events => (&f.topics.events, &f.names.events),
    };
    let handle = TableHandle::open(&f.session, name).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (rows, sum) = table_checksum(&handle, table, name).await.unwrap();
        let (b, t) = (bootstrap.to_string(), topic.clone());
        let folder = tokio::task::spawn_blocking(move || fold_topic(&b, &t, table)).await.unwrap();
        if folder.len() as u64 == rows && folder.checksum() == sum {
            return;
        }
        assert!(Instant::now() < deadline, "{table}: topic folds to {} rows / {:x}, table has {rows} / {sum:x}", folder.len(), folder.checksum());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_is_exact_replay_rebuilds_a_fresh_server_and_is_idempotent() {
    let bootstrap = common::kafka_servers();
    let pool = SessionPool::connect(common::dh_config()).await.unwrap();
    let f = fixture(pool.session().await).await;
    let cfg = MirrorConfig { bootstrap: bootstrap.clone(), topics: f.topics.clone(), partitions: 3, tables: f.names.clone() };
    let stop = CancellationToken::new();
    let mirror = tokio::spawn(run_mirror(pool.clone(), cfg.clone(), DurableAcks::default(), Readiness::default(), stop.clone()));
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
    let mirror = tokio::spawn(run_mirror(pool.clone(), cfg.clone(), DurableAcks::default(), Readiness::default(), stop.clone()));
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

//! Helpers of the mirror and replay tests: a namespace of tables with their
//! topics, a random workload, and a fold of a topic read independently of
//! dhbus's mirror.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use dhbus::deephaven::{InputTable, Session, TableHandle};
use dhbus::mirror::codec::{rows_to_batch, EventRow, MessageRow, MirrorTable, RecordDecoder, Row};
use dhbus::mirror::fold::Folder;
use dhbus::mirror::readback::{read_all, StartAt};
use dhbus::mirror::replay::table_checksum;
use dhbus::mirror::topics::MirrorTopics;
use dhbus::schema::TableNames;
use rand::rngs::StdRng;
use rand::Rng;

pub fn message(id: &str, version: i64, status: &str, rng: &mut StdRng) -> Row {
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

pub fn event(i: u64, msg: &str) -> Row {
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
pub fn fold_topic(bootstrap: &str, topic: &str, table: MirrorTable) -> Folder {
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

pub struct Fixture {
    /// The tables (a namespace of their own).
    pub names: TableNames,
    /// Their mirror topics.
    pub topics: MirrorTopics,
    /// Writer of the messages table.
    pub messages: InputTable,
    /// Writer of the events table.
    pub events: InputTable,
    /// The session they were opened on.
    pub session: Session,
}

pub async fn fixture(session: Session) -> Fixture {
    let ns = super::unique_name("mir");
    let names = TableNames::new("agent_messages", "agent_events", "agent_metrics", Some(&ns));
    dhbus::bootstrap::bootstrap(&session, &names).await.unwrap();
    let topics = MirrorTopics::new(&ns).unwrap();
    let messages = InputTable::new(TableHandle::open(&session, &names.messages).await.unwrap(), vec!["message_id".into()]);
    let events = InputTable::new(TableHandle::open(&session, &names.events).await.unwrap(), vec![]);
    Fixture { names, topics, messages, events, session }
}

/// Random workload: upserts with growing versions, deletes, events.
pub async fn workload(f: &Fixture, rng: &mut StdRng, rounds: usize, next_event: &mut u64, versions: &mut HashMap<String, i64>) {
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
pub async fn assert_topic_equals_table(f: &Fixture, bootstrap: &str, table: MirrorTable) {
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


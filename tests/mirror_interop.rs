//! Interoperability of the mirror's record format: Deephaven's own Kafka
//! consumer (`deephaven.stream.kafka.consume`) reads the mirrored topics,
//! and Apache Avro's Java `BinaryMessageDecoder` (the reference reader of
//! Avro single-object encoding) decodes every value with the writer schema
//! from `schemas/avro/`. The decoded, folded topics equal the source tables.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use common::mirror::{assert_topic_equals_table, fixture, workload};
use dhbus::deephaven::{Console, SessionPool, TableHandle};
use dhbus::mirror::codec::MirrorTable;
use dhbus::mirror::service::{run as run_mirror, MirrorConfig};
use dhbus::ops::readiness::Readiness;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

/// Python run in Deephaven's console: consume a topic raw (key string, value
/// bytes), then decode and fold it with Avro's Java single-object decoder.
const CONSUME: &str = r#"
from deephaven.stream.kafka import consumer as kc
from deephaven import dtypes
globals()[OUT + '_raw'] = kc.consume({'bootstrap.servers': BOOTSTRAP, 'auto.offset.reset': 'earliest'}, TOPIC,
    key_spec=kc.simple_spec('key', dtypes.string), value_spec=kc.simple_spec('value', dtypes.byte_array),
    table_type=kc.TableType.append())
globals()[OUT + '_count'] = globals()[OUT + '_raw'].count_by('n')
"#;

const DECODE: &str = r#"
import jpy
from deephaven import new_table
from deephaven.column import string_col
_schema = jpy.get_type('org.apache.avro.Schema$Parser')().parse(SCHEMA)
_decoder = jpy.get_type('org.apache.avro.message.BinaryMessageDecoder')(jpy.get_type('org.apache.avro.generic.GenericData').get(), _schema)
_latest = {}
for _row in globals()[OUT + '_raw'].snapshot().iter_dict(cols=['key', 'value']):
    _v = _row['value']
    if _v is None:
        _latest.pop(_row['key'], None)
        continue
    if not isinstance(_v, jpy.get_type('java.lang.Object')):
        _v = jpy.array('byte', [b - 256 if b > 127 else b for b in bytes(_v)])
    _rec = _decoder.decode(_v)
    _latest[_row['key']] = [None if _rec.get(f) is None else str(_rec.get(f)) for f in FIELDS]
_keys = sorted(_latest)
globals()[OUT + '_folded'] = new_table([string_col('key', _keys)] + [string_col(f, [_latest[k][i] for k in _keys]) for i, f in enumerate(FIELDS)])
"#;

/// Prefixes a script with its inputs bound as Python literals (JSON strings
/// are valid Python literals): values are never pasted into the code itself.
fn script(template: &str, vars: &[(&str, String)]) -> String {
    let mut s: String = vars.iter().map(|(name, value)| format!("{name} = {value}\n")).collect();
    s.push_str(template);
    s
}

fn py_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Records Kafka holds on `topic` (sum of high - low watermarks).
fn topic_count(bootstrap: &str, topic: &str) -> i64 {
    let c: BaseConsumer = dhbus::mirror::kafka_config::consumer_config(bootstrap, "dhbus-test-count").create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (lo, hi) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
            hi - lo
        })
        .sum()
}

/// Column `name` of `batch` as text per row (None for null), as Java's
/// `String.valueOf` prints it.
fn column_text(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = batch.column_by_name(name).unwrap_or_else(|| panic!("column {name} missing"));
    (0..batch.num_rows())
        .map(|i| {
            if col.is_null(i) {
                return None;
            }
            Some(match col.data_type() {
                DataType::Utf8 => col.as_string::<i32>().value(i).to_string(),
                DataType::LargeUtf8 => col.as_string::<i64>().value(i).to_string(),
                DataType::Int64 => col.as_primitive::<arrow::datatypes::Int64Type>().value(i).to_string(),
                DataType::Int32 => col.as_primitive::<arrow::datatypes::Int32Type>().value(i).to_string(),
                other => panic!("column {name}: unexpected type {other}"),
            })
        })
        .collect()
}

/// key → field texts of a table snapshot.
fn keyed(batch: &RecordBatch, key: &str, fields: &[&str]) -> HashMap<String, Vec<Option<String>>> {
    let keys = column_text(batch, key);
    let cols: Vec<Vec<Option<String>>> = fields.iter().map(|f| column_text(batch, f)).collect();
    keys.into_iter().enumerate().map(|(i, k)| (k.expect("key never null"), cols.iter().map(|c| c[i].clone()).collect())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deephavens_own_kafka_consumer_and_avros_decoder_read_the_mirror() {
    let bootstrap = common::kafka_servers();
    let pool = SessionPool::connect(common::dh_config()).await.unwrap();
    let f = fixture(pool.session().await).await;
    let cfg = MirrorConfig::new(bootstrap.clone(), f.topics.clone(), 3, f.names.clone());
    let stop = CancellationToken::new();
    let mirror = tokio::spawn(run_mirror(pool.clone(), cfg, None, Readiness::default(), stop.clone()));
    let mut rng = StdRng::seed_from_u64(11);
    let (mut next_event, mut versions) = (0u64, HashMap::new());
    workload(&f, &mut rng, 30, &mut next_event, &mut versions).await;
    assert_topic_equals_table(&f, &bootstrap, MirrorTable::Messages).await;
    assert_topic_equals_table(&f, &bootstrap, MirrorTable::Events).await;
    stop.cancel();
    mirror.await.unwrap();

    let console = Console::start(&f.session).await.unwrap();
    let cases = [
        (MirrorTable::Messages, &f.topics.messages, &f.names.messages, vec!["message_id", "version", "status", "payload_json", "priority", "updated_ts"]),
        (MirrorTable::Events, &f.topics.events, &f.names.events, vec!["event_id", "event", "message_id", "ts", "details_json"]),
    ];
    for (table, topic, name, fields) in cases {
        let out = common::unique_name("interop");
        let schema = std::fs::read_to_string(format!("{}/schemas/avro/{}.avsc", env!("CARGO_MANIFEST_DIR"), table.name())).unwrap();
        let fields_py = format!("[{}]", fields.iter().map(|f| py_str(f)).collect::<Vec<_>>().join(", "));
        let vars = [("BOOTSTRAP", py_str(&bootstrap)), ("TOPIC", py_str(topic)), ("OUT", py_str(&out)), ("SCHEMA", py_str(&schema)), ("FIELDS", fields_py)];
        console.run(&script(CONSUME, &vars)).await.unwrap();
        let want = topic_count(&bootstrap, topic);
        assert!(want > 0, "{topic} holds records");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let snap = TableHandle::open(&f.session, &format!("{out}_count")).await.unwrap().snapshot().await.unwrap();
            let n = if snap.num_rows() == 0 { 0 } else { snap.column_by_name("n").unwrap().as_primitive::<arrow::datatypes::Int64Type>().value(0) };
            if n >= want {
                assert_eq!(n, want, "Deephaven's consumer read more records than the topic holds");
                break;
            }
            assert!(Instant::now() < deadline, "Deephaven's consumer read {n} of {want} records of {topic}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        console.run(&script(DECODE, &vars)).await.unwrap();
        let folded = TableHandle::open(&f.session, &format!("{out}_folded")).await.unwrap().snapshot().await.unwrap();
        let source = TableHandle::open(&f.session, name).await.unwrap().snapshot().await.unwrap();
        let got = keyed(&folded, "key", &fields);
        let expected = keyed(&source, table.key_column(), &fields);
        assert!(!expected.is_empty());
        assert_eq!(got.len(), expected.len(), "{table}: Deephaven's consumer folds to {} rows, the table has {}", got.len(), expected.len());
        for (k, row) in &expected {
            assert_eq!(got.get(k), Some(row), "{table}: row {k} as Avro's Java decoder reads it from Kafka");
        }
    }
    f.session.close().await.unwrap();
}

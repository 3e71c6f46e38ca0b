//! The Deephaven client against a real server: auth, sessions, input tables,
//! DoPut/DoGet, filtered views and typed errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use dhbus::deephaven::{create_input_table, Credentials, DeephavenError, Filter, InputKind, InputTable, Session, TableHandle};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("kind", DataType::Int32, true),
    ]))
}

fn rows(ids: &[&str], n: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(ids.to_vec())),
            Arc::new(Int64Array::from(n.to_vec())),
            Arc::new(Int32Array::from(n.iter().map(|v| (*v % 7) as i32).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn wrong_key_is_an_auth_error() {
    let mut config = common::dh_config();
    config.credentials = Credentials::Psk("definitely-not-the-key".into());
    let err = Session::connect(config).await.expect_err("a wrong key must not log in");
    assert!(matches!(err, DeephavenError::Auth { .. }), "expected an auth error, got {err:?}");
}

#[tokio::test]
async fn missing_table_is_named() {
    let session = Session::connect(common::dh_config()).await.unwrap();
    let name = common::unique_name("nope");
    let err = TableHandle::open(&session, &name).await.expect_err("table does not exist");
    match err {
        DeephavenError::TableNotFound { name: n } => assert_eq!(n, name),
        other => panic!("expected TableNotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn keyed_input_table_upserts_deletes_and_snapshots() {
    let session = Session::connect(common::dh_config()).await.unwrap();
    let name = common::unique_name("it_keyed");
    let table = create_input_table(&session, &name, &schema(), InputKind::Keyed(vec!["id".into()])).await.unwrap();
    let input = InputTable::new(table.clone(), vec!["id".into()]);
    input.add(vec![rows(&["a", "b", "c"], &[1, 2, 3])]).await.unwrap();
    input.add(vec![rows(&["b"], &[20])]).await.unwrap();
    let keys = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["a"]))],
    )
    .unwrap();
    input.delete(keys).await.unwrap();
    let snap = table.snapshot().await.unwrap();
    let ids = snap.column_by_name("id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    let n = snap.column_by_name("n").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    let mut got: Vec<(String, i64)> = (0..snap.num_rows()).map(|i| (ids.value(i).to_string(), n.value(i))).collect();
    got.sort();
    assert_eq!(got, vec![("b".to_string(), 20), ("c".to_string(), 3)]);

    // A filtered view with a quoted value, and an injection attempt that stays a literal.
    let view = table.filter(&[Filter::eq_str("id", "c").unwrap()]).await.unwrap();
    assert_eq!(view.snapshot().await.unwrap().num_rows(), 1);
    let evil = table.filter(&[Filter::eq_str("id", "c\" || true || \"").unwrap()]).await.unwrap();
    assert_eq!(evil.snapshot().await.unwrap().num_rows(), 0, "injection attempt must match nothing");
    session.close().await.unwrap();
}

#[tokio::test]
async fn doput_with_wrong_schema_names_the_column() {
    let session = Session::connect(common::dh_config()).await.unwrap();
    let name = common::unique_name("it_schema");
    let table = create_input_table(&session, &name, &schema(), InputKind::AppendOnly).await.unwrap();
    let input = InputTable::new(table, vec![]);
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Utf8, true),
            Field::new("kind", DataType::Int32, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["x"])),
            Arc::new(StringArray::from(vec!["not a number"])),
            Arc::new(Int32Array::from(vec![1])),
        ],
    )
    .unwrap();
    match input.add(vec![wrong]).await {
        Err(DeephavenError::SchemaMismatch { column, .. }) => assert_eq!(column, "n"),
        other => panic!("expected a schema mismatch naming `n`, got {other:?}"),
    }
    // The server's own check (bypassing the client's) is mapped to the same typed error.
    let one = Arc::new(Schema::new(vec![Field::new("n", DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(one.clone(), vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
    let up = dhbus::deephaven::input::upload(&session, one, vec![batch]).await.unwrap();
    match input.add_table(&up).await {
        Err(DeephavenError::SchemaMismatch { column, detail }) => assert_eq!(column, "n", "{detail}"),
        other => panic!("expected the server's refusal as a schema mismatch naming `n`, got {other:?}"),
    }
    session.close().await.unwrap();
}

#[tokio::test]
async fn big_upload_round_trips_through_doget() {
    let session = Session::connect(common::dh_config()).await.unwrap();
    let name = common::unique_name("it_big");
    let table = create_input_table(&session, &name, &schema(), InputKind::AppendOnly).await.unwrap();
    let input = InputTable::new(table.clone(), vec![]);
    let ids: Vec<String> = (0..50_000).map(|i| format!("row-{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let n: Vec<i64> = (0..50_000).collect();
    input.add(vec![rows(&id_refs, &n)]).await.unwrap();
    let snap = table.snapshot().await.unwrap();
    assert_eq!(snap.num_rows(), 50_000);
    let got = snap.column_by_name("n").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(got.iter().flatten().sum::<i64>(), n.iter().sum::<i64>());
    assert_eq!(got.null_count(), 0);
}

/// A session outlives several token rotations and session lifetimes: a server
/// of the test's own with a 10 s session lifetime (the server's minimum), used for 40 s.
#[tokio::test]
async fn session_survives_token_rotation_and_lifetimes() {
    let server = common::OwnDeephaven::start(&["-Dhttp.session.durationMs=10000"]);
    let mut config = server.config.clone();
    config.heartbeat = Duration::from_secs(30); // capped to a third of the lifetime by the client
    let session = Session::connect(config).await.unwrap();
    let name = common::unique_name("it_life");
    let table = create_input_table(&session, &name, &schema(), InputKind::AppendOnly).await.unwrap();
    let input = InputTable::new(table.clone(), vec![]);
    let start = session.token_rotations();
    for i in 0..5 {
        tokio::time::sleep(Duration::from_secs(8)).await;
        input.add(vec![rows(&["x"], &[i])]).await.unwrap_or_else(|e| panic!("write {i} after {}s failed: {e}", (i + 1) * 8));
    }
    assert_eq!(table.snapshot().await.unwrap().num_rows(), 5);
    let rotations = session.token_rotations() - start;
    assert!(rotations >= 3, "expected several token rotations in 40 s, saw {rotations}");
    session.close().await.unwrap();
}

//! Subscription fidelity against a real server: random upserts and deletes on
//! a keyed input table, observed through a plain, a sorted and a filtered
//! view; at each quiet point every client-side copy equals a DoGet snapshot
//! of its view exactly (same rows, same order, same values, same nulls).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use dhbus::deephaven::barrage::{subscribe, SubscribeOptions, Subscription};
use dhbus::deephaven::{create_input_table, Filter, FilterOp, FilterValue, InputKind, InputTable, Session, TableHandle};
use futures::{FutureExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("grp", DataType::Int32, true),
        Field::new("val", DataType::Int64, true),
        Field::new("txt", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]))
}

fn random_rows(rng: &mut StdRng, n: usize, pool: usize) -> RecordBatch {
    let mut ids: Vec<String> = (0..n).map(|_| format!("k{:04}", rng.random_range(0..pool))).collect();
    ids.sort();
    ids.dedup();
    let m = ids.len();
    let grp: Vec<Option<i32>> = (0..m).map(|_| rng.random_bool(0.9).then(|| rng.random_range(0..10))).collect();
    let val: Vec<Option<i64>> = (0..m).map(|_| rng.random_bool(0.95).then(|| rng.random_range(-1_000_000..1_000_000))).collect();
    let txt: Vec<Option<String>> = (0..m).map(|_| rng.random_bool(0.8).then(|| format!("t{}-é\"{}", rng.random_range(0..100), rng.random_range(0..9)))).collect();
    let score: Vec<Option<f64>> = (0..m).map(|_| rng.random_bool(0.9).then(|| rng.random_range(-1e6..1e6))).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Int32Array::from(grp)),
            Arc::new(Int64Array::from(val)),
            Arc::new(StringArray::from(txt)),
            Arc::new(Float64Array::from(score)),
        ],
    )
    .unwrap()
}

/// Applies every delta the subscription has ready (never blocks).
fn drain(sub: &mut Subscription) -> usize {
    let mut n = 0;
    while let Some(Some(d)) = sub.next().now_or_never() {
        d.expect("subscription delta");
        n += 1;
    }
    n
}

fn same(a: &RecordBatch, b: &RecordBatch) -> Result<(), String> {
    if a.num_rows() != b.num_rows() {
        return Err(format!("row count {} vs {}", a.num_rows(), b.num_rows()));
    }
    for f in schema().fields() {
        let x = a.column_by_name(f.name()).ok_or(format!("client copy lacks {}", f.name()))?;
        let y = b.column_by_name(f.name()).ok_or(format!("snapshot lacks {}", f.name()))?;
        if x.to_data() != y.to_data() {
            return Err(format!("column {} differs", f.name()));
        }
    }
    Ok(())
}

/// Waits (up to 10 s) until the client copy of `sub` equals a DoGet of `view`.
async fn converge(name: &str, sub: &mut Subscription, view: &TableHandle) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        drain(sub);
        let expected = view.snapshot().await.expect("DoGet snapshot");
        // The server may still be sending the last update: apply it and compare again.
        tokio::time::sleep(Duration::from_millis(20)).await;
        drain(sub);
        // (An error here: the initial snapshot is still arriving; wait for it.)
        let got = sub.snapshot().map_err(|e| e.to_string());
        match got.and_then(|got| same(&got, &expected)) {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{name}: client copy differs from DoGet after 10 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_copies_equal_snapshots_through_plain_sorted_and_filtered_views() {
    let session = Session::connect(common::dh_config()).await.unwrap();
    let name = common::unique_name("fid");
    let table = create_input_table(&session, &name, &schema(), InputKind::Keyed(vec!["id".into()])).await.unwrap();
    let input = InputTable::new(table.clone(), vec!["id".into()]);
    let sorted = table.sort(&[("val", true), ("id", false)]).await.unwrap();
    let filtered = table.filter(&[Filter::cmp("grp", FilterOp::Lt, FilterValue::Int(5)).unwrap()]).await.unwrap();
    let opts = SubscribeOptions { min_update_interval_ms: 20, ..SubscribeOptions::default() };
    let mut subs = vec![
        ("plain", subscribe(&table, opts.clone()).await.unwrap(), table.clone()),
        ("sorted", subscribe(&sorted, opts.clone()).await.unwrap(), sorted.clone()),
        ("filtered", subscribe(&filtered, opts.clone()).await.unwrap(), filtered.clone()),
    ];
    let mut rng = StdRng::seed_from_u64(0xD4B5);
    let mut ops = 0usize;
    let mut rounds = 0;
    while ops < 3_000 || rounds < 20 {
        for _ in 0..rng.random_range(2..12) {
            if rng.random_bool(0.75) {
                let n = rng.random_range(1..30);
                let batch = random_rows(&mut rng, n, 400);
                ops += batch.num_rows();
                input.add(vec![batch]).await.unwrap();
            } else {
                let n = rng.random_range(1..20);
                let doomed = random_rows(&mut rng, n, 400);
                ops += doomed.num_rows();
                let keys = RecordBatch::try_new(
                    Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)])),
                    vec![doomed.column(0).clone()],
                )
                .unwrap();
                input.delete(keys).await.unwrap();
            }
        }
        rounds += 1;
        for (label, sub, view) in subs.iter_mut() {
            converge(label, sub, view).await;
        }
    }
    let rows = table.snapshot().await.unwrap().num_rows();
    assert!(rounds >= 10 && ops >= 1_000, "workload too small: {rounds} rounds, {ops} ops");
    assert!(rows > 50, "the table should hold rows at the end, holds {rows}");
    session.close().await.unwrap();
}

/// A large table's initial snapshot arrives in several chunks; the client copy
/// still equals a DoGet snapshot, and later changes apply on top of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_snapshot_arrives_in_chunks_and_equals_doget() {
    let session = Session::connect(common::dh_config()).await.unwrap();
    let name = common::unique_name("big");
    let table = create_input_table(&session, &name, &schema(), InputKind::Keyed(vec!["id".into()])).await.unwrap();
    let input = InputTable::new(table.clone(), vec!["id".into()]);
    let mut rng = StdRng::seed_from_u64(42);
    input.add(vec![random_rows(&mut rng, 150_000, 1_000_000)]).await.unwrap();
    let mut sub = subscribe(&table, SubscribeOptions::default()).await.unwrap();
    converge("big", &mut sub, &table).await;
    input.add(vec![random_rows(&mut rng, 5_000, 1_000_000)]).await.unwrap();
    converge("big after upserts", &mut sub, &table).await;
    session.close().await.unwrap();
}

/// Rows of `batch` keyed by `id`, each rendered as text (all columns).
fn keyed_rows(batch: &RecordBatch) -> Vec<(String, String)> {
    let ids = batch.column_by_name("id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    (0..batch.num_rows())
        .map(|i| {
            let text: Vec<String> = batch.columns().iter().map(|c| arrow::util::display::array_value_to_string(c, i).unwrap()).collect();
            (ids.value(i).to_string(), text.join("|"))
        })
        .collect()
}

/// A ticking table large enough that the server grows the subscription over
/// several cycles (`BarrageMessageProducer.subscriptionGrowthEnabled`, on by
/// default): the first delta is still one complete snapshot, and folding it
/// with the later deltas gives the table exactly (what the mirror relies on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_subscription_of_a_ticking_table_folds_to_doget() {
    let session = Session::connect(common::dh_config()).await.unwrap();
    let name = common::unique_name("grow");
    let table = create_input_table(&session, &name, &schema(), InputKind::Keyed(vec!["id".into()])).await.unwrap();
    let input = InputTable::new(table.clone(), vec!["id".into()]);
    let mut rng = StdRng::seed_from_u64(99);
    input.add(vec![random_rows(&mut rng, 60_000, 100_000)]).await.unwrap();
    // Keep writing while the subscription grows.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (w_input, w_stop) = (input.clone(), stop.clone());
    let writer = tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(7);
        while !w_stop.load(std::sync::atomic::Ordering::Relaxed) {
            w_input.add(vec![random_rows(&mut rng, 200, 100_000)]).await.unwrap();
            let doomed = random_rows(&mut rng, 50, 100_000);
            let keys = RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)])), vec![doomed.column(0).clone()]).unwrap();
            w_input.delete(keys).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sub = subscribe(&table, SubscribeOptions { min_update_interval_ms: 20, ..SubscribeOptions::default() }).await.unwrap();
    let mut folded = std::collections::HashMap::new();
    let first = sub.next().await.unwrap().unwrap();
    assert!(first.is_snapshot, "the first delta is the snapshot");
    assert!(first.added.num_rows() > 40_000, "the whole table in one snapshot, got {} rows", first.added.num_rows());
    let pieces = sub.initial_messages();
    assert!(pieces > 1, "the server grew the subscription over several messages (got {pieces})");
    folded.extend(keyed_rows(&first.added));
    let fold = |folded: &mut std::collections::HashMap<String, String>, d: &dhbus::deephaven::barrage::TableDelta| {
        assert!(!d.is_snapshot, "only the first delta is a snapshot");
        for (k, _) in keyed_rows(&d.removed) {
            assert!(folded.remove(&k).is_some(), "removed {k} was never added");
        }
        folded.extend(keyed_rows(&d.added));
        folded.extend(keyed_rows(&d.modified));
    };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            fold(&mut folded, &d.unwrap());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
            fold(&mut folded, &d.unwrap());
        }
        let want: std::collections::HashMap<String, String> = keyed_rows(&table.snapshot().await.unwrap()).into_iter().collect();
        if want == folded {
            break;
        }
        assert!(Instant::now() < deadline, "deltas fold to {} rows, DoGet has {}", folded.len(), want.len());
    }
    session.close().await.unwrap();
}

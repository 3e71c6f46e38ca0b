//! Deephaven client benchmarks against a real server: input-table writes
//! (rows/s at batches of 1, 100 and 10,000), Barrage delta consumption
//! (changed rows/s applied to the client-side copy) and write-to-subscriber
//! latency (p50/p99).

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use dhbus::deephaven::barrage::{subscribe, SubscribeOptions};
use dhbus::deephaven::{create_input_table, InputKind, InputTable, Session};
use futures::StreamExt;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("ts", DataType::Int64, true),
        Field::new("payload", DataType::Utf8, true),
    ]))
}

fn batch(start: usize, n: usize, pool: usize) -> RecordBatch {
    let ids: Vec<String> = (start..start + n).map(|i| format!("k{:08}", i % pool)).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Int64Array::from_iter_values((start..start + n).map(|i| i as i64))),
            Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(dhbus::bus::clock::now_ns(), n))),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("{{\"payload\":\"message body {i} for the bench\"}}")))),
        ],
    )
    .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    common::print_machine("deephaven client");
    let session = Session::connect(common::dh_config()).await.unwrap();

    // 1. Writes at batches of 1, 100, 10,000 rows (keyed upserts).
    for (size, total) in [(1usize, 500usize), (100, 50_000), (10_000, 1_000_000)] {
        let name = common::unique("bw");
        let table = create_input_table(&session, &name, &schema(), InputKind::Keyed(vec!["id".into()])).await.unwrap();
        let input = InputTable::new(table, vec!["id".into()]);
        let batches: Vec<RecordBatch> = (0..total / size).map(|b| batch(b * size, size, usize::MAX)).collect();
        let t = Instant::now();
        for (i, b) in batches.into_iter().enumerate() {
            input.add(vec![b]).await.unwrap();
            if i % 50 == 49 {
                common::progress(&format!("batch {size}: {} rows", (i + 1) * size));
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!("input-table write, batch {size:>6}: {:>10.0} rows/s ({total} rows in {s:.2} s)", total as f64 / s);
    }

    // 2. Barrage delta consumption: a 200,000-row table, then rounds that modify every row.
    let name = common::unique("bc");
    let table = create_input_table(&session, &name, &schema(), InputKind::Keyed(vec!["id".into()])).await.unwrap();
    let input = InputTable::new(table.clone(), vec!["id".into()]);
    let rows = 200_000;
    input.add(vec![batch(0, rows, rows)]).await.unwrap();
    let mut sub = subscribe(&table, SubscribeOptions { min_update_interval_ms: 50, buffer: 1024, ..Default::default() }).await.unwrap();
    // The initial snapshot may arrive in several chunks.
    let mut loaded = 0;
    while loaded < rows {
        loaded += sub.next().await.unwrap().unwrap().added.num_rows();
    }
    let rounds = 10;
    let writer = {
        let input = input.clone();
        tokio::spawn(async move {
            for r in 0..rounds {
                input.add(vec![batch(r * rows, rows, rows)]).await.unwrap();
            }
        })
    };
    let (mut changed, t) = (0usize, Instant::now());
    while changed < rounds * rows {
        let d = sub.next().await.unwrap().unwrap();
        changed += d.added.num_rows() + d.modified.num_rows() + d.removed.num_rows();
    }
    writer.await.unwrap();
    let s = t.elapsed().as_secs_f64();
    println!("barrage consumption (end to end, server included): {:>10.0} changed rows/s ({changed} rows in {s:.2} s)", changed as f64 / s);
    assert_eq!(sub.snapshot().unwrap().num_rows(), rows);

    // 3. Write-to-subscriber latency: one row at a time, seen through a subscription.
    let name = common::unique("bl");
    let table = create_input_table(&session, &name, &schema(), InputKind::Keyed(vec!["id".into()])).await.unwrap();
    let input = InputTable::new(table.clone(), vec!["id".into()]);
    let mut sub = subscribe(&table, SubscribeOptions { min_update_interval_ms: 10, ..Default::default() }).await.unwrap();
    let _ = sub.next().await;
    let mut lat = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        input.add(vec![batch(i, 1, usize::MAX)]).await.unwrap();
        loop {
            let d = sub.next().await.unwrap().unwrap();
            if d.added.num_rows() > 0 {
                break;
            }
        }
        lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let (p50, p99) = (common::percentile(&mut lat, 50.0), common::percentile(&mut lat, 99.0));
    println!("write-to-subscriber latency (min_update_interval 10 ms): p50 {:.1} ms, p99 {:.1} ms", p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);
    session.close().await.unwrap();
}

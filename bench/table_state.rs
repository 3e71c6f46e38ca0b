//! Client-side table copy, no server: how many changed rows per second
//! `TableState::apply` takes (modifies of a 1,000,000-row table, with adds
//! and removes), the cost behind Barrage delta consumption.

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use dhbus::deephaven::barrage::decode::BarrageUpdate;
use dhbus::deephaven::barrage::flatbuf::UpdateMetadata;
use dhbus::deephaven::barrage::rowset::RowSet;
use dhbus::deephaven::barrage::TableState;

fn main() {
    common::print_machine("table state (client-side copy)");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("payload", DataType::Utf8, true),
    ]));
    let rows = 1_000_000u64;
    let mut state = TableState::new(schema.clone());
    let cols = |n: u64, salt: u64| -> Vec<ArrayRef> {
        vec![
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("k{i:08}")))),
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| (i * salt) as i64))),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("{{\"v\":{}}}", i + salt)))),
        ]
    };
    let snapshot = UpdateMetadata {
        is_snapshot: true,
        added_rows: RowSet::from_range(0, rows - 1).unwrap(),
        modified_rows: vec![RowSet::new(); 3],
        ..Default::default()
    };
    let t = Instant::now();
    state.apply(BarrageUpdate { meta: snapshot, added: cols(rows, 1), modified: vec![Arc::new(StringArray::from(Vec::<String>::new())), Arc::new(Int64Array::from(Vec::<i64>::new())), Arc::new(StringArray::from(Vec::<String>::new()))] }).unwrap();
    println!("snapshot of {rows} rows applied in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    // Rounds that modify 200,000 rows (every 5th) on all columns.
    let mod_rows = RowSet::from_keys((0..rows).step_by(5)).unwrap();
    let n = mod_rows.len();
    let rounds = 20;
    let t = Instant::now();
    for r in 0..rounds {
        let meta = UpdateMetadata { modified_rows: vec![mod_rows.clone(); 3], ..Default::default() };
        let empty: Vec<ArrayRef> = vec![Arc::new(StringArray::from(Vec::<String>::new())), Arc::new(Int64Array::from(Vec::<i64>::new())), Arc::new(StringArray::from(Vec::<String>::new()))];
        state.apply(BarrageUpdate { meta, added: empty, modified: cols(n, r + 2) }).unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!("modifies applied: {:.0} changed rows/s ({} rows x 3 columns per update, {rounds} updates, {s:.2} s incl. building the input arrays)", (n * rounds) as f64 / s, n);
    assert_eq!(state.len() as u64, rows);
}

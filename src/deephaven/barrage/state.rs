//! The client-side copy of a ticking table.
//!
//! Rows live in slots; a `BTreeMap` maps each row key to its slot, so every
//! change costs O(log n) and nothing ranks rows by position. Column data stays
//! in the Arrow arrays the updates brought (append-only chunks, zero-copy):
//! per column, a slot's cell names a chunk and a row in it. Removing a row
//! frees its slot; modifying a column repoints the cell to the new values.
//! When a column's dead cells outnumber its live ones, or it has too many
//! small chunks, its live cells are gathered into one chunk (amortised O(1)).

use std::collections::btree_map::{BTreeMap, Entry};

use arrow::array::{new_empty_array, Array, ArrayRef};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::decode::{table_schema, BarrageUpdate};
use super::error::BarrageError;
use super::rowset::{RowSet, Shift};

/// Compaction ignores fewer dead cells than this (and free slots likewise).
const MIN_GARBAGE: usize = if cfg!(test) { 4 } else { 1024 };
/// A column may always hold this many chunks before compaction...
const MIN_CHUNKS: usize = if cfg!(test) { 4 } else { 64 };
/// ...or one chunk per this many live rows, whichever is more.
const ROWS_PER_CHUNK: usize = 256;

/// What one update did to the table, with the affected rows' values.
#[derive(Clone, Debug)]
pub struct TableDelta {
    /// True for the initial snapshot (the whole table, as added rows; only
    /// the first delta of a subscription).
    pub is_snapshot: bool,
    /// Keys of the added rows, increasing (post-update key space).
    pub added_keys: Vec<u64>,
    /// Values of the added rows, in `added_keys` order.
    pub added: RecordBatch,
    /// Keys of the removed rows, increasing (pre-update key space).
    pub removed_keys: Vec<u64>,
    /// Values the removed rows had before removal, in `removed_keys` order.
    pub removed: RecordBatch,
    /// Keys of rows modified in any column, increasing (post-update key space).
    pub modified_keys: Vec<u64>,
    /// All columns of the modified rows after the update, in `modified_keys` order.
    pub modified: RecordBatch,
    /// Per column, whether the update modified it in any row.
    pub modified_columns: Vec<bool>,
    /// False for a message of the initial phase that more will follow (the
    /// delta is then empty); subscriptions pass only complete deltas on.
    pub snapshot_complete: bool,
}

/// Where a cell's value lives: a chunk of the column and a row in it.
#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    /// Index into the column's chunks.
    chunk: u32,
    /// Row within that chunk.
    row: u32,
}

/// One column's data.
#[derive(Default)]
struct Column {
    /// Append-only value arrays; cells point into them.
    chunks: Vec<ArrayRef>,
    /// Per slot, the location of the slot's value.
    cells: Vec<Cell>,
    /// Total rows over all chunks (live and dead).
    stored: usize,
}

impl Column {
    /// Appends a chunk; returns its index.
    fn push_chunk(&mut self, array: ArrayRef) -> Result<u32, BarrageError> {
        let index = u32::try_from(self.chunks.len()).map_err(|_| too_large("chunks in a column"))?;
        u32::try_from(array.len()).map_err(|_| too_large("rows in one update"))?;
        self.stored += array.len();
        self.chunks.push(array);
        Ok(index)
    }

    /// The values of `slots`, in order (zero-copy when they are one run of a chunk).
    fn gather(&self, data_type: &DataType, slots: &[u32]) -> Result<ArrayRef, BarrageError> {
        let Some(&first) = slots.first() else { return Ok(new_empty_array(data_type)) };
        let start = self.cells[first as usize];
        let contiguous = slots.iter().enumerate().all(|(i, &s)| {
            let c = self.cells[s as usize];
            c.chunk == start.chunk && c.row as usize == start.row as usize + i
        });
        if contiguous {
            return Ok(self.chunks[start.chunk as usize].slice(start.row as usize, slots.len()));
        }
        // Pass interleave only the chunks these cells use.
        let mut local = vec![usize::MAX; self.chunks.len()];
        let mut arrays: Vec<&dyn Array> = Vec::new();
        let mut indices = Vec::with_capacity(slots.len());
        for &slot in slots {
            let cell = self.cells[slot as usize];
            let chunk = cell.chunk as usize;
            if local[chunk] == usize::MAX {
                local[chunk] = arrays.len();
                arrays.push(self.chunks[chunk].as_ref());
            }
            indices.push((local[chunk], cell.row as usize));
        }
        Ok(interleave(&arrays, &indices)?)
    }

    /// True when the column carries enough dead data or chunks to compact.
    fn needs_compaction(&self, live: usize) -> bool {
        let garbage = self.stored.saturating_sub(live);
        garbage > live.max(MIN_GARBAGE) || self.chunks.len() > MIN_CHUNKS.max(live / ROWS_PER_CHUNK)
    }
}

fn too_large(what: &str) -> BarrageError {
    BarrageError::Unsupported(format!("more than u32::MAX {what}"))
}

/// A ticking table kept in sync by applying [`BarrageUpdate`]s in order.
pub struct TableState {
    /// Table schema (list wrapping removed).
    schema: SchemaRef,
    /// Per column, its chunks and per-slot cells.
    columns: Vec<Column>,
    /// Row key -> slot.
    index: BTreeMap<u64, u32>,
    /// Slots of removed rows, reused by later adds.
    free: Vec<u32>,
    /// Set while an update is half-applied; a failure leaves it set.
    poisoned: bool,
    /// True until the initial snapshot is complete. A large snapshot arrives
    /// in pieces (a *growing* subscription: the server sends every key, then
    /// the rows' values a position range at a time, interleaved with ordinary
    /// updates), and nothing is reported to users until every row has values.
    initial: bool,
    /// During the initial phase, per slot: whether the row has values yet.
    populated: Vec<bool>,
    /// During the initial phase, how many live rows have no values yet.
    unpopulated: usize,
    /// Messages the initial phase took (more than one: a chunked or growing snapshot).
    initial_messages: u64,
}

impl TableState {
    /// An empty table; `schema` may be list-wrapped (as the server sends it
    /// with `columns_as_list`) or the plain table schema.
    pub fn new(schema: SchemaRef) -> Self {
        let schema = table_schema(&schema);
        let columns = schema.fields().iter().map(|_| Column::default()).collect();
        TableState { schema, columns, index: BTreeMap::new(), free: Vec::new(), poisoned: false, initial: true, populated: Vec::new(), unpopulated: 0, initial_messages: 0 }
    }

    /// How many messages the initial snapshot took (so far).
    pub fn initial_messages(&self) -> u64 {
        self.initial_messages
    }

    /// The table schema of every batch this produces.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// All rows in key order (an error while the initial snapshot is still arriving).
    pub fn snapshot(&self) -> Result<RecordBatch, BarrageError> {
        if self.unpopulated > 0 {
            return Err(BarrageError::Unsupported("the initial snapshot is still arriving".into()));
        }
        let slots: Vec<u32> = self.index.values().copied().collect();
        self.gather_batch(&slots)
    }

    /// Applies one update (removes, shifts, adds, then modifies) and returns
    /// what changed. After an error the table must be discarded: a failure
    /// half-way leaves it inconsistent and later calls return `Poisoned`.
    pub fn apply(&mut self, update: BarrageUpdate) -> Result<TableDelta, BarrageError> {
        if self.poisoned {
            return Err(BarrageError::Poisoned);
        }
        if self.initial {
            return self.apply_initial(update);
        }
        let BarrageUpdate { mut meta, added, modified } = update;
        if let Some(included) = meta.added_rows_included.take() {
            if included != meta.added_rows {
                return Err(BarrageError::Unsupported("added_rows_included differs from added_rows after the initial snapshot (viewport)".into()));
            }
        }
        let modified_rows = self.modified_rows(meta.modified_rows)?;
        self.check_columns("added", &added, |_| meta.added_rows.len())?;
        self.check_columns("modified", &modified, |i| modified_rows[i].len())?;

        // Removed rows: look them all up (and capture their values) first.
        let mut removed_keys = Vec::new();
        let mut removed_slots = Vec::new();
        for key in meta.removed_rows.iter() {
            let slot = *self.index.get(&key).ok_or(BarrageError::RemoveUnknownKey { key })?;
            removed_keys.push(key);
            removed_slots.push(slot);
        }
        let removed = self.gather_batch(&removed_slots)?;

        self.poisoned = true;
        for key in &removed_keys {
            if let Some(slot) = self.index.remove(key) {
                self.free.push(slot);
            }
        }
        self.apply_shifts(&meta.shifts)?;
        let added_keys = self.insert(&meta.added_rows, &added)?;

        let (modified_keys, modified_slots) = self.modify(&modified_rows, modified)?;
        let modified = self.gather_batch(&modified_slots)?;
        let added = self.batch(added, added_keys.len())?;
        self.compact()?;
        self.poisoned = false;
        Ok(TableDelta {
            // Only the delta that completes the initial phase is a snapshot.
            is_snapshot: false,
            added_keys,
            added,
            removed_keys,
            removed,
            modified_keys,
            modified,
            modified_columns: modified_rows.iter().map(|r| !r.is_empty()).collect(),
            snapshot_complete: true,
        })
    }

    /// Per-column modified rows, an empty set for each column when the
    /// message lists none.
    fn modified_rows(&self, rows: Vec<RowSet>) -> Result<Vec<RowSet>, BarrageError> {
        if rows.is_empty() {
            return Ok(vec![RowSet::new(); self.columns.len()]);
        }
        if rows.len() != self.columns.len() {
            return Err(BarrageError::LengthMismatch { what: "modified column nodes", expected: self.columns.len(), actual: rows.len() });
        }
        Ok(rows)
    }

    /// One message of the initial phase. Removes, shifts and added keys are
    /// in the whole table's key space; values come only for the rows in
    /// `added_rows_included` (the snapshot piece, plus rows that moved into
    /// the growing viewport), which overwrite what a row held. The phase ends
    /// with a snapshot message without a viewport once every row has values:
    /// then the whole table is reported as one snapshot delta.
    fn apply_initial(&mut self, update: BarrageUpdate) -> Result<TableDelta, BarrageError> {
        let BarrageUpdate { meta, added, modified } = update;
        self.initial_messages += 1;
        let included = meta.added_rows_included.clone().unwrap_or_else(|| meta.added_rows.clone());
        let modified_rows = self.modified_rows(meta.modified_rows)?;
        self.check_columns("added", &added, |_| included.len())?;
        self.check_columns("modified", &modified, |i| modified_rows[i].len())?;
        self.poisoned = true;
        if self.index.is_empty() && included == meta.added_rows && meta.removed_rows.is_empty() {
            // The common case: the whole snapshot in one message (slots in key order).
            self.insert(&included, &added)?;
            self.populated = vec![true; self.index.len()];
        } else {
            for key in meta.removed_rows.iter() {
                let slot = self.index.remove(&key).ok_or(BarrageError::RemoveUnknownKey { key })?;
                self.free.push(slot);
                if !std::mem::replace(&mut self.populated[slot as usize], true) {
                    self.unpopulated -= 1;
                }
            }
            self.apply_shifts(&meta.shifts)?;
            for key in meta.added_rows.iter() {
                if !self.index.contains_key(&key) {
                    let slot = self.alloc_slot()?;
                    self.index.insert(key, slot);
                    if self.populated.len() <= slot as usize {
                        self.populated.resize(slot as usize + 1, true);
                    }
                    self.populated[slot as usize] = false;
                    self.unpopulated += 1;
                }
            }
            if !included.is_empty() {
                let chunks = self.columns.iter_mut().zip(&added).map(|(c, a)| c.push_chunk(a.clone())).collect::<Result<Vec<u32>, _>>()?;
                for (row, key) in included.iter().enumerate() {
                    let slot = *self.index.get(&key).ok_or(BarrageError::ModifyUnknownKey { key, column: 0 })?;
                    for (column, &chunk) in self.columns.iter_mut().zip(&chunks) {
                        column.cells[slot as usize] = Cell { chunk, row: row as u32 };
                    }
                    if !std::mem::replace(&mut self.populated[slot as usize], true) {
                        self.unpopulated -= 1;
                    }
                }
            }
        }
        // Rows modified inside the viewport have values already; the server
        // re-sends the others when they enter it.
        self.modify(&modified_rows, modified)?;
        let complete = meta.is_snapshot && meta.effective_viewport.is_none() && self.unpopulated == 0;
        self.poisoned = false;
        if !complete {
            let empty = self.gather_batch(&[])?;
            return Ok(TableDelta {
                is_snapshot: true,
                added_keys: Vec::new(),
                added: empty.clone(),
                removed_keys: Vec::new(),
                removed: empty.clone(),
                modified_keys: Vec::new(),
                modified: empty,
                modified_columns: vec![false; self.columns.len()],
                snapshot_complete: false,
            });
        }
        self.initial = false;
        self.populated = Vec::new();
        self.compact()?;
        let added = self.snapshot()?;
        let empty = added.slice(0, 0);
        Ok(TableDelta {
            is_snapshot: true,
            added_keys: self.index.keys().copied().collect(),
            added,
            removed_keys: Vec::new(),
            removed: empty.clone(),
            modified_keys: Vec::new(),
            modified: empty,
            modified_columns: vec![false; self.columns.len()],
            snapshot_complete: true,
        })
    }

    /// Repoints the modified cells of each column to the new values; returns
    /// the keys modified in any column and their slots, in key order.
    fn modify(&mut self, rows: &[RowSet], values: Vec<ArrayRef>) -> Result<(Vec<u64>, Vec<u32>), BarrageError> {
        // Slots of the last distinct RowSet looked up, reused by columns that
        // share it (an upsert modifies every column at the same keys).
        let mut cached: Option<(usize, Vec<u32>)> = None;
        let mut distinct = 0;
        for (column, values) in values.into_iter().enumerate() {
            if rows[column].is_empty() {
                continue;
            }
            if !cached.as_ref().is_some_and(|(c, _)| rows[*c] == rows[column]) {
                let slots = rows[column]
                    .iter()
                    .map(|key| self.index.get(&key).copied().ok_or(BarrageError::ModifyUnknownKey { key, column }))
                    .collect::<Result<Vec<u32>, _>>()?;
                cached = Some((column, slots));
                distinct += 1;
            }
            let chunk = self.columns[column].push_chunk(values)?;
            if let Some((_, slots)) = &cached {
                let cells = &mut self.columns[column].cells;
                for (row, &slot) in slots.iter().enumerate() {
                    cells[slot as usize] = Cell { chunk, row: row as u32 };
                }
            }
        }
        match cached {
            None => Ok((Vec::new(), Vec::new())),
            Some((column, slots)) if distinct == 1 => Ok((rows[column].iter().collect(), slots)),
            Some(_) => {
                let mut keys: Vec<u64> = rows.iter().flat_map(RowSet::iter).collect();
                keys.sort_unstable();
                keys.dedup();
                let slots = keys.iter().map(|k| self.index[k]).collect();
                Ok((keys, slots))
            }
        }
    }

    /// Checks that per-column data matches the schema and that column `i`
    /// holds `rows(i)` values.
    fn check_columns(
        &self,
        what: &'static str,
        data: &[ArrayRef],
        rows: impl Fn(usize) -> u64,
    ) -> Result<(), BarrageError> {
        let fields = self.schema.fields();
        if data.len() != fields.len() {
            return Err(BarrageError::LengthMismatch { what, expected: fields.len(), actual: data.len() });
        }
        for (i, (array, field)) in data.iter().zip(fields).enumerate() {
            let mismatch = |detail| BarrageError::ColumnMismatch { column: i, name: field.name().clone(), detail };
            if array.len() as u64 != rows(i) {
                return Err(mismatch(format!("{} {what} values for {} {what} rows", array.len(), rows(i))));
            }
            if array.data_type() != field.data_type() {
                let (got, want) = (array.data_type(), field.data_type());
                return Err(mismatch(format!("{what} values of type {got}, schema says {want}")));
            }
        }
        Ok(())
    }

    /// Moves key ranges: negative deltas from low keys up, runs of positive
    /// deltas from high keys down, so no range lands on one not yet moved.
    fn apply_shifts(&mut self, shifts: &[Shift]) -> Result<(), BarrageError> {
        let mut i = 0;
        while i < shifts.len() {
            let run = shifts[i..].iter().take_while(|s| s.delta > 0).count();
            if run == 0 {
                self.shift(&shifts[i])?;
                i += 1;
            } else {
                for shift in shifts[i..i + run].iter().rev() {
                    self.shift(shift)?;
                }
                i += run;
            }
        }
        Ok(())
    }

    fn shift(&mut self, shift: &Shift) -> Result<(), BarrageError> {
        if shift.delta == 0 || shift.start > shift.end {
            return Ok(());
        }
        let moved: Vec<(u64, u32)> = self.index.range(shift.start..=shift.end).map(|(&k, &s)| (k, s)).collect();
        for (key, _) in &moved {
            self.index.remove(key);
        }
        for (from, slot) in moved {
            let to = from.checked_add_signed(shift.delta).ok_or(BarrageError::InvalidShift {
                start: shift.start,
                end: shift.end,
                dest: shift.start.wrapping_add_signed(shift.delta),
                reason: "destination outside the key space",
            })?;
            if self.index.insert(to, slot).is_some() {
                return Err(BarrageError::ShiftCollision { from, to });
            }
        }
        Ok(())
    }

    /// Adds the rows `keys` with values `data` (one array per column).
    fn insert(&mut self, keys: &RowSet, data: &[ArrayRef]) -> Result<Vec<u64>, BarrageError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let chunks = self
            .columns
            .iter_mut()
            .zip(data)
            .map(|(column, array)| column.push_chunk(array.clone()))
            .collect::<Result<Vec<u32>, _>>()?;
        let added: Vec<u64> = keys.iter().collect();
        if self.index.is_empty() {
            // Fast path for snapshots: slots 0..n in key order, index built in bulk.
            u32::try_from(added.len()).map_err(|_| too_large("rows"))?;
            self.free.clear();
            for (column, &chunk) in self.columns.iter_mut().zip(&chunks) {
                column.cells = (0..added.len()).map(|row| Cell { chunk, row: row as u32 }).collect();
            }
            self.index = added.iter().enumerate().map(|(slot, &key)| (key, slot as u32)).collect();
            return Ok(added);
        }
        for (row, &key) in added.iter().enumerate() {
            let slot = self.alloc_slot()?;
            match self.index.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(slot);
                }
                Entry::Occupied(_) => {
                    self.free.push(slot);
                    return Err(BarrageError::AddExistingKey { key });
                }
            }
            for (column, &chunk) in self.columns.iter_mut().zip(&chunks) {
                column.cells[slot as usize] = Cell { chunk, row: row as u32 };
            }
        }
        Ok(added)
    }

    /// A slot for a new row: a freed one, or a new one at the end of every column.
    fn alloc_slot(&mut self) -> Result<u32, BarrageError> {
        if let Some(slot) = self.free.pop() {
            return Ok(slot);
        }
        let slot = u32::try_from(self.columns.first().map_or(0, |c| c.cells.len())).map_err(|_| too_large("rows"))?;
        self.columns.iter_mut().for_each(|c| c.cells.push(Cell::default()));
        Ok(slot)
    }

    /// Gathers every column of `slots` into a batch.
    fn gather_batch(&self, slots: &[u32]) -> Result<RecordBatch, BarrageError> {
        let columns = self
            .columns
            .iter()
            .zip(self.schema.fields())
            .map(|(column, field)| column.gather(field.data_type(), slots))
            .collect::<Result<Vec<_>, _>>()?;
        self.batch(columns, slots.len())
    }

    fn batch(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch, BarrageError> {
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }

    /// Gathers the live cells of columns with too much dead data into one
    /// chunk each (in key order); renumbers slots when most are free.
    fn compact(&mut self) -> Result<(), BarrageError> {
        let live = self.index.len();
        let renumber = self.free.len() > live.max(MIN_GARBAGE);
        let stale: Vec<bool> = self.columns.iter().map(|c| c.needs_compaction(live)).collect();
        if !renumber && !stale.contains(&true) {
            return Ok(());
        }
        let order: Vec<u32> = self.index.values().copied().collect();
        for ((column, stale), field) in self.columns.iter_mut().zip(stale).zip(self.schema.fields()) {
            if stale {
                let values = column.gather(field.data_type(), &order)?;
                column.chunks = if live == 0 { Vec::new() } else { vec![values] };
                column.stored = live;
                let cell = |row: usize| Cell { chunk: 0, row: row as u32 };
                if renumber {
                    column.cells = (0..live).map(cell).collect();
                } else {
                    for (row, &slot) in order.iter().enumerate() {
                        column.cells[slot as usize] = cell(row);
                    }
                }
            } else if renumber {
                column.cells = order.iter().map(|&slot| column.cells[slot as usize]).collect();
            }
        }
        if renumber {
            for (new_slot, slot) in self.index.values_mut().enumerate() {
                *slot = new_slot as u32;
            }
            self.free.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deephaven::barrage::flatbuf::UpdateMetadata;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{Field, Int64Type, Schema};
    use proptest::prelude::*;
    use std::sync::Arc;

    type Row = (Option<i64>, Option<String>);
    type Model = BTreeMap<u64, Row>;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true), Field::new("s", DataType::Utf8, true)]))
    }

    fn ints(v: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(v.to_vec()))
    }

    fn strs(v: &[Option<String>]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    fn rows_of(batch: &RecordBatch) -> Vec<Row> {
        let n = batch.column(0).as_primitive::<Int64Type>();
        let s = batch.column(1).as_string::<i32>();
        (0..batch.num_rows())
            .map(|i| (n.is_valid(i).then(|| n.value(i)), s.is_valid(i).then(|| s.value(i).to_string())))
            .collect()
    }

    fn keys(k: &[u64]) -> RowSet {
        RowSet::from_keys(k.iter().copied()).unwrap()
    }

    fn row(i: i64) -> Row {
        (Some(i), Some(format!("v{i}")))
    }

    fn update(meta: UpdateMetadata, added: &[Row], modified: [&[Row]; 2]) -> BarrageUpdate {
        let n: Vec<_> = added.iter().map(|r| r.0).collect();
        let s: Vec<_> = added.iter().map(|r| r.1.clone()).collect();
        let mod_n: Vec<_> = modified[0].iter().map(|r| r.0).collect();
        let mod_s: Vec<_> = modified[1].iter().map(|r| r.1.clone()).collect();
        BarrageUpdate { meta, added: vec![ints(&n), strs(&s)], modified: vec![ints(&mod_n), strs(&mod_s)] }
    }

    fn snapshot(table: &mut TableState, keys_: &[u64]) {
        let rows: Vec<Row> = keys_.iter().map(|&k| row(k as i64)).collect();
        let meta = UpdateMetadata { is_snapshot: true, added_rows: keys(keys_), ..Default::default() };
        let delta = table.apply(update(meta, &rows, [&[], &[]])).unwrap();
        assert!(delta.is_snapshot);
        assert_eq!(rows_of(&delta.added), rows);
    }

    #[test]
    fn applies_removes_shifts_adds_and_modifies_with_images() {
        let mut table = TableState::new(schema());
        snapshot(&mut table, &[1, 2, 3, 10]);
        let meta = UpdateMetadata {
            removed_rows: keys(&[2]),
            shifts: vec![Shift { start: 3, end: 3, delta: -1 }, Shift { start: 10, end: 10, delta: 5 }],
            added_rows: keys(&[3, 20]),
            modified_rows: vec![keys(&[1, 15]), keys(&[15])],
            ..Default::default()
        };
        let delta = table
            .apply(update(
                meta,
                &[row(30), row(200)],
                [&[(Some(-1), None), (Some(-15), None)], &[(None, Some("x".into()))]],
            ))
            .unwrap();
        assert_eq!(delta.removed_keys, vec![2]);
        assert_eq!(rows_of(&delta.removed), vec![row(2)]);
        assert_eq!(delta.added_keys, vec![3, 20]);
        assert_eq!(delta.modified_keys, vec![1, 15]);
        assert_eq!(delta.modified_columns, vec![true, true]);
        assert_eq!(rows_of(&delta.modified), vec![(Some(-1), Some("v1".into())), (Some(-15), Some("x".into()))]);
        let expected = vec![(Some(-1), Some("v1".into())), row(3), row(30), (Some(-15), Some("x".into())), row(200)];
        assert_eq!(rows_of(&table.snapshot().unwrap()), expected);
        assert_eq!((table.len(), table.is_empty(), table.schema()), (5, false, schema()));
    }

    #[test]
    fn reports_inconsistent_updates() {
        let mut table = TableState::new(schema());
        snapshot(&mut table, &[1, 2]);
        let err = |t: &mut TableState, meta, added: &[Row], m0: &[Row], m1: &[Row]| {
            t.apply(update(meta, added, [m0, m1])).unwrap_err()
        };
        let remove = UpdateMetadata { removed_rows: keys(&[7]), ..Default::default() };
        assert!(matches!(err(&mut table, remove, &[], &[], &[]), BarrageError::RemoveUnknownKey { key: 7 }));
        let short = UpdateMetadata { added_rows: keys(&[5, 6]), ..Default::default() };
        assert!(matches!(err(&mut table, short, &[row(5)], &[], &[]), BarrageError::ColumnMismatch { column: 0, .. }));
        let viewport = UpdateMetadata { added_rows_included: Some(keys(&[1])), ..Default::default() };
        assert!(matches!(err(&mut table, viewport, &[], &[], &[]), BarrageError::Unsupported(_)));
        let nodes = UpdateMetadata { modified_rows: vec![RowSet::new()], ..Default::default() };
        assert!(matches!(
            err(&mut table, nodes, &[], &[], &[]),
            BarrageError::LengthMismatch { expected: 2, actual: 1, .. }
        ));
        let wrong_type = BarrageUpdate {
            meta: Default::default(),
            added: vec![strs(&[]), strs(&[])],
            modified: vec![ints(&[]), strs(&[])],
        };
        assert!(matches!(table.apply(wrong_type), Err(BarrageError::ColumnMismatch { column: 0, .. })));
        // None of the rejected updates touched the table.
        assert_eq!(rows_of(&table.snapshot().unwrap()), vec![row(1), row(2)]);

        let modify = UpdateMetadata { modified_rows: vec![keys(&[9]), RowSet::new()], ..Default::default() };
        assert!(matches!(
            err(&mut table, modify, &[], &[row(0)], &[]),
            BarrageError::ModifyUnknownKey { key: 9, column: 0 }
        ));
        assert!(matches!(table.apply(update(Default::default(), &[], [&[], &[]])), Err(BarrageError::Poisoned)));

        let mut table = TableState::new(schema());
        snapshot(&mut table, &[1, 2]);
        let add = UpdateMetadata { added_rows: keys(&[2]), ..Default::default() };
        assert!(matches!(err(&mut table, add, &[row(2)], &[], &[]), BarrageError::AddExistingKey { key: 2 }));

        let mut table = TableState::new(schema());
        snapshot(&mut table, &[1, 2]);
        let collide = UpdateMetadata { shifts: vec![Shift { start: 1, end: 1, delta: 1 }], ..Default::default() };
        assert!(matches!(err(&mut table, collide, &[], &[], &[]), BarrageError::ShiftCollision { from: 1, to: 2 }));
    }

    /// Deterministic generator for model-driven updates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn value(&mut self) -> Row {
            let n = (!self.chance(10)).then(|| self.next() as i64 >> 8);
            let s = (!self.chance(10)).then(|| format!("s{}", self.below(1000)));
            (n, s)
        }
    }

    /// Builds a random update consistent with `model`, applies it to the model
    /// and returns it with the expected pre-images of the removed rows.
    fn random_update(model: &mut Model, rng: &mut Rng) -> (BarrageUpdate, Vec<Row>) {
        let mut meta = UpdateMetadata::default();
        let removed: Vec<u64> = model.keys().copied().filter(|_| rng.chance(20)).collect();
        let pre_images = removed.iter().map(|k| model[k].clone()).collect();
        removed.iter().for_each(|k| {
            model.remove(k);
        });
        meta.removed_rows = keys(&removed);

        // Shifts: split the keys into groups, move each group by an amount
        // that keeps all keys increasing.
        if rng.chance(40) && !model.is_empty() {
            let old: Vec<(u64, Row)> = std::mem::take(model).into_iter().collect();
            let mut floor = 0u64; // smallest allowed new key
            let mut i = 0;
            while i < old.len() {
                let len = 1 + rng.below(4) as usize;
                let group = &old[i..(i + len).min(old.len())];
                let (first, last) = (group[0].0, group[group.len() - 1].0);
                let lowest = floor.max(first.saturating_sub(rng.below(5)));
                let new_first = if rng.chance(50) { first.max(floor) } else { lowest + rng.below(8) };
                let delta = new_first as i64 - first as i64;
                if delta != 0 {
                    meta.shifts.push(Shift { start: first, end: last, delta });
                }
                for (k, v) in group {
                    model.insert((*k as i64 + delta) as u64, v.clone());
                }
                floor = (last as i64 + delta) as u64 + 1;
                i += group.len();
            }
        }

        let max = model.keys().next_back().map_or(0, |k| k + 1);
        let mut added: Vec<u64> =
            (0..rng.below(6)).map(|_| rng.below(max + 10)).filter(|k| !model.contains_key(k)).collect();
        added.sort_unstable();
        added.dedup();
        let added_rows: Vec<Row> = added.iter().map(|_| rng.value()).collect();
        let existing: Vec<u64> = model.keys().copied().collect();
        for (k, v) in added.iter().zip(&added_rows) {
            model.insert(*k, v.clone());
        }
        meta.added_rows = keys(&added);

        let mut modified: [Vec<Row>; 2] = Default::default();
        let mut picked: Vec<u64> = Vec::new();
        for (column, values) in modified.iter_mut().enumerate() {
            // Sometimes both columns change at the same keys, as in an upsert.
            if column == 0 || rng.chance(70) {
                picked = existing.iter().copied().filter(|_| rng.chance(25)).collect();
            }
            for k in &picked {
                let value = rng.value();
                let cell = model.get_mut(k).unwrap();
                if column == 0 {
                    cell.0 = value.0
                } else {
                    cell.1 = value.1.clone()
                }
                values.push(value);
            }
            meta.modified_rows.push(keys(&picked));
        }
        (update(meta, &added_rows, [&modified[0], &modified[1]]), pre_images)
    }

    proptest! {
        #[test]
        fn matches_a_model_over_random_updates(seed in any::<u64>(), steps in 1usize..60) {
            let mut rng = Rng(seed);
            let mut model = Model::new();
            let mut table = TableState::new(schema());
            // The subscription's (empty) initial snapshot, then random updates.
            let first = table.apply(update(UpdateMetadata { is_snapshot: true, ..Default::default() }, &[], [&[], &[]])).unwrap();
            prop_assert!(first.snapshot_complete && first.is_snapshot);
            for _ in 0..steps {
                let before = model.clone();
                let (update, pre_images) = random_update(&mut model, &mut rng);
                let expected_mods: Vec<u64> = {
                    let mut k: Vec<u64> = update.meta.modified_rows.iter().flat_map(|r| r.iter()).collect();
                    k.sort_unstable();
                    k.dedup();
                    k
                };
                let delta = table.apply(update).unwrap();
                prop_assert_eq!(rows_of(&delta.removed), pre_images);
                prop_assert!(delta.removed_keys.iter().all(|k| before.contains_key(k)));
                prop_assert_eq!(&delta.modified_keys, &expected_mods);
                let post: Vec<Row> = delta.modified_keys.iter().map(|k| model[k].clone()).collect();
                prop_assert_eq!(rows_of(&delta.modified), post);
                let added: Vec<Row> = delta.added_keys.iter().map(|k| model[k].clone()).collect();
                prop_assert_eq!(rows_of(&delta.added), added);
                prop_assert_eq!(rows_of(&table.snapshot().unwrap()), model.values().cloned().collect::<Vec<_>>());
                prop_assert_eq!(table.len(), model.len());
                // Compaction keeps dead data, chunks and free slots bounded.
                let live = table.len();
                prop_assert!(table.free.len() <= live.max(MIN_GARBAGE));
                for column in &table.columns {
                    prop_assert!(!column.needs_compaction(live));
                    prop_assert!(column.stored - live <= live.max(MIN_GARBAGE));
                }
            }
        }
    }

    #[test]
    fn chunked_snapshot_is_reported_once_complete() {
        let mut table = TableState::new(schema());
        for chunk in [&[1u64, 2][..], &[3, 4][..]] {
            let meta = UpdateMetadata {
                is_snapshot: true,
                added_rows: keys(&[1, 2, 3, 4]),
                added_rows_included: Some(keys(chunk)),
                ..Default::default()
            };
            let rows: Vec<Row> = chunk.iter().map(|k| row(*k as i64)).collect();
            let d = table.apply(update(meta, &rows, [&[], &[]])).unwrap();
            assert_eq!(d.snapshot_complete, chunk.contains(&4), "complete only with the last chunk");
            if d.snapshot_complete {
                assert_eq!(d.added_keys, vec![1, 2, 3, 4]);
                assert_eq!(rows_of(&d.added), (1..=4).map(row).collect::<Vec<_>>());
            } else {
                assert_eq!(d.added.num_rows(), 0, "nothing is reported before the snapshot is complete");
            }
        }
        assert_eq!(table.len(), 4);
    }

    /// A growing subscription (server property subscriptionGrowthEnabled):
    /// every key first, values a position range at a time, ordinary updates
    /// in between that carry values only for rows inside the viewport.
    #[test]
    fn growing_subscription_is_one_snapshot_then_deltas() {
        let mut table = TableState::new(schema());
        let vp = |a: u64, b: u64| Some(RowSet::from_range(a, b).unwrap());
        // Piece 1: keys 0..=7, values of positions 0..=2.
        let meta = UpdateMetadata {
            is_snapshot: true,
            effective_viewport: vp(0, 2),
            added_rows: keys(&[0, 1, 2, 3, 4, 5, 6, 7]),
            added_rows_included: Some(keys(&[0, 1, 2])),
            ..Default::default()
        };
        let d = table.apply(update(meta, &[row(0), row(1), row(2)], [&[], &[]])).unwrap();
        assert!(!d.snapshot_complete);
        // Update: key 1 removed (key 3 moves into position 2: its values come
        // "scoped in"), key 8 added outside the viewport (no values), key 0
        // modified inside it, key 6 modified outside it (not sent).
        let meta = UpdateMetadata {
            removed_rows: keys(&[1]),
            added_rows: keys(&[8]),
            added_rows_included: Some(keys(&[3])),
            modified_rows: vec![keys(&[0]), keys(&[0])],
            ..Default::default()
        };
        let d = table.apply(update(meta, &[row(3)], [&[(Some(100), None)], &[(None, Some("m0".into()))]])).unwrap();
        assert!(!d.snapshot_complete);
        // Piece 2: positions 3..=5 (keys 4, 5, 6; key 6 with its modified value).
        let meta = UpdateMetadata {
            is_snapshot: true,
            effective_viewport: vp(0, 5),
            added_rows_included: Some(keys(&[4, 5, 6])),
            ..Default::default()
        };
        let d = table.apply(update(meta, &[row(4), row(5), (Some(66), None)], [&[], &[]])).unwrap();
        assert!(!d.snapshot_complete);
        // Final piece: no viewport, the remaining keys 7 and 8.
        let meta = UpdateMetadata { is_snapshot: true, added_rows_included: Some(keys(&[7, 8])), ..Default::default() };
        let d = table.apply(update(meta, &[row(7), row(8)], [&[], &[]])).unwrap();
        assert!(d.snapshot_complete && d.is_snapshot);
        assert_eq!(d.added_keys, vec![0, 2, 3, 4, 5, 6, 7, 8]);
        let want: Vec<Row> = vec![(Some(100), Some("m0".into())), row(2), row(3), row(4), row(5), (Some(66), None), row(7), row(8)];
        assert_eq!(rows_of(&d.added), want);
        // Afterwards: ordinary deltas.
        let meta = UpdateMetadata { added_rows: keys(&[9]), removed_rows: keys(&[2]), ..Default::default() };
        let d = table.apply(update(meta, &[row(9)], [&[], &[]])).unwrap();
        assert!(!d.is_snapshot && d.snapshot_complete);
        assert_eq!((d.added_keys.clone(), d.removed_keys.clone()), (vec![9], vec![2]));
        assert_eq!(rows_of(&d.removed), vec![row(2)]);
        // Included rows differing from added ones are a viewport: not supported after the initial phase.
        let meta = UpdateMetadata { added_rows: keys(&[10, 11]), added_rows_included: Some(keys(&[10])), ..Default::default() };
        assert!(table.apply(update(meta, &[row(10)], [&[], &[]])).is_err());
    }

    #[test]
    fn growth_that_ends_with_rows_lacking_values_is_not_complete() {
        let mut table = TableState::new(schema());
        let meta = UpdateMetadata { is_snapshot: true, added_rows: keys(&[0, 1]), added_rows_included: Some(keys(&[0])), ..Default::default() };
        let d = table.apply(update(meta, &[row(0)], [&[], &[]])).unwrap();
        assert!(!d.snapshot_complete, "key 1 has no values yet");
    }
}

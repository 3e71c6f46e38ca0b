//! Assembling one Barrage update from its Arrow Flight messages.
//!
//! Per update the server sends a FlightData whose `app_metadata` is a
//! `BarrageUpdateMetadata` wrapper and whose body is the first record batch;
//! large updates continue in further record batches without metadata. All add
//! batches come first, then the modify batches. With `columns_as_list` every
//! column is a `list<T>` (usually one list row per batch), so the modified
//! columns of one batch may hold different numbers of values. Completeness is
//! decided from counts: added values must reach the number of included rows,
//! and each column's modified values the size of its modified RowSet.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{new_empty_array, Array, ArrayRef, AsArray};
use arrow::buffer::Buffer;
use arrow::compute::concat;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::FlightData;
use arrow_ipc::convert::fb_to_schema;
use arrow_ipc::reader::read_record_batch;
use arrow_ipc::{root_as_message, MessageHeader};

use super::error::BarrageError;
use super::flatbuf::{parse_update_metadata, UpdateMetadata};

/// Field metadata key where Deephaven names a column's Java type.
const DEEPHAVEN_TYPE: &str = "deephaven:type";

/// One complete update: its metadata and its column data, unwrapped from lists.
#[derive(Clone, Debug)]
pub struct BarrageUpdate {
    /// What changed: keys added, removed, shifted and modified.
    pub meta: UpdateMetadata,
    /// Per column, the values of the rows in `meta.included_rows()`, in key order.
    pub added: Vec<ArrayRef>,
    /// Per column, the new values of `meta.modified_rows[i]`, in key order.
    pub modified: Vec<ArrayRef>,
}

/// The table schema behind a subscription schema: with `columns_as_list` the
/// server wraps every field in a list; this strips that wrapping and returns
/// any other schema unchanged.
///
/// The schema counts as wrapped when every field is a list deeper than its
/// `deephaven:type` metadata declares (e.g. `long` as `list<int64>`, or
/// `long[]` as `list<list<int64>>`); fields without that metadata only need
/// to be lists.
pub fn table_schema(schema: &Schema) -> SchemaRef {
    if !is_list_wrapped(schema) {
        return Arc::new(schema.clone());
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::List(inner) | DataType::LargeList(inner) => {
                Field::new(f.name(), inner.data_type().clone(), true).with_metadata(f.metadata().clone())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn is_list_wrapped(schema: &Schema) -> bool {
    fn list_depth(dt: &DataType) -> usize {
        match dt {
            DataType::List(f) | DataType::LargeList(f) => 1 + list_depth(f.data_type()),
            _ => 0,
        }
    }
    fn declared_depth(java_type: &str) -> usize {
        match java_type.matches("[]").count() {
            0 if java_type.contains("Vector") => 1,
            n => n,
        }
    }
    !schema.fields().is_empty()
        && schema.fields().iter().all(|f| {
            let depth = list_depth(f.data_type());
            depth > 0 && f.metadata().get(DEEPHAVEN_TYPE).is_none_or(|t| depth > declared_depth(t))
        })
}

/// The list-wrapped schema the record batches use for a table schema.
fn wire_schema(table: &Schema) -> SchemaRef {
    let fields: Vec<Field> = table
        .fields()
        .iter()
        .map(|f| {
            let item = Field::new("item", f.data_type().clone(), true);
            Field::new(f.name(), DataType::List(Arc::new(item)), true).with_metadata(f.metadata().clone())
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, table.metadata().clone()))
}

/// Number of IPC field nodes a column of type `dt` takes, when easy to count.
fn field_nodes(dt: &DataType) -> Option<usize> {
    Some(match dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) | DataType::Map(f, _) => {
            1 + field_nodes(f.data_type())?
        }
        DataType::Struct(fields) => 1 + fields.iter().map(|f| field_nodes(f.data_type())).sum::<Option<usize>>()?,
        DataType::Union(..) | DataType::RunEndEncoded(..) | DataType::ListView(_) | DataType::LargeListView(_) => {
            return None
        }
        _ => 1,
    })
}

/// Collects the Flight messages of a subscription into [`BarrageUpdate`]s.
pub struct UpdateAssembler {
    /// Schema of the record batches (every column a list).
    wire: SchemaRef,
    /// Schema of the table (list wrapping removed).
    table: SchemaRef,
    /// Field nodes a record batch of `wire` must have, when countable.
    wire_nodes: Option<usize>,
    /// The update whose batches are still arriving.
    pending: Option<Pending>,
}

impl UpdateAssembler {
    /// An assembler for a table; `schema` may be the subscription schema as
    /// the server sent it (list-wrapped) or the plain table schema.
    pub fn new(schema: SchemaRef) -> Self {
        let table = table_schema(&schema);
        // Keep the server's own wrapping when given it; wrap a plain schema.
        let wire = if is_list_wrapped(&schema) { schema } else { wire_schema(&table) };
        let wire_nodes = wire.fields().iter().map(|f| field_nodes(f.data_type())).sum();
        UpdateAssembler { wire, table, wire_nodes, pending: None }
    }

    /// The table schema (list wrapping removed) of the arrays this emits.
    pub fn table_schema(&self) -> SchemaRef {
        self.table.clone()
    }

    /// Feeds one FlightData; returns the update it completes, if any. A Schema
    /// message replaces the schema; messages with neither header nor metadata
    /// are ignored.
    pub fn push(&mut self, msg: FlightData) -> Result<Option<BarrageUpdate>, BarrageError> {
        let header = if msg.data_header.is_empty() {
            None
        } else {
            let message = root_as_message(&msg.data_header)
                .map_err(|e| BarrageError::UnexpectedMessage(format!("unreadable IPC message header: {e}")))?;
            Some(message)
        };
        if let Some(schema) = header.as_ref().and_then(|h| h.header_as_schema()) {
            if self.pending.is_some() {
                return Err(BarrageError::UnexpectedMessage("schema message in the middle of an update".into()));
            }
            *self = UpdateAssembler::new(Arc::new(fb_to_schema(schema)));
            return Ok(None);
        }
        if !msg.app_metadata.is_empty() {
            if let Some(pending) = &self.pending {
                return Err(BarrageError::UnexpectedMessage(format!(
                    "new update metadata while the previous update still awaits data ({})",
                    pending.progress()
                )));
            }
            let meta = parse_update_metadata(&msg.app_metadata)?;
            self.pending = Some(Pending::new(meta, self.table.fields().len())?);
        }
        if let Some(message) = header {
            let batch = match message.header_type() {
                MessageHeader::RecordBatch => message.header_as_record_batch(),
                MessageHeader::DictionaryBatch => {
                    return Err(BarrageError::Unsupported("dictionary-encoded columns (DictionaryBatch)".into()))
                }
                other => return Err(BarrageError::UnexpectedMessage(format!("IPC message of type {other:?}"))),
            };
            let batch = batch.ok_or_else(|| BarrageError::UnexpectedMessage("RecordBatch header missing".into()))?;
            let pending = self
                .pending
                .as_mut()
                .ok_or_else(|| BarrageError::UnexpectedMessage("record batch without update metadata".into()))?;
            let nodes = batch.nodes().map_or(0, |n| n.len());
            if let Some(expected) = self.wire_nodes.filter(|&e| e != nodes) {
                return Err(BarrageError::UnexpectedMessage(format!(
                    "record batch has {nodes} field nodes, the list-wrapped schema needs {expected} \
                     (was the subscription made with columns_as_list?)"
                )));
            }
            let body = Buffer::from(msg.data_body);
            let batch = read_record_batch(&body, batch, self.wire.clone(), &HashMap::new(), None, &message.version())?;
            let values = batch
                .columns()
                .iter()
                .enumerate()
                .map(|(i, column)| {
                    list_values(column).ok_or_else(|| column_error(&self.table, i, "not a list column".into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            pending.absorb(values, &self.table)?;
        }
        match &self.pending {
            Some(p) if p.is_complete() => self.pending.take().map(|p| p.finish(&self.table)).transpose(),
            _ => Ok(None),
        }
    }
}

fn column_error(schema: &Schema, column: usize, detail: String) -> BarrageError {
    let name = schema.fields().get(column).map_or_else(String::new, |f| f.name().clone());
    BarrageError::ColumnMismatch { column, name, detail }
}

/// The values of all rows of a list column, as one zero-copy slice.
fn list_values(column: &ArrayRef) -> Option<ArrayRef> {
    fn slice(values: &ArrayRef, first: i64, last: i64) -> Option<ArrayRef> {
        let start = usize::try_from(first).ok()?;
        let end = usize::try_from(last).ok()?;
        (start <= end && end <= values.len()).then(|| values.slice(start, end - start))
    }
    if let Some(list) = column.as_list_opt::<i32>() {
        let offsets = list.value_offsets();
        slice(list.values(), i64::from(*offsets.first()?), i64::from(*offsets.last()?))
    } else if let Some(list) = column.as_list_opt::<i64>() {
        let offsets = list.value_offsets();
        slice(list.values(), *offsets.first()?, *offsets.last()?)
    } else {
        None
    }
}

/// An update whose batches are still arriving.
struct Pending {
    /// The update's metadata, with one modified RowSet per column.
    meta: UpdateMetadata,
    /// Added values each column must receive.
    added_expected: usize,
    /// Added values each column has received.
    added_seen: usize,
    /// Per column, the added value arrays received so far.
    added: Vec<Vec<ArrayRef>>,
    /// Per column, modified values it must receive.
    mod_expected: Vec<usize>,
    /// Per column, modified values it has received.
    mod_seen: Vec<usize>,
    /// Per column, the modified value arrays received so far.
    modified: Vec<Vec<ArrayRef>>,
}

impl Pending {
    fn new(mut meta: UpdateMetadata, columns: usize) -> Result<Self, BarrageError> {
        let count = |len: u64| usize::try_from(len).unwrap_or(usize::MAX);
        if meta.modified_rows.is_empty() {
            meta.modified_rows = vec![Default::default(); columns];
        } else if meta.modified_rows.len() != columns {
            return Err(BarrageError::LengthMismatch {
                what: "modified column nodes in update metadata",
                expected: columns,
                actual: meta.modified_rows.len(),
            });
        }
        // A table without columns carries no data to wait for.
        let added_expected = if columns == 0 { 0 } else { count(meta.included_rows().len()) };
        let mod_expected = meta.modified_rows.iter().map(|r| count(r.len())).collect();
        Ok(Pending {
            meta,
            added_expected,
            added_seen: 0,
            added: vec![Vec::new(); columns],
            mod_expected,
            mod_seen: vec![0; columns],
            modified: vec![Vec::new(); columns],
        })
    }

    fn progress(&self) -> String {
        let mods: usize = self.mod_seen.iter().sum();
        let mods_expected: usize = self.mod_expected.iter().sum();
        format!("added {}/{}, modified {mods}/{mods_expected}", self.added_seen, self.added_expected)
    }

    fn is_complete(&self) -> bool {
        self.added_seen == self.added_expected && self.mod_seen == self.mod_expected
    }

    /// Files one batch's per-column values as add data (while adds are still
    /// owed) or as modify data.
    fn absorb(&mut self, values: Vec<ArrayRef>, schema: &Schema) -> Result<(), BarrageError> {
        if self.added_seen < self.added_expected {
            let n = values.first().map_or(0, |v| v.len());
            if let Some(i) = values.iter().position(|v| v.len() != n) {
                let detail = format!("add batch has {} values here but {n} in column 0", values[i].len());
                return Err(column_error(schema, i, detail));
            }
            if self.added_seen + n > self.added_expected {
                return Err(BarrageError::LengthMismatch {
                    what: "added values across batches",
                    expected: self.added_expected,
                    actual: self.added_seen + n,
                });
            }
            self.added_seen += n;
            for (column, v) in self.added.iter_mut().zip(values) {
                column.push(v);
            }
            return Ok(());
        }
        for (i, v) in values.into_iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            if self.mod_seen[i] + v.len() > self.mod_expected[i] {
                let detail = format!(
                    "{} modified values for {} modified rows",
                    self.mod_seen[i] + v.len(),
                    self.mod_expected[i]
                );
                return Err(column_error(schema, i, detail));
            }
            self.mod_seen[i] += v.len();
            self.modified[i].push(v);
        }
        Ok(())
    }

    fn finish(self, schema: &Schema) -> Result<BarrageUpdate, BarrageError> {
        let join = |parts: Vec<Vec<ArrayRef>>| -> Result<Vec<ArrayRef>, BarrageError> {
            parts
                .into_iter()
                .zip(schema.fields())
                .map(|(mut parts, field)| match parts.len() {
                    0 => Ok(new_empty_array(field.data_type())),
                    1 => Ok(parts.remove(0)),
                    _ => Ok(concat(&parts.iter().map(|a| a.as_ref()).collect::<Vec<&dyn Array>>())?),
                })
                .collect()
        };
        Ok(BarrageUpdate { added: join(self.added)?, modified: join(self.modified)?, meta: self.meta })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deephaven::barrage::flatbuf::encode_update_metadata;
    use crate::deephaven::barrage::rowset::RowSet;
    use arrow::array::{Int64Array, ListArray, StringArray};
    use arrow::buffer::OffsetBuffer;
    use arrow_flight::SchemaAsIpc;
    use arrow_ipc::writer::{CompressionContext, DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
    use std::collections::HashMap as Map;

    fn dh_field(name: &str, dt: DataType, java: &str) -> Field {
        Field::new(name, dt, true).with_metadata(Map::from([(DEEPHAVEN_TYPE.to_string(), java.to_string())]))
    }

    fn table() -> SchemaRef {
        Arc::new(Schema::new(vec![
            dh_field("Id", DataType::Int64, "long"),
            dh_field("Name", DataType::Utf8, "java.lang.String"),
        ]))
    }

    fn ints(v: &[i64]) -> ArrayRef {
        Arc::new(Int64Array::from(v.to_vec()))
    }

    fn strs(v: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    /// A list column whose rows split `values` at `lengths`.
    fn list(values: ArrayRef, lengths: &[usize]) -> ArrayRef {
        let item = Arc::new(Field::new("item", values.data_type().clone(), true));
        Arc::new(ListArray::new(item, OffsetBuffer::from_lengths(lengths.iter().copied()), values, None))
    }

    fn batch(columns: Vec<ArrayRef>) -> FlightData {
        let fields: Vec<Field> =
            columns.iter().enumerate().map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true)).collect();
        let batch = arrow::record_batch::RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let (_, encoded) = IpcDataGenerator::default()
            .encode(
                &batch,
                &mut DictionaryTracker::new(false),
                &IpcWriteOptions::default(),
                &mut CompressionContext::default(),
            )
            .unwrap();
        encoded.into()
    }

    fn with_meta(mut data: FlightData, meta: &UpdateMetadata) -> FlightData {
        data.app_metadata = encode_update_metadata(meta).into();
        data
    }

    fn keys(k: &[u64]) -> RowSet {
        RowSet::from_keys(k.iter().copied()).unwrap()
    }

    #[test]
    fn strips_and_recognises_list_wrapping() {
        let wire = wire_schema(&table());
        assert_eq!(table_schema(&wire), table());
        assert_eq!(table_schema(&table()), table());
        let array_col = dh_field("Tags", DataType::List(Arc::new(Field::new("item", DataType::Int64, true))), "long[]");
        let plain = Schema::new(vec![array_col.clone()]);
        assert_eq!(*table_schema(&plain), plain, "a genuine array column is not a wrapper");
        assert_eq!(*table_schema(&wire_schema(&plain)), plain);
        let no_metadata =
            Schema::new(vec![Field::new("x", DataType::List(Arc::new(Field::new("i", DataType::Utf8, true))), true)]);
        assert_eq!(table_schema(&no_metadata).field(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn snapshot_in_one_message() {
        let mut assembler = UpdateAssembler::new(wire_schema(&table()));
        let meta = UpdateMetadata { is_snapshot: true, added_rows: keys(&[0, 1, 2]), ..Default::default() };
        let msg = with_meta(batch(vec![list(ints(&[10, 11, 12]), &[3]), list(strs(&["a", "b", "c"]), &[3])]), &meta);
        let update = assembler.push(msg).unwrap().unwrap();
        assert!(update.meta.is_snapshot);
        assert_eq!(update.meta.modified_rows, vec![RowSet::new(); 2]);
        assert_eq!(update.added, vec![ints(&[10, 11, 12]), strs(&["a", "b", "c"])]);
        assert_eq!(update.modified[0].len(), 0);
        assert_eq!(assembler.table_schema(), table());
    }

    #[test]
    fn multi_batch_update_concatenates_adds_then_modifies() {
        let mut assembler = UpdateAssembler::new(table());
        let meta = UpdateMetadata {
            added_rows: keys(&[5, 6, 7, 8, 9]),
            removed_rows: keys(&[1]),
            modified_rows: vec![keys(&[2, 3]), keys(&[3])],
            ..Default::default()
        };
        let first = with_meta(batch(vec![list(ints(&[5, 6, 7]), &[3]), list(strs(&["e", "f", "g"]), &[3])]), &meta);
        assert!(assembler.push(first).unwrap().is_none());
        // The second add batch holds two list rows per column.
        let second = batch(vec![list(ints(&[8, 9]), &[1, 1]), list(strs(&["h", "i"]), &[1, 1])]);
        assert!(assembler.push(second).unwrap().is_none());
        let mods = batch(vec![list(ints(&[20]), &[1]), list(strs(&["x"]), &[1])]);
        assert!(assembler.push(mods).unwrap().is_none());
        let last = batch(vec![list(ints(&[30]), &[1]), list(strs(&[]), &[0])]);
        let update = assembler.push(last).unwrap().unwrap();
        assert_eq!(update.added, vec![ints(&[5, 6, 7, 8, 9]), strs(&["e", "f", "g", "h", "i"])]);
        assert_eq!(update.modified, vec![ints(&[20, 30]), strs(&["x"])]);
        assert_eq!(update.meta.removed_rows, keys(&[1]));
    }

    #[test]
    fn removal_only_update_and_schema_message() {
        let mut assembler = UpdateAssembler::new(Arc::new(Schema::empty()));
        let schema_msg: FlightData = SchemaAsIpc::new(&wire_schema(&table()), &IpcWriteOptions::default()).into();
        assert!(assembler.push(schema_msg).unwrap().is_none());
        assert_eq!(assembler.table_schema(), table());
        let meta = UpdateMetadata { removed_rows: keys(&[4]), ..Default::default() };
        let msg = with_meta(batch(vec![list(ints(&[]), &[0]), list(strs(&[]), &[0])]), &meta);
        let update = assembler.push(msg).unwrap().unwrap();
        assert_eq!((update.added[0].len(), update.meta.removed_rows.len()), (0, 1));
        // Metadata without any record batch completes at once too.
        let bare = with_meta(FlightData::default(), &meta);
        assert!(assembler.push(bare).unwrap().is_some());
        assert!(assembler.push(FlightData::default()).unwrap().is_none());
    }

    #[test]
    fn assembled_updates_apply_to_a_table_state() {
        use crate::deephaven::barrage::state::TableState;
        let wire = wire_schema(&table());
        let mut assembler = UpdateAssembler::new(wire.clone());
        let mut state = TableState::new(wire);
        let snap = UpdateMetadata { is_snapshot: true, added_rows: keys(&[0, 1]), ..Default::default() };
        let msg = with_meta(batch(vec![list(ints(&[1, 2]), &[2]), list(strs(&["a", "b"]), &[2])]), &snap);
        state.apply(assembler.push(msg).unwrap().unwrap()).unwrap();
        let change = UpdateMetadata { modified_rows: vec![RowSet::new(), keys(&[1])], ..Default::default() };
        let msg = with_meta(batch(vec![list(ints(&[]), &[0]), list(strs(&["z"]), &[1])]), &change);
        let delta = state.apply(assembler.push(msg).unwrap().unwrap()).unwrap();
        assert_eq!((delta.modified_keys, delta.modified_columns), (vec![1], vec![false, true]));
        assert_eq!(delta.modified.columns(), &[ints(&[2]), strs(&["z"])]);
        assert_eq!(state.snapshot().unwrap().columns(), &[ints(&[1, 2]), strs(&["a", "z"])]);
        assert_eq!(state.schema(), table());
    }

    #[test]
    fn rejects_out_of_sequence_or_mis_shaped_data() {
        let data = || batch(vec![list(ints(&[1]), &[1]), list(strs(&["a"]), &[1])]);
        let mut assembler = UpdateAssembler::new(table());
        let err = assembler.push(data()).unwrap_err();
        assert!(err.to_string().contains("without update metadata"), "{err}");

        let meta = UpdateMetadata { added_rows: keys(&[1, 2]), ..Default::default() };
        assert!(assembler.push(with_meta(data(), &meta)).unwrap().is_none());
        let err = assembler.push(with_meta(data(), &meta)).unwrap_err();
        assert!(err.to_string().contains("added 1/2"), "{err}");

        let mut assembler = UpdateAssembler::new(table());
        let one = UpdateMetadata { added_rows: keys(&[1]), ..Default::default() };
        let two = batch(vec![list(ints(&[1, 2]), &[2]), list(strs(&["a", "b"]), &[2])]);
        assert!(matches!(
            assembler.push(with_meta(two, &one)),
            Err(BarrageError::LengthMismatch { expected: 1, actual: 2, .. })
        ));

        let mut assembler = UpdateAssembler::new(table());
        let ragged = batch(vec![list(ints(&[1, 2]), &[2]), list(strs(&["a"]), &[1])]);
        let meta = UpdateMetadata { added_rows: keys(&[1, 2]), ..Default::default() };
        assert!(matches!(
            assembler.push(with_meta(ragged, &meta)),
            Err(BarrageError::ColumnMismatch { column: 1, .. })
        ));

        let mut assembler = UpdateAssembler::new(table());
        let meta = UpdateMetadata { modified_rows: vec![keys(&[1]), RowSet::new()], ..Default::default() };
        let extra = batch(vec![list(ints(&[1, 2]), &[2]), list(strs(&[]), &[0])]);
        assert!(matches!(assembler.push(with_meta(extra, &meta)), Err(BarrageError::ColumnMismatch { column: 0, .. })));

        let mut assembler = UpdateAssembler::new(table());
        let unwrapped = batch(vec![ints(&[1]), strs(&["a"])]);
        let err = assembler.push(with_meta(unwrapped, &one)).unwrap_err();
        assert!(err.to_string().contains("columns_as_list"), "{err}");

        let meta = UpdateMetadata { modified_rows: vec![RowSet::new()], ..Default::default() };
        assert!(matches!(
            UpdateAssembler::new(table()).push(with_meta(FlightData::default(), &meta)),
            Err(BarrageError::LengthMismatch { expected: 2, actual: 1, .. })
        ));
    }
}

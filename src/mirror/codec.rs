//! The Kafka record format of the mirror (documented for other consumers in
//! `schemas/avro/README.md`).
//!
//! One Kafka record per row change of `agent_messages` / `agent_events`:
//!
//! - key: the row's primary key (`message_id` / `event_id`) as UTF-8;
//! - value: Avro single-object encoding — `C3 01`, the 8-byte little-endian
//!   CRC-64-AVRO fingerprint of the writer schema's canonical form, then the
//!   Avro binary datum of the record in `schemas/avro/<table>.avsc`; a removed
//!   row is a tombstone (no value);
//! - headers: [`HEADER_TABLE`] and [`HEADER_VERSION`].
//!
//! The datum is hand-encoded straight from the Arrow columns (no per-row
//! `apache_avro::types::Value`), and decoded by a bounds-checked reader that
//! never allocates more than the input holds. Both are cross-checked against
//! apache-avro in the tests; apache-avro parses the bundled schemas and
//! computes their fingerprints.

use std::fmt;
use std::sync::{Arc, OnceLock};

use apache_avro::rabin::Rabin;
use apache_avro::Schema as AvroSchema;
use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, GenericStringArray, Int32Array, Int32Builder, Int64Array, Int64Builder,
    OffsetSizeTrait, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::error::{DecodeError, EncodeError, RowsError, SchemaError};

/// Header naming the table a record belongs to (the configured table name,
/// tenant prefix included), so one consumer can tell records apart on shared
/// topics and route tombstones, which carry no schema.
pub const HEADER_TABLE: &str = "dhbus.table";
/// Header carrying the row's `version` as decimal text, so consumers can
/// order states without decoding the value. Events are immutable and always
/// carry [`EVENT_VERSION`]; tombstones and rows whose `version` is null carry
/// no such header.
pub const HEADER_VERSION: &str = "dhbus.version";
/// First two bytes of every value: the Avro single-object encoding marker.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
/// Length of the single-object header (marker + fingerprint) before the datum.
pub const HEADER_LEN: usize = 10;
/// The version of every `agent_events` row: an event never changes, so there
/// is exactly one version of it.
pub const EVENT_VERSION: i64 = 0;

/// Type of a column, as Deephaven declares it; every one is nullable and maps
/// to the Avro union `["null", T]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `java.lang.String`: Arrow `Utf8`, Avro `string`.
    String,
    /// `long`: Arrow `Int64`, Avro `long`.
    Long,
    /// `int`: Arrow `Int32`, Avro `int`.
    Int,
}

impl ColumnType {
    /// The Arrow type Deephaven sends and [`rows_to_batch`] builds.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Long => DataType::Int64,
            ColumnType::Int => DataType::Int32,
        }
    }

    fn avro(self) -> AvroSchema {
        match self {
            ColumnType::String => AvroSchema::String,
            ColumnType::Long => AvroSchema::Long,
            ColumnType::Int => AvroSchema::Int,
        }
    }
}

/// One column of a mirrored table, in the canonical (DESIGN.md) order that
/// is also the field order of the Avro record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// Column name, equal to the Avro field name.
    pub name: &'static str,
    /// Column type.
    pub ty: ColumnType,
}

/// A table the mirror writes to Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MirrorTable {
    /// `agent_messages`: keyed by `message_id`, ordered by `version`.
    Messages,
    /// `agent_events`: append-only, keyed by `event_id`.
    Events,
}

/// The parsed writer schema of a table and its fingerprint, computed once.
struct Loaded {
    schema: AvroSchema,
    fingerprint: [u8; 8],
}

impl MirrorTable {
    /// Both tables, for iterating (e.g. building the fingerprint registry).
    pub const ALL: [MirrorTable; 2] = [MirrorTable::Messages, MirrorTable::Events];

    /// Canonical (unprefixed) table name, the default of [`HEADER_TABLE`].
    pub fn name(self) -> &'static str {
        match self {
            MirrorTable::Messages => "agent_messages",
            MirrorTable::Events => "agent_events",
        }
    }

    /// The table of a canonical name (the inverse of [`MirrorTable::name`]).
    pub fn from_name(name: &str) -> Option<MirrorTable> {
        MirrorTable::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The primary key column: its value is the Kafka record key.
    pub fn key_column(self) -> &'static str {
        self.columns()[0].name
    }

    /// Columns in canonical order (the Avro field order).
    pub fn columns(self) -> &'static [Column] {
        match self {
            MirrorTable::Messages => MESSAGE_COLUMNS,
            MirrorTable::Events => EVENT_COLUMNS,
        }
    }

    /// The bundled writer schema, as JSON text (`schemas/avro/<table>.avsc`).
    pub fn avro_schema_json(self) -> &'static str {
        match self {
            MirrorTable::Messages => include_str!("../../schemas/avro/agent_messages.avsc"),
            MirrorTable::Events => include_str!("../../schemas/avro/agent_events.avsc"),
        }
    }

    /// The parsed writer schema, checked against [`MirrorTable::columns`] (the
    /// hand encoder relies on them agreeing).
    pub fn avro_schema(self) -> Result<&'static AvroSchema, SchemaError> {
        self.loaded().map(|l| &l.schema)
    }

    /// CRC-64-AVRO (Rabin) fingerprint of the writer schema's canonical form,
    /// in the little-endian byte order of the single-object header.
    pub fn fingerprint(self) -> Result<[u8; 8], SchemaError> {
        self.loaded().map(|l| l.fingerprint)
    }

    fn loaded(self) -> Result<&'static Loaded, SchemaError> {
        static CELLS: [OnceLock<Result<Loaded, String>>; 2] = [OnceLock::new(), OnceLock::new()];
        let cell = &CELLS[self as usize];
        cell.get_or_init(|| self.load()).as_ref().map_err(|reason| SchemaError { table: self, reason: reason.clone() })
    }

    fn load(self) -> Result<Loaded, String> {
        let schema = AvroSchema::parse_str(self.avro_schema_json()).map_err(|e| e.to_string())?;
        let AvroSchema::Record(record) = &schema else {
            return Err("top-level type is not a record".into());
        };
        let names: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        let want: Vec<&str> = self.columns().iter().map(|c| c.name).collect();
        if names != want {
            return Err(format!("fields {names:?} differ from the columns {want:?}"));
        }
        for (field, col) in record.fields.iter().zip(self.columns()) {
            let ok = matches!(&field.schema, AvroSchema::Union(u)
                if u.variants() == [AvroSchema::Null, col.ty.avro()]);
            if !ok {
                return Err(format!("field `{}` is not [\"null\", {:?}]", col.name, col.ty));
            }
        }
        let bytes = schema.fingerprint::<Rabin>().bytes;
        let fingerprint = <[u8; 8]>::try_from(bytes.as_slice())
            .map_err(|_| format!("fingerprint has {} bytes, not 8", bytes.len()))?;
        Ok(Loaded { schema, fingerprint })
    }
}

impl fmt::Display for MirrorTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The canonical Arrow schema of a table: its columns in canonical order, all
/// nullable, with the types Deephaven uses. [`rows_to_batch`] builds batches
/// of this schema for replay.
pub fn arrow_schema(table: MirrorTable) -> SchemaRef {
    let fields: Vec<Field> = table.columns().iter().map(|c| Field::new(c.name, c.ty.arrow(), true)).collect();
    Arc::new(Schema::new(fields))
}

/// CRC-64-AVRO (the Rabin fingerprint of the Avro specification) of `data`.
/// Java's `SchemaNormalization.fingerprint64(byte[])` computes the same; the
/// fold's table checksum is built from it so other consumers can reproduce it.
pub fn crc64_avro(data: &[u8]) -> u64 {
    data.iter().fold(CRC64_EMPTY, |fp, &b| (fp >> 8) ^ CRC64_TABLE[((fp ^ u64::from(b)) & 0xff) as usize])
}

const CRC64_EMPTY: u64 = 0xc15d_213a_a4d7_a795;
const CRC64_TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut bit = 0;
        while bit < 8 {
            fp = (fp >> 1) ^ (CRC64_EMPTY & (fp & 1).wrapping_neg());
            bit += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

// ---------------------------------------------------------------------------
// Avro binary primitives.

fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Union branch 0 (`null`): zigzag(0), a single byte.
fn put_null(out: &mut Vec<u8>) {
    out.push(0);
}

/// Union branch 1 (the value): zigzag(1), a single byte.
fn put_present(out: &mut Vec<u8>) {
    out.push(2);
}

/// Union branch 1 followed by the string.
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_present(out);
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// A bounds-checked reader of an Avro datum; `pos` counts from the start of
/// the value so errors point at the byte a hex dump shows.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn fail(&self, field: &'static str, reason: &'static str) -> DecodeError {
        DecodeError::Malformed { field, offset: self.pos, reason }
    }

    fn long(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let mut z = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.fail(field, "datum ends inside a varint"));
            };
            if i == 9 && b > 1 {
                return Err(self.fail(field, "varint overflows 64 bits"));
            }
            self.pos += 1;
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(self.fail(field, "varint longer than 10 bytes"))
    }

    fn int(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        let start = self.pos;
        let v = self.long(field)?;
        i32::try_from(v).map_err(|_| DecodeError::Malformed { field, offset: start, reason: "int out of 32-bit range" })
    }

    /// Reads a `["null", T]` branch index: `false` for null, `true` for `T`.
    fn present(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let start = self.pos;
        match self.long(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed { field, offset: start, reason: "union branch index is not 0 or 1" }),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let start = self.pos;
        let len = self.long(field)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Malformed {
            field,
            offset: start,
            reason: "negative string length",
        })?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.fail(field, "string length exceeds the datum"));
        };
        let text =
            std::str::from_utf8(&self.buf[self.pos..end]).map_err(|_| self.fail(field, "string is not valid UTF-8"))?;
        self.pos = end;
        Ok(text.to_owned())
    }
}

/// A Rust type a column is held in (`Option` of `String`, `i64`, `i32`):
/// how it is written to and read from Avro and appended to Arrow.
trait FieldValue: Sized {
    type Builder: ArrayBuilder;
    fn builder(capacity: usize) -> Self::Builder;
    fn write(&self, out: &mut Vec<u8>);
    fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError>;
    fn append(&self, b: &mut Self::Builder);
    #[cfg(test)]
    fn to_avro(&self) -> apache_avro::types::Value;
}

impl FieldValue for Option<String> {
    type Builder = StringBuilder;
    fn builder(capacity: usize) -> StringBuilder {
        StringBuilder::with_capacity(capacity, capacity * 16)
    }
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Some(s) => put_str(out, s),
            None => put_null(out),
        }
    }
    fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        if r.present(field)? {
            r.string(field).map(Some)
        } else {
            Ok(None)
        }
    }
    fn append(&self, b: &mut StringBuilder) {
        b.append_option(self.as_deref());
    }
    #[cfg(test)]
    fn to_avro(&self) -> apache_avro::types::Value {
        use apache_avro::types::Value;
        match self {
            Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
            None => Value::Union(0, Box::new(Value::Null)),
        }
    }
}

macro_rules! int_field {
    ($t:ty, $builder:ty, $read:ident, $avro:ident) => {
        impl FieldValue for Option<$t> {
            type Builder = $builder;
            fn builder(capacity: usize) -> $builder {
                <$builder>::with_capacity(capacity)
            }
            fn write(&self, out: &mut Vec<u8>) {
                match *self {
                    Some(v) => {
                        put_present(out);
                        put_long(out, i64::from(v));
                    }
                    None => put_null(out),
                }
            }
            fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
                if r.present(field)? {
                    r.$read(field).map(Some)
                } else {
                    Ok(None)
                }
            }
            fn append(&self, b: &mut $builder) {
                b.append_option(*self);
            }
            #[cfg(test)]
            fn to_avro(&self) -> apache_avro::types::Value {
                use apache_avro::types::Value;
                match *self {
                    Some(v) => Value::Union(1, Box::new(Value::$avro(v))),
                    None => Value::Union(0, Box::new(Value::Null)),
                }
            }
        }
    };
}
int_field!(i64, Int64Builder, long, Long);
int_field!(i32, Int32Builder, int, Int);

macro_rules! field_ty {
    (String) => { Option<String> };
    (Long) => { Option<i64> };
    (Int) => { Option<i32> };
}

/// Defines a typed row struct and its column list from one field list, so the
/// two cannot drift apart; the bundled `.avsc` is checked against the list.
macro_rules! table_row {
    ($(#[$m:meta])* $name:ident, $cols:ident { $($(#[$fm:meta])* $field:ident : $ty:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name { $($(#[$fm])* pub $field: field_ty!($ty),)+ }

        const $cols: &[Column] = &[$(Column { name: stringify!($field), ty: ColumnType::$ty }),+];

        impl $name {
            fn write_datum(&self, out: &mut Vec<u8>) {
                $(self.$field.write(out);)+
            }
            fn read_datum(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self { $($field: FieldValue::read(r, stringify!($field))?,)+ })
            }
            fn columns<'a>(rows: impl ExactSizeIterator<Item = &'a Self>) -> Vec<ArrayRef> {
                let n = rows.len();
                $(let mut $field = <field_ty!($ty) as FieldValue>::builder(n);)+
                for row in rows {
                    $(row.$field.append(&mut $field);)+
                }
                vec![$(Arc::new($field.finish()) as ArrayRef),+]
            }
            /// The row as apache-avro's generic value, to cross-check the hand codec.
            #[cfg(test)]
            pub(crate) fn avro_value(&self) -> apache_avro::types::Value {
                apache_avro::types::Value::Record(vec![$((stringify!($field).to_owned(), self.$field.to_avro())),+])
            }
        }
    };
}

table_row! {
    /// One row of `agent_messages` (see DESIGN.md for the meaning of each
    /// column); every column is nullable as in Deephaven.
    MessageRow, MESSAGE_COLUMNS {
        /// Primary key; the Kafka record key.
        message_id: String,
        /// Enqueue time, epoch ns (claim order and TTL start).
        ts: Long,
        /// When dhbus accepted or adopted the row, epoch ns.
        ingest_ts: Long,
        /// Queue the message belongs to.
        topic: String,
        /// Conversation/session, for filtering.
        session_id: String,
        /// Task the message is part of.
        task_id: String,
        /// Producing agent.
        agent_id: String,
        /// system | user | agent.
        role: String,
        /// text | json | binary | embedding_ref | signal.
        msg_type: String,
        /// The payload (JSON when `msg_type` is json).
        payload_json: String,
        /// Reference to an out-of-band payload.
        payload_blob_ref: String,
        /// Higher is claimed first.
        priority: Int,
        /// Expiry after `ts` in ms; 0 = never.
        ttl_ms: Int,
        /// Agent holding the lease (empty when none).
        lease_owner: String,
        /// Lease deadline, epoch ns.
        lease_expires_ts: Long,
        /// queued | processing | done | error | expired.
        status: String,
        /// Nacks and lease expiries so far.
        retry_count: Int,
        /// Fencing token: +1 on every lease change.
        lease_epoch: Long,
        /// +1 on every change of the row: the order replay applies states in.
        version: Long,
        /// Time of the last change, epoch ns.
        updated_ts: Long,
    }
}

table_row! {
    /// One row of `agent_events`, the append-only audit log.
    EventRow, EVENT_COLUMNS {
        /// Primary key; the Kafka record key.
        event_id: String,
        /// When the event happened, epoch ns.
        ts: Long,
        /// Agent that caused it.
        agent_id: String,
        /// Session of the message.
        session_id: String,
        /// Message the event is about.
        message_id: String,
        /// publish | claimed | heartbeat | ack | nack | expired | ...
        event: String,
        /// JSON object with event details.
        details_json: String,
    }
}

/// A decoded (or to-be-encoded) row of either table: what replay folds and
/// writes back to Deephaven.
// Not boxed: the string contents dominate a row's memory, and boxing would
// cost one more allocation per decoded message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Row {
    /// A row of `agent_messages`.
    Message(MessageRow),
    /// A row of `agent_events`.
    Event(EventRow),
}

impl Row {
    /// The table the row belongs to.
    pub fn table(&self) -> MirrorTable {
        match self {
            Row::Message(_) => MirrorTable::Messages,
            Row::Event(_) => MirrorTable::Events,
        }
    }

    /// The primary key column's value (null only in a malformed row).
    pub fn key(&self) -> Option<&str> {
        match self {
            Row::Message(m) => m.message_id.as_deref(),
            Row::Event(e) => e.event_id.as_deref(),
        }
    }

    /// The version replay orders states by: the `version` column of a message
    /// (`None` when null), [`EVENT_VERSION`] for an event.
    pub fn version(&self) -> Option<i64> {
        match self {
            Row::Message(m) => m.version,
            Row::Event(_) => Some(EVENT_VERSION),
        }
    }

    /// Appends the row's Avro binary datum (no single-object header): the
    /// canonical encoding the fold checksum hashes.
    pub fn write_datum(&self, out: &mut Vec<u8>) {
        match self {
            Row::Message(m) => m.write_datum(out),
            Row::Event(e) => e.write_datum(out),
        }
    }
}

/// Builds an Arrow batch of [`arrow_schema()`]`(table)` from rows (for replay
/// into Deephaven). Every row must belong to `table`.
pub fn rows_to_batch(table: MirrorTable, rows: &[Row]) -> Result<RecordBatch, RowsError> {
    let columns = match table {
        MirrorTable::Messages => {
            let typed = typed_rows(table, rows, |r| if let Row::Message(m) = r { Some(m) } else { None })?;
            MessageRow::columns(typed.into_iter())
        }
        MirrorTable::Events => {
            let typed = typed_rows(table, rows, |r| if let Row::Event(e) = r { Some(e) } else { None })?;
            EventRow::columns(typed.into_iter())
        }
    };
    Ok(RecordBatch::try_new(arrow_schema(table), columns)?)
}

fn typed_rows<'a, T>(
    table: MirrorTable,
    rows: &'a [Row],
    pick: impl Fn(&'a Row) -> Option<&'a T>,
) -> Result<Vec<&'a T>, RowsError> {
    rows.iter()
        .enumerate()
        .map(|(index, r)| pick(r).ok_or(RowsError::WrongTable { expected: table, found: r.table(), index }))
        .collect()
}

// ---------------------------------------------------------------------------
// Encoding.

/// One Kafka record to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedRecord {
    /// Record key: the primary key, UTF-8 (Kafka compacts and partitions by it).
    pub key: String,
    /// Record value: the single-object encoded row, or `None` for a tombstone
    /// (a removed row).
    pub value: Option<Vec<u8>>,
    /// Record headers ([`HEADER_TABLE`], and [`HEADER_VERSION`] when known).
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// The row's version ([`Row::version`]); `None` for a tombstone or a null
    /// `version`. Lets the mirror track progress without decoding.
    pub version: Option<i64>,
}

/// Where one canonical column's values come from in a batch.
enum Source<'a> {
    Missing,
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
    Int64(&'a Int64Array),
    Int32(&'a Int32Array),
}

impl Source<'_> {
    fn str_at(&self, i: usize) -> Option<&str> {
        fn get<O: OffsetSizeTrait>(a: &GenericStringArray<O>, i: usize) -> Option<&str> {
            a.is_valid(i).then(|| a.value(i))
        }
        match self {
            Source::Utf8(a) => get(a, i),
            Source::LargeUtf8(a) => get(a, i),
            _ => None,
        }
    }

    fn long_at(&self, i: usize) -> Option<i64> {
        match self {
            Source::Int64(a) => a.is_valid(i).then(|| a.value(i)),
            Source::Int32(a) => a.is_valid(i).then(|| i64::from(a.value(i))),
            _ => None,
        }
    }

    fn write(&self, i: usize, out: &mut Vec<u8>) {
        match self {
            Source::Missing => put_null(out),
            Source::Utf8(_) | Source::LargeUtf8(_) => match self.str_at(i) {
                Some(s) => put_str(out, s),
                None => put_null(out),
            },
            Source::Int64(_) | Source::Int32(_) => match self.long_at(i) {
                Some(v) => {
                    put_present(out);
                    put_long(out, v);
                }
                None => put_null(out),
            },
        }
    }
}

/// Encodes rows of one table into Kafka records. Cheap to keep for the life
/// of the mirror; holds the header bytes it stamps on every record.
#[derive(Clone, Debug)]
pub struct RecordEncoder {
    table: MirrorTable,
    table_name: Vec<u8>,
    header: [u8; HEADER_LEN],
}

impl RecordEncoder {
    /// An encoder for `table`, stamping `table_name` (the configured name,
    /// tenant prefix included) in [`HEADER_TABLE`].
    pub fn new(table: MirrorTable, table_name: &str) -> Result<RecordEncoder, SchemaError> {
        let fp = table.fingerprint()?;
        let mut header = [0u8; HEADER_LEN];
        header[..2].copy_from_slice(&MAGIC);
        header[2..].copy_from_slice(&fp);
        Ok(RecordEncoder { table, table_name: table_name.as_bytes().to_vec(), header })
    }

    /// The table this encoder writes.
    pub fn table(&self) -> MirrorTable {
        self.table
    }

    /// Encodes every row of `batch`. Columns are matched by name in any order;
    /// absent columns (other than the key) are written as null.
    pub fn encode_batch(&self, batch: &RecordBatch) -> Result<Vec<EncodedRecord>, EncodeError> {
        let sources = self.bind(batch)?;
        let key = &sources[0];
        let version = self.table.columns().iter().position(|c| c.name == "version").map(|i| &sources[i]);
        let mut out = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let Some(k) = key.str_at(i) else {
                return Err(EncodeError::NullKey { table: self.table, column: self.table.key_column(), row: i });
            };
            let mut value = Vec::with_capacity(HEADER_LEN + 64 + 16 * sources.len());
            value.extend_from_slice(&self.header);
            for s in &sources {
                s.write(i, &mut value);
            }
            let version = match version {
                Some(v) => v.long_at(i),
                None => Some(EVENT_VERSION),
            };
            out.push(self.record(k.to_owned(), Some(value), version));
        }
        Ok(out)
    }

    /// Encodes one typed row (e.g. one the bus holds in memory).
    pub fn encode_row(&self, row: &Row) -> Result<EncodedRecord, EncodeError> {
        if row.table() != self.table {
            return Err(EncodeError::WrongTable { expected: self.table, found: row.table() });
        }
        let Some(key) = row.key() else {
            return Err(EncodeError::NullKey { table: self.table, column: self.table.key_column(), row: 0 });
        };
        let mut value = Vec::with_capacity(HEADER_LEN + 256);
        value.extend_from_slice(&self.header);
        row.write_datum(&mut value);
        Ok(self.record(key.to_owned(), Some(value), row.version()))
    }

    /// The tombstone of a removed row: its key, no value, no version.
    pub fn tombstone(&self, key: &str) -> EncodedRecord {
        self.record(key.to_owned(), None, None)
    }

    /// Tombstones for every row of `batch` (e.g. the rows a Barrage delta
    /// removed, as the client-side copy last held them). Only the key column
    /// is read; the others are checked like [`RecordEncoder::encode_batch`] does.
    pub fn encode_tombstones(&self, batch: &RecordBatch) -> Result<Vec<EncodedRecord>, EncodeError> {
        let sources = self.bind(batch)?;
        (0..batch.num_rows())
            .map(|i| match sources[0].str_at(i) {
                Some(k) => Ok(self.tombstone(k)),
                None => Err(EncodeError::NullKey { table: self.table, column: self.table.key_column(), row: i }),
            })
            .collect()
    }

    fn record(&self, key: String, value: Option<Vec<u8>>, version: Option<i64>) -> EncodedRecord {
        let mut headers = Vec::with_capacity(2);
        headers.push((HEADER_TABLE, self.table_name.clone()));
        if let Some(v) = version {
            headers.push((HEADER_VERSION, v.to_string().into_bytes()));
        }
        EncodedRecord { key, value, headers, version }
    }

    /// Maps each canonical column to its source in `batch`, checking names
    /// and types.
    fn bind<'a>(&self, batch: &'a RecordBatch) -> Result<Vec<Source<'a>>, EncodeError> {
        let table = self.table;
        let cols = table.columns();
        let mut sources: Vec<Source<'a>> = cols.iter().map(|_| Source::Missing).collect();
        for (field, array) in batch.schema_ref().fields().iter().zip(batch.columns()) {
            let name = field.name();
            let Some(idx) = cols.iter().position(|c| c.name == name) else {
                return Err(EncodeError::UnknownColumn { table, column: name.clone() });
            };
            if !matches!(sources[idx], Source::Missing) {
                return Err(EncodeError::DuplicateColumn { table, column: name.clone() });
            }
            let ty = cols[idx].ty;
            sources[idx] = match (ty, array.data_type()) {
                (ColumnType::String, DataType::Utf8) => Source::Utf8(array.as_string::<i32>()),
                (ColumnType::String, DataType::LargeUtf8) => Source::LargeUtf8(array.as_string::<i64>()),
                (ColumnType::Long, DataType::Int64) => Source::Int64(array.as_primitive()),
                (ColumnType::Int, DataType::Int32) => Source::Int32(array.as_primitive()),
                (_, found) => {
                    return Err(EncodeError::WrongType {
                        table,
                        column: name.clone(),
                        expected: ty.arrow(),
                        found: found.clone(),
                    })
                }
            };
        }
        if matches!(sources[0], Source::Missing) {
            return Err(EncodeError::MissingKeyColumn { table, column: table.key_column() });
        }
        Ok(sources)
    }
}

// ---------------------------------------------------------------------------
// Decoding.

/// A consumed Kafka record turned back into a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRecord {
    /// The record key (the row's primary key).
    pub key: String,
    /// The row, or `None` for a tombstone.
    pub row: Option<Row>,
}

/// Decodes Kafka records written by [`RecordEncoder`], for replay and for
/// anyone auditing a topic.
#[derive(Clone, Debug)]
pub struct RecordDecoder {
    /// Known writer schemas by fingerprint. Holds the current schema of each
    /// table; a future schema change adds the old fingerprint here with a
    /// decoder for it rather than breaking old records.
    known: Vec<([u8; 8], MirrorTable)>,
}

impl RecordDecoder {
    /// A decoder knowing the bundled writer schemas of both tables.
    pub fn new() -> Result<RecordDecoder, SchemaError> {
        let known = MirrorTable::ALL.iter().map(|&t| Ok((t.fingerprint()?, t))).collect::<Result<_, SchemaError>>()?;
        Ok(RecordDecoder { known })
    }

    /// Checks the single-object header of `value` and tells which table's
    /// writer schema it names.
    pub fn identify(&self, value: &[u8]) -> Result<MirrorTable, DecodeError> {
        let Some(header) = value.get(..HEADER_LEN) else {
            return Err(DecodeError::TooShort { len: value.len() });
        };
        if header[..2] != MAGIC {
            return Err(DecodeError::BadMagic { found: [header[0], header[1]] });
        }
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[2..]);
        self.known
            .iter()
            .find(|(fp, _)| *fp == bytes)
            .map(|&(_, t)| t)
            .ok_or(DecodeError::UnknownFingerprint { fingerprint: u64::from_le_bytes(bytes), bytes })
    }

    /// Decodes a value (never a tombstone) into the row of whichever table
    /// its fingerprint names.
    pub fn decode_value(&self, value: &[u8]) -> Result<Row, DecodeError> {
        let table = self.identify(value)?;
        Self::read_row(table, value)
    }

    /// Reads the datum after an already checked header.
    fn read_row(table: MirrorTable, value: &[u8]) -> Result<Row, DecodeError> {
        let mut r = Reader { buf: value, pos: HEADER_LEN };
        let row = match table {
            MirrorTable::Messages => Row::Message(MessageRow::read_datum(&mut r)?),
            MirrorTable::Events => Row::Event(EventRow::read_datum(&mut r)?),
        };
        if r.pos != value.len() {
            return Err(DecodeError::TrailingBytes { count: value.len() - r.pos });
        }
        Ok(row)
    }

    /// Decodes a record read from the topic of `table`: checks the key is
    /// UTF-8, the value (if any) is a row of `table`, and its key column
    /// equals the record key.
    pub fn decode(&self, table: MirrorTable, key: &[u8], value: Option<&[u8]>) -> Result<DecodedRecord, DecodeError> {
        let key = std::str::from_utf8(key).map_err(|_| DecodeError::InvalidKey)?.to_owned();
        let Some(value) = value else {
            return Ok(DecodedRecord { key, row: None });
        };
        let found = self.identify(value)?;
        if found != table {
            return Err(DecodeError::WrongTable { expected: table, found });
        }
        let row = Self::read_row(table, value)?;
        if row.key() != Some(key.as_str()) {
            return Err(DecodeError::KeyMismatch { row_key: row.key().map(str::to_owned), key });
        }
        Ok(DecodedRecord { key, row: Some(row) })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use apache_avro::types::Value;
    use apache_avro::GenericSingleObjectWriter;
    use arrow::array::LargeStringArray;
    use proptest::prelude::*;

    fn opt_str() -> impl Strategy<Value = Option<String>> {
        let text = prop_oneof![
            Just(String::new()),
            "[a-z0-9-]{1,12}",
            any::<String>(),
            Just("ünïcødé 😀 \u{0} \"q\"".to_owned()),
        ];
        prop::option::of(text)
    }
    fn opt_long() -> impl Strategy<Value = Option<i64>> {
        prop::option::of(prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0), Just(-1), any::<i64>()])
    }
    fn opt_int() -> impl Strategy<Value = Option<i32>> {
        prop::option::of(prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(0), any::<i32>()])
    }
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z0-9]{1,8}", any::<String>()]
    }

    /// A random message row with a non-null key.
    pub(crate) fn message_row() -> impl Strategy<Value = MessageRow> {
        let a = (key(), opt_long(), opt_long(), opt_str(), opt_str(), opt_str(), opt_str(), opt_str(), opt_str());
        let b = (opt_str(), opt_str(), opt_int(), opt_int(), opt_str(), opt_long(), opt_str(), opt_int());
        let c = (opt_long(), opt_long(), opt_long());
        (a, b, c).prop_map(|(a, b, c)| MessageRow {
            message_id: Some(a.0),
            ts: a.1,
            ingest_ts: a.2,
            topic: a.3,
            session_id: a.4,
            task_id: a.5,
            agent_id: a.6,
            role: a.7,
            msg_type: a.8,
            payload_json: b.0,
            payload_blob_ref: b.1,
            priority: b.2,
            ttl_ms: b.3,
            lease_owner: b.4,
            lease_expires_ts: b.5,
            status: b.6,
            retry_count: b.7,
            lease_epoch: c.0,
            version: c.1,
            updated_ts: c.2,
        })
    }

    /// A random event row with a non-null key.
    pub(crate) fn event_row() -> impl Strategy<Value = EventRow> {
        (key(), opt_long(), opt_str(), opt_str(), opt_str(), opt_str(), opt_str()).prop_map(|t| EventRow {
            event_id: Some(t.0),
            ts: t.1,
            agent_id: t.2,
            session_id: t.3,
            message_id: t.4,
            event: t.5,
            details_json: t.6,
        })
    }

    fn avro_value(row: &Row) -> Value {
        match row {
            Row::Message(m) => m.avro_value(),
            Row::Event(e) => e.avro_value(),
        }
    }

    fn table_rows() -> impl Strategy<Value = (MirrorTable, Vec<Row>)> {
        prop_oneof![
            prop::collection::vec(message_row().prop_map(Row::Message), 0..12).prop_map(|r| (MirrorTable::Messages, r)),
            prop::collection::vec(event_row().prop_map(Row::Event), 0..12).prop_map(|r| (MirrorTable::Events, r)),
        ]
    }

    fn encoder(table: MirrorTable) -> RecordEncoder {
        RecordEncoder::new(table, table.name()).expect("bundled schema")
    }

    fn decoder() -> RecordDecoder {
        RecordDecoder::new().expect("bundled schemas")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Arrow -> Avro -> rows gives back the rows; apache-avro reads our
        /// bytes as the same values and writes the very same bytes.
        #[test]
        fn round_trip_and_apache_agree((table, rows) in table_rows()) {
            let enc = encoder(table);
            let dec = decoder();
            let batch = rows_to_batch(table, &rows).expect("batch");
            let records = enc.encode_batch(&batch).expect("encode");
            prop_assert_eq!(records.len(), rows.len());
            let schema = table.avro_schema().expect("schema");
            let mut apache = GenericSingleObjectWriter::new_with_capacity(schema, 1024).expect("writer");
            for (rec, row) in records.iter().zip(&rows) {
                let value = rec.value.as_deref().expect("not a tombstone");
                prop_assert_eq!(Some(rec.key.as_str()), row.key());
                prop_assert_eq!(rec.version, row.version());
                let decoded = dec.decode(table, rec.key.as_bytes(), Some(value)).expect("decode");
                prop_assert_eq!(decoded.row.as_ref(), Some(row));
                let theirs = apache_avro::from_avro_datum(schema, &mut &value[HEADER_LEN..], None).expect("apache");
                prop_assert_eq!(&theirs, &avro_value(row));
                let mut written = Vec::new();
                apache.write_value(avro_value(row), &mut written).expect("apache write");
                prop_assert_eq!(&written, value);
                prop_assert_eq!(&enc.encode_row(row).expect("row"), rec);
            }
        }

        /// Garbage never panics, and whatever our decoder accepts apache-avro
        /// decodes to the same values.
        #[test]
        fn garbage_is_an_error_not_a_panic(table in prop_oneof![Just(MirrorTable::Messages), Just(MirrorTable::Events)],
                                           body in prop::collection::vec(any::<u8>(), 0..200),
                                           raw in prop::collection::vec(any::<u8>(), 0..40)) {
            let dec = decoder();
            let _ = dec.decode(table, &raw, Some(&raw));
            let _ = dec.decode_value(&raw);
            let mut value = Vec::from(MAGIC);
            value.extend_from_slice(&table.fingerprint().expect("fp"));
            value.extend_from_slice(&body);
            if let Ok(row) = dec.decode_value(&value) {
                let schema = table.avro_schema().expect("schema");
                let theirs = apache_avro::from_avro_datum(schema, &mut &value[HEADER_LEN..], None).expect("apache");
                prop_assert_eq!(theirs, avro_value(&row));
            }
        }

        /// Any single corrupted or truncated byte of a valid value is either
        /// an error or a value apache-avro agrees with.
        #[test]
        fn corrupted_values_fail_cleanly(row in message_row(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let rec = encoder(MirrorTable::Messages).encode_row(&Row::Message(row)).expect("encode");
            let value = rec.value.expect("value");
            let dec = decoder();
            let i = at.index(value.len());
            prop_assert!(dec.decode_value(&value[..i]).is_err());
            let mut bad = value.clone();
            bad[i] = byte;
            if let Ok(decoded) = dec.decode_value(&bad) {
                let schema = MirrorTable::Messages.avro_schema().expect("schema");
                let theirs = apache_avro::from_avro_datum(schema, &mut &bad[HEADER_LEN..], None).expect("apache");
                prop_assert_eq!(theirs, avro_value(&decoded));
            }
        }
    }

    #[test]
    fn fingerprints_match_apache_single_object_header() {
        for table in MirrorTable::ALL {
            let schema = table.avro_schema().expect("schema");
            let fp = table.fingerprint().expect("fp");
            assert_eq!(crc64_avro(schema.canonical_form().as_bytes()).to_le_bytes(), fp);
            let mut w = GenericSingleObjectWriter::new_with_capacity(schema, 1024).expect("writer");
            let row = match table {
                MirrorTable::Messages => {
                    Row::Message(MessageRow { message_id: Some("k".into()), ..Default::default() })
                }
                MirrorTable::Events => Row::Event(EventRow { event_id: Some("k".into()), ..Default::default() }),
            };
            let mut theirs = Vec::new();
            w.write_value(avro_value(&row), &mut theirs).expect("write");
            let ours = encoder(table).encode_row(&row).expect("encode").value.expect("value");
            assert_eq!(&ours[..HEADER_LEN], &theirs[..HEADER_LEN]);
            assert_eq!(ours, theirs);
        }
        assert_ne!(MirrorTable::Messages.fingerprint(), MirrorTable::Events.fingerprint());
    }

    /// The Avro schemas, the Rust columns and the canonical table definitions
    /// (`schemas/*.json`) agree on names, order and types.
    #[test]
    fn schemas_agree_with_canonical_tables() {
        let defs = [
            (MirrorTable::Messages, include_str!("../../schemas/agent_messages.json")),
            (MirrorTable::Events, include_str!("../../schemas/agent_events.json")),
        ];
        for (table, text) in defs {
            let def: serde_json::Value = serde_json::from_str(text).expect("json");
            assert_eq!(def["table"], table.name());
            let cols = def["columns"].as_array().expect("columns");
            let want: Vec<(String, String)> = cols
                .iter()
                .map(|c| (c["name"].as_str().unwrap_or("").to_owned(), c["type"].as_str().unwrap_or("").to_owned()))
                .collect();
            let ours: Vec<(String, String)> =
                table.columns().iter().map(|c| (c.name.to_owned(), format!("{:?}", c.ty).to_lowercase())).collect();
            assert_eq!(ours, want);
            let arrow = arrow_schema(table);
            let names: Vec<&str> = arrow.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(names, table.columns().iter().map(|c| c.name).collect::<Vec<_>>());
            assert!(arrow.fields().iter().all(|f| f.is_nullable()));
            assert!(table.avro_schema().is_ok());
            assert_eq!(MirrorTable::from_name(table.name()), Some(table));
        }
        assert_eq!(MirrorTable::Messages.key_column(), "message_id");
        assert_eq!(MirrorTable::Events.key_column(), "event_id");
    }

    #[test]
    fn crc64_avro_matches_apache_rabin() {
        for json in ["\"null\"", "\"int\"", "{\"type\":\"array\",\"items\":\"string\"}"] {
            let schema = AvroSchema::parse_str(json).expect("schema");
            let theirs = schema.fingerprint::<Rabin>().bytes;
            assert_eq!(crc64_avro(schema.canonical_form().as_bytes()).to_le_bytes().as_slice(), theirs.as_slice());
        }
        assert_eq!(crc64_avro(b""), 0xc15d_213a_a4d7_a795);
    }

    #[test]
    fn batch_columns_in_any_order_missing_and_large_utf8() {
        let batch = RecordBatch::try_from_iter(vec![
            ("version", Arc::new(Int64Array::from(vec![Some(7), None])) as ArrayRef),
            ("payload_json", Arc::new(LargeStringArray::from(vec![Some("{}"), None])) as ArrayRef),
            ("message_id", Arc::new(arrow::array::StringArray::from(vec!["a", "b"])) as ArrayRef),
            ("priority", Arc::new(Int32Array::from(vec![Some(-3), Some(i32::MAX)])) as ArrayRef),
        ])
        .expect("batch");
        let enc = RecordEncoder::new(MirrorTable::Messages, "tenant_agent_messages").expect("enc");
        let recs = enc.encode_batch(&batch.slice(0, 2)).expect("encode");
        let rows: Vec<Row> =
            recs.iter().map(|r| decoder().decode_value(r.value.as_deref().expect("v")).expect("decode")).collect();
        let want = [
            MessageRow {
                message_id: Some("a".into()),
                version: Some(7),
                payload_json: Some("{}".into()),
                priority: Some(-3),
                ..Default::default()
            },
            MessageRow { message_id: Some("b".into()), priority: Some(i32::MAX), ..Default::default() },
        ];
        assert_eq!(rows, want.map(Row::Message));
        assert_eq!(
            recs[0].headers,
            vec![(HEADER_TABLE, b"tenant_agent_messages".to_vec()), (HEADER_VERSION, b"7".to_vec())]
        );
        assert_eq!(recs[1].headers, vec![(HEADER_TABLE, b"tenant_agent_messages".to_vec())]);
        assert_eq!(recs[1].version, None);
        let sliced = enc.encode_batch(&batch.slice(1, 1)).expect("sliced");
        assert_eq!(sliced[0], recs[1]);
        let tombs = enc.encode_tombstones(&batch).expect("tombstones");
        assert_eq!(tombs, vec![enc.tombstone("a"), enc.tombstone("b")]);
    }

    #[test]
    fn event_headers_and_tombstones() {
        let enc = encoder(MirrorTable::Events);
        let rec =
            enc.encode_row(&Row::Event(EventRow { event_id: Some("e1".into()), ..Default::default() })).expect("enc");
        assert_eq!(rec.version, Some(EVENT_VERSION));
        assert_eq!(rec.headers[1], (HEADER_VERSION, b"0".to_vec()));
        let t = enc.tombstone("e1");
        assert_eq!((t.key.as_str(), &t.value, t.version), ("e1", &None, None));
        assert_eq!(t.headers, vec![(HEADER_TABLE, b"agent_events".to_vec())]);
        let d = decoder().decode(MirrorTable::Events, b"e1", None).expect("tombstone");
        assert_eq!(d, DecodedRecord { key: "e1".into(), row: None });
    }

    #[test]
    fn bad_batches_name_the_column() {
        let enc = encoder(MirrorTable::Events);
        let col = |v: Vec<Option<&str>>| Arc::new(arrow::array::StringArray::from(v)) as ArrayRef;
        let err = |cols: Vec<(&str, ArrayRef)>| {
            enc.encode_batch(&RecordBatch::try_from_iter(cols).expect("batch")).unwrap_err()
        };
        let e = err(vec![("event_id", col(vec![Some("a")])), ("bogus", col(vec![None]))]);
        assert_eq!(e, EncodeError::UnknownColumn { table: MirrorTable::Events, column: "bogus".into() });
        assert!(e.to_string().contains("`bogus`"));
        let e = err(vec![("event_id", col(vec![Some("a")])), ("ts", col(vec![None]))]);
        assert_eq!(
            e,
            EncodeError::WrongType {
                table: MirrorTable::Events,
                column: "ts".into(),
                expected: DataType::Int64,
                found: DataType::Utf8
            }
        );
        assert!(e.to_string().contains("`ts`") && e.to_string().contains("Int64") && e.to_string().contains("Utf8"));
        let e = err(vec![("event_id", col(vec![Some("a")])), ("event_id", col(vec![Some("b")]))]);
        assert!(matches!(e, EncodeError::DuplicateColumn { .. }));
        let e = err(vec![("event", col(vec![Some("a")]))]);
        assert_eq!(e, EncodeError::MissingKeyColumn { table: MirrorTable::Events, column: "event_id" });
        let e = err(vec![("event_id", col(vec![Some("a"), None]))]);
        assert_eq!(e, EncodeError::NullKey { table: MirrorTable::Events, column: "event_id", row: 1 });
        let msg = Row::Message(MessageRow { message_id: Some("m".into()), ..Default::default() });
        assert!(matches!(enc.encode_row(&msg), Err(EncodeError::WrongTable { .. })));
        assert!(matches!(rows_to_batch(MirrorTable::Events, &[msg]), Err(RowsError::WrongTable { index: 0, .. })));
    }

    #[test]
    fn corrupt_records_give_precise_errors() {
        let dec = decoder();
        let enc = encoder(MirrorTable::Events);
        let row = EventRow { event_id: Some("e".into()), ts: Some(5), event: Some("ack".into()), ..Default::default() };
        let good = enc.encode_row(&Row::Event(row)).expect("enc").value.expect("v");
        let m = MirrorTable::Messages;
        let e = MirrorTable::Events;
        assert_eq!(dec.decode(e, b"e", Some(&good[..9])), Err(DecodeError::TooShort { len: 9 }));
        assert_eq!(
            dec.decode(e, b"e", Some(&[0xC3, 0x02, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(DecodeError::BadMagic { found: [0xC3, 0x02] })
        );
        let mut unknown = good.clone();
        unknown[2..10].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        let err = dec.decode(e, b"e", Some(&unknown)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownFingerprint { fingerprint: 0x0102_0304_0506_0708, bytes: [8, 7, 6, 5, 4, 3, 2, 1] }
        );
        assert!(err.to_string().contains("0102030405060708"));
        assert_eq!(dec.decode(m, b"e", Some(&good)), Err(DecodeError::WrongTable { expected: m, found: e }));
        assert_eq!(dec.decode(e, &[0xff], Some(&good)), Err(DecodeError::InvalidKey));
        assert_eq!(
            dec.decode(e, b"x", Some(&good)),
            Err(DecodeError::KeyMismatch { key: "x".into(), row_key: Some("e".into()) })
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(dec.decode(e, b"e", Some(&trailing)), Err(DecodeError::TrailingBytes { count: 1 }));
        let truncated = dec.decode(e, b"e", Some(&good[..good.len() - 1])).unwrap_err();
        assert!(matches!(truncated, DecodeError::Malformed { field: "details_json", .. }), "{truncated}");
        let mut branch = good.clone();
        branch[10] = 4; // union index 2 for event_id
        assert_eq!(
            dec.decode_value(&branch),
            Err(DecodeError::Malformed { field: "event_id", offset: 10, reason: "union branch index is not 0 or 1" })
        );
        let mut utf8 = good.clone();
        utf8[12] = 0xff; // the "e" of event_id
        assert!(matches!(
            dec.decode_value(&utf8),
            Err(DecodeError::Malformed { field: "event_id", reason: "string is not valid UTF-8", .. })
        ));
        let mut header = Vec::from(&good[..HEADER_LEN]);
        header.extend_from_slice(&[2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02]);
        assert!(matches!(
            dec.decode_value(&header),
            Err(DecodeError::Malformed { reason: "varint overflows 64 bits", .. })
        ));
        let mut int_range = Vec::from(&MAGIC);
        int_range.extend_from_slice(&m.fingerprint().expect("fp"));
        int_range.extend_from_slice(&[0; 11]); // eleven null fields up to priority
        int_range.extend_from_slice(&[2, 0x80, 0x80, 0x80, 0x80, 0x10]); // 2^32
        assert!(matches!(
            dec.decode_value(&int_range),
            Err(DecodeError::Malformed { field: "priority", reason: "int out of 32-bit range", .. })
        ));
    }
}

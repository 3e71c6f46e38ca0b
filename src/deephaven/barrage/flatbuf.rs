//! Barrage flatbuffers, written and read by hand (no generated code).
//!
//! Requests are built with the `flatbuffers` builder. Incoming metadata is
//! read with a small bounds-checked table reader instead of the crate's
//! (unsafe) accessors: every offset is checked against the buffer, so garbage
//! yields a [`BarrageError`], never a panic. Field slots follow
//! `format/Barrage.fbs` of deephaven/barrage 1.0.

use flatbuffers::{FlatBufferBuilder, VOffsetT};

use super::error::BarrageError;
use super::rowset::{decode_shift_data, RowSet, Shift};

/// `BarrageMessageWrapper.magic`: ASCII "dphn" read as a little-endian u32.
pub const BARRAGE_MAGIC: u32 = 0x6E68_7064;
/// `BarrageMessageType.BarrageSubscriptionRequest`.
pub const MSG_SUBSCRIPTION_REQUEST: u8 = 5;
/// `BarrageMessageType.BarrageUpdateMetadata`.
pub const MSG_UPDATE_METADATA: u8 = 6;

/// How the server sends column types Arrow cannot carry. Deprecated in the
/// schema (servers ignore it); kept so a caller can still pin it explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ColumnConversionMode {
    /// Send such columns as strings (the server default).
    Stringify = 1,
    /// Send Java-serialized bytes.
    JavaSerialization = 2,
    /// Refuse the subscription.
    ThrowError = 3,
}

/// Options of a `BarrageSubscriptionRequest`; zero/`None` fields are omitted
/// so the server applies its own defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Wrap every column in a list so modified columns may differ in length;
    /// [`UpdateAssembler`](super::decode::UpdateAssembler) requires it.
    pub columns_as_list: bool,
    /// Send Deephaven null sentinels instead of Arrow validity bitmaps.
    pub use_deephaven_nulls: bool,
    /// Server coalescing interval in ms (0: server default, 1000 ms).
    pub min_update_interval_ms: i32,
    /// Preferred rows per record batch (0: server default, -1: no batching).
    pub batch_size: i32,
    /// Largest message the server may send, in bytes (0: server default).
    pub max_message_size: i32,
    /// Deprecated conversion mode; `None` leaves the field out.
    pub column_conversion_mode: Option<ColumnConversionMode>,
    /// Position-space rows to subscribe to; `None` subscribes to the whole table.
    pub viewport: Option<RowSet>,
    /// Indices of the columns to subscribe to; `None` subscribes to all.
    pub columns: Option<Vec<usize>>,
}

/// One decoded `BarrageUpdateMetadata`: what changed in one update.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateMetadata {
    /// First upstream sequence number coalesced into this update.
    pub first_seq: i64,
    /// Last upstream sequence number coalesced into this update.
    pub last_seq: i64,
    /// True when the update is a (re)snapshot rather than a change set.
    pub is_snapshot: bool,
    /// The viewport in effect (position space), sent with viewport snapshots.
    pub effective_viewport: Option<RowSet>,
    /// Whether the effective viewport counts from the end of the table.
    pub effective_reverse_viewport: bool,
    /// Indices of the subscribed columns, sent with snapshots.
    pub effective_column_set: Option<Vec<usize>>,
    /// Keys added (post-shift key space).
    pub added_rows: RowSet,
    /// Keys removed (pre-shift key space).
    pub removed_rows: RowSet,
    /// How unmodified keys moved, applied after removes and before adds.
    pub shifts: Vec<Shift>,
    /// Keys whose data the add batches carry, when not equal to `added_rows`.
    pub added_rows_included: Option<RowSet>,
    /// Per column (schema order): keys modified in that column (post-update
    /// key space). Empty when the server sent no modification nodes.
    pub modified_rows: Vec<RowSet>,
    /// Size of the table on the server after this update.
    pub table_size: i64,
}

impl UpdateMetadata {
    /// The keys the add batches carry data for, in order.
    pub fn included_rows(&self) -> &RowSet {
        self.added_rows_included.as_ref().unwrap_or(&self.added_rows)
    }
}

/// Field slot `i` of a table as a vtable offset.
const fn slot(i: VOffsetT) -> VOffsetT {
    4 + 2 * i
}

/// Builds the `app_metadata` of the first DoExchange message: a wrapper around
/// a `BarrageSubscriptionRequest` for `ticket`.
pub fn subscription_request(ticket: &[u8], options: &SubscriptionOptions) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let ticket = fbb.create_vector(ticket);
    let columns = options.columns.as_ref().map(|c| fbb.create_vector(&bitset(c)));
    let viewport = options.viewport.as_ref().map(|v| fbb.create_vector(&v.encode()));

    let start = fbb.start_table();
    if let Some(mode) = options.column_conversion_mode {
        fbb.push_slot_always::<u8>(slot(0), mode as u8);
    }
    fbb.push_slot::<bool>(slot(1), options.use_deephaven_nulls, false);
    fbb.push_slot::<i32>(slot(2), options.min_update_interval_ms, 0);
    fbb.push_slot::<i32>(slot(3), options.batch_size, 0);
    fbb.push_slot::<i32>(slot(4), options.max_message_size, 0);
    fbb.push_slot::<bool>(slot(5), options.columns_as_list, false);
    let sub_options = fbb.end_table(start);

    let start = fbb.start_table();
    fbb.push_slot_always(slot(0), ticket);
    if let Some(columns) = columns {
        fbb.push_slot_always(slot(1), columns);
    }
    if let Some(viewport) = viewport {
        fbb.push_slot_always(slot(2), viewport);
    }
    fbb.push_slot_always(slot(3), sub_options);
    let request = fbb.end_table(start);
    fbb.finish_minimal(request);
    wrap_message(MSG_SUBSCRIPTION_REQUEST, fbb.finished_data())
}

/// Wraps a payload in a `BarrageMessageWrapper` with the Deephaven magic.
fn wrap_message(msg_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let payload = fbb.create_vector(payload);
    let start = fbb.start_table();
    fbb.push_slot_always::<u32>(slot(0), BARRAGE_MAGIC);
    fbb.push_slot_always::<u8>(slot(1), msg_type);
    fbb.push_slot_always(slot(2), payload);
    let wrapper = fbb.end_table(start);
    fbb.finish_minimal(wrapper);
    fbb.finished_data().to_vec()
}

/// Column indices as a little-endian bitset (bit `i % 8` of byte `i / 8`).
fn bitset(columns: &[usize]) -> Vec<u8> {
    let mut bits = vec![0u8; columns.iter().max().map_or(0, |&m| m / 8 + 1)];
    for &c in columns {
        bits[c / 8] |= 1 << (c % 8);
    }
    bits
}

/// The indices of the set bits of a little-endian bitset.
fn bitset_indices(bits: &[u8]) -> Vec<usize> {
    (0..bits.len() * 8).filter(|&i| bits[i / 8] & (1 << (i % 8)) != 0).collect()
}

/// Reads a `BarrageMessageWrapper`, checks its magic and returns its message
/// type and payload bytes (empty when absent).
pub fn parse_wrapper(bytes: &[u8]) -> Result<(u8, &[u8]), BarrageError> {
    let wrapper = Table::root(bytes, "BarrageMessageWrapper")?;
    let magic = wrapper.u32(0)?;
    if magic != BARRAGE_MAGIC {
        return Err(BarrageError::BadMagic { found: magic });
    }
    Ok((wrapper.u8(1)?, wrapper.bytes(2)?.unwrap_or_default()))
}

/// Parses the `app_metadata` of an update: a wrapper of type
/// `BarrageUpdateMetadata`, with every RowSet and the shifts decoded.
pub fn parse_update_metadata(app_metadata: &[u8]) -> Result<UpdateMetadata, BarrageError> {
    let (msg_type, payload) = parse_wrapper(app_metadata)?;
    if msg_type != MSG_UPDATE_METADATA {
        return Err(BarrageError::UnexpectedMessageType { expected: MSG_UPDATE_METADATA, found: msg_type });
    }
    let t = Table::root(payload, "BarrageUpdateMetadata")?;
    let rows = |slot| t.bytes(slot)?.map(RowSet::decode).transpose();
    let modified_rows = t
        .tables(10, "BarrageModColumnMetadata")?
        .iter()
        .map(|node| Ok(node.bytes(0)?.map(RowSet::decode).transpose()?.unwrap_or_default()))
        .collect::<Result<_, BarrageError>>()?;
    Ok(UpdateMetadata {
        first_seq: t.i64(0)?,
        last_seq: t.i64(1)?,
        is_snapshot: t.u8(2)? != 0,
        effective_viewport: rows(3)?,
        effective_reverse_viewport: t.u8(4)? != 0,
        effective_column_set: t.bytes(5)?.map(bitset_indices),
        added_rows: rows(6)?.unwrap_or_default(),
        removed_rows: rows(7)?.unwrap_or_default(),
        shifts: decode_shift_data(t.bytes(8)?.unwrap_or_default())?,
        added_rows_included: rows(9)?,
        modified_rows,
        table_size: t.i64(11)?,
    })
}

/// A bounds-checked view of one flatbuffer table.
#[derive(Clone, Copy)]
struct Table<'a> {
    /// The whole flatbuffer (offsets are relative to it).
    buf: &'a [u8],
    /// Start of the table (where its vtable offset is stored).
    pos: usize,
    /// Start of the table's vtable.
    vtable: usize,
    /// Size of the vtable in bytes; slots beyond it are absent.
    vtable_len: usize,
    /// Inline size of the table; fields must lie within it.
    table_len: usize,
    /// Table type name, for error messages.
    name: &'static str,
}

impl<'a> Table<'a> {
    /// The root table of a finished buffer.
    fn root(buf: &'a [u8], name: &'static str) -> Result<Self, BarrageError> {
        let pos = read::<4>(buf, 0, name)?;
        Self::at(buf, u32::from_le_bytes(pos) as usize, name)
    }

    /// The table starting at `pos`, after checking its vtable.
    fn at(buf: &'a [u8], pos: usize, name: &'static str) -> Result<Self, BarrageError> {
        let err = |detail: String| BarrageError::Flatbuffer { table: name, detail };
        let soffset = i32::from_le_bytes(read::<4>(buf, pos, name)?);
        let vtable = usize::try_from(pos as i64 - i64::from(soffset))
            .map_err(|_| err(format!("vtable offset {soffset} at {pos} points before the buffer")))?;
        let vtable_len = usize::from(u16::from_le_bytes(read::<2>(buf, vtable, name)?));
        let table_len = usize::from(u16::from_le_bytes(read::<2>(buf, vtable + 2, name)?));
        if vtable_len < 4 || vtable_len % 2 != 0 || vtable + vtable_len > buf.len() {
            return Err(err(format!("bad vtable length {vtable_len} at {vtable}")));
        }
        if table_len < 4 || pos + table_len > buf.len() {
            return Err(err(format!("table of {table_len} bytes at {pos} exceeds the buffer")));
        }
        Ok(Table { buf, pos, vtable, vtable_len, table_len, name })
    }

    /// Position of field `index` holding `size` inline bytes, if present.
    fn field(&self, index: VOffsetT, size: usize) -> Result<Option<usize>, BarrageError> {
        let entry = usize::from(slot(index));
        if entry + 2 > self.vtable_len {
            return Ok(None);
        }
        let offset = usize::from(u16::from_le_bytes(read::<2>(self.buf, self.vtable + entry, self.name)?));
        if offset == 0 {
            return Ok(None);
        }
        if offset + size > self.table_len {
            let detail = format!("field {index} at offset {offset} overruns the {}-byte table", self.table_len);
            return Err(BarrageError::Flatbuffer { table: self.name, detail });
        }
        Ok(Some(self.pos + offset))
    }

    fn scalar<const N: usize>(&self, index: VOffsetT) -> Result<[u8; N], BarrageError> {
        match self.field(index, N)? {
            Some(at) => read::<N>(self.buf, at, self.name),
            None => Ok([0; N]),
        }
    }

    fn u8(&self, index: VOffsetT) -> Result<u8, BarrageError> {
        Ok(self.scalar::<1>(index)?[0])
    }

    fn u32(&self, index: VOffsetT) -> Result<u32, BarrageError> {
        Ok(u32::from_le_bytes(self.scalar(index)?))
    }

    fn i64(&self, index: VOffsetT) -> Result<i64, BarrageError> {
        Ok(i64::from_le_bytes(self.scalar(index)?))
    }

    /// Follows the offset stored in field `index` (a vector or sub-table).
    fn indirect(&self, index: VOffsetT) -> Result<Option<usize>, BarrageError> {
        let Some(at) = self.field(index, 4)? else { return Ok(None) };
        let target = at + u32::from_le_bytes(read::<4>(self.buf, at, self.name)?) as usize;
        Ok(Some(target))
    }

    /// A `[byte]` field.
    fn bytes(&self, index: VOffsetT) -> Result<Option<&'a [u8]>, BarrageError> {
        let Some(vector) = self.indirect(index)? else { return Ok(None) };
        let len = u32::from_le_bytes(read::<4>(self.buf, vector, self.name)?) as usize;
        let data = self.buf.get(vector + 4..).and_then(|rest| rest.get(..len));
        let detail = || format!("field {index}: {len}-byte vector at {vector} exceeds the buffer");
        data.map(Some).ok_or_else(|| BarrageError::Flatbuffer { table: self.name, detail: detail() })
    }

    /// A `[Table]` field; a missing field is an empty vector.
    fn tables(&self, index: VOffsetT, name: &'static str) -> Result<Vec<Table<'a>>, BarrageError> {
        let Some(vector) = self.indirect(index)? else { return Ok(Vec::new()) };
        let len = u32::from_le_bytes(read::<4>(self.buf, vector, self.name)?) as usize;
        if len.saturating_mul(4) > self.buf.len().saturating_sub(vector + 4) {
            let detail = format!("field {index}: {len}-element vector at {vector} exceeds the buffer");
            return Err(BarrageError::Flatbuffer { table: self.name, detail });
        }
        (0..len)
            .map(|i| {
                let at = vector + 4 + 4 * i;
                let target = at + u32::from_le_bytes(read::<4>(self.buf, at, self.name)?) as usize;
                Table::at(self.buf, target, name)
            })
            .collect()
    }
}

/// Reads `N` bytes at `pos`, or reports the table being read as malformed.
fn read<const N: usize>(buf: &[u8], pos: usize, table: &'static str) -> Result<[u8; N], BarrageError> {
    let mut out = [0u8; N];
    let bytes = buf.get(pos..).and_then(|rest| rest.get(..N)).ok_or_else(|| BarrageError::Flatbuffer {
        table,
        detail: format!("{N}-byte read at {pos} exceeds the {}-byte buffer", buf.len()),
    })?;
    out.copy_from_slice(bytes);
    Ok(out)
}

/// Encodes update metadata the way the server does (tests only).
#[cfg(test)]
pub(crate) fn encode_update_metadata(meta: &UpdateMetadata) -> Vec<u8> {
    use super::rowset::encode_shift_data;
    use flatbuffers::{Vector, WIPOffset};
    type Bytes<'f> = Option<WIPOffset<Vector<'f, u8>>>;
    fn vector<'f>(fbb: &mut FlatBufferBuilder<'f>, bytes: Option<Vec<u8>>) -> Bytes<'f> {
        bytes.map(|b| fbb.create_vector(&b))
    }
    let mut fbb = FlatBufferBuilder::new();
    let viewport = vector(&mut fbb, meta.effective_viewport.as_ref().map(RowSet::encode));
    let column_set = vector(&mut fbb, meta.effective_column_set.as_deref().map(bitset));
    let added = vector(&mut fbb, Some(meta.added_rows.encode()));
    let removed = vector(&mut fbb, Some(meta.removed_rows.encode()));
    let shifts = vector(&mut fbb, Some(encode_shift_data(&meta.shifts)));
    let included = vector(&mut fbb, meta.added_rows_included.as_ref().map(RowSet::encode));
    let nodes: Vec<_> = meta
        .modified_rows
        .iter()
        .map(|rows| {
            let bytes = fbb.create_vector(&rows.encode());
            let start = fbb.start_table();
            fbb.push_slot_always(slot(0), bytes);
            fbb.end_table(start)
        })
        .collect();
    let nodes = fbb.create_vector(&nodes);
    let start = fbb.start_table();
    fbb.push_slot::<i64>(slot(0), meta.first_seq, 0);
    fbb.push_slot::<i64>(slot(1), meta.last_seq, 0);
    fbb.push_slot::<bool>(slot(2), meta.is_snapshot, false);
    for (index, field) in [(3, viewport), (5, column_set), (6, added), (7, removed), (8, shifts), (9, included)] {
        if let Some(field) = field {
            fbb.push_slot_always(slot(index), field);
        }
    }
    fbb.push_slot::<bool>(slot(4), meta.effective_reverse_viewport, false);
    fbb.push_slot_always(slot(10), nodes);
    fbb.push_slot::<i64>(slot(11), meta.table_size, 0);
    let root = fbb.end_table(start);
    fbb.finish_minimal(root);
    wrap_message(MSG_UPDATE_METADATA, fbb.finished_data())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flatbuffers::{ForwardsUOffset, InvalidFlatbuffer, Vector, Verifiable, Verifier, VerifierOptions};
    use proptest::prelude::*;

    type ByteVector<'a> = ForwardsUOffset<Vector<'a, u8>>;

    /// Independent structural check of our output with the flatbuffers verifier.
    struct WrapperFb;
    impl Verifiable for WrapperFb {
        fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<u32>("magic", slot(0), true)?
                .visit_field::<u8>("msg_type", slot(1), true)?
                .visit_field::<ByteVector<'_>>("msg_payload", slot(2), true)?
                .finish();
            Ok(())
        }
    }

    struct OptionsFb;
    impl Verifiable for OptionsFb {
        fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<u8>("column_conversion_mode", slot(0), false)?
                .visit_field::<bool>("use_deephaven_nulls", slot(1), false)?
                .visit_field::<i32>("min_update_interval_ms", slot(2), false)?
                .visit_field::<i32>("batch_size", slot(3), false)?
                .visit_field::<i32>("max_message_size", slot(4), false)?
                .visit_field::<bool>("columns_as_list", slot(5), false)?
                .finish();
            Ok(())
        }
    }

    struct RequestFb;
    impl Verifiable for RequestFb {
        fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<ByteVector<'_>>("ticket", slot(0), true)?
                .visit_field::<ByteVector<'_>>("columns", slot(1), false)?
                .visit_field::<ByteVector<'_>>("viewport", slot(2), false)?
                .visit_field::<ForwardsUOffset<OptionsFb>>("subscription_options", slot(3), true)?
                .finish();
            Ok(())
        }
    }

    fn verify<T: Verifiable>(buf: &[u8]) {
        let opts = VerifierOptions::default();
        let mut verifier = Verifier::new(&opts, buf);
        <ForwardsUOffset<T>>::run_verifier(&mut verifier, 0).unwrap();
    }

    #[test]
    fn subscription_request_has_the_schema_layout() {
        let options = SubscriptionOptions {
            columns_as_list: true,
            use_deephaven_nulls: true,
            min_update_interval_ms: 50,
            batch_size: 4096,
            max_message_size: 1 << 20,
            column_conversion_mode: Some(ColumnConversionMode::Stringify),
            viewport: Some(RowSet::from_range(0, 99).unwrap()),
            columns: Some(vec![0, 2, 9]),
        };
        let bytes = subscription_request(b"s/agents", &options);
        verify::<WrapperFb>(&bytes);
        let (msg_type, payload) = parse_wrapper(&bytes).unwrap();
        assert_eq!(msg_type, MSG_SUBSCRIPTION_REQUEST);
        verify::<RequestFb>(payload);

        let request = Table::root(payload, "BarrageSubscriptionRequest").unwrap();
        assert_eq!(request.bytes(0).unwrap(), Some(&b"s/agents"[..]));
        assert_eq!(request.bytes(1).unwrap(), Some(&[0b0000_0101, 0b0000_0010][..]));
        assert_eq!(RowSet::decode(request.bytes(2).unwrap().unwrap()).unwrap(), options.viewport.clone().unwrap());
        let at = request.indirect(3).unwrap().unwrap();
        let opts = Table::at(payload, at, "BarrageSubscriptionOptions").unwrap();
        assert_eq!(opts.u8(0).unwrap(), 1);
        assert_eq!(opts.u8(1).unwrap(), 1);
        assert_eq!(i32::from_le_bytes(opts.scalar(2).unwrap()), 50);
        assert_eq!(i32::from_le_bytes(opts.scalar(3).unwrap()), 4096);
        assert_eq!(i32::from_le_bytes(opts.scalar(4).unwrap()), 1 << 20);
        assert_eq!(opts.u8(5).unwrap(), 1);
    }

    #[test]
    fn default_options_leave_fields_out() {
        let bytes = subscription_request(b"e\x01\x00\x00\x00", &SubscriptionOptions::default());
        let (_, payload) = parse_wrapper(&bytes).unwrap();
        verify::<RequestFb>(payload);
        let request = Table::root(payload, "BarrageSubscriptionRequest").unwrap();
        assert_eq!((request.bytes(1).unwrap(), request.bytes(2).unwrap()), (None, None));
        let opts = Table::at(payload, request.indirect(3).unwrap().unwrap(), "options").unwrap();
        for field in 0..6 {
            assert_eq!(opts.field(field, 1).unwrap(), None, "field {field}");
        }
    }

    fn sample_metadata() -> UpdateMetadata {
        UpdateMetadata {
            first_seq: 7,
            last_seq: 9,
            is_snapshot: false,
            effective_viewport: None,
            effective_reverse_viewport: false,
            effective_column_set: Some(vec![0, 1, 2]),
            added_rows: RowSet::from_ranges([(10, 12), (1 << 40, 1 << 40)]).unwrap(),
            removed_rows: RowSet::from_keys([1, 3, 5]).unwrap(),
            shifts: vec![Shift { start: 6, end: 9, delta: -2 }],
            added_rows_included: None,
            modified_rows: vec![RowSet::from_keys([2]).unwrap(), RowSet::new(), RowSet::from_range(4, 8).unwrap()],
            table_size: 42,
        }
    }

    #[test]
    fn update_metadata_round_trips() {
        let mut meta = sample_metadata();
        assert_eq!(parse_update_metadata(&encode_update_metadata(&meta)).unwrap(), meta);
        meta.is_snapshot = true;
        meta.effective_viewport = Some(RowSet::from_range(0, 9).unwrap());
        meta.effective_reverse_viewport = true;
        meta.added_rows_included = Some(RowSet::from_range(10, 11).unwrap());
        meta.modified_rows.clear();
        assert_eq!(parse_update_metadata(&encode_update_metadata(&meta)).unwrap(), meta);
        assert_eq!(meta.included_rows(), &RowSet::from_range(10, 11).unwrap());
    }

    #[test]
    fn rejects_wrong_magic_type_and_garbage() {
        let request = subscription_request(b"t", &SubscriptionOptions::default());
        assert!(matches!(
            parse_update_metadata(&request),
            Err(BarrageError::UnexpectedMessageType { expected: 6, found: 5 })
        ));
        let mut bad = request.clone();
        let magic = bad.windows(4).position(|w| w == BARRAGE_MAGIC.to_le_bytes()).unwrap();
        bad[magic] ^= 1;
        assert!(matches!(parse_wrapper(&bad), Err(BarrageError::BadMagic { .. })));
        assert!(matches!(parse_wrapper(&[]), Err(BarrageError::Flatbuffer { .. })));
        assert!(matches!(parse_wrapper(&[0xFF, 0xFF, 0xFF, 0x7F]), Err(BarrageError::Flatbuffer { .. })));
        let mut truncated = encode_update_metadata(&sample_metadata());
        truncated.truncate(truncated.len() - 8);
        assert!(parse_update_metadata(&truncated).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_update_metadata(&bytes);
        }

        #[test]
        fn corrupted_metadata_never_panics(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut bytes = encode_update_metadata(&sample_metadata());
            for (index, value) in flips {
                let i = index.index(bytes.len());
                bytes[i] = value;
            }
            let _ = parse_update_metadata(&bytes);
        }
    }
}

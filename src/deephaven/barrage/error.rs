//! Typed errors of the Barrage codec and the client-side table state.
//!
//! Every variant says what was malformed or inconsistent, so that a broken
//! subscription can be diagnosed from its log line alone.

use arrow::error::ArrowError;

/// Everything that can go wrong while decoding Barrage messages or applying
/// them to a [`TableState`](super::state::TableState).
#[derive(Debug, thiserror::Error)]
pub enum BarrageError {
    /// A RowSet byte string ended before its END command.
    #[error("RowSet truncated at byte {offset}: needed {needed} more byte(s)")]
    RowSetTruncated {
        /// Byte offset where the missing data should have started.
        offset: usize,
        /// How many more bytes the current command needed.
        needed: usize,
    },
    /// A RowSet command byte that is not one of OFFSET, SHORT_ARRAY,
    /// BYTE_ARRAY or END, or that names an unknown value width.
    #[error("RowSet has bad command byte {byte:#04x} at byte {offset}")]
    RowSetBadCommand {
        /// Byte offset of the command.
        offset: usize,
        /// The command byte as read.
        byte: u8,
    },
    /// A RowSet array command with a negative element count.
    #[error("RowSet array command at byte {offset} has negative count {count}")]
    RowSetBadCount {
        /// Byte offset of the command.
        offset: usize,
        /// The count as read.
        count: i64,
    },
    /// A RowSet key that is not greater than the key before it.
    #[error("RowSet key {key} at byte {offset} does not increase (previous key {previous})")]
    RowSetNonIncreasing {
        /// Byte offset of the offending value.
        offset: usize,
        /// The decoded key.
        key: u64,
        /// The previous (larger or equal) key.
        previous: u64,
    },
    /// A negative value (range end) with no pending range start.
    #[error("RowSet range end at byte {offset} has no range start")]
    RowSetRangeWithoutStart {
        /// Byte offset of the offending value.
        offset: usize,
    },
    /// A RowSet delta that takes the key past `i64::MAX`.
    #[error("RowSet key overflows i64 at byte {offset}")]
    RowSetOverflow {
        /// Byte offset of the offending value.
        offset: usize,
    },
    /// Bytes left over after a RowSet's END command.
    #[error("RowSet has {extra} trailing byte(s) after END at byte {offset}")]
    RowSetTrailingBytes {
        /// Byte offset just past the END command.
        offset: usize,
        /// Number of unread bytes.
        extra: usize,
    },
    /// A row key above `i64::MAX` (Deephaven keys are non-negative i64).
    #[error("row key {key} exceeds i64::MAX")]
    KeyOutOfRange {
        /// The rejected key.
        key: u64,
    },
    /// A range whose first key is above its last key.
    #[error("invalid range [{first}, {last}]")]
    InvalidRange {
        /// First key of the range.
        first: u64,
        /// Last key of the range.
        last: u64,
    },
    /// The three RowSets of shift data have different sizes.
    #[error("shift data has {starts} starts, {ends} ends and {dests} destinations")]
    ShiftCountMismatch {
        /// Number of start keys.
        starts: u64,
        /// Number of end keys.
        ends: u64,
        /// Number of destination keys.
        dests: u64,
    },
    /// A shift whose end is before its start, or whose ranges overlap.
    #[error("invalid shift [{start}, {end}] -> {dest}: {reason}")]
    InvalidShift {
        /// First key of the shifted range.
        start: u64,
        /// Last key of the shifted range.
        end: u64,
        /// New first key.
        dest: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A flatbuffer that cannot be read (offsets out of bounds, bad vtable).
    #[error("malformed {table} flatbuffer: {detail}")]
    Flatbuffer {
        /// Which table was being read.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A Barrage wrapper whose magic number is not `0x6E687064` ("dphn").
    #[error("Barrage wrapper has magic {found:#010x}, expected 0x6e687064")]
    BadMagic {
        /// The magic number found.
        found: u32,
    },
    /// A Barrage wrapper carrying another message type than the one expected.
    #[error("Barrage message type {found}, expected {expected}")]
    UnexpectedMessageType {
        /// The expected `BarrageMessageType`.
        expected: u8,
        /// The type found.
        found: u8,
    },
    /// Arrow IPC decoding or array manipulation failed.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// The Flight stream broke the Barrage message sequence.
    #[error("unexpected Barrage stream message: {0}")]
    UnexpectedMessage(String),
    /// A column's data did not have the shape the schema or metadata promised.
    #[error("column {column} ({name}): {detail}")]
    ColumnMismatch {
        /// Column index.
        column: usize,
        /// Column name.
        name: String,
        /// What was wrong.
        detail: String,
    },
    /// Metadata and data disagree on a count.
    #[error("{what}: expected {expected}, got {actual}")]
    LengthMismatch {
        /// What was being counted.
        what: &'static str,
        /// Count required by the metadata or schema.
        expected: usize,
        /// Count found.
        actual: usize,
    },
    /// An update removes a row key the table does not hold.
    #[error("update removes unknown row key {key}")]
    RemoveUnknownKey {
        /// The missing key.
        key: u64,
    },
    /// An update adds a row key the table already holds.
    #[error("update adds row key {key}, which already exists")]
    AddExistingKey {
        /// The duplicate key.
        key: u64,
    },
    /// An update modifies a row key the table does not hold.
    #[error("update modifies unknown row key {key} in column {column}")]
    ModifyUnknownKey {
        /// The missing key.
        key: u64,
        /// Column index of the modification.
        column: usize,
    },
    /// A shift moves a row onto a key that is still occupied.
    #[error("shift moves row key {from} onto occupied key {to}")]
    ShiftCollision {
        /// Key before the shift.
        from: u64,
        /// Occupied destination key.
        to: u64,
    },
    /// An update this client does not support (e.g. viewport repaints).
    #[error("unsupported update: {0}")]
    Unsupported(String),
    /// An earlier update failed half-way; the table copy is no longer trustworthy.
    #[error("table state is inconsistent after an earlier failed update; resubscribe")]
    Poisoned,
}

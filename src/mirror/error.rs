//! Typed errors of the mirror's record format: each variant names what is
//! wrong precisely enough for an operator to find the offending column,
//! record or schema without a debugger.

use arrow::datatypes::DataType;

use super::codec::MirrorTable;

/// A bundled Avro schema (`schemas/avro/*.avsc`) is unusable. Only a broken
/// build can produce it, but it is reported rather than panicking so that
/// start-up fails with a clear message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bundled Avro schema of `{table}` is invalid: {reason}")]
pub struct SchemaError {
    /// Which table's schema.
    pub table: MirrorTable,
    /// Why it was rejected (parse error, or how it disagrees with the codec's
    /// column list).
    pub reason: String,
}

/// Turning Arrow rows (or typed rows) into Kafka records failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// The batch has a column the table does not have: refusing it keeps a
    /// schema drift from being silently dropped from the durable copy.
    #[error("column `{column}` is not a column of `{table}`")]
    UnknownColumn {
        /// Table being encoded.
        table: MirrorTable,
        /// The unexpected column.
        column: String,
    },
    /// The batch has the same column twice, so which one to mirror is ambiguous.
    #[error("column `{column}` appears more than once in the batch for `{table}`")]
    DuplicateColumn {
        /// Table being encoded.
        table: MirrorTable,
        /// The repeated column.
        column: String,
    },
    /// A column has an Arrow type the Avro field cannot hold.
    #[error("column `{column}` of `{table}` has Arrow type {found}, expected {expected}")]
    WrongType {
        /// Table being encoded.
        table: MirrorTable,
        /// The offending column.
        column: String,
        /// The Arrow type the column must have.
        expected: DataType,
        /// The Arrow type it has.
        found: DataType,
    },
    /// The key column is absent from the batch: no row could be keyed.
    #[error("the batch for `{table}` has no key column `{column}`")]
    MissingKeyColumn {
        /// Table being encoded.
        table: MirrorTable,
        /// The key column.
        column: &'static str,
    },
    /// A row's key is null: it cannot be given a Kafka key, and an unkeyed
    /// record could never be compacted, replaced or deleted.
    #[error("row {row} of `{table}` has a null key `{column}`")]
    NullKey {
        /// Table being encoded.
        table: MirrorTable,
        /// The key column.
        column: &'static str,
        /// Index of the row in the batch (0 for a single typed row).
        row: usize,
    },
    /// A typed row of one table was given to the encoder of the other.
    #[error("a row of `{found}` was given to the encoder of `{expected}`")]
    WrongTable {
        /// Table of the encoder.
        expected: MirrorTable,
        /// Table of the row.
        found: MirrorTable,
    },
}

/// A Kafka record could not be turned back into a row. Garbage input always
/// ends here, never in a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record key is not UTF-8 (keys are written as UTF-8 text).
    #[error("record key is not valid UTF-8")]
    InvalidKey,
    /// The value is shorter than the 10-byte single-object header.
    #[error("value of {len} bytes is shorter than the 10-byte Avro single-object header")]
    TooShort {
        /// Length of the value.
        len: usize,
    },
    /// The value does not start with the single-object marker `C3 01`.
    #[error("value starts with {found:02X?}, not the Avro single-object marker [C3, 01]")]
    BadMagic {
        /// The first two bytes.
        found: [u8; 2],
    },
    /// The writer schema fingerprint is not one this build knows.
    #[error("unknown writer schema fingerprint {fingerprint:016x} (CRC-64-AVRO, bytes {bytes:02x?})")]
    UnknownFingerprint {
        /// The fingerprint as read little-endian.
        fingerprint: u64,
        /// The eight header bytes as they appear in the record.
        bytes: [u8; 8],
    },
    /// The record was written with the schema of another table (e.g. an
    /// events record on the messages topic).
    #[error("record of `{found}` found where `{expected}` was expected")]
    WrongTable {
        /// Table the caller asked for.
        expected: MirrorTable,
        /// Table whose schema the record names.
        found: MirrorTable,
    },
    /// The Avro datum does not decode against the writer schema.
    #[error("malformed Avro datum at byte {offset} (field `{field}`): {reason}")]
    Malformed {
        /// Field being read when decoding failed.
        field: &'static str,
        /// Offset in the value (header included) where the problem is.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The datum decoded but bytes remain after it.
    #[error("{count} trailing bytes after the Avro datum")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// The record key differs from the key column inside the value: one of
    /// the two is corrupt, and applying it could overwrite another row.
    #[error("record key `{key}` differs from the row's key column ({row_key:?})")]
    KeyMismatch {
        /// The Kafka record key.
        key: String,
        /// The key column of the decoded row.
        row_key: Option<String>,
    },
}

/// Building Arrow columns from typed rows failed.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    /// A row of the other table was in the slice.
    #[error("row {index} is a row of `{found}`, not `{expected}`")]
    WrongTable {
        /// Table of the batch being built.
        expected: MirrorTable,
        /// Table of the row.
        found: MirrorTable,
        /// Index of the row in the slice.
        index: usize,
    },
    /// Arrow refused the columns (not expected: columns are built to match).
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

/// A record could not be folded into table state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// A row of the other table was applied.
    #[error("a row of `{found}` was applied to the fold of `{expected}`")]
    WrongTable {
        /// Table being folded.
        expected: MirrorTable,
        /// Table of the row.
        found: MirrorTable,
    },
    /// The record key differs from the row's key column.
    #[error("record key `{key}` differs from the row's key column ({row_key:?})")]
    KeyMismatch {
        /// The record key.
        key: String,
        /// The key column of the row.
        row_key: Option<String>,
    },
}

//! Deephaven RowSets (ordered sets of row keys) and their wire codec.
//!
//! Barrage metadata carries added, removed and modified rows, shifts and
//! viewports as RowSets in Deephaven's "external compressed delta" format: a
//! sequence of commands, each one byte whose bits `0x38` name the command
//! (OFFSET, SHORT_ARRAY, BYTE_ARRAY, END) and bits `0x07` the width of the
//! little-endian value that follows (1 = i16, 2 = i32, 3 = i64, 4 = i8). The
//! values are deltas from the previous key: a non-negative delta starts a key,
//! a negative one closes a range from the pending key to `previous + |delta|`.

use std::fmt;

use super::error::BarrageError;

/// Largest row key: Deephaven row keys are non-negative `i64`s.
pub const MAX_KEY: u64 = i64::MAX as u64;

/// Sanity limit on shifts per update, so corrupt shift data cannot make the
/// client allocate or loop without bound.
const MAX_SHIFTS: u64 = 1 << 24;

const VALUE_I16: u8 = 1;
const VALUE_I32: u8 = 2;
const VALUE_I64: u8 = 3;
const VALUE_I8: u8 = 4;
const VALUE_MASK: u8 = 0x07;
const CMD_OFFSET: u8 = 0x08;
const CMD_SHORT_ARRAY: u8 = 0x10;
const CMD_BYTE_ARRAY: u8 = 0x18;
const CMD_END: u8 = 0x20;
const CMD_MASK: u8 = 0x38;

/// An ordered set of row keys, stored as sorted, disjoint, non-adjacent
/// inclusive ranges so that dense key spaces stay small.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct RowSet {
    /// Sorted inclusive ranges; consecutive ranges are separated by a gap.
    ranges: Vec<(u64, u64)>,
    /// Number of keys, cached so `len` is O(1).
    len: u64,
}

impl fmt::Debug for RowSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RowSet{")?;
        for (i, &(a, b)) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if a == b {
                write!(f, "{sep}{a}")?;
            } else {
                write!(f, "{sep}{a}-{b}")?;
            }
        }
        f.write_str("}")
    }
}

impl RowSet {
    /// An empty set.
    pub fn new() -> Self {
        RowSet::default()
    }

    /// The keys `first..=last`; fails if `first > last` or `last > MAX_KEY`.
    pub fn from_range(first: u64, last: u64) -> Result<Self, BarrageError> {
        Self::from_ranges([(first, last)])
    }

    /// The union of inclusive ranges given in any order (overlaps allowed).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Result<Self, BarrageError> {
        let mut all: Vec<(u64, u64)> = ranges.into_iter().collect();
        for &(first, last) in &all {
            if first > last {
                return Err(BarrageError::InvalidRange { first, last });
            }
            if last > MAX_KEY {
                return Err(BarrageError::KeyOutOfRange { key: last });
            }
        }
        all.sort_unstable();
        let mut set = RowSet::new();
        for (first, last) in all {
            set.union_tail(first, last);
        }
        Ok(set)
    }

    /// The set of the given keys (any order, duplicates allowed).
    pub fn from_keys(keys: impl IntoIterator<Item = u64>) -> Result<Self, BarrageError> {
        let mut all: Vec<u64> = keys.into_iter().collect();
        all.sort_unstable();
        if let Some(&key) = all.last().filter(|&&k| k > MAX_KEY) {
            return Err(BarrageError::KeyOutOfRange { key });
        }
        let mut set = RowSet::new();
        for key in all {
            set.union_tail(key, key);
        }
        Ok(set)
    }

    /// Adds `first..=last`, which must not start before the current last range.
    fn union_tail(&mut self, first: u64, last: u64) {
        match self.ranges.last_mut() {
            Some(tail) if first <= tail.1.saturating_add(1) => {
                if last > tail.1 {
                    self.len += last - tail.1;
                    tail.1 = last;
                }
            }
            _ => {
                self.ranges.push((first, last));
                self.len += last - first + 1;
            }
        }
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// True when `key` is in the set (binary search over ranges).
    pub fn contains(&self, key: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, last)| last < key);
        self.ranges.get(i).is_some_and(|&(first, _)| first <= key)
    }

    /// The sorted, disjoint, non-adjacent inclusive ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// The keys in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(first, last)| first..=last)
    }

    /// Decodes one RowSet that must fill `bytes` exactly. An empty slice (an
    /// absent flatbuffer field) is the empty set.
    pub fn decode(bytes: &[u8]) -> Result<Self, BarrageError> {
        if bytes.is_empty() {
            return Ok(RowSet::new());
        }
        let (set, used) = decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(BarrageError::RowSetTrailingBytes { offset: used, extra: bytes.len() - used });
        }
        Ok(set)
    }

    /// Encodes the set in the external compressed delta format.
    pub fn encode(&self) -> Vec<u8> {
        let mut deltas = Vec::with_capacity(self.ranges.len() * 2);
        let mut previous = 0u64;
        for &(first, last) in &self.ranges {
            // Keys are at most MAX_KEY, so every difference fits in an i64.
            deltas.push((first - previous) as i64);
            if last > first {
                deltas.push(-((last - first) as i64));
            }
            previous = last;
        }
        let mut out = Vec::with_capacity(deltas.len() * 2 + 1);
        write_deltas(&deltas, &mut out);
        out.push(CMD_END);
        out
    }
}

/// A RowSet shift: keys `start..=end` move by `delta` (to `start + delta`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shift {
    /// First key of the moved range (before the shift).
    pub start: u64,
    /// Last key of the moved range (before the shift), inclusive.
    pub end: u64,
    /// Signed distance every key in the range moves.
    pub delta: i64,
}

/// Pairs the start, end and destination keys of shift data into [`Shift`]s,
/// checking that the three sets have the same size and the ranges are sane.
pub fn decode_shifts(starts: &RowSet, ends: &RowSet, dests: &RowSet) -> Result<Vec<Shift>, BarrageError> {
    if starts.len() != ends.len() || starts.len() != dests.len() {
        return Err(BarrageError::ShiftCountMismatch { starts: starts.len(), ends: ends.len(), dests: dests.len() });
    }
    if starts.len() > MAX_SHIFTS {
        return Err(BarrageError::Unsupported(format!("{} shifts in one update (limit {MAX_SHIFTS})", starts.len())));
    }
    let mut shifts = Vec::with_capacity(starts.len() as usize);
    // Last source key and last destination key of the previous shift.
    let mut previous: Option<(u64, u64)> = None;
    for ((start, end), dest) in starts.iter().zip(ends.iter()).zip(dests.iter()) {
        let bad = |reason| BarrageError::InvalidShift { start, end, dest, reason };
        if end < start {
            return Err(bad("end before start"));
        }
        if previous.is_some_and(|(p, _)| start <= p) {
            return Err(bad("overlaps the previous shift"));
        }
        let dest_end = dest.checked_add(end - start).filter(|&last| last <= MAX_KEY);
        let dest_end = dest_end.ok_or_else(|| bad("destination beyond the key space"))?;
        if previous.is_some_and(|(_, d)| dest <= d) {
            return Err(bad("destination overlaps the previous shift's"));
        }
        previous = Some((end, dest_end));
        // Both keys are at most i64::MAX, so the difference fits in an i64.
        shifts.push(Shift { start, end, delta: dest as i64 - start as i64 });
    }
    Ok(shifts)
}

/// Decodes Barrage `shift_data`: three RowSets (starts, ends, destinations)
/// written back to back. An empty slice means no shifts.
pub fn decode_shift_data(bytes: &[u8]) -> Result<Vec<Shift>, BarrageError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let (starts, a) = decode_prefix(bytes)?;
    let (ends, b) = decode_prefix(&bytes[a..]).map_err(|e| shift_offset(e, a))?;
    let (dests, c) = decode_prefix(&bytes[a + b..]).map_err(|e| shift_offset(e, a + b))?;
    let used = a + b + c;
    if used != bytes.len() {
        return Err(BarrageError::RowSetTrailingBytes { offset: used, extra: bytes.len() - used });
    }
    decode_shifts(&starts, &ends, &dests)
}

/// Encodes shifts as Barrage `shift_data` (the inverse of [`decode_shift_data`]).
#[cfg(test)]
pub(crate) fn encode_shift_data(shifts: &[Shift]) -> Vec<u8> {
    let key = |k: i128| u64::try_from(k).unwrap_or(u64::MAX);
    let sets = [
        RowSet::from_keys(shifts.iter().map(|s| s.start)),
        RowSet::from_keys(shifts.iter().map(|s| s.end)),
        RowSet::from_keys(shifts.iter().map(|s| key(i128::from(s.start) + i128::from(s.delta)))),
    ];
    let mut out = Vec::new();
    for set in sets {
        out.extend(set.expect("test shifts stay in the key space").encode());
    }
    out
}

/// Rebases the byte offset of an error from the second or third shift RowSet.
fn shift_offset(error: BarrageError, base: usize) -> BarrageError {
    use BarrageError::*;
    match error {
        RowSetTruncated { offset, needed } => RowSetTruncated { offset: offset + base, needed },
        RowSetBadCommand { offset, byte } => RowSetBadCommand { offset: offset + base, byte },
        RowSetBadCount { offset, count } => RowSetBadCount { offset: offset + base, count },
        RowSetNonIncreasing { offset, key, previous } => RowSetNonIncreasing { offset: offset + base, key, previous },
        RowSetRangeWithoutStart { offset } => RowSetRangeWithoutStart { offset: offset + base },
        RowSetOverflow { offset } => RowSetOverflow { offset: offset + base },
        other => other,
    }
}

/// Bounds-checked cursor over RowSet bytes.
struct Reader<'a> {
    /// The encoded RowSet (and possibly what follows it).
    bytes: &'a [u8],
    /// Next byte to read.
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BarrageError> {
        let remaining = self.bytes.len() - self.pos;
        if remaining < n {
            return Err(BarrageError::RowSetTruncated { offset: self.pos, needed: n - remaining });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BarrageError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads the value that follows command byte `cmd` (read at `at`).
    fn value(&mut self, cmd: u8, at: usize) -> Result<i64, BarrageError> {
        Ok(match cmd & VALUE_MASK {
            VALUE_I8 => i64::from(i8::from_le_bytes(self.array()?)),
            VALUE_I16 => i64::from(i16::from_le_bytes(self.array()?)),
            VALUE_I32 => i64::from(i32::from_le_bytes(self.array()?)),
            VALUE_I64 => i64::from_le_bytes(self.array()?),
            _ => return Err(BarrageError::RowSetBadCommand { offset: at, byte: cmd }),
        })
    }
}

/// Turns the decoded delta values into ranges.
struct Accumulator {
    set: RowSet,
    /// A key read but not yet known to be a single key or a range start.
    pending: Option<u64>,
    /// The last key or range end read; deltas are relative to it.
    last: u64,
    /// Whether any key was read yet (only the first delta may be zero).
    have_key: bool,
}

impl Accumulator {
    fn consume(&mut self, value: i64, at: usize) -> Result<(), BarrageError> {
        // `last` never exceeds MAX_KEY, so it converts to i64 losslessly.
        let base = self.last as i64;
        if value >= 0 {
            let key = base.checked_add(value).ok_or(BarrageError::RowSetOverflow { offset: at })? as u64;
            if self.have_key && value == 0 {
                return Err(BarrageError::RowSetNonIncreasing { offset: at, key, previous: self.last });
            }
            if let Some(single) = self.pending.replace(key) {
                self.set.union_tail(single, single);
            }
            self.last = key;
            self.have_key = true;
        } else {
            let start = self.pending.take().ok_or(BarrageError::RowSetRangeWithoutStart { offset: at })?;
            let end = value
                .checked_neg()
                .and_then(|d| base.checked_add(d))
                .ok_or(BarrageError::RowSetOverflow { offset: at })? as u64;
            self.set.union_tail(start, end);
            self.last = end;
        }
        Ok(())
    }
}

/// Decodes one RowSet from the front of `bytes`; returns it and the number of
/// bytes used (through the END command).
fn decode_prefix(bytes: &[u8]) -> Result<(RowSet, usize), BarrageError> {
    let mut reader = Reader { bytes, pos: 0 };
    let mut acc = Accumulator { set: RowSet::new(), pending: None, last: 0, have_key: false };
    loop {
        let at = reader.pos;
        let [cmd] = reader.array::<1>()?;
        let bad = BarrageError::RowSetBadCommand { offset: at, byte: cmd };
        if cmd & !(CMD_MASK | VALUE_MASK) != 0 {
            return Err(bad);
        }
        match cmd & CMD_MASK {
            CMD_END if cmd & VALUE_MASK == 0 => break,
            CMD_OFFSET => {
                let value = reader.value(cmd, at)?;
                acc.consume(value, at)?;
            }
            kind @ (CMD_SHORT_ARRAY | CMD_BYTE_ARRAY) => {
                let count = reader.value(cmd, at)?;
                if count < 0 {
                    return Err(BarrageError::RowSetBadCount { offset: at, count });
                }
                let width = if kind == CMD_SHORT_ARRAY { 2 } else { 1 };
                let remaining = bytes.len() - reader.pos;
                let needed = usize::try_from(count).ok().and_then(|c| c.checked_mul(width));
                match needed {
                    Some(n) if n <= remaining => {}
                    _ => {
                        let short = needed.map_or(usize::MAX, |n| n - remaining);
                        return Err(BarrageError::RowSetTruncated { offset: reader.pos, needed: short });
                    }
                }
                for _ in 0..count {
                    let value_at = reader.pos;
                    let value = if width == 2 {
                        i64::from(i16::from_le_bytes(reader.array()?))
                    } else {
                        i64::from(i8::from_le_bytes(reader.array()?))
                    };
                    acc.consume(value, value_at)?;
                }
            }
            _ => return Err(bad),
        }
    }
    if let Some(single) = acc.pending {
        acc.set.union_tail(single, single);
    }
    Ok((acc.set, reader.pos))
}

fn fits_i8(v: i64) -> bool {
    i8::try_from(v).is_ok()
}

fn fits_i16(v: i64) -> bool {
    i16::try_from(v).is_ok()
}

/// Writes `cmd` with the narrowest width that holds `value`, then the value.
fn write_command(out: &mut Vec<u8>, cmd: u8, value: i64) {
    if let Ok(v) = i8::try_from(value) {
        out.push(cmd | VALUE_I8);
        out.extend_from_slice(&v.to_le_bytes());
    } else if let Ok(v) = i16::try_from(value) {
        out.push(cmd | VALUE_I16);
        out.extend_from_slice(&v.to_le_bytes());
    } else if let Ok(v) = i32::try_from(value) {
        out.push(cmd | VALUE_I32);
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        out.push(cmd | VALUE_I64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Writes deltas: large ones as OFFSETs, runs of i16-sized ones as arrays.
fn write_deltas(deltas: &[i64], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < deltas.len() {
        let run = deltas[i..].iter().take_while(|v| fits_i16(**v)).count();
        if run == 0 {
            write_command(out, CMD_OFFSET, deltas[i]);
            i += 1;
        } else {
            write_small_run(&deltas[i..i + run], out);
            i += run;
        }
    }
}

/// Writes i16-sized deltas as SHORT_ARRAYs, switching to BYTE_ARRAYs for
/// stretches of at least four i8-sized values (or a run made only of them).
fn write_small_run(run: &[i64], out: &mut Vec<u8>) {
    let mut written = 0;
    let mut j = 0;
    while j < run.len() {
        if !fits_i8(run[j]) {
            j += 1;
            continue;
        }
        let k = j + run[j..].iter().take_while(|v| fits_i8(**v)).count();
        if k - j >= 4 || (j == written && k == run.len()) {
            write_array(&run[written..j], CMD_SHORT_ARRAY, out);
            write_array(&run[j..k], CMD_BYTE_ARRAY, out);
            written = k;
        }
        j = k;
    }
    write_array(&run[written..], CMD_SHORT_ARRAY, out);
}

/// Writes values as one array command (or a single OFFSET for one value).
fn write_array(values: &[i64], cmd: u8, out: &mut Vec<u8>) {
    match values {
        [] => {}
        [single] => write_command(out, CMD_OFFSET, *single),
        _ => {
            // Slice lengths are far below i64::MAX.
            write_command(out, cmd, values.len() as i64);
            for &v in values {
                if cmd == CMD_SHORT_ARRAY {
                    out.extend_from_slice(&(v as i16).to_le_bytes());
                } else {
                    out.extend_from_slice(&(v as i8).to_le_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn set(ranges: &[(u64, u64)]) -> RowSet {
        RowSet::from_ranges(ranges.iter().copied()).unwrap()
    }

    fn decode_err(bytes: &[u8]) -> BarrageError {
        RowSet::decode(bytes).unwrap_err()
    }

    #[test]
    fn decodes_each_command_and_width() {
        let cases: Vec<(Vec<u8>, RowSet)> = vec![
            (vec![], RowSet::new()),
            (vec![0x20], RowSet::new()),
            (vec![0x0C, 0, 0x20], set(&[(0, 0)])),
            (vec![0x0C, 5, 0x20], set(&[(5, 5)])),
            (vec![0x09, 0x00, 0x01, 0x20], set(&[(256, 256)])),
            (vec![0x0A, 0, 0, 1, 0, 0x20], set(&[(65536, 65536)])),
            ([&[0x0B][..], &(1u64 << 40).to_le_bytes(), &[0x20]].concat(), set(&[(1 << 40, 1 << 40)])),
            (vec![0x0C, 10, 0x0C, (-5i8) as u8, 0x20], set(&[(10, 15)])),
            // SHORT_ARRAY, i8 count 3: +1000, -10, +300
            (vec![0x14, 3, 0xE8, 0x03, 0xF6, 0xFF, 0x2C, 0x01, 0x20], set(&[(1000, 1010), (1310, 1310)])),
            // SHORT_ARRAY, i16 count 2
            (vec![0x11, 2, 0, 7, 0, 1, 0, 0x20], set(&[(7, 8)])),
            // BYTE_ARRAY, i8 count 4: +1, +1, -3, +2 (1 merges with 2..=5)
            (vec![0x1C, 4, 1, 1, 0xFD, 2, 0x20], set(&[(1, 5), (7, 7)])),
            // BYTE_ARRAY, i32 count 2 and i64 count 1
            (vec![0x1A, 2, 0, 0, 0, 3, 4, 0x20], set(&[(3, 3), (7, 7)])),
            ([&[0x1B][..], &1i64.to_le_bytes(), &[9, 0x20]].concat(), set(&[(9, 9)])),
            // i64 OFFSET up to the largest key
            ([&[0x0B][..], &i64::MAX.to_le_bytes(), &[0x20]].concat(), set(&[(MAX_KEY, MAX_KEY)])),
        ];
        for (bytes, expected) in cases {
            assert_eq!(RowSet::decode(&bytes).unwrap(), expected, "bytes {bytes:02x?}");
        }
    }

    #[test]
    fn rejects_malformed_bytes_with_a_reason() {
        assert!(matches!(decode_err(&[0x0C, 5]), BarrageError::RowSetTruncated { offset: 2, needed: 1 }));
        assert!(matches!(decode_err(&[0x0B, 1, 2, 3]), BarrageError::RowSetTruncated { offset: 1, needed: 5 }));
        assert!(matches!(decode_err(&[0x14, 2, 1, 0]), BarrageError::RowSetTruncated { offset: 2, needed: 2 }));
        for byte in [0x00, 0x28, 0x30, 0x38, 0x0D, 0x0F, 0x08, 0x21, 0x4C, 0x8C] {
            assert!(
                matches!(decode_err(&[byte, 1, 0x20]), BarrageError::RowSetBadCommand { offset: 0, .. }),
                "byte {byte:#x}"
            );
        }
        assert!(matches!(
            decode_err(&[0x0C, 5, 0x0C, 0, 0x20]),
            BarrageError::RowSetNonIncreasing { offset: 2, key: 5, previous: 5 }
        ));
        assert!(matches!(decode_err(&[0x0C, 0xFF, 0x20]), BarrageError::RowSetRangeWithoutStart { offset: 0 }));
        assert!(matches!(
            decode_err(&[0x0C, 1, 0x0C, 0xFF, 0x0C, 0xFF, 0x20]),
            BarrageError::RowSetRangeWithoutStart { offset: 4 }
        ));
        let overflow = [&[0x0B][..], &i64::MAX.to_le_bytes(), &[0x0C, 1, 0x20]].concat();
        assert!(matches!(decode_err(&overflow), BarrageError::RowSetOverflow { offset: 9 }));
        let min = [&[0x0C, 1, 0x0B][..], &i64::MIN.to_le_bytes(), &[0x20]].concat();
        assert!(matches!(decode_err(&min), BarrageError::RowSetOverflow { offset: 2 }));
        assert!(matches!(decode_err(&[0x20, 0x20]), BarrageError::RowSetTrailingBytes { offset: 1, extra: 1 }));
        assert!(matches!(decode_err(&[0x1C, 0xFF, 0x20]), BarrageError::RowSetBadCount { count: -1, .. }));
        let huge = [&[0x1B][..], &i64::MAX.to_le_bytes()].concat();
        assert!(matches!(decode_err(&huge), BarrageError::RowSetTruncated { offset: 9, .. }));
    }

    #[test]
    fn constructors_validate_and_merge() {
        assert_eq!(set(&[(5, 9), (1, 3), (4, 4), (20, 20), (8, 12)]).ranges(), &[(1, 12), (20, 20)]);
        assert_eq!(RowSet::from_keys([3, 1, 2, 2, 9]).unwrap().ranges(), &[(1, 3), (9, 9)]);
        assert!(matches!(RowSet::from_range(5, 4), Err(BarrageError::InvalidRange { first: 5, last: 4 })));
        assert!(matches!(RowSet::from_keys([MAX_KEY + 1]), Err(BarrageError::KeyOutOfRange { .. })));
        let s = set(&[(0, 0), (10, 12)]);
        assert_eq!((s.len(), s.contains(11), s.contains(9), s.contains(13)), (4, true, false, false));
        assert_eq!(format!("{s:?}"), "RowSet{0,10-12}");
    }

    #[test]
    fn shift_data_round_trip_and_validation() {
        let shifts = vec![
            Shift { start: 0, end: 4, delta: 10 },
            Shift { start: 5, end: 5, delta: 100 },
            Shift { start: 1000, end: 2000, delta: -500 },
        ];
        assert_eq!(decode_shift_data(&encode_shift_data(&shifts)).unwrap(), shifts);
        assert_eq!(decode_shift_data(&[]).unwrap(), vec![]);
        let keys = |k: &[u64]| RowSet::from_keys(k.iter().copied()).unwrap();
        assert!(matches!(
            decode_shifts(&keys(&[1, 5]), &keys(&[2]), &keys(&[3, 9])),
            Err(BarrageError::ShiftCountMismatch { starts: 2, ends: 1, dests: 2 })
        ));
        assert!(matches!(
            decode_shifts(&keys(&[5]), &keys(&[4]), &keys(&[9])),
            Err(BarrageError::InvalidShift { reason: "end before start", .. })
        ));
        assert!(matches!(
            decode_shifts(&keys(&[1, 3]), &keys(&[4, 6]), &keys(&[10, 20])),
            Err(BarrageError::InvalidShift { reason: "overlaps the previous shift", .. })
        ));
        assert!(matches!(
            decode_shifts(&keys(&[1, 5]), &keys(&[2, 6]), &keys(&[10, 11])),
            Err(BarrageError::InvalidShift { reason: "destination overlaps the previous shift's", .. })
        ));
        assert!(matches!(
            decode_shifts(&keys(&[1]), &keys(&[3]), &keys(&[MAX_KEY - 1])),
            Err(BarrageError::InvalidShift { reason: "destination beyond the key space", .. })
        ));
        let mut truncated = encode_shift_data(&shifts);
        truncated.pop();
        assert!(matches!(decode_shift_data(&truncated), Err(BarrageError::RowSetTruncated { .. })));
    }

    /// Keys built from (gap, run length) pairs, with gaps of very different sizes.
    fn keys_strategy() -> impl Strategy<Value = BTreeSet<u64>> {
        let gap = prop_oneof![0u64..3, 0u64..200, 0u64..70_000, 0u64..(1 << 40), 0u64..(1 << 62)];
        prop::collection::vec((gap, 0u64..40), 0..40).prop_map(|parts| {
            let mut keys = BTreeSet::new();
            let mut next = 0u64;
            for (gap, run) in parts {
                let Some(start) = next.checked_add(gap).filter(|&s| s <= MAX_KEY) else { break };
                let end = start.saturating_add(run).min(MAX_KEY);
                keys.extend(start..=end);
                next = end.saturating_add(1);
            }
            keys
        })
    }

    fn check_against_model(s: &RowSet, model: &BTreeSet<u64>) {
        assert_eq!(s.len(), model.len() as u64);
        assert_eq!(s.is_empty(), model.is_empty());
        assert!(s.iter().eq(model.iter().copied()));
        for &k in model {
            assert!(s.contains(k));
            assert_eq!(s.contains(k + 1), model.contains(&(k + 1)));
            assert_eq!(s.contains(k.wrapping_sub(1)), model.contains(&k.wrapping_sub(1)));
        }
        assert!(s.ranges().windows(2).all(|w| w[0].1 + 1 < w[1].0));
    }

    /// The deltas a RowSet encodes to, per the wire format's definition.
    fn deltas_of(model: &BTreeSet<u64>) -> Vec<i64> {
        let s = RowSet::from_keys(model.iter().copied()).unwrap();
        let mut out = Vec::new();
        let mut prev = 0u64;
        for &(a, b) in s.ranges() {
            out.push((a - prev) as i64);
            if b > a {
                out.push(-((b - a) as i64));
            }
            prev = b;
        }
        out
    }

    /// Encodes deltas with command and width choices driven by `choices`.
    fn encode_with_choices(deltas: &[i64], choices: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        let mut c = choices.iter().cycle();
        while i < deltas.len() {
            let choice = *c.next().unwrap_or(&0);
            let (cmd, fits, width): (u8, fn(i64) -> bool, usize) =
                if choice % 3 == 1 { (CMD_SHORT_ARRAY, fits_i16, 2) } else { (CMD_BYTE_ARRAY, fits_i8, 1) };
            let run = deltas[i..].iter().take(1 + usize::from(choice % 7)).take_while(|v| fits(**v)).count();
            if choice.is_multiple_of(3) || run == 0 {
                let v = deltas[i];
                let widths: Vec<u8> = [
                    (VALUE_I8, fits_i8(v)),
                    (VALUE_I16, fits_i16(v)),
                    (VALUE_I32, i32::try_from(v).is_ok()),
                    (VALUE_I64, true),
                ]
                .into_iter()
                .filter(|w| w.1)
                .map(|w| w.0)
                .collect();
                let w = widths[usize::from(choice) % widths.len()];
                out.push(CMD_OFFSET | w);
                let bytes = v.to_le_bytes();
                out.extend_from_slice(
                    &bytes[..match w {
                        VALUE_I8 => 1,
                        VALUE_I16 => 2,
                        VALUE_I32 => 4,
                        _ => 8,
                    }],
                );
                i += 1;
                continue;
            }
            // Array count in a width picked by the choice.
            let count = run as i64;
            match choice % 4 {
                0 => {
                    out.push(cmd | VALUE_I8);
                    out.push(count as u8)
                }
                1 => {
                    out.push(cmd | VALUE_I16);
                    out.extend_from_slice(&(count as i16).to_le_bytes())
                }
                2 => {
                    out.push(cmd | VALUE_I32);
                    out.extend_from_slice(&(count as i32).to_le_bytes())
                }
                _ => {
                    out.push(cmd | VALUE_I64);
                    out.extend_from_slice(&count.to_le_bytes())
                }
            }
            for &v in &deltas[i..i + run] {
                out.extend_from_slice(&v.to_le_bytes()[..width]);
            }
            i += run;
        }
        out.push(CMD_END);
        out
    }

    proptest! {
        #[test]
        fn round_trips_against_model(model in keys_strategy()) {
            let s = RowSet::from_keys(model.iter().copied()).unwrap();
            check_against_model(&s, &model);
            let decoded = RowSet::decode(&s.encode()).unwrap();
            prop_assert_eq!(&decoded, &s);
            check_against_model(&decoded, &model);
        }

        #[test]
        fn round_trips_near_max_key(offsets in prop::collection::vec(0u64..3000, 0..200)) {
            let model: BTreeSet<u64> = offsets.iter().map(|o| MAX_KEY - o).collect();
            let s = RowSet::from_keys(model.iter().copied()).unwrap();
            let decoded = RowSet::decode(&s.encode()).unwrap();
            check_against_model(&decoded, &model);
        }

        #[test]
        fn decodes_hand_built_encodings(model in keys_strategy(), choices in prop::collection::vec(any::<u8>(), 1..16)) {
            let bytes = encode_with_choices(&deltas_of(&model), &choices);
            let decoded = RowSet::decode(&bytes).unwrap();
            check_against_model(&decoded, &model);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(s) = RowSet::decode(&bytes) {
                prop_assert_eq!(RowSet::decode(&s.encode()).unwrap(), s);
            }
            let _ = decode_shift_data(&bytes);
        }

        #[test]
        fn shifts_round_trip(parts in prop::collection::vec((1u64..1000, 0u64..50, 0u64..5000), 0..20)) {
            // Source ranges and destinations both increase without overlapping.
            let mut shifts = Vec::new();
            let (mut next, mut dest_floor) = (0u64, 0u64);
            for (gap, len, dest_gap) in parts {
                let start = next + gap;
                let dest = dest_floor + dest_gap;
                shifts.push(Shift { start, end: start + len, delta: dest as i64 - start as i64 });
                next = start + len + 1;
                dest_floor = dest + len + 1;
            }
            prop_assert_eq!(decode_shift_data(&encode_shift_data(&shifts)).unwrap(), shifts);
        }
    }
}

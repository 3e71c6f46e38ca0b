//! Wall-clock time as epoch nanoseconds, the unit of every `*_ts` column.

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

//! Rolls `agent_events` up into `agent_metrics`: tumbling windows keyed by
//! (`window_start`, `agent_id`, `session_id`).
//!
//! Pure: no I/O and no clock reads. The I/O layer feeds every event row it sees
//! to [`Rollup::apply`] — in any order, late, or replayed after a restart —
//! periodically upserts [`Rollup::drain_dirty`] into `agent_metrics`, and bounds
//! memory with [`Rollup::forget_before`]. [`recompute`] is the batch reference
//! the incremental state is tested against.
//!
//! # What counts
//!
//! A row belongs to the agent that held the lease (the consumer), so only events
//! written by or about a lease holder count; the window is that of the event's
//! own `ts`, never its arrival time.
//!
//! | `event` | effect on its row |
//! |---|---|
//! | `ack` | `messages_processed` + 1, one latency sample when known, `tokens` |
//! | `nack`, `expired`, `dead_letter` | `errors` + 1, `tokens` |
//! | `claimed`, `heartbeat`, `released`, `force_released` | `tokens` only |
//! | `publish`, `adopted`, anything else | nothing: no lease holder is involved |
//!
//! Event names are matched exactly (lower case). An event may carry an empty
//! `agent_id` (the bus writes one for a TTL expiry of a queued message and for
//! `force_released`); then a non-empty string `lease_owner`, else
//! `previous_owner`, in `details_json` names the holder, and without one the
//! row's `agent_id` is empty, so that the errors are still counted. A row exists only once an event
//! changed it: a `heartbeat` without tokens creates none.
//!
//! # `details_json`
//!
//! * Empty (or blank) means no details. Anything else must be a JSON object;
//!   if not, the event is counted in [`RollupStats::malformed_details`], its
//!   fields are ignored, and it still counts (a malformed ack is still an ack).
//! * `tokens` must be a JSON integer in `0..=i64::MAX`. Floats (even `42.0`),
//!   strings (`"42"`) and negatives are rejected and counted in
//!   [`RollupStats::invalid_fields`]: token counts are integers, and a producer
//!   that writes them otherwise has a bug to surface, not to guess around.
//!   `null` is the same as absent. Sums saturate at `i64::MAX`.
//! * Ack latency: `enqueue_ts` (integer epoch ns) gives
//!   `(ts - enqueue_ts) / 1e6` ms; otherwise `latency_ms` (any JSON number);
//!   otherwise the latency is unknown and the ack counts in
//!   `messages_processed` but not in `avg_latency_ms`, which averages only the
//!   acks whose latency is known and is `None` (a null cell) when there is none.
//!   A negative latency (producer clock ahead of the bus) counts as 0 ms.
//!
//! # Duplicates, late events and memory
//!
//! `event_id` is the identity of an event: the first occurrence of an id that
//! changes a row counts and later ones are ignored, so replaying the event log
//! after a restart never double counts. The ids seen are kept per window; to
//! bound memory, call [`Rollup::forget_before`] with a horizon well past the
//! latest lateness expected. Windows that start before the horizon are then
//! final: their ids are dropped, their rows are dropped once drained, and any
//! event for them is refused (counted in [`RollupStats::too_late`]) rather
//! than reopening a row that would overwrite the stored one with a partial count.
//! For the same reason a restarted rollup that replays the log from time `S`
//! should call `forget_before(S)` (with `S` a window start) before its first
//! event, so it never writes a partial row for a window it saw only in part.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The window the guide's metrics use when none is configured: one minute.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Why a rollup could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RollupError {
    /// The window is zero or longer than `i64::MAX` ns, so window starts
    /// cannot be computed in the table's epoch-ns `long`s.
    #[error("metrics window must be between 1 ns and i64::MAX ns, got {0:?}")]
    InvalidWindow(Duration),
}

/// One row of `agent_events`, as the rollup reads it (null cells as `""`/0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventRow {
    /// Primary key: duplicates with the same id are counted once.
    pub event_id: String,
    /// When the event happened, epoch ns: selects the window.
    pub ts: i64,
    /// Lease holder for lease events (empty possible for expiry/dead letter).
    pub agent_id: String,
    /// Session of the message: part of the row key.
    pub session_id: String,
    /// Message the event is about (not used by the rollup; kept for fidelity).
    pub message_id: String,
    /// Event kind: decides what the event counts as.
    pub event: String,
    /// JSON object with `tokens`, `enqueue_ts`, `latency_ms`, `previous_owner`, ...
    pub details_json: String,
}

/// Primary key of an `agent_metrics` row; orders rows by window, then agent,
/// then session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowKey {
    /// Start of the tumbling window, epoch ns: `floor(ts / window) * window`.
    pub window_start: i64,
    /// Agent that held the lease (the consumer).
    pub agent_id: String,
    /// Session of the messages.
    pub session_id: String,
}

/// One row of `agent_metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Start of the tumbling window, epoch ns (key).
    pub window_start: i64,
    /// Agent that held the lease (key).
    pub agent_id: String,
    /// Session of the messages (key).
    pub session_id: String,
    /// Number of acks in the window.
    pub messages_processed: i64,
    /// Mean enqueue-to-ack latency of the acks whose latency is known, ms;
    /// `None` (written as null) when no ack had a known latency.
    pub avg_latency_ms: Option<f64>,
    /// `nack` + `dead_letter` + `expired` events in the window.
    pub errors: i64,
    /// Sum of valid `tokens` fields, saturating.
    pub token_usage: i64,
    /// When the row was last drained for writing, epoch ns (0 if never):
    /// the only column not determined by the events.
    pub last_update_ts: i64,
}

impl MetricsRow {
    /// The row's primary key.
    pub fn key(&self) -> WindowKey {
        WindowKey {
            window_start: self.window_start,
            agent_id: self.agent_id.clone(),
            session_id: self.session_id.clone(),
        }
    }

    /// Whether two rows have the same key and metrics, ignoring
    /// `last_update_ts` and allowing `avg_latency_ms` a relative error of
    /// `rel_tol` (sums taken in different orders round differently).
    pub fn same_metrics(&self, other: &MetricsRow, rel_tol: f64) -> bool {
        let avg_close = match (self.avg_latency_ms, other.avg_latency_ms) {
            (None, None) => true,
            (Some(a), Some(b)) => (a - b).abs() <= rel_tol * a.abs().max(b.abs()),
            _ => false,
        };
        avg_close
            && self.window_start == other.window_start
            && self.agent_id == other.agent_id
            && self.session_id == other.session_id
            && self.messages_processed == other.messages_processed
            && self.errors == other.errors
            && self.token_usage == other.token_usage
    }
}

/// Counters of what [`Rollup::apply`] did with its input, for the Prometheus
/// endpoint and for spotting a misbehaving producer. Duplicates of events that
/// changed nothing are not recognised and counted again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RollupStats {
    /// Events that changed a row.
    pub applied: u64,
    /// Events that change no row (kinds that do not count, lease events
    /// carrying nothing countable).
    pub ignored: u64,
    /// Events whose `event_id` had already been counted.
    pub duplicates: u64,
    /// Events refused because their window starts before the horizon set by
    /// [`Rollup::forget_before`], or is not representable (ts near `i64::MIN`).
    pub too_late: u64,
    /// Events whose non-empty `details_json` is not a JSON object.
    pub malformed_details: u64,
    /// Known fields (`tokens`, `enqueue_ts`, `latency_ms`, `lease_owner`,
    /// `previous_owner`) of the wrong type or range, ignored.
    pub invalid_fields: u64,
}

/// What a counted event kind contributes to its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A message was processed.
    Ack,
    /// A lease ended badly.
    Error,
    /// A lease event that can only carry tokens.
    TokensOnly,
}

fn role(event: &str) -> Option<Role> {
    match event {
        "ack" => Some(Role::Ack),
        "nack" | "expired" | "dead_letter" => Some(Role::Error),
        "claimed" | "heartbeat" | "released" | "force_released" => Some(Role::TokensOnly),
        _ => None,
    }
}

/// One lease event, parsed and validated: what it adds to its row.
#[derive(Clone, Debug, PartialEq)]
struct Contribution {
    /// Row's agent: the event's, or the holder named in the details.
    agent_id: String,
    /// Counts one processed message.
    ack: bool,
    /// Counts one error.
    error: bool,
    /// Latency sample of an ack, when known.
    latency_ms: Option<f64>,
    /// Valid tokens (0 when absent or invalid).
    tokens: i64,
    /// `details_json` was not a JSON object.
    malformed: bool,
    /// Number of known fields that were rejected.
    invalid_fields: u32,
}

impl Contribution {
    fn changes_row(&self) -> bool {
        self.ack || self.error || self.tokens > 0
    }
}

/// Parses the details of a lease event. `None` for kinds that never count.
fn classify(ev: &EventRow) -> Option<Contribution> {
    let role = role(&ev.event)?;
    let text = ev.details_json.trim();
    let (details, malformed) = if text.is_empty() {
        (Map::new(), false)
    } else {
        match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(map) => (map, false),
            Err(_) => (Map::new(), true),
        }
    };
    let mut invalid = 0u32;
    // `null` is the same as absent.
    let field = |name: &str| details.get(name).filter(|v| !v.is_null());
    let tokens = match field("tokens") {
        None => 0,
        Some(v) => v.as_i64().filter(|t| *t >= 0).unwrap_or_else(|| {
            invalid += 1;
            0
        }),
    };
    let mut agent_id = ev.agent_id.clone();
    for name in ["lease_owner", "previous_owner"] {
        if !agent_id.is_empty() {
            break;
        }
        match field(name) {
            None => {}
            Some(Value::String(owner)) => agent_id.clone_from(owner),
            Some(_) => invalid += 1,
        }
    }
    let mut latency_ms = None;
    if role == Role::Ack {
        let from_enqueue = match field("enqueue_ts") {
            None => None,
            Some(v) => v.as_i64().or_else(|| {
                invalid += 1;
                None
            }),
        };
        latency_ms = match from_enqueue {
            // i128: the difference of two i64s cannot overflow it.
            Some(enqueued) => Some((i128::from(ev.ts) - i128::from(enqueued)) as f64 / 1e6),
            None => match field("latency_ms") {
                None => None,
                Some(v) => v.as_f64().or_else(|| {
                    invalid += 1;
                    None
                }),
            },
        }
        .map(|ms| ms.max(0.0));
    }
    Some(Contribution {
        agent_id,
        ack: role == Role::Ack,
        error: role == Role::Error,
        latency_ms,
        tokens,
        malformed,
        invalid_fields: invalid,
    })
}

fn window_ns(window: Duration) -> Result<i64, RollupError> {
    i64::try_from(window.as_nanos()).ok().filter(|ns| *ns > 0).ok_or(RollupError::InvalidWindow(window))
}

/// `floor(ts / window) * window`, or `None` when that is below `i64::MIN`.
fn window_start(ts: i64, window_ns: i64) -> Option<i64> {
    ts.checked_sub(ts.rem_euclid(window_ns))
}

/// Running totals of one window row.
#[derive(Clone, Debug, Default)]
struct Acc {
    /// Acks counted.
    messages_processed: i64,
    /// Error events counted.
    errors: i64,
    /// Tokens counted, saturating.
    token_usage: i64,
    /// Sum of known ack latencies, ms: the average's numerator.
    latency_sum_ms: f64,
    /// Acks with a known latency: the average's denominator (not
    /// `messages_processed`, which includes acks of unknown latency).
    latency_samples: i64,
    /// `now_ns` of the last drain that returned this row.
    last_update_ts: i64,
}

impl Acc {
    fn add(&mut self, c: &Contribution) {
        self.messages_processed = self.messages_processed.saturating_add(i64::from(c.ack));
        self.errors = self.errors.saturating_add(i64::from(c.error));
        self.token_usage = self.token_usage.saturating_add(c.tokens);
        if let Some(ms) = c.latency_ms {
            self.latency_sum_ms += ms;
            self.latency_samples = self.latency_samples.saturating_add(1);
        }
    }

    fn row(&self, key: WindowKey) -> MetricsRow {
        MetricsRow {
            window_start: key.window_start,
            agent_id: key.agent_id,
            session_id: key.session_id,
            messages_processed: self.messages_processed,
            avg_latency_ms: (self.latency_samples > 0).then(|| self.latency_sum_ms / self.latency_samples as f64),
            errors: self.errors,
            token_usage: self.token_usage,
            last_update_ts: self.last_update_ts,
        }
    }
}

/// The incremental roll-up of `agent_events` into `agent_metrics` rows.
#[derive(Clone, Debug)]
pub struct Rollup {
    /// Window length in ns (> 0).
    window_ns: i64,
    /// Totals of every window row still held, in key order for [`Rollup::rows`].
    windows: BTreeMap<WindowKey, Acc>,
    /// Rows changed since the last [`Rollup::drain_dirty`]: what must be upserted.
    dirty: BTreeSet<WindowKey>,
    /// Ids of counted events, with their window start so that
    /// [`Rollup::forget_before`] can drop them: the deduplication memory.
    seen: HashMap<String, i64>,
    /// Windows starting before this are final and refuse events.
    horizon: i64,
    /// What `apply` did so far.
    stats: RollupStats,
}

impl Rollup {
    /// An empty rollup with tumbling windows of `window` (at least 1 ns, at
    /// most `i64::MAX` ns; [`DEFAULT_WINDOW`] is the usual choice).
    ///
    /// # Errors
    /// [`RollupError::InvalidWindow`] for a window outside that range.
    pub fn new(window: Duration) -> Result<Rollup, RollupError> {
        Ok(Rollup {
            window_ns: window_ns(window)?,
            windows: BTreeMap::new(),
            dirty: BTreeSet::new(),
            seen: HashMap::new(),
            horizon: i64::MIN,
            stats: RollupStats::default(),
        })
    }

    /// The window length, ns.
    pub fn window_ns(&self) -> i64 {
        self.window_ns
    }

    /// Counts one event; returns the key of the row it changed, or `None` when
    /// it changes no row (a kind that does not count, a duplicate, too late,
    /// or nothing countable in it). Never panics, whatever the row holds.
    pub fn apply(&mut self, ev: &EventRow) -> Option<WindowKey> {
        if role(&ev.event).is_none() {
            self.stats.ignored += 1;
            return None;
        }
        let Some(window_start) = window_start(ev.ts, self.window_ns).filter(|w| *w >= self.horizon) else {
            self.stats.too_late += 1;
            return None;
        };
        if self.seen.contains_key(&ev.event_id) {
            self.stats.duplicates += 1;
            return None;
        }
        let c = classify(ev)?;
        self.stats.malformed_details += u64::from(c.malformed);
        self.stats.invalid_fields += u64::from(c.invalid_fields);
        if !c.changes_row() {
            self.stats.ignored += 1;
            return None;
        }
        self.seen.insert(ev.event_id.clone(), window_start);
        let key = WindowKey { window_start, agent_id: c.agent_id.clone(), session_id: ev.session_id.clone() };
        self.windows.entry(key.clone()).or_default().add(&c);
        if !self.dirty.contains(&key) {
            self.dirty.insert(key.clone());
        }
        self.stats.applied += 1;
        Some(key)
    }

    /// The current state of one row, if held.
    pub fn row(&self, key: &WindowKey) -> Option<MetricsRow> {
        self.windows.get(key).map(|acc| acc.row(key.clone()))
    }

    /// Every row held, sorted by key.
    pub fn rows(&self) -> Vec<MetricsRow> {
        self.windows.iter().map(|(k, acc)| acc.row(k.clone())).collect()
    }

    /// The rows changed since the last drain, sorted by key, stamped
    /// `last_update_ts = now_ns`: exactly what the I/O layer must upsert.
    pub fn drain_dirty(&mut self, now_ns: i64) -> Vec<MetricsRow> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|key| {
                let acc = self.windows.get_mut(&key)?;
                acc.last_update_ts = now_ns;
                Some(acc.row(key))
            })
            .collect()
    }

    /// Number of rows waiting for [`Rollup::drain_dirty`].
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// Declares every window starting before `horizon` final, to bound memory:
    /// forgets the ids counted in them, drops their rows (rows not yet drained
    /// are kept until a later call after the drain), and refuses later events
    /// for them. The horizon never moves back. Returns the rows dropped.
    pub fn forget_before(&mut self, horizon: i64) -> usize {
        self.horizon = self.horizon.max(horizon);
        let h = self.horizon;
        self.seen.retain(|_, w| *w >= h);
        let first_kept = WindowKey { window_start: h, agent_id: String::new(), session_id: String::new() };
        let kept = self.windows.split_off(&first_kept);
        let old = std::mem::replace(&mut self.windows, kept);
        let mut dropped = 0;
        for (key, acc) in old {
            if self.dirty.contains(&key) {
                self.windows.insert(key, acc);
            } else {
                dropped += 1;
            }
        }
        dropped
    }

    /// Counters of what [`Rollup::apply`] did.
    pub fn stats(&self) -> RollupStats {
        self.stats
    }
}

/// Batch reference for [`Rollup`]: the `agent_metrics` rows of `events`, sorted
/// by key, with `last_update_ts = 0`. Same rules (see the module docs), computed
/// the simple way: drop ids already counted, group by key, then total each group.
///
/// # Errors
/// [`RollupError::InvalidWindow`] as for [`Rollup::new`].
pub fn recompute(events: &[EventRow], window: Duration) -> Result<Vec<MetricsRow>, RollupError> {
    let w = window_ns(window)?;
    let mut counted = HashSet::new();
    let mut groups: BTreeMap<WindowKey, Vec<Contribution>> = BTreeMap::new();
    for ev in events {
        let Some(window_start) = ev.ts.div_euclid(w).checked_mul(w) else { continue };
        let Some(c) = classify(ev).filter(Contribution::changes_row) else { continue };
        if counted.insert(ev.event_id.as_str()) {
            let key = WindowKey { window_start, agent_id: c.agent_id.clone(), session_id: ev.session_id.clone() };
            groups.entry(key).or_default().push(c);
        }
    }
    Ok(groups
        .into_iter()
        .map(|(key, cs)| {
            let latencies: Vec<f64> = cs.iter().filter_map(|c| c.latency_ms).collect();
            MetricsRow {
                window_start: key.window_start,
                agent_id: key.agent_id,
                session_id: key.session_id,
                messages_processed: cs.iter().filter(|c| c.ack).count() as i64,
                avg_latency_ms: (!latencies.is_empty()).then(|| latencies.iter().sum::<f64>() / latencies.len() as f64),
                errors: cs.iter().filter(|c| c.error).count() as i64,
                token_usage: cs.iter().fold(0i64, |sum, c| sum.saturating_add(c.tokens)),
                last_update_ts: 0,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const MIN: i64 = 60_000_000_000;

    fn ev(id: &str, ts: i64, agent: &str, kind: &str, details: &str) -> EventRow {
        EventRow {
            event_id: id.into(),
            ts,
            agent_id: agent.into(),
            session_id: "s".into(),
            message_id: format!("m-{id}"),
            event: kind.into(),
            details_json: details.into(),
        }
    }

    fn key(window_start: i64, agent: &str) -> WindowKey {
        WindowKey { window_start, agent_id: agent.into(), session_id: "s".into() }
    }

    fn one(e: &EventRow) -> (Option<MetricsRow>, RollupStats) {
        let mut r = Rollup::new(DEFAULT_WINDOW).expect("window");
        let k = r.apply(e);
        (k.and_then(|k| r.row(&k)), r.stats())
    }

    fn tokens_of(details: &str) -> (i64, u64) {
        let (row, stats) = one(&ev("e", 0, "a", "ack", details));
        (row.map_or(-1, |r| r.token_usage), stats.invalid_fields)
    }

    #[test]
    fn tokens_are_non_negative_json_integers_only() {
        assert_eq!(tokens_of(r#"{"tokens": 42}"#), (42, 0));
        assert_eq!(tokens_of(r#"{"tokens": 0}"#), (0, 0));
        assert_eq!(tokens_of(r#"{"tokens": null}"#), (0, 0));
        assert_eq!(tokens_of(r#"{"other": 1}"#), (0, 0));
        assert_eq!(tokens_of(r#"{"tokens": 42.0}"#), (0, 1));
        assert_eq!(tokens_of(r#"{"tokens": 1.5}"#), (0, 1));
        assert_eq!(tokens_of(r#"{"tokens": "42"}"#), (0, 1));
        assert_eq!(tokens_of(r#"{"tokens": -3}"#), (0, 1));
        assert_eq!(tokens_of(r#"{"tokens": 18446744073709551615}"#), (0, 1));
        assert_eq!(tokens_of(r#"{"tokens": [1]}"#), (0, 1));
    }

    #[test]
    fn token_sums_saturate() {
        let mut r = Rollup::new(DEFAULT_WINDOW).expect("window");
        let big = format!(r#"{{"tokens": {}}}"#, i64::MAX);
        r.apply(&ev("1", 0, "a", "heartbeat", &big));
        let k = r.apply(&ev("2", 1, "a", "heartbeat", &big)).expect("changed");
        assert_eq!(r.row(&k).map(|r| r.token_usage), Some(i64::MAX));
    }

    #[test]
    fn malformed_details_are_counted_and_the_event_still_counts() {
        for bad in ["{", "not json", "[1,2]", "42", "\"x\"", "null", r#"{"tokens": 1e999}"#] {
            let (row, stats) = one(&ev("e", 5, "a", "nack", bad));
            let row = row.expect("a nack counts even with bad details");
            assert_eq!((row.errors, row.token_usage, stats.malformed_details), (1, 0, 1), "{bad}");
        }
        let (row, stats) = one(&ev("e", 5, "a", "ack", "  "));
        assert_eq!((row.map(|r| r.messages_processed), stats.malformed_details), (Some(1), 0));
        // A heartbeat with malformed details carries nothing: no row.
        assert_eq!(one(&ev("e", 5, "a", "heartbeat", "{")).0, None);
    }

    #[test]
    fn latency_from_enqueue_ts_then_latency_ms_else_unknown() {
        let avg = |details: &str| one(&ev("e", 5_000_000, "a", "ack", details)).0.and_then(|r| r.avg_latency_ms);
        assert_eq!(avg(r#"{"enqueue_ts": 2000000}"#), Some(3.0));
        assert_eq!(avg(r#"{"latency_ms": 7.5}"#), Some(7.5));
        assert_eq!(avg(r#"{"latency_ms": 7}"#), Some(7.0));
        assert_eq!(avg(r#"{"enqueue_ts": 4000000, "latency_ms": 99}"#), Some(1.0));
        assert_eq!(avg(r#"{"enqueue_ts": "x", "latency_ms": 99}"#), Some(99.0));
        assert_eq!(avg(r#"{"enqueue_ts": 9000000}"#), Some(0.0), "negative clamps to 0");
        assert_eq!(avg(r#"{"enqueue_ts": -9223372036854775808}"#).map(|ms| ms > 0.0), Some(true));
        assert_eq!(avg(r#"{"latency_ms": "3"}"#), None);
        assert_eq!(avg("{}"), None);

        let mut r = Rollup::new(DEFAULT_WINDOW).expect("window");
        r.apply(&ev("1", 10, "a", "ack", r#"{"latency_ms": 2}"#));
        r.apply(&ev("2", 11, "a", "ack", ""));
        r.apply(&ev("3", 12, "a", "ack", r#"{"latency_ms": 4}"#));
        let row = r.row(&key(0, "a")).expect("row");
        assert_eq!((row.messages_processed, row.avg_latency_ms), (3, Some(3.0)), "unknown latency not averaged");
    }

    #[test]
    fn which_events_count() {
        let count = |kind: &str| {
            one(&ev("e", 0, "a", kind, r#"{"tokens": 5}"#)).0.map(|r| (r.messages_processed, r.errors, r.token_usage))
        };
        assert_eq!(count("ack"), Some((1, 0, 5)));
        for kind in ["nack", "expired", "dead_letter"] {
            assert_eq!(count(kind), Some((0, 1, 5)), "{kind}");
        }
        for kind in ["claimed", "heartbeat", "released", "force_released"] {
            assert_eq!(count(kind), Some((0, 0, 5)), "{kind}");
        }
        for kind in ["publish", "adopted", "ACK", "bogus", ""] {
            assert_eq!(count(kind), None, "{kind}");
        }
        assert_eq!(one(&ev("e", 0, "a", "claimed", "{}")).0, None);
    }

    #[test]
    fn empty_agent_falls_back_to_the_holder_in_details() {
        let row = |agent: &str, details: &str| one(&ev("e", 0, agent, "expired", details)).0.map(|r| r.agent_id);
        assert_eq!(row("", r#"{"lease_owner": "w1"}"#).as_deref(), Some("w1"));
        assert_eq!(row("w2", r#"{"lease_owner": "w1"}"#).as_deref(), Some("w2"));
        assert_eq!(row("", r#"{"previous_owner": "w3"}"#).as_deref(), Some("w3"));
        assert_eq!(row("", r#"{"lease_owner": "w1", "previous_owner": "w3"}"#).as_deref(), Some("w1"));
        assert_eq!(row("", r#"{"lease_owner": "", "previous_owner": "w3"}"#).as_deref(), Some("w3"));
        assert_eq!(row("", "{}").as_deref(), Some(""));
        let (r, stats) = one(&ev("e", 0, "", "dead_letter", r#"{"lease_owner": 3}"#));
        assert_eq!((r.map(|r| r.agent_id).as_deref(), stats.invalid_fields), (Some(""), 1));
    }

    #[test]
    fn window_boundaries() {
        let start = |ts: i64| one(&ev("e", ts, "a", "ack", "")).0.map(|r| r.window_start);
        assert_eq!(start(0), Some(0));
        assert_eq!(start(1), Some(0));
        assert_eq!(start(MIN - 1), Some(0));
        assert_eq!(start(MIN), Some(MIN));
        assert_eq!(start(MIN + 1), Some(MIN));
        assert_eq!(start(-1), Some(-MIN));
        assert_eq!(start(i64::MAX), Some(i64::MAX - i64::MAX % MIN));
        assert_eq!(start(i64::MIN), None, "window start below i64::MIN");
        let (_, stats) = one(&ev("e", i64::MIN, "a", "ack", ""));
        assert_eq!(stats.too_late, 1);
        assert_eq!(recompute(&[ev("e", i64::MIN, "a", "ack", "")], DEFAULT_WINDOW), Ok(vec![]));
    }

    #[test]
    fn invalid_windows_are_refused() {
        assert_eq!(Rollup::new(Duration::ZERO).err(), Some(RollupError::InvalidWindow(Duration::ZERO)));
        assert!(Rollup::new(Duration::from_secs(u64::MAX)).is_err());
        assert!(recompute(&[], Duration::ZERO).is_err());
        assert_eq!(Rollup::new(Duration::from_nanos(1)).map(|r| r.window_ns()), Ok(1));
    }

    #[test]
    fn drain_returns_changed_rows_once() {
        let mut r = Rollup::new(DEFAULT_WINDOW).expect("window");
        r.apply(&ev("1", 10, "a", "ack", ""));
        r.apply(&ev("2", MIN + 10, "b", "nack", ""));
        assert_eq!(r.pending(), 2);
        let drained = r.drain_dirty(777);
        assert_eq!(
            drained.iter().map(|r| (r.key(), r.last_update_ts)).collect::<Vec<_>>(),
            [(key(0, "a"), 777), (key(MIN, "b"), 777)]
        );
        assert!(r.drain_dirty(778).is_empty());
        r.apply(&ev("3", 20, "a", "ack", ""));
        let drained = r.drain_dirty(779);
        assert_eq!(drained.len(), 1);
        assert_eq!((drained[0].messages_processed, drained[0].last_update_ts), (2, 779));
        assert_eq!(r.row(&key(MIN, "b")).map(|r| r.last_update_ts), Some(777));
    }

    #[test]
    fn forget_before_bounds_memory_and_refuses_reopening() {
        let mut r = Rollup::new(DEFAULT_WINDOW).expect("window");
        r.apply(&ev("1", 10, "a", "ack", ""));
        r.apply(&ev("2", MIN + 10, "a", "ack", ""));
        // Not yet drained: kept so the change is not lost, but final.
        assert_eq!(r.forget_before(MIN), 0);
        assert_eq!(r.apply(&ev("3", 11, "a", "ack", "")), None);
        assert_eq!(r.stats().too_late, 1);
        assert_eq!(r.drain_dirty(1).len(), 2);
        assert_eq!(r.forget_before(MIN), 1);
        assert_eq!(r.forget_before(0), 0, "the horizon never moves back");
        assert_eq!(r.apply(&ev("1", 10, "a", "ack", "")), None);
        assert_eq!(r.apply(&ev("2", MIN + 10, "a", "ack", "")), None);
        assert_eq!(r.stats().duplicates, 1);
        assert_eq!(r.rows().iter().map(MetricsRow::key).collect::<Vec<_>>(), [key(MIN, "a")]);
        assert_eq!(r.seen.len(), 1);
    }

    // ---- properties ----

    fn details() -> impl Strategy<Value = String> {
        let field = |name: &'static str| {
            prop_oneof![
                Just(None),
                (0i64..1_000_000).prop_map(|n| Some(json!(n))),
                (-5i64..0).prop_map(|n| Some(json!(n))),
                (0.0f64..1e4).prop_map(|f| Some(json!(f))),
                Just(Some(json!("12"))),
                Just(Some(json!(null))),
            ]
            .prop_map(move |v| (name, v))
        };
        let object = (
            field("tokens"),
            field("enqueue_ts"),
            field("latency_ms"),
            prop::sample::select(vec![None, Some("lease_owner"), Some("previous_owner")]),
        )
            .prop_map(|(a, b, c, owner)| {
                let mut m = Map::new();
                for (name, v) in [a, b, c] {
                    if let Some(v) = v {
                        m.insert(name.to_string(), v);
                    }
                }
                if let Some(owner) = owner {
                    m.insert(owner.into(), json!("w9"));
                }
                Value::Object(m).to_string()
            });
        prop_oneof![
            6 => object,
            1 => Just(String::new()),
            1 => prop::sample::select(vec!["{", "[1]", "nul", "{\"tokens\":"]).prop_map(String::from),
        ]
    }

    fn kind() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "publish",
            "adopted",
            "claimed",
            "heartbeat",
            "ack",
            "ack",
            "ack",
            "nack",
            "expired",
            "released",
            "force_released",
            "dead_letter",
            "bogus",
        ])
    }

    /// Unique events (ids by position) with timestamps around window boundaries near 0.
    fn unique_events(window: i64) -> impl Strategy<Value = Vec<EventRow>> {
        let ts = (-2i64..6, prop_oneof![Just(0i64), Just(1), Just(window - 1), 0..window])
            .prop_map(move |(k, off)| k * window + off);
        let one =
            (ts, prop::sample::select(vec!["", "a1", "a2"]), prop::sample::select(vec!["s1", "s2"]), kind(), details());
        prop::collection::vec(one, 0..60).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (ts, agent, session, kind, details))| EventRow {
                    event_id: format!("e{i}"),
                    ts,
                    agent_id: agent.into(),
                    session_id: session.into(),
                    message_id: format!("m{}", i % 7),
                    event: kind.into(),
                    details_json: details,
                })
                .collect()
        })
    }

    /// (window, unique events, a delivery of them: shuffled, some repeated).
    fn scenario() -> impl Strategy<Value = (Duration, Vec<EventRow>, Vec<EventRow>)> {
        prop::sample::select(vec![1u64, 7, 1000, 60_000_000_000])
            .prop_flat_map(|w| (Just(w), unique_events(w as i64)))
            .prop_flat_map(|(w, events)| {
                let n = events.len();
                let picks = prop::collection::vec(0..n.max(1), 0..=n);
                (Just(Duration::from_nanos(w)), Just(events.clone()), picks, Just(events).prop_shuffle())
            })
            .prop_map(|(w, events, picks, mut delivery)| {
                let dups: Vec<EventRow> = picks.iter().filter_map(|i| events.get(*i).cloned()).collect();
                for (j, d) in dups.into_iter().enumerate() {
                    let at = (j * 13) % (delivery.len() + 1);
                    delivery.insert(at, d);
                }
                (w, events, delivery)
            })
    }

    fn assert_same(got: &[MetricsRow], want: &[MetricsRow]) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), want.len(), "{:?}\n!=\n{:?}", got, want);
        for (g, w) in got.iter().zip(want) {
            prop_assert!(g.same_metrics(w, 1e-9), "{:?} != {:?}", g, w);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn incremental_equals_recompute_of_deduped((window, events, delivery) in scenario()) {
            let mut r = Rollup::new(window).expect("window");
            for e in &delivery {
                r.apply(e);
            }
            let want = recompute(&events, window).expect("window");
            assert_same(&r.rows(), &want)?;
            // recompute dedupes too, and does not care about order.
            assert_same(&recompute(&delivery, window).expect("window"), &want)?;
            let total_acks = events.iter().filter(|e| e.event == "ack").count() as i64;
            prop_assert_eq!(want.iter().map(|r| r.messages_processed).sum::<i64>(), total_acks);
        }

        #[test]
        fn replaying_changes_nothing((window, _events, delivery) in scenario()) {
            let mut r = Rollup::new(window).expect("window");
            for e in &delivery {
                r.apply(e);
            }
            let before = r.rows();
            r.drain_dirty(1);
            for e in &delivery {
                prop_assert_eq!(r.apply(e), None);
            }
            prop_assert_eq!(r.pending(), 0);
            let after: Vec<MetricsRow> = r.rows().into_iter().map(|r| MetricsRow { last_update_ts: 0, ..r }).collect();
            prop_assert_eq!(after, before);
        }

        #[test]
        fn drains_carry_exactly_the_changed_rows((window, events, delivery) in scenario(), chunk in 1usize..10) {
            let mut r = Rollup::new(window).expect("window");
            let mut latest = BTreeMap::new();
            for (n, part) in delivery.chunks(chunk).enumerate() {
                let changed: BTreeSet<WindowKey> = part.iter().filter_map(|e| r.apply(e)).collect();
                let drained = r.drain_dirty(n as i64);
                prop_assert_eq!(drained.iter().map(MetricsRow::key).collect::<BTreeSet<_>>(), changed);
                for row in drained {
                    prop_assert_eq!(row.last_update_ts, n as i64);
                    latest.insert(row.key(), row);
                }
            }
            assert_same(&latest.into_values().collect::<Vec<_>>(), &recompute(&events, window).expect("window"))?;
        }

        #[test]
        fn forgetting_keeps_later_windows_exact((window, events, delivery) in scenario(), k in -2i64..6) {
            let mut r = Rollup::new(window).expect("window");
            let horizon = k * r.window_ns();
            for e in &delivery {
                r.apply(e);
            }
            r.drain_dirty(0);
            r.forget_before(horizon);
            for e in &delivery {
                r.apply(e);
            }
            prop_assert_eq!(r.pending(), 0, "nothing final reopened, nothing double counted");
            let mut want = recompute(&events, window).expect("window");
            want.retain(|row| row.window_start >= horizon);
            assert_same(&r.rows(), &want)?;
            prop_assert!(r.seen.values().all(|w| *w >= horizon));
        }
    }
}

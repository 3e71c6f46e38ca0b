//! The sequencer: the one task that owns the lease state. It applies every
//! request in arrival order, group-commits the resulting rows to Deephaven
//! (one write in flight, the next batch filling meanwhile) and answers each
//! request only once its changes are applied there (and, with durable acks,
//! acknowledged by Kafka). It also serves long-poll claims, runs expiries on
//! time and adopts rows other clients insert into `agent_messages`.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::clock::now_ns;
use super::command::{Command, Reply};
use super::lease::{Changes, ForceSelector, LeaseError, LeaseState, Message};
use super::rows::{events_batch, from_proto, messages_batch, messages_from_batch, to_proto};
use super::subscribe::Subscriptions;
use super::writer::TableWriter;
use crate::deephaven::barrage::{subscribe, SubscribeOptions};
use crate::deephaven::{DeephavenError, Filter, SessionPool, TableHandle};
use crate::mirror::durable::DurableAcks;
use crate::proto::bus as pb;
use crate::schema::TableNames;

/// Longest a claim may wait for work.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Commands applied per loop turn before a write is started (bounds batch latency).
const MAX_COMMANDS_PER_TURN: usize = 4096;

/// Settings of the sequencer.
#[derive(Clone, Debug)]
pub struct SequencerConfig {
    /// Table names.
    pub names: TableNames,
    /// Retries before dead-lettering (DHBUS_MAX_RETRIES).
    pub max_retries: i32,
    /// When set (DHBUS_DURABLE_ACKS=1), answers wait for Kafka acknowledgements.
    pub durable: Option<DurableAcks>,
}

/// Maps a refusal of the state machine to a gRPC status (the one place this happens).
pub fn status_of(e: LeaseError) -> Status {
    match &e {
        LeaseError::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
        LeaseError::NotFound(_) => Status::not_found(e.to_string()),
        LeaseError::Duplicate(_) => Status::already_exists(e.to_string()),
        LeaseError::Stale { .. } => Status::failed_precondition(e.to_string()),
    }
}

/// A reply to send once the batch holding its changes is committed.
type Deferred = Box<dyn FnOnce(Result<(), Status>) + Send>;

fn defer<T: Send + 'static>(reply: Reply<T>, value: T) -> Deferred {
    Box::new(move |r| {
        let _ = reply.send(r.map(|()| value));
    })
}

/// A claim waiting for work.
struct Waiter {
    req: pb::ClaimRequest,
    reply: Reply<pb::ClaimResponse>,
    deadline: Instant,
    started: std::time::Instant,
}

/// What a finished write reports back.
type WriteDone = (TableWriter, Result<(), DeephavenError>, Vec<Deferred>, Vec<pb::Message>);

/// The sequencer task's state.
struct Sequencer {
    st: LeaseState,
    cfg: SequencerConfig,
    pending: Changes,
    replies: Vec<Deferred>,
    waiters: Vec<Waiter>,
    subs: Subscriptions,
    /// (topic, status) pairs exported as gauges, so one that drops to zero is set to 0.
    exported: std::collections::HashSet<(String, super::lease::Status)>,
}

/// Loads the state from a snapshot of `agent_messages`.
pub async fn restore(pool: &SessionPool, cfg: &SequencerConfig) -> Result<LeaseState, DeephavenError> {
    let session = pool.session().await;
    let table = TableHandle::open(&session, &cfg.names.messages).await?;
    let snap = table.snapshot().await?;
    let mut rows = Vec::with_capacity(snap.num_rows());
    for r in messages_from_batch(&snap) {
        match r {
            Ok(m) => rows.push(m),
            Err(e) => tracing::warn!(error = %e, "skipping unreadable row of agent_messages"),
        }
    }
    let prefix = uuid::Uuid::now_v7().simple().to_string();
    let mut st = LeaseState::new(super::lease::LeaseConfig { max_retries: cfg.max_retries }, prefix);
    let n = rows.len();
    st.restore(rows);
    tracing::info!(messages = n, "sequencer state restored from agent_messages");
    Ok(st)
}

/// Runs the sequencer until `shutdown`; then commits what is pending and stops.
pub async fn run(pool: SessionPool, cfg: SequencerConfig, mut rx: mpsc::Receiver<Command>, subs: Subscriptions, shutdown: CancellationToken) -> Result<(), DeephavenError> {
    let st = restore(&pool, &cfg).await?;
    let mut writer = Some(TableWriter::open(pool.clone(), cfg.names.clone()).await?);
    let (adopt_tx, mut adopt_rx) = mpsc::channel::<Vec<Message>>(64);
    let adopter = tokio::spawn(adopt_loop(pool.clone(), cfg.names.clone(), adopt_tx, shutdown.clone()));
    let mut seq = Sequencer { st, cfg, pending: Changes::default(), replies: Vec::new(), waiters: Vec::new(), subs, exported: Default::default() };
    let mut inflight: Option<tokio::task::JoinHandle<WriteDone>> = None;
    let mut gauges = tokio::time::interval(Duration::from_secs(1));
    let mut stopping = false;
    loop {
        let deadline = seq.next_wake();
        tokio::select! {
            biased;
            done = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                inflight = None;
                match done {
                    Ok((w, res, replies, changed)) => {
                        writer = Some(w);
                        let r = res.map_err(|e| Status::unavailable(format!("writing to Deephaven failed: {e}")));
                        if r.is_ok() {
                            seq.subs.publish(changed);
                        }
                        for reply in replies {
                            reply(r.clone());
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "group commit task failed");
                        return Err(DeephavenError::Protocol(format!("group commit task failed: {e}")));
                    }
                }
            }
            cmd = rx.recv(), if !stopping => match cmd {
                Some(cmd) => {
                    seq.handle(cmd);
                    let mut n = 1;
                    while n < MAX_COMMANDS_PER_TURN {
                        match rx.try_recv() {
                            Ok(cmd) => { seq.handle(cmd); n += 1; }
                            Err(_) => break,
                        }
                    }
                }
                None => stopping = true,
            },
            rows = adopt_rx.recv(), if !stopping => if let Some(rows) = rows {
                let n = seq.st.adopt(now_ns(), rows, &mut seq.pending);
                if n > 0 {
                    metrics::counter!("dhbus_adopted_total").increment(n as u64);
                    tracing::info!(adopted = n, "adopted rows inserted directly into agent_messages");
                }
            },
            _ = sleep_until_opt(deadline) => {
                seq.st.tick(now_ns(), &mut seq.pending);
                seq.expire_waiters();
            }
            _ = gauges.tick() => seq.export_gauges(),
            _ = shutdown.cancelled(), if !stopping => stopping = true,
        }
        seq.serve_waiters();
        if inflight.is_none() && !seq.pending.is_empty() {
            if let Some(w) = writer.take() {
                inflight = Some(seq.start_write(w));
            }
        } else if inflight.is_none() && !seq.replies.is_empty() {
            // Nothing to write but replies queued (e.g. a no-op): answer now.
            for reply in seq.replies.drain(..) {
                reply(Ok(()));
            }
        }
        if stopping && inflight.is_none() && seq.pending.is_empty() {
            for w in seq.waiters.drain(..) {
                let _ = w.reply.send(Err(Status::unavailable("bus is shutting down")));
            }
            adopter.abort();
            return Ok(());
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => futures::future::pending().await,
    }
}

/// Feeds rows inserted by other clients (status queued) to the sequencer.
async fn adopt_loop(pool: SessionPool, names: TableNames, tx: mpsc::Sender<Vec<Message>>, shutdown: CancellationToken) {
    let mut backoff = backoff::ExponentialBackoff { max_elapsed_time: None, max_interval: Duration::from_secs(10), ..Default::default() };
    loop {
        let r: Result<(), DeephavenError> = async {
            let session = pool.session().await;
            let table = TableHandle::open(&session, &names.messages).await?;
            let view = table.filter(&[Filter::eq_str("status", "queued")?]).await?;
            let mut sub = subscribe(&view, SubscribeOptions::default()).await?;
            while let Some(delta) = sub.next().await {
                let delta = delta?;
                let mut rows = Vec::new();
                for b in [&delta.added, &delta.modified] {
                    rows.extend(messages_from_batch(b).into_iter().filter_map(Result::ok));
                }
                if !rows.is_empty() && tx.send(rows).await.is_err() {
                    return Ok(());
                }
            }
            Err(DeephavenError::Protocol("adoption subscription ended".into()))
        }
        .await;
        if let Err(e) = r {
            let wait = backoff::backoff::Backoff::next_backoff(&mut backoff).unwrap_or(Duration::from_secs(10));
            tracing::warn!(error = %e, "adoption subscription interrupted; resubscribing");
            tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(wait) => {} }
        } else {
            return;
        }
    }
}

impl Sequencer {
    fn next_wake(&self) -> Option<Instant> {
        let state = self.st.next_deadline().map(|t| {
            let d = t.saturating_sub(now_ns()).max(0) as u64;
            Instant::now() + Duration::from_nanos(d) + Duration::from_millis(1)
        });
        let waiter = self.waiters.iter().map(|w| w.deadline).min();
        [state, waiter].into_iter().flatten().min()
    }

    fn handle(&mut self, cmd: Command) {
        let now = now_ns();
        match cmd {
            Command::Publish(req, reply) => {
                let batch = req.messages.into_iter().map(from_proto).collect();
                match self.st.publish(now, batch, || uuid::Uuid::now_v7().to_string(), &mut self.pending) {
                    Ok(ids) => self.replies.push(defer(reply, pb::PublishResponse { message_ids: ids })),
                    Err(e) => {
                        let _ = reply.send(Err(status_of(e)));
                    }
                }
            }
            Command::Claim(req, reply) => {
                if let Err(e) = validate_claim(&req) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let started = std::time::Instant::now();
                let wait = Duration::from_millis(req.wait_ms.max(0) as u64).min(MAX_WAIT);
                self.waiters.push(Waiter { req, reply, deadline: Instant::now() + wait, started });
            }
            Command::Extend(req, reply) => {
                let Some(l) = req.lease else { return bad(reply, "lease", "required") };
                let r = self.st.extend(now, &l.message_id, &l.agent_id, l.lease_epoch, req.lease_ms.saturating_mul(1_000_000), &mut self.pending);
                self.settle(reply, r.map(|m| pb::LeaseResponse { message: Some(to_proto(&m)) }));
            }
            Command::Ack(req, reply) => {
                let Some(l) = req.lease else { return bad(reply, "lease", "required") };
                let r = self.st.ack(now, &l.message_id, &l.agent_id, l.lease_epoch, &req.details_json, &mut self.pending);
                self.settle(reply, r.map(|m| pb::SettleResponse { message: Some(to_proto(&m)) }));
            }
            Command::AckBatch(req, reply) => {
                let mut resp = pb::AckBatchResponse::default();
                for a in req.acks {
                    let Some(l) = a.lease else {
                        resp.failed.push(pb::SettleFailure { message_id: String::new(), code: Code::InvalidArgument as i32, error: "lease: required".into() });
                        continue;
                    };
                    match self.st.ack(now, &l.message_id, &l.agent_id, l.lease_epoch, &a.details_json, &mut self.pending) {
                        Ok(m) => resp.acked.push(to_proto(&m)),
                        Err(e) => {
                            let st = status_of(e);
                            resp.failed.push(pb::SettleFailure { message_id: l.message_id, code: st.code() as i32, error: st.message().to_string() });
                        }
                    }
                }
                self.replies.push(defer(reply, resp));
            }
            Command::Nack(req, reply) => {
                let Some(l) = req.lease else { return bad(reply, "lease", "required") };
                let r = self.st.nack(now, &l.message_id, &l.agent_id, l.lease_epoch, req.delay_ms.saturating_mul(1_000_000), &req.reason, &mut self.pending);
                self.settle(reply, r.map(|m| pb::SettleResponse { message: Some(to_proto(&m)) }));
            }
            Command::Release(req, reply) => {
                let Some(l) = req.lease else { return bad(reply, "lease", "required") };
                let r = self.st.release(now, &l.message_id, &l.agent_id, l.lease_epoch, &mut self.pending);
                self.settle(reply, r.map(|m| pb::SettleResponse { message: Some(to_proto(&m)) }));
            }
            Command::ForceRelease(req, reply) => {
                if req.older_than_ms < 0 {
                    return bad(reply, "older_than_ms", "must not be negative");
                }
                if req.message_ids.is_empty() && req.owner.is_empty() && req.older_than_ms == 0 {
                    return bad(reply, "message_ids", "give message ids, an owner or an age");
                }
                let sel = ForceSelector {
                    ids: req.message_ids,
                    owner: (!req.owner.is_empty()).then_some(req.owner),
                    older_than_ns: (req.older_than_ms > 0).then(|| req.older_than_ms.saturating_mul(1_000_000)),
                };
                let ids = self.st.force_release(now, &sel, &mut self.pending);
                tracing::info!(released = ids.len(), "force release");
                self.replies.push(defer(reply, pb::ForceReleaseResponse { message_ids: ids }));
            }
            Command::Stats(reply) => {
                let mut topics: HashMap<String, HashMap<String, u64>> = HashMap::new();
                for ((topic, status), n) in self.st.counts() {
                    topics.entry(topic.clone()).or_default().insert(status.as_str().to_string(), *n);
                }
                let mut topics: Vec<pb::TopicStats> = topics.into_iter().map(|(topic, by_status)| pb::TopicStats { topic, by_status }).collect();
                topics.sort_by(|a, b| a.topic.cmp(&b.topic));
                let _ = reply.send(Ok(pb::StatsResponse { topics }));
            }
            Command::Snapshot(req, reply) => {
                let mut out: Vec<pb::Message> = self
                    .st
                    .messages()
                    .filter(|m| (req.topic.is_empty() || m.topic == req.topic) && (req.session_id.is_empty() || m.session_id == req.session_id))
                    .filter(|m| req.statuses.is_empty() || req.statuses.iter().any(|s| s == m.status.as_str()))
                    .map(to_proto)
                    .collect();
                out.sort_by(|a, b| a.message_id.cmp(&b.message_id));
                let _ = reply.send(Ok(out));
            }
        }
    }

    fn settle<T: Send + 'static>(&mut self, reply: Reply<T>, r: Result<T, LeaseError>) {
        match r {
            Ok(v) => self.replies.push(defer(reply, v)),
            Err(e) => {
                if matches!(e, LeaseError::Stale { .. }) {
                    metrics::counter!("dhbus_errors_total", "kind" => "stale_lease").increment(1);
                }
                let _ = reply.send(Err(status_of(e)));
            }
        }
    }

    /// Hands work to waiting claims, oldest first.
    fn serve_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let now = now_ns();
        let mut keep = Vec::with_capacity(self.waiters.len());
        for w in std::mem::take(&mut self.waiters) {
            let session = (!w.req.session_id.is_empty()).then_some(w.req.session_id.as_str());
            if !self.st.has_ready(&w.req.topic, session) && !w.reply.is_closed() {
                keep.push(w);
                continue;
            }
            if w.reply.is_closed() {
                continue;
            }
            let max = w.req.max_messages.max(1) as usize;
            match self.st.claim(now, &w.req.topic, session, &w.req.agent_id, max, w.req.lease_ms.saturating_mul(1_000_000), &mut self.pending) {
                Ok(got) if got.is_empty() => keep.push(w),
                Ok(got) => {
                    for m in &got {
                        metrics::histogram!("dhbus_queue_wait_seconds").record((now - m.ts).max(0) as f64 / 1e9);
                    }
                    let started = w.started;
                    let resp = pb::ClaimResponse { messages: got.iter().map(to_proto).collect() };
                    self.replies.push(Box::new(move |r| {
                        metrics::histogram!("dhbus_claim_latency_seconds").record(started.elapsed().as_secs_f64());
                        let _ = w.reply.send(r.map(|()| resp));
                    }));
                }
                Err(e) => {
                    let _ = w.reply.send(Err(status_of(e)));
                }
            }
        }
        self.waiters = keep;
    }

    /// Answers claims whose wait is over with no messages.
    fn expire_waiters(&mut self) {
        let now = Instant::now();
        let (done, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters).into_iter().partition(|w| w.deadline <= now);
        self.waiters = keep;
        for w in done {
            metrics::histogram!("dhbus_claim_latency_seconds").record(w.started.elapsed().as_secs_f64());
            let _ = w.reply.send(Ok(pb::ClaimResponse { messages: Vec::new() }));
        }
    }

    fn export_gauges(&mut self) {
        for ((topic, status), n) in self.st.counts() {
            metrics::gauge!("dhbus_queue_depth", "topic" => topic.clone(), "status" => status.as_str()).set(*n as f64);
            self.exported.insert((topic.clone(), *status));
        }
        for (topic, status) in &self.exported {
            if !self.st.counts().contains_key(&(topic.clone(), *status)) {
                metrics::gauge!("dhbus_queue_depth", "topic" => topic.clone(), "status" => status.as_str()).set(0.0);
            }
        }
        metrics::gauge!("dhbus_claims_waiting").set(self.waiters.len() as f64);
    }

    /// Starts writing the pending batch; the replies go with it.
    fn start_write(&mut self, mut writer: TableWriter) -> tokio::task::JoinHandle<WriteDone> {
        let changes = std::mem::take(&mut self.pending);
        let replies = std::mem::take(&mut self.replies);
        count_events(&changes);
        // Only the last state of each message in the batch needs writing (keyed upsert).
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(changes.messages.len());
        for (i, m) in changes.messages.iter().enumerate() {
            last.insert(m.message_id.as_str(), i);
        }
        let mut idx: Vec<usize> = last.into_values().collect();
        idx.sort_unstable();
        let latest: Vec<Message> = idx.into_iter().map(|i| changes.messages[i].clone()).collect();
        let durable = self.cfg.durable.clone();
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let mb = (!latest.is_empty()).then(|| messages_batch(&latest)).transpose();
            let eb = (!changes.events.is_empty()).then(|| events_batch(&changes.events)).transpose();
            let res = match (mb, eb) {
                (Ok(m), Ok(e)) => writer.write(m, e).await,
                (Err(e), _) | (_, Err(e)) => Err(DeephavenError::Arrow(e)),
            };
            metrics::histogram!("dhbus_group_commit_seconds").record(t.elapsed().as_secs_f64());
            metrics::histogram!("dhbus_group_commit_rows").record(latest.len() as f64);
            if let (Ok(()), Some(d)) = (&res, durable) {
                for m in &latest {
                    let _ = d.wait_for(&m.message_id, m.version).await;
                }
            }
            let changed = latest.iter().map(to_proto).collect();
            (writer, res, replies, changed)
        })
    }
}

fn count_events(changes: &Changes) {
    for e in &changes.events {
        let name = match e.event {
            "claimed" => "dhbus_claims_total",
            "ack" => "dhbus_acks_total",
            "nack" => "dhbus_nacks_total",
            "expired" => "dhbus_expiries_total",
            "dead_letter" => "dhbus_dead_letters_total",
            "publish" => "dhbus_published_total",
            _ => "",
        };
        if !name.is_empty() {
            metrics::counter!(name).increment(1);
        }
        if matches!(e.event, "claimed" | "heartbeat" | "released" | "expired" | "force_released" | "nack") {
            metrics::counter!("dhbus_lease_churn_total", "event" => e.event).increment(1);
        }
    }
}

fn bad<T>(reply: Reply<T>, field: &str, reason: &str) {
    let _ = reply.send(Err(Status::invalid_argument(format!("{field}: {reason}"))));
}

fn validate_claim(r: &pb::ClaimRequest) -> Result<(), Status> {
    let bad = |f: &str, why: &str| Err(Status::invalid_argument(format!("{f}: {why}")));
    if r.topic.is_empty() {
        return bad("topic", "must not be empty");
    }
    if r.agent_id.is_empty() {
        return bad("agent_id", "must not be empty");
    }
    if r.lease_ms <= 0 {
        return bad("lease_ms", "must be positive");
    }
    if r.wait_ms < 0 {
        return bad("wait_ms", "must not be negative");
    }
    if r.max_messages > 10_000 {
        return bad("max_messages", "at most 10000");
    }
    Ok(())
}

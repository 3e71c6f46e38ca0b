//! `Subscribe`: a stream of changes to messages matching a filter. The
//! sequencer broadcasts every committed change; each subscriber filters in
//! memory (filter values never reach Deephaven), starting with the current
//! matching messages. A subscriber that falls behind is resynchronised with a
//! fresh snapshot rather than silently missing changes.

use std::collections::HashSet;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::Status;

use super::command::Command;
use crate::proto::bus as pb;

/// Known statuses (a filter naming another is refused).
pub const STATUSES: [&str; 5] = ["queued", "processing", "done", "error", "expired"];

/// The broadcast hub.
#[derive(Clone)]
pub struct Subscriptions {
    /// Committed changes, in commit order.
    tx: broadcast::Sender<Arc<Vec<pb::Message>>>,
    /// To ask the sequencer for snapshots.
    cmd: mpsc::Sender<Command>,
}

/// A validated filter.
#[derive(Clone, Debug)]
struct Filter {
    topic: String,
    session_id: String,
    statuses: HashSet<String>,
}

impl Filter {
    fn matches(&self, m: &pb::Message) -> bool {
        (self.topic.is_empty() || m.topic == self.topic)
            && (self.session_id.is_empty() || m.session_id == self.session_id)
            && (self.statuses.is_empty() || self.statuses.contains(&m.status))
    }
    /// Same topic/session but a status outside the filter: it left the view.
    fn left(&self, m: &pb::Message) -> bool {
        (self.topic.is_empty() || m.topic == self.topic) && (self.session_id.is_empty() || m.session_id == self.session_id) && !self.matches(m)
    }
}

impl Subscriptions {
    /// A hub whose snapshots come from the sequencer behind `cmd`.
    pub fn new(cmd: mpsc::Sender<Command>) -> Subscriptions {
        let (tx, _) = broadcast::channel(4096);
        Subscriptions { tx, cmd }
    }

    /// Called by the sequencer after each group commit.
    pub fn publish(&self, changes: Vec<pb::Message>) {
        if !changes.is_empty() && self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(changes));
        }
    }

    /// Opens a stream for `req` (INVALID_ARGUMENT names a bad status).
    pub fn open(&self, req: pb::SubscribeRequest) -> Result<impl Stream<Item = Result<pb::MessageChange, Status>> + Send + 'static, Status> {
        for s in &req.statuses {
            if !STATUSES.contains(&s.as_str()) {
                return Err(Status::invalid_argument(format!("statuses: unknown status `{s}` (expected one of {})", STATUSES.join(", "))));
            }
        }
        let filter = Filter { topic: req.topic.clone(), session_id: req.session_id.clone(), statuses: req.statuses.iter().cloned().collect() };
        let mut rx = self.tx.subscribe();
        let cmd = self.cmd.clone();
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::MessageChange, Status>>(1024);
        tokio::spawn(async move {
            let mut need_snapshot = true;
            loop {
                if need_snapshot {
                    need_snapshot = false;
                    let (tx, rx_snap) = oneshot::channel();
                    if cmd.send(Command::Snapshot(req.clone(), tx)).await.is_err() {
                        return;
                    }
                    let Ok(Ok(snap)) = rx_snap.await else { return };
                    for m in snap {
                        let change = pb::MessageChange { kind: pb::message_change::Kind::Snapshot as i32, message: Some(m) };
                        if out_tx.send(Ok(change)).await.is_err() {
                            return;
                        }
                    }
                }
                match rx.recv().await {
                    Ok(changes) => {
                        for m in changes.iter() {
                            let kind = if filter.matches(m) {
                                pb::message_change::Kind::Upsert
                            } else if filter.left(m) {
                                pb::message_change::Kind::Removed
                            } else {
                                continue;
                            };
                            if out_tx.send(Ok(pb::MessageChange { kind: kind as i32, message: Some(m.clone()) })).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "subscriber fell behind; resending a snapshot");
                        need_snapshot = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(out_rx))
    }
}

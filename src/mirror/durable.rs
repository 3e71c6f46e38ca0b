//! `DHBUS_DURABLE_ACKS=1`: lets the bus wait until the mirror has a message
//! version acknowledged by Kafka before it answers the agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Acknowledged versions per message id, and the waiters for newer ones.
#[derive(Clone, Debug, Default)]
pub struct DurableAcks {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Highest version Kafka acknowledged per message id.
    acked: HashMap<String, i64>,
    /// Callers waiting for a version of a message id.
    waiters: HashMap<String, Vec<(i64, oneshot::Sender<()>)>>,
}

impl DurableAcks {
    /// Resolves once `version` (or a later one) of `message_id` is acknowledged.
    pub fn wait_for(&self, message_id: &str, version: i64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.acked.get(message_id).is_some_and(|v| *v >= version) {
            let _ = tx.send(());
        } else {
            g.waiters.entry(message_id.to_string()).or_default().push((version, tx));
        }
        rx
    }

    /// Records that Kafka acknowledged `version` of `message_id`.
    pub fn acked(&self, message_id: &str, version: i64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.acked_one(message_id, version);
    }

    /// Records a batch of acknowledgements under one lock.
    pub fn acked_many(&self, acked: impl IntoIterator<Item = (String, i64)>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (id, v) in acked {
            g.acked_one(&id, v);
        }
    }

    /// Forgets a message id that was deleted (keeps memory bounded by live rows).
    pub fn forget(&self, message_id: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.acked.remove(message_id);
    }
}

impl Inner {
    fn acked_one(&mut self, message_id: &str, version: i64) {
        let g = self;
        let e = g.acked.entry(message_id.to_string()).or_insert(i64::MIN);
        *e = (*e).max(version);
        if let Some(ws) = g.waiters.get_mut(message_id) {
            let mut keep = Vec::new();
            for (v, tx) in ws.drain(..) {
                if v <= version {
                    let _ = tx.send(());
                } else {
                    keep.push((v, tx));
                }
            }
            if keep.is_empty() {
                g.waiters.remove(message_id);
            } else {
                g.waiters.insert(message_id.to_string(), keep);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_resolve_on_ack_of_their_version() {
        let d = DurableAcks::default();
        let mut w2 = d.wait_for("m", 2);
        d.acked("m", 1);
        assert!(w2.try_recv().is_err());
        d.acked("m", 3);
        assert!(w2.await.is_ok());
        assert!(d.wait_for("m", 3).await.is_ok(), "already acked versions resolve at once");
    }
}

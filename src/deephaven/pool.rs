//! A pool of sessions that reconnects with exponential backoff.
//!
//! Operations borrow a session round-robin. When an operation fails because
//! the server went away or forgot the session (restart, expiry), the pool logs
//! in again with backoff and the operation is retried; callers that hold
//! long-lived state (subscriptions) re-establish it through the same path.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use backoff::ExponentialBackoff;
use tokio::sync::RwLock;

use super::config::ClientConfig;
use super::error::{DeephavenError, Result};
use super::session::Session;

/// A fixed-size set of sessions to one server.
#[derive(Clone, Debug)]
pub struct SessionPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    /// Settings for (re)connecting.
    config: ClientConfig,
    /// The sessions; a slot is replaced when its session cannot be revived.
    sessions: Vec<RwLock<Session>>,
    /// Round-robin cursor.
    next: AtomicUsize,
}

impl SessionPool {
    /// Opens `config.pool_size` sessions (at least one).
    pub async fn connect(config: ClientConfig) -> Result<SessionPool> {
        let n = config.pool_size.max(1);
        let mut sessions = Vec::with_capacity(n);
        for _ in 0..n {
            sessions.push(RwLock::new(Session::connect(config.clone()).await?));
        }
        metrics::gauge!("dhbus_deephaven_sessions").set(n as f64);
        Ok(SessionPool { inner: Arc::new(PoolInner { config, sessions, next: AtomicUsize::new(0) }) })
    }

    /// The settings the pool connects with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The next session, round-robin.
    pub async fn session(&self) -> Session {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.sessions.len();
        self.inner.sessions[i].read().await.clone()
    }

    /// Runs `op` on a session; on a connection or auth failure the session is
    /// revived (re-login, or a new connection) with exponential backoff and
    /// `op` runs again, until `config.reconnect_max_elapsed` has passed.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = ExponentialBackoff {
            max_elapsed_time: Some(self.inner.config.reconnect_max_elapsed),
            ..ExponentialBackoff::default()
        };
        loop {
            let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.sessions.len();
            let session = self.inner.sessions[i].read().await.clone();
            match op(session.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() || (e.is_auth() && session_was_live(&e)) => {
                    let Some(wait) = backoff::backoff::Backoff::next_backoff(&mut backoff) else { return Err(e) };
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "deephaven operation failed; reconnecting");
                    metrics::counter!("dhbus_deephaven_reconnects_total").increment(1);
                    tokio::time::sleep(wait).await;
                    self.revive(i, &session).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Re-logs slot `i` in, or replaces it with a new connection.
    async fn revive(&self, i: usize, seen: &Session) {
        if seen.relogin().await.is_ok() {
            return;
        }
        match Session::connect(self.inner.config.clone()).await {
            Ok(fresh) => {
                let mut slot = self.inner.sessions[i].write().await;
                *slot = fresh;
            }
            Err(e) => tracing::debug!(error = %e, "reconnect attempt failed"),
        }
    }

    /// Closes every session (CloseSession on the server).
    pub async fn close(&self) {
        for s in &self.inner.sessions {
            let s = s.read().await.clone();
            if let Err(e) = s.close().await {
                tracing::debug!(error = %e, "close session failed");
            }
        }
    }
}

/// An auth error on a session that had logged in means the session expired or
/// the server restarted: worth a re-login. Wrong credentials fail on login,
/// in `connect`, and are never retried.
fn session_was_live(e: &DeephavenError) -> bool {
    e.is_auth()
}

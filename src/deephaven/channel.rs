//! A tonic channel that carries the session's `authorization` header on every
//! request and takes the newest bearer token from every response.
//!
//! The Deephaven server rotates the bearer token about once a minute and sends
//! the current one in the `authorization` response header; the newest token
//! must be sent on the next call. Doing it in one tower service, below every
//! generated client, means no call site can forget it.

use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::HeaderValue;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;

/// The authorization value a session currently sends.
#[derive(Debug)]
pub struct TokenCell {
    /// Current header value: the login credentials until the first response, then `Bearer <uuid>`.
    value: RwLock<HeaderValue>,
    /// How many times the server handed out a new bearer token (observability, tests).
    rotations: std::sync::atomic::AtomicU64,
}

impl TokenCell {
    /// A cell that will log in with `login` on the next call.
    pub fn new(login: &str) -> Result<Self, http::header::InvalidHeaderValue> {
        Ok(TokenCell { value: RwLock::new(HeaderValue::from_str(login)?), rotations: Default::default() })
    }

    /// Forget the bearer token and log in again with `login` on the next call.
    pub fn reset(&self, login: &str) -> Result<(), http::header::InvalidHeaderValue> {
        let v = HeaderValue::from_str(login)?;
        *self.value.write().unwrap_or_else(|p| p.into_inner()) = v;
        Ok(())
    }

    /// Whether a bearer token has been received.
    pub fn has_bearer(&self) -> bool {
        self.current().as_bytes().starts_with(b"Bearer ")
    }

    /// Number of bearer tokens received so far (the first login counts as one).
    pub fn rotations(&self) -> u64 {
        self.rotations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The value sent on the next call.
    pub fn current(&self) -> HeaderValue {
        self.value.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn observe(&self, v: &HeaderValue) {
        if v.as_bytes().starts_with(b"Bearer ") {
            let mut cur = self.value.write().unwrap_or_else(|p| p.into_inner());
            if *cur != *v {
                *cur = v.clone();
                self.rotations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::trace!("session token rotated");
            }
        }
    }
}

/// A `Channel` wrapper that manages the session token (see module docs).
#[derive(Clone, Debug)]
pub struct AuthChannel {
    /// The shared HTTP/2 connection.
    inner: Channel,
    /// Token shared by every clone of this channel (one per session).
    token: Arc<TokenCell>,
}

impl AuthChannel {
    /// Wraps `inner`, sending and refreshing `token`.
    pub fn new(inner: Channel, token: Arc<TokenCell>) -> Self {
        AuthChannel { inner, token }
    }

    /// The token cell shared by this session's clients.
    pub fn token(&self) -> &Arc<TokenCell> {
        &self.token
    }
}

impl Service<http::Request<Body>> for AuthChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        req.headers_mut().insert(http::header::AUTHORIZATION, self.token.current());
        // The ready inner service must be the one called (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let token = self.token.clone();
        Box::pin(async move {
            let resp = inner.call(req).await?;
            if let Some(v) = resp.headers().get(http::header::AUTHORIZATION) {
                token.observe(v);
            }
            Ok(resp)
        })
    }
}

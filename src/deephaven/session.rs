//! One authenticated Deephaven session: login, token upkeep, keep-alive,
//! export tickets, and `CloseSession` on shutdown.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use tokio::task::JoinHandle;
use tonic::transport::{ClientTlsConfig, Endpoint};

use super::channel::{AuthChannel, TokenCell};
use super::config::ClientConfig;
use super::error::{DeephavenError, Result};
use super::ticket::Ticket;
use crate::proto::dh::grpc::{
    config_service_client::ConfigServiceClient, input_table_service_client::InputTableServiceClient,
    session_service_client::SessionServiceClient, table_service_client::TableServiceClient,
    ConfigurationConstantsRequest, HandshakeRequest, PublishRequest, ReleaseRequest,
};
use crate::proto::dh::script::grpc::console_service_client::ConsoleServiceClient;

/// Largest gRPC message accepted from the server (DoGet of large tables).
const MAX_DECODE_BYTES: usize = 512 * 1024 * 1024;

/// A logged-in session. Cheap to clone; all clones share one connection and token.
#[derive(Clone, Debug)]
pub struct Session {
    inner: Arc<SessionInner>,
}

#[derive(Debug)]
struct SessionInner {
    /// Settings, kept to log in again.
    config: ClientConfig,
    /// The authenticated channel every client of this session uses.
    channel: AuthChannel,
    /// Next export id: export tickets are unique per session.
    next_export: AtomicI32,
    /// Set once `close` ran, so late calls fail clearly.
    closed: AtomicBool,
    /// Keep-alive task, aborted on close/drop.
    heartbeat: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.lock().ok().and_then(|mut g| g.take()) {
            h.abort();
        }
    }
}

impl Session {
    /// Connects and logs in; fails with [`DeephavenError::Auth`] on refused credentials.
    pub async fn connect(config: ClientConfig) -> Result<Session> {
        let endpoint = config.endpoint();
        let conn_err = |e: &dyn std::fmt::Display| DeephavenError::Connection {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        };
        let mut ep = Endpoint::from_shared(config.endpoint_uri())
            .map_err(|e| conn_err(&e))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if config.use_tls {
            let tls = ClientTlsConfig::new().with_native_roots().domain_name(config.host.clone());
            ep = ep.tls_config(tls).map_err(|e| conn_err(&e))?;
        }
        let channel = ep.connect().await.map_err(|e| conn_err(&e))?;
        let token = TokenCell::new(&config.credentials.login_header())
            .map_err(|_| DeephavenError::Auth { endpoint: endpoint.clone(), message: "credentials contain characters not allowed in a header".into() })?;
        let session = Session {
            inner: Arc::new(SessionInner {
                channel: AuthChannel::new(channel, Arc::new(token)),
                config,
                next_export: AtomicI32::new(1),
                closed: AtomicBool::new(false),
                heartbeat: std::sync::Mutex::new(None),
            }),
        };
        let lifetime = session.login().await?;
        session.start_heartbeat(lifetime);
        Ok(session)
    }

    /// Logs in (or re-validates the token); returns the server's session lifetime when it says it.
    async fn login(&self) -> Result<Option<Duration>> {
        let resp = self
            .config_client()
            .get_configuration_constants(ConfigurationConstantsRequest {})
            .await
            .map_err(|s| self.status_err("login", s))?;
        if !self.inner.channel.token().has_bearer() {
            return Err(DeephavenError::Auth {
                endpoint: self.endpoint(),
                message: "server answered without a session token".into(),
            });
        }
        let lifetime = resp
            .get_ref()
            .config_values
            .get("http.session.durationMs")
            .and_then(|v| match &v.kind {
                Some(crate::proto::dh::grpc::config_value::Kind::StringValue(s)) => s.parse::<u64>().ok(),
                None => None,
            })
            .map(Duration::from_millis);
        tracing::debug!(endpoint = %self.endpoint(), ?lifetime, "deephaven session established");
        Ok(lifetime)
    }

    /// Drops the bearer token and logs in again with the credentials (after a
    /// server restart or an expired session).
    pub async fn relogin(&self) -> Result<()> {
        self.inner
            .channel
            .token()
            .reset(&self.inner.config.credentials.login_header())
            .map_err(|_| DeephavenError::Protocol("credentials not a valid header".into()))?;
        self.login().await.map(|_| ())
    }

    fn start_heartbeat(&self, lifetime: Option<Duration>) {
        let mut period = self.inner.config.heartbeat;
        if let Some(l) = lifetime {
            // Any authenticated call at about half the lifetime keeps the session; a third leaves margin.
            period = period.min(l / 3).max(Duration::from_millis(200));
        }
        let weak = Arc::downgrade(&self.inner);
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let session = Session { inner };
                if session.is_closed() {
                    return;
                }
                match session.login().await {
                    Ok(_) => {}
                    Err(e) if e.is_auth() => {
                        tracing::warn!(error = %e, "deephaven session expired; logging in again");
                        if let Err(e) = session.relogin().await {
                            tracing::warn!(error = %e, "deephaven re-login failed; will retry");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "deephaven keep-alive failed; will retry"),
                }
            }
        });
        if let Ok(mut g) = self.inner.heartbeat.lock() {
            *g = Some(handle);
        }
    }

    /// Bearer tokens received so far (grows as the server rotates the token).
    pub fn token_rotations(&self) -> u64 {
        self.inner.channel.token().rotations()
    }

    /// Server address for errors and logs.
    pub fn endpoint(&self) -> String {
        self.inner.config.endpoint()
    }

    /// Maps a status of operation `op` to a typed error.
    pub fn status_err(&self, op: &'static str, status: tonic::Status) -> DeephavenError {
        DeephavenError::from_status(op, &self.endpoint(), status)
    }

    /// Whether `close` has run.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// A fresh export ticket of this session.
    pub fn new_export(&self) -> Ticket {
        Ticket::export(self.inner.next_export.fetch_add(1, Ordering::Relaxed))
    }

    /// Releases an export ticket on the server.
    pub async fn release(&self, ticket: &Ticket) -> Result<()> {
        self.session_client()
            .release(ReleaseRequest { id: Some(ticket.to_proto()) })
            .await
            .map_err(|s| self.status_err("Release", s))?;
        Ok(())
    }

    /// Names the table behind `source` as a global-scope variable `name`, without a script.
    pub async fn publish(&self, source: &Ticket, name: &str) -> Result<()> {
        let dest = Ticket::scope(name)?;
        self.session_client()
            .publish_from_ticket(PublishRequest { source_id: Some(source.to_proto()), result_id: Some(dest.to_proto()) })
            .await
            .map_err(|s| self.status_err("PublishFromTicket", s))?;
        Ok(())
    }

    /// Ends the session on the server, releasing its exports.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(h) = self.inner.heartbeat.lock().ok().and_then(|mut g| g.take()) {
            h.abort();
        }
        self.session_client()
            .close_session(HandshakeRequest {})
            .await
            .map_err(|s| self.status_err("CloseSession", s))?;
        Ok(())
    }

    /// The authenticated channel.
    pub fn channel(&self) -> AuthChannel {
        self.inner.channel.clone()
    }

    /// ConfigService client.
    pub fn config_client(&self) -> ConfigServiceClient<AuthChannel> {
        ConfigServiceClient::new(self.channel())
    }
    /// SessionService client.
    pub fn session_client(&self) -> SessionServiceClient<AuthChannel> {
        SessionServiceClient::new(self.channel())
    }
    /// TableService client.
    pub fn table_client(&self) -> TableServiceClient<AuthChannel> {
        TableServiceClient::new(self.channel()).max_decoding_message_size(MAX_DECODE_BYTES)
    }
    /// InputTableService client.
    pub fn input_client(&self) -> InputTableServiceClient<AuthChannel> {
        InputTableServiceClient::new(self.channel())
    }
    /// ConsoleService client.
    pub fn console_client(&self) -> ConsoleServiceClient<AuthChannel> {
        ConsoleServiceClient::new(self.channel())
    }
    /// Arrow Flight client (DoGet, DoPut, DoExchange).
    pub fn flight_client(&self) -> FlightServiceClient<AuthChannel> {
        FlightServiceClient::new(self.channel())
            .max_decoding_message_size(MAX_DECODE_BYTES)
            .max_encoding_message_size(MAX_DECODE_BYTES)
    }
}

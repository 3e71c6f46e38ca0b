//! Connection settings of the Deephaven client (the guide's DEEPHAVEN_* variables).

use std::time::Duration;

/// How the client proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (servers started with anonymous auth).
    Anonymous,
    /// Pre-shared key (`-Dauthentication.psk=KEY` on the server).
    Psk(String),
    /// User and password for servers with a Basic auth handler.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs.
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Psk(_) => f.write_str("Psk(***)"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
        }
    }
}

impl Credentials {
    /// The `authorization` header value that logs in with these credentials.
    pub fn login_header(&self) -> String {
        use base64::Engine as _;
        match self {
            Credentials::Anonymous => "Anonymous".to_string(),
            Credentials::Psk(key) => format!("io.deephaven.authentication.psk.PskAuthenticationHandler {key}"),
            Credentials::Basic { user, password } => {
                let raw = format!("{user}:{password}");
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
            }
        }
    }
}

/// Everything needed to open sessions against one server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Server host (`DEEPHAVEN_HOST`).
    pub host: String,
    /// Flight/gRPC port (`DEEPHAVEN_PORT`).
    pub port: u16,
    /// TLS on the connection (`DEEPHAVEN_USE_TLS=1`).
    pub use_tls: bool,
    /// Login credentials (`DEEPHAVEN_API_TOKEN`, `DEEPHAVEN_AUTH_TYPE`, `DEEPHAVEN_USERNAME`).
    pub credentials: Credentials,
    /// Sessions kept open by a pool (`DEEPHAVEN_SESSION_POOL_SIZE`).
    pub pool_size: usize,
    /// Keep-alive period (`DEEPHAVEN_HEARTBEAT_S`); capped at a third of the server's session lifetime.
    pub heartbeat: Duration,
    /// Timeout for establishing the TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Longest time reconnect attempts go on before an operation gives up.
    pub reconnect_max_elapsed: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            host: "localhost".into(),
            port: 10000,
            use_tls: false,
            credentials: Credentials::Anonymous,
            pool_size: 4,
            heartbeat: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            reconnect_max_elapsed: Duration::from_secs(60),
        }
    }
}

impl ClientConfig {
    /// The URI tonic connects to.
    pub fn endpoint_uri(&self) -> String {
        let scheme = if self.use_tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// Printable server address for errors and logs.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

//! Configuration from flags and environment variables: the integration
//! guide's ten `DEEPHAVEN_*` variables plus dhbus's own. Every flag has an
//! `env=` twin so deployments configure dhbus through the environment alone.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::deephaven::{ClientConfig, Credentials};
use crate::schema::TableNames;

/// How to authenticate against Deephaven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthType {
    /// Pre-shared key: DEEPHAVEN_API_TOKEN is the key.
    Psk,
    /// Basic: DEEPHAVEN_USERNAME and DEEPHAVEN_API_TOKEN as the password.
    Basic,
    /// No credentials.
    Anonymous,
}

/// Where Deephaven is and how to talk to it.
#[derive(Clone, Debug, Args)]
pub struct DeephavenArgs {
    /// Deephaven server host.
    #[arg(long = "deephaven-host", env = "DEEPHAVEN_HOST", default_value = "localhost")]
    pub host: String,
    /// Barrage/Flight port.
    #[arg(long = "deephaven-port", env = "DEEPHAVEN_PORT", default_value_t = 10000)]
    pub port: u16,
    /// 1 to use TLS.
    #[arg(long = "deephaven-use-tls", env = "DEEPHAVEN_USE_TLS", default_value = "0", value_parser = parse_flag)]
    pub use_tls: bool,
    /// API token (PSK) or password (basic auth).
    #[arg(long = "deephaven-api-token", env = "DEEPHAVEN_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// psk, basic or anonymous; default psk when a token is set, else anonymous.
    #[arg(long = "deephaven-auth-type", env = "DEEPHAVEN_AUTH_TYPE", value_enum)]
    pub auth_type: Option<AuthType>,
    /// User name for basic auth.
    #[arg(long = "deephaven-username", env = "DEEPHAVEN_USERNAME")]
    pub username: Option<String>,
    /// Sessions in the pool.
    #[arg(long = "deephaven-session-pool-size", env = "DEEPHAVEN_SESSION_POOL_SIZE", default_value_t = 4)]
    pub pool_size: usize,
    /// Seconds between session keep-alives.
    #[arg(long = "deephaven-heartbeat-s", env = "DEEPHAVEN_HEARTBEAT_S", default_value_t = 30)]
    pub heartbeat_s: u64,
    /// Name of the message table.
    #[arg(long = "messages-table", env = "DEEPHAVEN_AGENT_MESSAGES_TABLE", default_value = "agent_messages")]
    pub messages_table: String,
    /// Name of the audit table.
    #[arg(long = "events-table", env = "DEEPHAVEN_AGENT_EVENTS_TABLE", default_value = "agent_events")]
    pub events_table: String,
    /// Name of the metrics table.
    #[arg(long = "metrics-table", env = "DEEPHAVEN_AGENT_METRICS_TABLE", default_value = "agent_metrics")]
    pub metrics_table: String,
    /// Optional tenant prefix: tables become `<namespace>_<name>`.
    #[arg(long = "namespace", env = "DHBUS_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A setting has a value that cannot be used.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The variable or flag.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

fn parse_flag(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("expected 0 or 1, got `{other}`")),
    }
}

impl DeephavenArgs {
    /// The client configuration these settings describe.
    pub fn client_config(&self) -> Result<ClientConfig, SettingsError> {
        let auth = self.auth_type.unwrap_or(if self.api_token.is_some() { AuthType::Psk } else { AuthType::Anonymous });
        let credentials = match auth {
            AuthType::Anonymous => Credentials::Anonymous,
            AuthType::Psk => Credentials::Psk(self.api_token.clone().ok_or(SettingsError::Invalid {
                name: "DEEPHAVEN_API_TOKEN",
                reason: "required for psk auth".into(),
            })?),
            AuthType::Basic => Credentials::Basic {
                user: self.username.clone().ok_or(SettingsError::Invalid {
                    name: "DEEPHAVEN_USERNAME",
                    reason: "required for basic auth".into(),
                })?,
                password: self.api_token.clone().unwrap_or_default(),
            },
        };
        if self.pool_size == 0 {
            return Err(SettingsError::Invalid { name: "DEEPHAVEN_SESSION_POOL_SIZE", reason: "must be at least 1".into() });
        }
        if self.heartbeat_s == 0 {
            return Err(SettingsError::Invalid { name: "DEEPHAVEN_HEARTBEAT_S", reason: "must be at least 1".into() });
        }
        Ok(ClientConfig {
            host: self.host.clone(),
            port: self.port,
            use_tls: self.use_tls,
            credentials,
            pool_size: self.pool_size,
            heartbeat: Duration::from_secs(self.heartbeat_s),
            ..ClientConfig::default()
        })
    }

    /// The table names in use, validated as identifiers.
    pub fn table_names(&self) -> Result<TableNames, SettingsError> {
        let names = TableNames::new(&self.messages_table, &self.events_table, &self.metrics_table, self.namespace.as_deref());
        for (var, n) in [
            ("DEEPHAVEN_AGENT_MESSAGES_TABLE", &names.messages),
            ("DEEPHAVEN_AGENT_EVENTS_TABLE", &names.events),
            ("DEEPHAVEN_AGENT_METRICS_TABLE", &names.metrics),
        ] {
            crate::deephaven::validate_identifier("table", n)
                .map_err(|e| SettingsError::Invalid { name: var, reason: e.to_string() })?;
        }
        Ok(names)
    }
}

/// Which parts of `dhbus run` run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Component {
    /// The lease sequencer and its gRPC API.
    Bus,
    /// The Kafka mirror (needs DEEPHAVEN_KAFKA_MIRROR_TOPIC and KAFKA_BOOTSTRAP_SERVERS).
    Mirror,
    /// The agent_metrics roll-up.
    Metrics,
    /// Warm standby: replays the mirror topics into this Deephaven, then keeps
    /// applying new records (`dhbus replay --follow`); with `mirror` beside
    /// it, what it applies is never sent back to Kafka. Excludes `bus`.
    Follow,
}

/// Settings of `dhbus run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    /// Deephaven connection.
    pub dh: DeephavenArgs,
    /// Address of the bus gRPC API.
    #[arg(long, env = "DHBUS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: std::net::SocketAddr,
    /// Bearer token every API call must carry (unset: no auth).
    #[arg(id = "bus_api_token", long = "bus-api-token", env = "DHBUS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Components to run (comma-separated); default: all that are configured.
    #[arg(long, env = "DHBUS_COMPONENTS", value_delimiter = ',', value_enum)]
    pub components: Vec<Component>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long = "metrics-listen", env = "DHBUS_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: std::net::SocketAddr,
    /// Retries (nacks + lease expiries) before a message is dead-lettered.
    #[arg(long = "max-retries", env = "DHBUS_MAX_RETRIES", default_value_t = 5)]
    pub max_retries: i32,
    /// 1: answer bus calls only after the mirror has the change acknowledged by Kafka.
    #[arg(long = "durable-acks", env = "DHBUS_DURABLE_ACKS", default_value = "0", value_parser = parse_flag)]
    pub durable_acks: bool,
    #[command(flatten)]
    /// Kafka settings.
    pub kafka: KafkaArgs,
    /// Tumbling window of agent_metrics, e.g. 1m.
    #[arg(long = "metrics-window", env = "DHBUS_METRICS_WINDOW", default_value = "1m", value_parser = humantime::parse_duration)]
    pub metrics_window: Duration,
}

/// Kafka settings shared by the mirror and replay.
#[derive(Clone, Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long = "kafka-bootstrap-servers", env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub bootstrap: Option<String>,
    /// Base name of the mirror topics (`<base>.agent_messages`, `<base>.agent_events`).
    #[arg(long = "mirror-topic", env = "DEEPHAVEN_KAFKA_MIRROR_TOPIC")]
    pub mirror_topic: Option<String>,
    /// Partitions of topics the mirror creates.
    #[arg(long = "mirror-partitions", env = "DHBUS_MIRROR_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
}

impl RunArgs {
    /// The components to run: those asked for, or all that are configured.
    pub fn effective_components(&self) -> Result<Vec<Component>, SettingsError> {
        let mirror_ready = self.kafka.mirror_topic.is_some() && self.kafka.bootstrap.is_some();
        if self.components.is_empty() {
            let mut c = vec![Component::Bus, Component::Metrics];
            if mirror_ready {
                c.push(Component::Mirror);
            }
            return Ok(c);
        }
        if self.components.contains(&Component::Mirror) && !mirror_ready {
            return Err(SettingsError::Invalid {
                name: "DHBUS_COMPONENTS",
                reason: "mirror needs DEEPHAVEN_KAFKA_MIRROR_TOPIC and KAFKA_BOOTSTRAP_SERVERS".into(),
            });
        }
        if self.components.contains(&Component::Follow) {
            if !mirror_ready {
                return Err(SettingsError::Invalid { name: "DHBUS_COMPONENTS", reason: "follow needs DEEPHAVEN_KAFKA_MIRROR_TOPIC and KAFKA_BOOTSTRAP_SERVERS".into() });
            }
            if self.components.contains(&Component::Bus) {
                return Err(SettingsError::Invalid { name: "DHBUS_COMPONENTS", reason: "follow (a standby fed from Kafka) cannot run with bus (which writes the tables)".into() });
            }
        }
        if self.durable_acks && !self.components.contains(&Component::Mirror) {
            return Err(SettingsError::Invalid { name: "DHBUS_DURABLE_ACKS", reason: "needs the mirror component".into() });
        }
        Ok(self.components.clone())
    }
}

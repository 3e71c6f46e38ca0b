//! `dhbus health`: connectivity, auth, table presence and a streaming round
//! trip (a probe row written and seen through a Barrage subscription).

use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use serde::Serialize;

use crate::deephaven::barrage::{subscribe, SubscribeOptions};
use crate::deephaven::{create_input_table, ClientConfig, DeephavenError, InputKind, InputTable, Session, TableHandle};
use crate::proto::dh::grpc::{config_service_client::ConfigServiceClient, AuthenticationConstantsRequest};
use crate::schema::{TableId, TableNames};

/// Result of one check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Check name (connectivity, auth, tables, streaming).
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found (or why it failed).
    pub detail: String,
    /// How long it took, milliseconds.
    pub elapsed_ms: f64,
}

/// All checks.
#[derive(Clone, Debug, Serialize)]
pub struct HealthReport {
    /// True only when every check passed.
    pub ok: bool,
    /// The checks in the order they ran.
    pub checks: Vec<Check>,
}

/// Runs the Deephaven checks and, when `kafka` (bootstrap servers) is given, a
/// Kafka check (broker metadata).
pub async fn run_all(config: &ClientConfig, names: &TableNames, timeout: Duration, kafka: Option<&str>) -> HealthReport {
    let mut report = run_checks(config, names, timeout).await;
    if let Some(bootstrap) = kafka {
        let t = Instant::now();
        let b = bootstrap.to_string();
        let r = tokio::task::spawn_blocking(move || kafka_check(&b, timeout)).await.unwrap_or_else(|e| Err(e.to_string()));
        report.checks.push(check("kafka", t, r));
        report.ok = report.checks.iter().all(|c| c.ok);
    }
    report
}

fn kafka_check(bootstrap: &str, timeout: Duration) -> Result<String, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let cfg = crate::mirror::kafka_config::consumer_config(bootstrap, "dhbus-health");
    let c: BaseConsumer = cfg.create().map_err(|e| format!("kafka client: {e}"))?;
    let md = c.fetch_metadata(None, timeout).map_err(|e| format!("broker {bootstrap} unreachable: {e}"))?;
    Ok(format!("{} broker(s), {} topic(s) at {bootstrap}", md.brokers().len(), md.topics().len()))
}

/// Runs every check against the server in `config`; later checks are skipped
/// (and reported failed) when an earlier one they need failed.
pub async fn run_checks(config: &ClientConfig, names: &TableNames, timeout: Duration) -> HealthReport {
    let mut checks = Vec::new();
    let t = Instant::now();
    let conn = connectivity(config).await;
    checks.push(check("connectivity", t, conn.as_ref().map(|_| format!("reachable at {}", config.endpoint()))));
    let t = Instant::now();
    let session = if conn.is_ok() { Some(Session::connect(config.clone()).await) } else { None };
    checks.push(match &session {
        Some(r) => check("auth", t, r.as_ref().map(|_| format!("logged in ({:?})", config.credentials))),
        None => skipped("auth"),
    });
    let session = session.and_then(|r| r.ok());
    let t = Instant::now();
    checks.push(match &session {
        Some(s) => check("tables", t, tables(s, names).await),
        None => skipped("tables"),
    });
    let t = Instant::now();
    checks.push(match &session {
        Some(s) => match tokio::time::timeout(timeout, streaming(s, names)).await {
            Ok(r) => check("streaming", t, r),
            Err(_) => check("streaming", t, Err(format!("probe row not seen within {timeout:?}"))),
        },
        None => skipped("streaming"),
    });
    if let Some(s) = session {
        let _ = s.close().await;
    }
    HealthReport { ok: checks.iter().all(|c| c.ok), checks }
}

fn check(name: &'static str, t: Instant, r: Result<String, impl ToString>) -> Check {
    let elapsed_ms = t.elapsed().as_secs_f64() * 1e3;
    match r {
        Ok(detail) => Check { name, ok: true, detail, elapsed_ms },
        Err(e) => Check { name, ok: false, detail: e.to_string(), elapsed_ms },
    }
}

fn skipped(name: &'static str) -> Check {
    Check { name, ok: false, detail: "skipped: an earlier check failed".into(), elapsed_ms: 0.0 }
}

/// Reaches the server without credentials (ConfigService needs none).
async fn connectivity(config: &ClientConfig) -> Result<(), DeephavenError> {
    let endpoint = config.endpoint();
    let conn_err = |m: String| DeephavenError::Connection { endpoint: endpoint.clone(), message: m };
    let ep = tonic::transport::Endpoint::from_shared(config.endpoint_uri()).map_err(|e| conn_err(e.to_string()))?;
    let ep = ep.connect_timeout(config.connect_timeout);
    let ep = if config.use_tls {
        ep.tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots()).map_err(|e| conn_err(e.to_string()))?
    } else {
        ep
    };
    let channel = ep.connect().await.map_err(|e| conn_err(format!("{e}: {}", source_chain(&e))))?;
    ConfigServiceClient::new(channel)
        .get_authentication_constants(AuthenticationConstantsRequest {})
        .await
        .map_err(|s| DeephavenError::from_status("GetAuthenticationConstants", &endpoint, s))?;
    Ok(())
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

async fn tables(session: &Session, names: &TableNames) -> Result<String, String> {
    let report = crate::bootstrap::check(session, names).await.map_err(|e| e.to_string())?;
    if report.is_clean() {
        let list: Vec<&str> = TableId::ALL.iter().map(|id| names.of(*id)).collect();
        Ok(format!("present and canonical: {}", list.join(", ")))
    } else {
        Err(format!("drift:\n{report}"))
    }
}

/// Name of the probe table for a set of canonical tables (beside them, same namespace).
pub fn probe_table_name(names: &TableNames) -> String {
    format!("{}_health_probe", names.messages)
}

async fn streaming(session: &Session, names: &TableNames) -> Result<String, DeephavenError> {
    let name = probe_table_name(names);
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("probe_id", DataType::Utf8, true),
        Field::new("nonce", DataType::Utf8, true),
        Field::new("ts", DataType::Int64, true),
    ]));
    let table = match TableHandle::open(session, &name).await {
        Ok(t) => t,
        Err(DeephavenError::TableNotFound { .. }) => {
            create_input_table(session, &name, &schema, InputKind::Keyed(vec!["probe_id".into()])).await?
        }
        Err(e) => return Err(e),
    };
    let mut sub = subscribe(&table, SubscribeOptions::default()).await?;
    // One row per probe table (a fixed key, a fresh nonce), so probes never grow it.
    let probe = uuid::Uuid::now_v7().to_string();
    let start = Instant::now();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            std::sync::Arc::new(StringArray::from(vec!["dhbus"])),
            std::sync::Arc::new(StringArray::from(vec![probe.as_str()])),
            std::sync::Arc::new(Int64Array::from(vec![crate::bus::clock::now_ns()])),
        ],
    )?;
    let input = InputTable::new(table, vec!["probe_id".into()]);
    input.add(vec![batch]).await?;
    while let Some(delta) = sub.next().await {
        let delta = delta?;
        for b in [&delta.added, &delta.modified] {
            if let Some(col) = b.column_by_name("nonce").and_then(|c| c.as_any().downcast_ref::<StringArray>()) {
                if col.iter().flatten().any(|v| v == probe) {
                    let ms = start.elapsed().as_secs_f64() * 1e3;
                    return Ok(format!("probe row seen through a subscription {ms:.1} ms after the write"));
                }
            }
        }
    }
    Err(DeephavenError::Protocol("subscription ended before the probe row arrived".into()))
}

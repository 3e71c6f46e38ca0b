//! `dhbus run`: the long-running service. Starts the configured components
//! (bus, mirror, metrics) on one session pool, serves /metrics, /healthz and
//! /readyz, and stops them all on one shutdown path: the token is cancelled,
//! the API stops taking calls, the sequencer commits what it accepted, the
//! mirror and roll-up stop, and the sessions are closed.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::sequencer::{self, SequencerConfig};
use crate::bus::service::BusService;
use crate::bus::subscribe::Subscriptions;
use crate::deephaven::SessionPool;
use crate::mirror::durable::DurableAcks;
use crate::mirror::ledger::KafkaLedger;
use crate::mirror::service::MirrorConfig;
use crate::mirror::topics::MirrorTopics;
use crate::ops::readiness::Readiness;
use crate::proto::bus::bus_server::BusServer;
use crate::settings::{Component, RunArgs};

/// Errors that stop `dhbus run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad settings.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// Deephaven unreachable at start or the sequencer failed.
    #[error(transparent)]
    Deephaven(#[from] crate::deephaven::DeephavenError),
    /// Bootstrap failed.
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    /// The mirror settings are wrong.
    #[error(transparent)]
    Mirror(#[from] crate::mirror::kafka_error::MirrorError),
    /// An endpoint could not be served.
    #[error(transparent)]
    Http(#[from] crate::ops::http::HttpError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Runs until `shutdown` is cancelled (or a component fails fatally).
pub async fn run(args: RunArgs, prometheus: PrometheusHandle, shutdown: CancellationToken) -> Result<(), RunError> {
    let components = args.effective_components()?;
    let config = args.dh.client_config()?;
    let names = args.dh.table_names()?;
    tracing::info!(?components, endpoint = %config.endpoint(), "starting dhbus");
    let readiness = Readiness::default();
    readiness.require("deephaven");
    let (_, http) = crate::ops::http::serve(args.metrics_listen, prometheus, readiness.clone(), shutdown.clone()).await?;
    let pool = SessionPool::connect(config).await?;
    readiness.set("deephaven", true, "session pool connected");
    // (A standby's follower restores the tables itself.)
    if components.contains(&Component::Mirror) && !components.contains(&Component::Follow) {
        restore_if_lost(&pool, &args, &names).await?;
    }
    crate::bootstrap::bootstrap(&pool.session().await, &names).await?;
    readiness.set("tables", true, "canonical tables present");
    tokio::spawn(watch_deephaven(pool.clone(), names.messages.clone(), readiness.clone(), shutdown.clone()));

    let durable = DurableAcks::default();
    let ledger = KafkaLedger::default();
    let mut tasks = tokio::task::JoinSet::new();
    if components.contains(&Component::Follow) {
        let (Some(bootstrap), Some(base)) = (args.kafka.bootstrap.clone(), args.kafka.mirror_topic.clone()) else {
            unreachable!("effective_components checked the follow settings")
        };
        let mut plan = crate::mirror::replay::ReplayPlan::full(bootstrap, MirrorTopics::new(&base)?, names.clone());
        plan.ledger = components.contains(&Component::Mirror).then(|| ledger.clone());
        let (session, stop) = (pool.session().await, shutdown.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => Ok(()),
                r = crate::mirror::follow::follow(&session, plan) => r.map_err(RunError::Mirror),
            }
        });
    }
    if components.contains(&Component::Mirror) {
        let (Some(bootstrap), Some(base)) = (args.kafka.bootstrap.clone(), args.kafka.mirror_topic.clone()) else {
            unreachable!("effective_components checked the mirror settings")
        };
        readiness.require("kafka");
        tokio::spawn(watch_kafka(bootstrap.clone(), readiness.clone(), shutdown.clone()));
        let mut cfg = MirrorConfig::new(bootstrap, MirrorTopics::new(&base)?, args.kafka.partitions, names.clone());
        cfg.ledger = ledger.clone();
        cfg.standby = components.contains(&Component::Follow);
        let (pool, durable, ready, stop) = (pool.clone(), args.durable_acks.then(|| durable.clone()), readiness.clone(), shutdown.clone());
        tasks.spawn(async move {
            crate::mirror::service::run(pool, cfg, durable, ready, stop).await;
            Ok(())
        });
    }
    if components.contains(&Component::Metrics) {
        let (pool, names, window, stop) = (pool.clone(), names.clone(), args.metrics_window, shutdown.clone());
        tasks.spawn(async move {
            crate::metrics::service::run(pool, names, window, stop).await;
            Ok(())
        });
    }
    if components.contains(&Component::Bus) {
        let (tx, rx) = mpsc::channel(65_536);
        let subs = Subscriptions::new(tx.clone());
        let cfg = SequencerConfig { names: names.clone(), max_retries: args.max_retries, durable: args.durable_acks.then(|| durable.clone()) };
        let seq_pool = pool.clone();
        let seq_stop = shutdown.clone();
        let seq_subs = subs.clone();
        let sequencer = tokio::spawn(async move { sequencer::run(seq_pool, cfg, rx, seq_subs, seq_stop).await });
        let service = BusService::new(tx, subs, args.api_token.clone());
        let stop = shutdown.clone();
        let listen = args.listen;
        tracing::info!(%listen, auth = args.api_token.is_some(), "bus API listening");
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(BusServer::new(service).max_decoding_message_size(64 << 20))
                .serve_with_shutdown(listen, async move { stop.cancelled().await })
                .await
                .map_err(RunError::Grpc)?;
            match sequencer.await {
                Ok(r) => r.map_err(RunError::Deephaven),
                Err(e) => Err(RunError::Deephaven(crate::deephaven::DeephavenError::Protocol(format!("sequencer task: {e}")))),
            }
        });
    }
    let mut result = Ok(());
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "component failed; shutting down");
                shutdown.cancel();
                result = Err(e);
            }
            Err(e) => tracing::error!(error = %e, "component panicked"),
        }
    }
    shutdown.cancel();
    pool.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    tracing::info!("dhbus stopped");
    result
}

/// A Deephaven that restarted has lost its in-memory tables. When the mirror
/// is on and `agent_messages` is missing, the tables are rebuilt from Kafka
/// before anything else runs (so the bus restores its state from them and the
/// mirror never sees an empty table it would mirror as deletions).
async fn restore_if_lost(pool: &SessionPool, args: &RunArgs, names: &crate::schema::TableNames) -> Result<(), RunError> {
    let session = pool.session().await;
    match crate::deephaven::TableHandle::open(&session, &names.messages).await {
        Ok(_) => return Ok(()),
        Err(crate::deephaven::DeephavenError::TableNotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let (Some(bootstrap), Some(base)) = (args.kafka.bootstrap.clone(), args.kafka.mirror_topic.clone()) else { return Ok(()) };
    let topics = MirrorTopics::new(&base)?;
    let exists = {
        let (b, t) = (bootstrap.clone(), topics.messages.clone());
        tokio::task::spawn_blocking(move || crate::mirror::readback::open(&b, &t, &crate::mirror::readback::StartAt::Earliest).is_ok())
            .await
            .unwrap_or(false)
    };
    if !exists {
        tracing::info!("no mirror topics yet: a new stack, nothing to restore");
        return Ok(());
    }
    tracing::warn!(table = %names.messages, "tables missing but the Kafka mirror exists: restoring from Kafka before starting");
    let plan = crate::mirror::replay::ReplayPlan::full(bootstrap, topics, names.clone());
    let summary = crate::mirror::replay::replay(&session, plan).await?;
    for (table, s) in &summary.tables {
        tracing::info!(table, rows = s.rows, records = s.records_read, checksum = %s.checksum, "restored from Kafka");
    }
    Ok(())
}

/// Keeps `/readyz` honest about Deephaven: an authenticated call and a table
/// look-up every 2 s (a restarted server has lost its tables).
async fn watch_deephaven(pool: SessionPool, table: String, readiness: Readiness, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! { _ = shutdown.cancelled() => return, _ = tick.tick() => {} }
        let s = pool.session().await;
        let r = tokio::time::timeout(Duration::from_secs(3), s.config_client().get_configuration_constants(crate::proto::dh::grpc::ConfigurationConstantsRequest {})).await;
        match r {
            Ok(Ok(_)) => readiness.set("deephaven", true, "session alive"),
            Ok(Err(status)) => {
                let e = s.status_err("keep-alive", status);
                readiness.set("deephaven", false, e.to_string());
                // A restarted server forgot the session: log in again (or reconnect).
                let _ = pool.run(|s| async move { s.relogin().await }).await;
                continue;
            }
            Err(_) => {
                readiness.set("deephaven", false, "Deephaven did not answer within 3 s");
                continue;
            }
        }
        match tokio::time::timeout(Duration::from_secs(3), crate::deephaven::TableHandle::open(&s, &table)).await {
            Ok(Ok(_)) => readiness.set("tables", true, "canonical tables present"),
            Ok(Err(e)) => readiness.set("tables", false, format!("{e} (run `dhbus bootstrap`, or `dhbus replay` to restore)")),
            Err(_) => readiness.set("tables", false, "table look-up timed out"),
        }
    }
}

/// Keeps `/readyz` honest about Kafka: broker metadata every 2 s.
async fn watch_kafka(bootstrap: String, readiness: Readiness, shutdown: CancellationToken) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    // The same settings as the mirror (DHBUS_KAFKA_* included: security, SASL).
    let cfg = crate::mirror::kafka_config::consumer_config(&bootstrap, "dhbus-readiness");
    let client: BaseConsumer = match cfg.create() {
        Ok(c) => c,
        Err(e) => {
            readiness.set("kafka", false, format!("kafka client: {e}"));
            return;
        }
    };
    let client = std::sync::Arc::new(client);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! { _ = shutdown.cancelled() => return, _ = tick.tick() => {} }
        let c = client.clone();
        let r = tokio::task::spawn_blocking(move || c.fetch_metadata(None, Duration::from_secs(2))).await;
        match r {
            Ok(Ok(md)) if !md.brokers().is_empty() => readiness.set("kafka", true, format!("{} broker(s) reachable", md.brokers().len())),
            Ok(Ok(_)) => readiness.set("kafka", false, format!("no brokers at {bootstrap}")),
            Ok(Err(e)) => readiness.set("kafka", false, format!("brokers at {bootstrap} unreachable: {e}")),
            Err(e) => readiness.set("kafka", false, e.to_string()),
        }
    }
}

//! Command implementations of the binary (output formatting lives here).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;

use dhbus::bootstrap::{self, BootstrapError};
use dhbus::deephaven::Session;
use dhbus::health::HealthReport;
use dhbus::settings::DeephavenArgs;

pub async fn bootstrap(dh: &DeephavenArgs, check_only: bool) -> anyhow::Result<ExitCode> {
    let config = dh.client_config().context("Deephaven settings")?;
    let names = dh.table_names().context("table names")?;
    let session = Session::connect(config).await.context("connecting to Deephaven")?;
    let mut out = std::io::stdout().lock();
    let code = if check_only {
        let report = bootstrap::check(&session, &names).await?;
        if report.is_clean() {
            writeln!(out, "ok: {}, {}, {} match schemas/", names.messages, names.events, names.metrics)?;
            ExitCode::SUCCESS
        } else {
            writeln!(out, "schema drift:\n{report}")?;
            ExitCode::FAILURE
        }
    } else {
        match bootstrap::bootstrap(&session, &names).await {
            Ok(done) => {
                for (table, outcome) in done {
                    writeln!(out, "{table}: {}", serde_json::to_string(&outcome)?.trim_matches('"'))?;
                }
                ExitCode::SUCCESS
            }
            Err(BootstrapError::Drift(report)) => {
                writeln!(out, "tables exist but differ from schemas/:\n{report}")?;
                ExitCode::FAILURE
            }
            Err(e) => return Err(e.into()),
        }
    };
    let _ = session.close().await;
    Ok(code)
}

pub fn print_health(report: &HealthReport, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
    } else {
        for c in &report.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            writeln!(out, "{mark} {:<13} {:>8.1} ms  {}", c.name, c.elapsed_ms, c.detail)?;
        }
        writeln!(out, "{}", if report.ok { "healthy" } else { "UNHEALTHY" })?;
    }
    Ok(())
}

// ---- bus clients -------------------------------------------------------------

use std::io::BufRead;
use std::time::Duration;

use dhbus::bus::client::DeephavenBus;
use dhbus::proto::bus::NewMessage;

/// Where the bus is.
#[derive(clap::Args, Debug, Clone)]
pub struct BusAddr {
    /// Bus address.
    #[arg(long = "addr", env = "DHBUS_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// API token (when the bus requires one).
    #[arg(id = "bus_api_token", long = "bus-api-token", env = "DHBUS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

impl BusAddr {
    async fn connect(&self) -> anyhow::Result<DeephavenBus> {
        Ok(DeephavenBus::connect(&self.addr, self.api_token.as_deref()).await?)
    }
}

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    bus: BusAddr,
    #[arg(long, required_unless_present = "jsonl")]
    topic: Option<String>,
    #[arg(long = "session-id", default_value = "")]
    session_id: String,
    #[arg(long = "task-id", default_value = "")]
    task_id: String,
    #[arg(long = "agent-id", default_value = "")]
    agent_id: String,
    #[arg(long, default_value = "")]
    role: String,
    #[arg(long = "msg-type", default_value = "")]
    msg_type: String,
    #[arg(long, default_value_t = 0)]
    priority: i32,
    #[arg(long = "ttl-ms", default_value_t = 0)]
    ttl_ms: i32,
    #[arg(long = "payload-json", default_value = "")]
    payload_json: String,
    /// One JSON object per line, fields named as the table's columns ("-" = stdin).
    #[arg(long, conflicts_with = "topic")]
    jsonl: Option<String>,
    /// Messages per publish call when reading --jsonl.
    #[arg(long = "batch", default_value_t = 500)]
    batch: usize,
}

/// A line of --jsonl: the table's columns a producer may set.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlMessage {
    #[serde(default)]
    message_id: String,
    topic: String,
    #[serde(default)]
    session_id: String,
    #[serde(default)]
    task_id: String,
    #[serde(default)]
    agent_id: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    msg_type: String,
    #[serde(default)]
    payload_json: String,
    #[serde(default)]
    payload_blob_ref: String,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    ttl_ms: i32,
}

pub async fn publish(a: PublishArgs) -> anyhow::Result<ExitCode> {
    let bus = a.bus.connect().await?;
    let mut out = std::io::stdout().lock();
    if let Some(path) = &a.jsonl {
        let reader: Box<dyn BufRead> = if path == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            Box::new(std::io::BufReader::new(std::fs::File::open(path).with_context(|| format!("opening {path}"))?))
        };
        let mut batch = Vec::with_capacity(a.batch);
        for (n, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("reading line {}", n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let m: JsonlMessage = serde_json::from_str(&line).with_context(|| format!("line {}: not a message object", n + 1))?;
            batch.push(NewMessage {
                message_id: m.message_id,
                topic: m.topic,
                session_id: m.session_id,
                task_id: m.task_id,
                agent_id: m.agent_id,
                role: m.role,
                msg_type: m.msg_type,
                payload_json: m.payload_json,
                payload_blob_ref: m.payload_blob_ref,
                priority: m.priority,
                ttl_ms: m.ttl_ms,
            });
            if batch.len() >= a.batch.max(1) {
                for id in bus.publish(std::mem::take(&mut batch)).await.with_context(|| format!("publishing up to line {}", n + 1))? {
                    writeln!(out, "{id}")?;
                }
            }
        }
        if !batch.is_empty() {
            for id in bus.publish(batch).await? {
                writeln!(out, "{id}")?;
            }
        }
    } else {
        let m = NewMessage {
            message_id: String::new(),
            topic: a.topic.unwrap_or_default(),
            session_id: a.session_id,
            task_id: a.task_id,
            agent_id: a.agent_id,
            role: a.role,
            msg_type: a.msg_type,
            payload_json: a.payload_json,
            payload_blob_ref: String::new(),
            priority: a.priority,
            ttl_ms: a.ttl_ms,
        };
        for id in bus.publish(vec![m]).await? {
            writeln!(out, "{id}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    bus: BusAddr,
    #[arg(long, required_unless_present_any = ["health_check", "force_release"])]
    topic: Option<String>,
    #[arg(long = "agent-id", required_unless_present_any = ["health_check", "force_release"])]
    agent_id: Option<String>,
    #[arg(long = "session-id")]
    session_id: Option<String>,
    #[arg(long = "lease-ms", default_value_t = 30_000)]
    lease_ms: u64,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this long without work.
    #[arg(long = "idle-exit-ms")]
    idle_exit_ms: Option<u64>,
    /// Messages per claim.
    #[arg(long = "batch", default_value_t = 16)]
    batch: u32,
    #[arg(long, conflicts_with = "nack")]
    ack: bool,
    #[arg(long)]
    nack: bool,
    /// JSON lines instead of bare ids.
    #[arg(long)]
    json: bool,
    /// Run `dhbus health` checks against Deephaven instead of consuming.
    #[arg(long = "health-check")]
    health_check: bool,
    /// Release every lease held by --agent-id (or stuck longer than --lease-ms) and exit.
    #[arg(long = "force-release")]
    force_release: bool,
    #[command(flatten)]
    dh: DeephavenArgs,
}

pub async fn consume(a: ConsumeArgs) -> anyhow::Result<ExitCode> {
    if a.health_check {
        let config = a.dh.client_config()?;
        let report = dhbus::health::run_checks(&config, &a.dh.table_names()?, Duration::from_secs(10)).await;
        print_health(&report, a.json)?;
        return Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let bus = a.bus.connect().await?;
    if a.force_release {
        let ids = match &a.agent_id {
            Some(owner) => bus.force_release(vec![], Some(owner), None).await?,
            None => bus.force_release(vec![], None, Some(Duration::from_millis(a.lease_ms))).await?,
        };
        let mut out = std::io::stdout().lock();
        for id in ids {
            writeln!(out, "{id}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !a.ack && !a.nack {
        anyhow::bail!("choose --ack or --nack");
    }
    let (topic, agent) = (a.topic.unwrap_or_default(), a.agent_id.unwrap_or_default());
    let lease = Duration::from_millis(a.lease_ms);
    let mut done = 0u64;
    let mut idle_since = std::time::Instant::now();
    let mut out = std::io::stdout().lock();
    loop {
        if a.max.is_some_and(|m| done >= m) {
            break;
        }
        let want = a.max.map(|m| (m - done).min(u64::from(a.batch)) as u32).unwrap_or(a.batch);
        let wait = a.idle_exit_ms.map(|ms| Duration::from_millis(ms).saturating_sub(idle_since.elapsed())).unwrap_or(Duration::from_secs(30)).min(Duration::from_secs(30));
        let got = bus.claim(&topic, a.session_id.as_deref(), &agent, want, lease, wait).await?;
        if got.is_empty() {
            if a.idle_exit_ms.is_some_and(|ms| idle_since.elapsed() >= Duration::from_millis(ms)) {
                break;
            }
            continue;
        }
        idle_since = std::time::Instant::now();
        // Settle the whole claimed batch at once: the bus group-commits it.
        if a.ack {
            let r = bus.ack_batch(got.iter().map(DeephavenBus::lease_of).collect()).await?;
            if let Some(f) = r.failed.first() {
                anyhow::bail!("ack of {} refused: {}", f.message_id, f.error);
            }
        }
        let settles = got.iter().filter(|_| !a.ack).map(|m| {
            let lease_ref = DeephavenBus::lease_of(m);
            let bus = bus.clone();
            async move { bus.nack(lease_ref, Duration::ZERO, "dhbus consume --nack").await.map(|_| ()) }
        });
        for r in futures::future::join_all(settles).await {
            r?;
        }
        for m in got {
            if a.json {
                writeln!(out, "{}", serde_json::json!({"message_id": m.message_id, "topic": m.topic, "session_id": m.session_id, "payload_json": m.payload_json, "lease_epoch": m.lease_epoch, "retry_count": m.retry_count}))?;
            } else {
                writeln!(out, "{}", m.message_id)?;
            }
            done += 1;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct ForceReleaseArgs {
    #[command(flatten)]
    bus: BusAddr,
    #[arg(long = "message-id")]
    message_id: Vec<String>,
    #[arg(long)]
    owner: Option<String>,
    /// e.g. 5m
    #[arg(long = "older-than", value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
}

pub async fn force_release(a: ForceReleaseArgs) -> anyhow::Result<ExitCode> {
    if a.message_id.is_empty() && a.owner.is_none() && a.older_than.is_none() {
        anyhow::bail!("give --message-id, --owner or --older-than");
    }
    let bus = a.bus.connect().await?;
    let ids = bus.force_release(a.message_id, a.owner.as_deref(), a.older_than).await?;
    let mut out = std::io::stdout().lock();
    for id in &ids {
        writeln!(out, "{id}")?;
    }
    tracing::info!(released = ids.len(), "force release done");
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    dh: DeephavenArgs,
    #[command(flatten)]
    kafka: dhbus::settings::KafkaArgs,
    /// earliest | an RFC 3339 time | topic:partition:offset,...
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Comma-separated: agent_messages,agent_events
    #[arg(long, value_delimiter = ',', default_value = "agent_messages,agent_events")]
    tables: Vec<String>,
    /// Read and fold, write nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Keep applying new records after catching up (warm standby).
    #[arg(long)]
    follow: bool,
    /// Write corrupt records to FILE (JSON lines) and go on.
    #[arg(long = "skip-corrupt")]
    skip_corrupt: Option<std::path::PathBuf>,
}

pub async fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    use dhbus::mirror::codec::MirrorTable;
    use dhbus::mirror::readback::StartAt;
    use std::collections::HashMap;
    let bootstrap = a.kafka.bootstrap.clone().context("KAFKA_BOOTSTRAP_SERVERS is required")?;
    let base = a.kafka.mirror_topic.clone().context("DEEPHAVEN_KAFKA_MIRROR_TOPIC is required")?;
    let topics = dhbus::mirror::topics::MirrorTopics::new(&base)?;
    let mut tables = Vec::new();
    for t in &a.tables {
        tables.push(MirrorTable::from_name(t).with_context(|| format!("--tables: unknown table `{t}` (agent_messages or agent_events)"))?);
    }
    let mut start = HashMap::new();
    if a.from != "earliest" {
        if let Ok(t) = humantime::parse_rfc3339(&a.from) {
            let ms = t.duration_since(std::time::UNIX_EPOCH).context("--from before 1970")?.as_millis() as i64;
            for t in &tables {
                start.insert(*t, StartAt::Time(ms));
            }
        } else {
            let mut per: HashMap<MirrorTable, HashMap<i32, i64>> = HashMap::new();
            for part in a.from.split(',') {
                let mut it = part.rsplitn(3, ':');
                let (off, p, topic) = (it.next(), it.next(), it.next());
                let (Some(off), Some(p), Some(topic)) = (off, p, topic) else {
                    anyhow::bail!("--from: `{part}` is not earliest, an RFC 3339 time or topic:partition:offset");
                };
                let table = if topic == topics.messages { MirrorTable::Messages } else if topic == topics.events { MirrorTable::Events } else {
                    anyhow::bail!("--from: topic `{topic}` is not {} or {}", topics.messages, topics.events)
                };
                per.entry(table).or_default().insert(p.parse().context("--from: partition")?, off.parse().context("--from: offset")?);
            }
            for (t, m) in per {
                start.insert(t, StartAt::Offsets(m));
            }
        }
    }
    let session = Session::connect(a.dh.client_config()?).await.context("connecting to Deephaven")?;
    let plan = dhbus::mirror::replay::ReplayPlan {
        bootstrap,
        topics,
        start,
        tables,
        names: a.dh.table_names()?,
        dry_run: a.dry_run,
        skip_corrupt: a.skip_corrupt.clone(),
        progress_bar: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ledger: None,
    };
    if a.follow {
        // Replays (printing nothing until stopped), then follows.
        dhbus::mirror::follow::follow(&session, plan).await?;
    } else {
        let summary = dhbus::mirror::replay::replay(&session, plan.clone()).await?;
        writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&summary)?)?;
    }
    let _ = session.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Cancels `token` on SIGINT or SIGTERM.
pub async fn shutdown_on_signal(token: tokio_util::sync::CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                token.cancel();
                return;
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    token.cancel();
}

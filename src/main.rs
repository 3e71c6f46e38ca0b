//! The `dhbus` binary: parses flags (each with an `env=` twin) and dispatches.
//! anyhow lives here only, at the edge.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use dhbus::settings::DeephavenArgs;

mod cli;

/// dhbus: a message bus for AI agent fleets on Deephaven, durable through Kafka.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the canonical tables (idempotent); --check compares them instead.
    Bootstrap {
        #[command(flatten)]
        dh: DeephavenArgs,
        /// Only compare live tables with schemas/; exit 1 with a column diff on drift.
        #[arg(long)]
        check: bool,
    },
    /// Check connectivity, auth, tables and a streaming round trip.
    Health {
        #[command(flatten)]
        dh: DeephavenArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// How long the streaming probe may take, e.g. 10s.
        #[arg(long, env = "DHBUS_HEALTH_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Also check the Kafka brokers (checked when the mirror is configured).
        #[arg(long = "kafka-bootstrap-servers", env = "KAFKA_BOOTSTRAP_SERVERS")]
        kafka: Option<String>,
        /// Base name of the mirror topics; with it set, Kafka is checked.
        #[arg(long = "mirror-topic", env = "DEEPHAVEN_KAFKA_MIRROR_TOPIC")]
        mirror_topic: Option<String>,
    },
    /// Serve the bus (and the mirror and metrics roll-up) until SIGINT/SIGTERM.
    Run(dhbus::settings::RunArgs),
    /// Publish messages (flags for one, or --jsonl FILE / - for many); prints their ids.
    Publish(cli::PublishArgs),
    /// Claim and settle messages; prints their ids.
    Consume(cli::ConsumeArgs),
    /// Return stuck leases to the queue.
    ForceRelease(cli::ForceReleaseArgs),
    /// Rebuild the tables in Deephaven from the Kafka mirror topics.
    Replay(cli::ReplayArgs),
}

fn main() -> ExitCode {
    dhbus::telemetry::init_tracing();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Bootstrap { dh, check } => cli::bootstrap(&dh, check).await,
        Command::Health { dh, json, timeout, kafka, mirror_topic } => {
            let config = dh.client_config().context("Deephaven settings")?;
            let names = dh.table_names().context("table names")?;
            let kafka = kafka.filter(|_| mirror_topic.is_some());
            let report = dhbus::health::run_all(&config, &names, timeout, kafka.as_deref()).await;
            cli::print_health(&report, json)?;
            Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Run(args) => {
            let prometheus = dhbus::telemetry::install_prometheus()?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            tokio::spawn(cli::shutdown_on_signal(shutdown.clone()));
            dhbus::run::run(args, prometheus, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish(a) => cli::publish(a).await,
        Command::Consume(a) => cli::consume(a).await,
        Command::ForceRelease(a) => cli::force_release(a).await,
        Command::Replay(a) => cli::replay(a).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

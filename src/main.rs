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
    },
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
        Command::Health { dh, json, timeout } => {
            let config = dh.client_config().context("Deephaven settings")?;
            let names = dh.table_names().context("table names")?;
            let report = dhbus::health::run_checks(&config, &names, timeout).await;
            cli::print_health(&report, json)?;
            Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

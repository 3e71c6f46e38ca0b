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

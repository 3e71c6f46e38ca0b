//! Consumer example: claims messages with a lease, extends it while working,
//! and acks (reporting token usage). `--health-check` runs the health checks;
//! `--force-release` returns the leases of `--agent-id` to the queue.
//!
//! cargo run --example consumer -- [--topic T] [--agent-id A] [--max N] [--health-check] [--force-release]

use std::time::Duration;

use dhbus::bus::client::DeephavenBus;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dhbus::telemetry::init_tracing();
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let agent = value("--agent-id").unwrap_or_else(|| "consumer-example".into());
    if flag("--health-check") {
        let dh = <dhbus::settings::DeephavenArgs as clap::FromArgMatches>::from_arg_matches(
            &<dhbus::settings::DeephavenArgs as clap::Args>::augment_args(clap::Command::new("consumer")).get_matches_from(["consumer"]),
        )?;
        let report = dhbus::health::run_checks(&dh.client_config()?, &dh.table_names()?, Duration::from_secs(10)).await;
        for c in &report.checks {
            tracing::info!(check = c.name, ok = c.ok, detail = %c.detail, "health");
        }
        std::process::exit(if report.ok { 0 } else { 1 });
    }
    let addr = std::env::var("DHBUS_ADDR").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("DHBUS_API_TOKEN").ok();
    let bus = DeephavenBus::connect(&addr, token.as_deref()).await?;
    if flag("--force-release") {
        let ids = bus.force_release(vec![], Some(&agent), None).await?;
        tracing::info!(released = ids.len(), agent, "force release");
        return Ok(());
    }
    let topic = value("--topic").unwrap_or_else(|| "demo".into());
    let max: usize = value("--max").map(|v| v.parse()).transpose()?.unwrap_or(usize::MAX);
    let mut done = 0;
    while done < max {
        let got = bus.claim(&topic, None, &agent, 8, Duration::from_secs(10), Duration::from_secs(5)).await?;
        if got.is_empty() {
            tracing::info!("no work for 5 s; exiting");
            break;
        }
        for m in got {
            // Long work extends its lease (and gets a new fencing epoch).
            let m = bus.extend(DeephavenBus::lease_of(&m), Duration::from_secs(10)).await?;
            let tokens = m.payload_json.len();
            bus.ack(DeephavenBus::lease_of(&m), &serde_json::json!({"tokens": tokens}).to_string()).await?;
            tracing::info!(message_id = %m.message_id, epoch = m.lease_epoch, "processed");
            done += 1;
        }
    }
    Ok(())
}

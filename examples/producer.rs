//! Producer example: publishes messages through the bus with the library
//! client `DeephavenBus`. `--bootstrap-only` creates the canonical tables in
//! Deephaven and exits (the integration guide's bootstrap entry point).
//!
//! cargo run --example producer -- [--bootstrap-only] [--count N] [--topic T]

use std::time::Duration;

use dhbus::bus::client::DeephavenBus;
use dhbus::proto::bus::NewMessage;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dhbus::telemetry::init_tracing();
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if flag("--bootstrap-only") {
        let dh = <dhbus::settings::DeephavenArgs as clap::FromArgMatches>::from_arg_matches(
            &<dhbus::settings::DeephavenArgs as clap::Args>::augment_args(clap::Command::new("producer")).get_matches_from(["producer"]),
        )?;
        let session = dhbus::deephaven::Session::connect(dh.client_config()?).await?;
        for (table, outcome) in dhbus::bootstrap::bootstrap(&session, &dh.table_names()?).await? {
            tracing::info!(table, ?outcome, "bootstrap");
        }
        session.close().await?;
        return Ok(());
    }
    let addr = std::env::var("DHBUS_ADDR").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("DHBUS_API_TOKEN").ok();
    let bus = DeephavenBus::connect(&addr, token.as_deref()).await?;
    let topic = value("--topic").unwrap_or_else(|| "demo".into());
    let count: usize = value("--count").map(|v| v.parse()).transpose()?.unwrap_or(100);
    let interval = Duration::from_millis(value("--interval-ms").map(|v| v.parse()).transpose()?.unwrap_or(0));
    for i in 0..count {
        let m = NewMessage {
            topic: topic.clone(),
            session_id: format!("session-{}", i % 4),
            task_id: format!("task-{i}"),
            agent_id: "producer-example".into(),
            priority: (i % 3) as i32,
            payload_json: serde_json::json!({"step": i, "instruction": "summarise the document"}).to_string(),
            ..Default::default()
        };
        let ids = bus.publish(vec![m]).await?;
        tracing::info!(message_id = %ids[0], "published");
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
    }
    Ok(())
}

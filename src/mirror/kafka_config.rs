//! librdkafka settings of the mirror and replay, each with the reason it is set.
//! Operators add or override any librdkafka property through `DHBUS_KAFKA_*`
//! variables: `DHBUS_KAFKA_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`.

use rdkafka::ClientConfig;

/// Prefix of the pass-through variables.
pub const ENV_PREFIX: &str = "DHBUS_KAFKA_";

/// Turns `DHBUS_KAFKA_SASL_USERNAME` into `sasl.username`.
pub fn property_name(var: &str) -> Option<String> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    (!rest.is_empty()).then(|| rest.to_ascii_lowercase().replace('_', "."))
}

/// The pass-through properties present in `vars`.
pub fn overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars.into_iter().filter_map(|(k, v)| property_name(&k).map(|p| (p, v))).collect();
    out.sort();
    out
}

fn apply_overrides(cfg: &mut ClientConfig) {
    for (k, v) in overrides(std::env::vars()) {
        cfg.set(k, v);
    }
}

/// Producer settings: idempotent, durable, bounded in memory.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        // No duplicates and no reordering within a partition when librdkafka retries.
        .set("enable.idempotence", "true")
        // A record counts as mirrored only when every in-sync replica has it.
        .set("acks", "all")
        // The idempotent producer keeps order with up to 5 requests in flight.
        .set("max.in.flight.requests.per.connection", "5")
        // Never give up on a record while Kafka is down: retry with backoff until it is back.
        .set("message.timeout.ms", "0")
        .set("retry.backoff.ms", "100")
        .set("retry.backoff.max.ms", "5000")
        // Bounded memory: at most 100k records / 128 MiB queued; beyond that send() returns
        // QueueFull and the mirror waits (backpressure reaches the Barrage stream).
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "131072")
        // Small linger: batches form under load, latency stays low when idle.
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1048576")
        // zstd: readable by every client since Kafka 2.1 and compact on repetitive row data.
        // (lz4 batches re-encoded by some brokers, tansu among them, use linked blocks that the
        // Java client refuses: "Dependent block stream is unsupported".) Override with
        // DHBUS_KAFKA_COMPRESSION_TYPE.
        .set("compression.type", "zstd")
        // Same key → same partition as Java clients (murmur2), so other producers agree.
        .set("partitioner", "murmur2_random")
        // Report broker state changes to logs rather than silently.
        .set("log.connection.close", "false");
    apply_overrides(&mut cfg);
    cfg
}

/// Consumer settings for reading topics back (reconciliation, replay).
pub fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        // Offsets are chosen explicitly (assign + seek); no group rebalancing needed.
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        // Never commit: reads start where the caller asks.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Large fetches: replay throughput.
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "262144")
        // Only what committed transactions / idempotent producers made visible.
        .set("isolation.level", "read_committed")
        .set("log.connection.close", "false");
    apply_overrides(&mut cfg);
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_map_to_properties() {
        assert_eq!(property_name("DHBUS_KAFKA_SECURITY_PROTOCOL").as_deref(), Some("security.protocol"));
        assert_eq!(property_name("DHBUS_KAFKA_"), None);
        assert_eq!(property_name("KAFKA_X"), None);
        let o = overrides(vec![("DHBUS_KAFKA_COMPRESSION_TYPE".into(), "zstd".into()), ("PATH".into(), "/bin".into())]);
        assert_eq!(o, vec![("compression.type".to_string(), "zstd".to_string())]);
    }
}

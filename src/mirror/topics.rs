//! Mirror topics: `<base>.agent_messages` (compacted) and `<base>.agent_events`,
//! created when missing; an existing topic with the wrong cleanup policy is
//! reported, never silently used.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use super::kafka_error::MirrorError;

/// The two mirror topics of one base name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorTopics {
    /// Compacted topic of `agent_messages` rows.
    pub messages: String,
    /// Topic of `agent_events` rows.
    pub events: String,
}

impl MirrorTopics {
    /// Topic names for base `base` (DEEPHAVEN_KAFKA_MIRROR_TOPIC).
    pub fn new(base: &str) -> Result<MirrorTopics, MirrorError> {
        let legal = !base.is_empty()
            && base.len() <= 200
            && base.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !legal {
            return Err(MirrorError::Config(format!(
                "DEEPHAVEN_KAFKA_MIRROR_TOPIC `{base}` is not a legal Kafka topic prefix (letters, digits, . _ -; at most 200)"
            )));
        }
        Ok(MirrorTopics { messages: format!("{base}.agent_messages"), events: format!("{base}.agent_events") })
    }
}

/// Creates the topics if missing (messages compacted, events with time retention)
/// and checks the cleanup policy of existing ones.
pub async fn ensure_topics(bootstrap: &str, topics: &MirrorTopics, partitions: i32) -> Result<(), MirrorError> {
    let cfg = super::kafka_config::producer_config(bootstrap);
    let admin: AdminClient<DefaultClientContext> = AdminClient::from_config(&cfg).map_err(MirrorError::kafka("admin client"))?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))).request_timeout(Some(Duration::from_secs(15)));
    let new = [
        NewTopic::new(&topics.messages, partitions, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact"),
        NewTopic::new(&topics.events, partitions, TopicReplication::Fixed(-1)).set("cleanup.policy", "delete"),
    ];
    let results = admin.create_topics(new.iter(), &opts).await.map_err(MirrorError::kafka("create topics"))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, partitions, "created mirror topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => tracing::debug!(topic = %name, "mirror topic exists"),
            Err((name, code)) => return Err(MirrorError::Config(format!("cannot create topic {name}: {code}"))),
        }
    }
    check_policy(&admin, &opts, &topics.messages, "compact").await
}

/// Fails when `topic` exists with a cleanup policy other than `want`. A broker
/// that does not answer DescribeConfigs is logged, not fatal.
async fn check_policy(admin: &AdminClient<DefaultClientContext>, opts: &AdminOptions, topic: &str, want: &str) -> Result<(), MirrorError> {
    let res = match admin.describe_configs([&ResourceSpecifier::Topic(topic)], opts).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(topic, error = %e, "broker did not describe topic configs; cleanup.policy not verified");
            return Ok(());
        }
    };
    for r in res {
        let Ok(resource) = r else {
            tracing::warn!(topic, "broker did not describe topic configs; cleanup.policy not verified");
            continue;
        };
        if let Some(entry) = resource.get("cleanup.policy") {
            let value = entry.value.clone().unwrap_or_default();
            if !value.split(',').any(|p| p.trim() == want) {
                return Err(MirrorError::Config(format!(
                    "topic {topic} exists with cleanup.policy={value}, the mirror needs {want}; fix the topic or choose another DEEPHAVEN_KAFKA_MIRROR_TOPIC"
                )));
            }
        }
    }
    Ok(())
}

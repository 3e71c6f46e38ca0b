//! Errors of the mirror's and replay's I/O, and which Kafka errors are fatal.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// What went wrong mirroring or replaying.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Bad settings (topic names, policies, flags).
    #[error("mirror configuration: {0}")]
    Config(String),
    /// A Kafka operation failed.
    #[error("kafka {context}: {source}")]
    Kafka {
        /// What was being done.
        context: &'static str,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// Deephaven failed.
    #[error(transparent)]
    Deephaven(#[from] crate::deephaven::DeephavenError),
    /// A row could not be encoded.
    #[error(transparent)]
    Encode(#[from] super::error::EncodeError),
    /// A record could not be decoded (names where it is).
    #[error("corrupt record at {topic}:{partition}:{offset}: {source}")]
    Corrupt {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record.
        offset: i64,
        /// What is wrong with it.
        source: super::error::DecodeError,
    },
    /// Arrow failed building batches.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Writing the skip file failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Shut down while working.
    #[error("shut down")]
    Shutdown,
}

impl MirrorError {
    /// An error mapper for `context`.
    pub fn kafka(context: &'static str) -> impl Fn(KafkaError) -> MirrorError {
        move |source| MirrorError::Kafka { context, source }
    }
}

/// Whether a produce error can never succeed by retrying the same record.
/// Everything else (broker down, timeouts, leader changes, queue full) is
/// retriable and retried with backoff.
pub fn is_fatal(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::Fatal
            | C::InvalidConfig
            | C::MessageSizeTooLarge
            | C::InvalidRecord
            | C::InvalidMessage
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication
            | C::InvalidRequiredAcks
            | C::UnsupportedVersion
            | C::InvalidProducerEpoch
            | C::ProducerFenced
            | C::OutOfOrderSequenceNumber
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_and_retriable_are_told_apart() {
        assert!(is_fatal(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(is_fatal(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert!(!is_fatal(RDKafkaErrorCode::QueueFull));
        assert!(!is_fatal(RDKafkaErrorCode::MessageTimedOut));
        assert!(!is_fatal(RDKafkaErrorCode::BrokerTransportFailure));
        assert!(!is_fatal(RDKafkaErrorCode::NotLeaderForPartition));
    }
}

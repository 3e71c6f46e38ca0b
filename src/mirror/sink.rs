//! The Kafka producer side of the mirror: enqueue with backpressure on
//! `QueueFull`, and deliveries awaited in order.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::config::FromClientConfig;

use super::codec::EncodedRecord;
use super::kafka_error::{is_fatal, MirrorError};

/// How long to wait before retrying an enqueue refused with QueueFull.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// An idempotent producer (settings in `kafka_config`).
#[derive(Clone)]
pub struct KafkaSink {
    /// librdkafka producer; cheap to clone.
    producer: FutureProducer,
}

impl KafkaSink {
    /// Creates the producer (connections are made lazily by librdkafka).
    pub fn new(bootstrap: &str) -> Result<KafkaSink, MirrorError> {
        let cfg = super::kafka_config::producer_config(bootstrap);
        let producer = FutureProducer::from_config(&cfg).map_err(MirrorError::kafka("create producer"))?;
        Ok(KafkaSink { producer })
    }

    /// Enqueues `rec` on `topic`. When librdkafka's bounded queue is full it
    /// waits and retries (counting the stall), which slows the reader of
    /// Barrage deltas rather than growing memory. Returns the delivery future.
    /// The headers are built once; a record refused with QueueFull comes back
    /// from librdkafka and is offered again as it is.
    pub async fn send(&self, topic: &str, rec: &EncodedRecord) -> Result<DeliveryFuture, MirrorError> {
        let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
        for (k, v) in &rec.headers {
            headers = headers.insert(Header { key: k, value: Some(v.as_slice()) });
        }
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(rec.key.as_str()).headers(headers);
        if let Some(v) = &rec.value {
            record = record.payload(v.as_slice());
        }
        let mut stalled: Option<Instant> = None;
        loop {
            match self.producer.send_result(record) {
                Ok(fut) => {
                    if let Some(t) = stalled {
                        metrics::histogram!("dhbus_mirror_queue_full_stall_seconds").record(t.elapsed().as_secs_f64());
                    }
                    return Ok(fut);
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if stalled.is_none() {
                        stalled = Some(Instant::now());
                        metrics::counter!("dhbus_mirror_queue_full_stalls_total").increment(1);
                    }
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((e, _)) => return Err(MirrorError::Kafka { context: "enqueue", source: e }),
            }
        }
    }

    /// Waits for one delivery. `Ok(true)` delivered; a retriable failure is
    /// `Ok(false)` (the caller re-sends); a fatal one is an error.
    pub async fn await_delivery(fut: DeliveryFuture) -> Result<bool, MirrorError> {
        match fut.await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err((e, _))) => {
                let fatal = e.rdkafka_error_code().map(is_fatal).unwrap_or(false);
                metrics::counter!("dhbus_errors_total", "kind" => if fatal { "kafka_fatal" } else { "kafka_retriable" }).increment(1);
                if fatal {
                    Err(MirrorError::Kafka { context: "delivery", source: e })
                } else {
                    tracing::warn!(error = %e, "delivery failed; re-sending");
                    Ok(false)
                }
            }
            Err(_) => Err(MirrorError::Shutdown),
        }
    }

    /// Waits until every queued record is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), MirrorError> {
        self.producer.flush(timeout).map_err(MirrorError::kafka("flush"))
    }
}

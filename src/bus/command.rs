//! Requests the gRPC service hands to the sequencer, each with its reply channel.

use tokio::sync::oneshot;
use tonic::Status;

use crate::proto::bus as pb;

/// Reply channel of one request.
pub type Reply<T> = oneshot::Sender<Result<T, Status>>;

/// One request to the sequencer.
#[derive(Debug)]
pub enum Command {
    /// Enqueue messages.
    Publish(pb::PublishRequest, Reply<pb::PublishResponse>),
    /// Lease messages (may wait for work).
    Claim(pb::ClaimRequest, Reply<pb::ClaimResponse>),
    /// Extend a lease.
    Extend(pb::ExtendRequest, Reply<pb::LeaseResponse>),
    /// Done.
    Ack(pb::SettleRequest, Reply<pb::SettleResponse>),
    /// Many acks in one call.
    AckBatch(pb::AckBatchRequest, Reply<pb::AckBatchResponse>),
    /// Failed; retry later or dead-letter.
    Nack(pb::NackRequest, Reply<pb::SettleResponse>),
    /// Give the lease back.
    Release(pb::SettleRequest, Reply<pb::SettleResponse>),
    /// Operator: force leases back to queued.
    ForceRelease(pb::ForceReleaseRequest, Reply<pb::ForceReleaseResponse>),
    /// Counts by topic and status.
    Stats(Reply<pb::StatsResponse>),
    /// Current messages matching a subscription filter (its first frames).
    Snapshot(pb::SubscribeRequest, Reply<Vec<pb::Message>>),
}

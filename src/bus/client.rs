//! `DeephavenBus`: the library client agents use to talk to `dhbus run`
//! (the integration guide's name for it). Thin, typed wrapper over the gRPC API.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::proto::bus::bus_client::BusClient;
use crate::proto::bus::*;

/// Errors of the bus client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bus could not be reached.
    #[error("cannot reach dhbus at {addr}: {message}")]
    Connect {
        /// DHBUS_ADDR.
        addr: String,
        /// Transport error.
        message: String,
    },
    /// The bus refused the call (INVALID_ARGUMENT names the field; FAILED_PRECONDITION a stale lease).
    #[error("{op}: {} ({:?})", status.message(), status.code())]
    Refused {
        /// The operation.
        op: &'static str,
        /// The server's status.
        status: Status,
    },
    /// The API token is not a valid header value.
    #[error("DHBUS_API_TOKEN contains characters not allowed in a header")]
    BadToken,
}

impl ClientError {
    /// The gRPC code, when the server answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Refused { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// A connection to the bus.
#[derive(Clone, Debug)]
pub struct DeephavenBus {
    /// Generated client over one HTTP/2 connection.
    client: BusClient<Channel>,
    /// `authorization` value when DHBUS_API_TOKEN is set.
    auth: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl DeephavenBus {
    /// Connects to `addr` (e.g. `http://127.0.0.1:50051`) with an optional API token.
    pub async fn connect(addr: &str, token: Option<&str>) -> Result<DeephavenBus, ClientError> {
        let err = |m: String| ClientError::Connect { addr: addr.to_string(), message: m };
        let channel = Endpoint::from_shared(addr.to_string())
            .map_err(|e| err(e.to_string()))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| err(e.to_string()))?;
        let auth = match token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| ClientError::BadToken)?),
            None => None,
        };
        Ok(DeephavenBus { client: BusClient::new(channel).max_decoding_message_size(64 << 20), auth })
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }

    /// Publishes messages; returns their ids in order.
    pub async fn publish(&self, messages: Vec<NewMessage>) -> Result<Vec<String>, ClientError> {
        let r = self.client.clone().publish(self.req(PublishRequest { messages })).await;
        Ok(r.map_err(|status| ClientError::Refused { op: "publish", status })?.into_inner().message_ids)
    }

    /// Claims up to `max` messages of `topic`, waiting up to `wait` for work.
    pub async fn claim(
        &self,
        topic: &str,
        session_id: Option<&str>,
        agent_id: &str,
        max: u32,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Message>, ClientError> {
        let req = ClaimRequest {
            topic: topic.to_string(),
            session_id: session_id.unwrap_or_default().to_string(),
            agent_id: agent_id.to_string(),
            max_messages: max,
            lease_ms: lease.as_millis() as i64,
            wait_ms: wait.as_millis() as i64,
        };
        let r = self.client.clone().claim(self.req(req)).await;
        Ok(r.map_err(|status| ClientError::Refused { op: "claim", status })?.into_inner().messages)
    }

    /// The lease a claimed message carries.
    pub fn lease_of(m: &Message) -> LeaseRef {
        LeaseRef { message_id: m.message_id.clone(), agent_id: m.lease_owner.clone(), lease_epoch: m.lease_epoch }
    }

    /// Extends a lease by `lease` from now; returns the message with its new epoch.
    pub async fn extend(&self, lease: LeaseRef, by: Duration) -> Result<Message, ClientError> {
        let r = self.client.clone().extend(self.req(ExtendRequest { lease: Some(lease), lease_ms: by.as_millis() as i64 })).await;
        let m = r.map_err(|status| ClientError::Refused { op: "extend", status })?.into_inner().message;
        m.ok_or_else(|| ClientError::Refused { op: "extend", status: Status::internal("no message in reply") })
    }

    /// Acknowledges (done). `details_json` goes to the audit event (e.g. `{"tokens": 42}`).
    pub async fn ack(&self, lease: LeaseRef, details_json: &str) -> Result<(), ClientError> {
        let r = self.client.clone().ack(self.req(SettleRequest { lease: Some(lease), details_json: details_json.to_string() })).await;
        r.map_err(|status| ClientError::Refused { op: "ack", status })?;
        Ok(())
    }

    /// Acknowledges many leases in one call; returns the acked messages and the refusals.
    pub async fn ack_batch(&self, leases: Vec<LeaseRef>) -> Result<AckBatchResponse, ClientError> {
        let acks = leases.into_iter().map(|l| SettleRequest { lease: Some(l), details_json: String::new() }).collect();
        let r = self.client.clone().ack_batch(self.req(AckBatchRequest { acks })).await;
        Ok(r.map_err(|status| ClientError::Refused { op: "ack-batch", status })?.into_inner())
    }

    /// Negative acknowledgement: claimable again after `delay` (or dead-lettered past the retry limit).
    pub async fn nack(&self, lease: LeaseRef, delay: Duration, reason: &str) -> Result<Message, ClientError> {
        let req = NackRequest { lease: Some(lease), delay_ms: delay.as_millis() as i64, reason: reason.to_string(), details_json: String::new() };
        let r = self.client.clone().nack(self.req(req)).await;
        let m = r.map_err(|status| ClientError::Refused { op: "nack", status })?.into_inner().message;
        m.ok_or_else(|| ClientError::Refused { op: "nack", status: Status::internal("no message in reply") })
    }

    /// Gives a lease back without counting a retry.
    pub async fn release(&self, lease: LeaseRef) -> Result<(), ClientError> {
        let r = self.client.clone().release(self.req(SettleRequest { lease: Some(lease), details_json: String::new() })).await;
        r.map_err(|status| ClientError::Refused { op: "release", status })?;
        Ok(())
    }

    /// Forces leases back to queued; returns the released ids.
    pub async fn force_release(&self, ids: Vec<String>, owner: Option<&str>, older_than: Option<Duration>) -> Result<Vec<String>, ClientError> {
        let req = ForceReleaseRequest {
            message_ids: ids,
            owner: owner.unwrap_or_default().to_string(),
            older_than_ms: older_than.map(|d| d.as_millis() as i64).unwrap_or(0),
        };
        let r = self.client.clone().force_release(self.req(req)).await;
        Ok(r.map_err(|status| ClientError::Refused { op: "force-release", status })?.into_inner().message_ids)
    }

    /// Counts by topic and status.
    pub async fn stats(&self) -> Result<StatsResponse, ClientError> {
        let r = self.client.clone().stats(self.req(StatsRequest {})).await;
        Ok(r.map_err(|status| ClientError::Refused { op: "stats", status })?.into_inner())
    }

    /// A stream of changes of messages matching the filter (current matches first).
    pub async fn subscribe(&self, req: SubscribeRequest) -> Result<tonic::Streaming<MessageChange>, ClientError> {
        let r = self.client.clone().subscribe(self.req(req)).await;
        Ok(r.map_err(|status| ClientError::Refused { op: "subscribe", status })?.into_inner())
    }
}

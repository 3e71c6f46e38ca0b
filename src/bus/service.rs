//! The gRPC face of the bus: authenticates, forwards each call to the
//! sequencer and maps its answer. Errors become `tonic::Status` in the
//! sequencer, in one place (`super::status`).

use std::pin::Pin;

use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::command::Command;
use super::subscribe::Subscriptions;
use crate::proto::bus as pb;
use crate::proto::bus::bus_server::Bus;

/// The service: a sender to the sequencer, the subscription hub, and the token.
#[derive(Clone)]
pub struct BusService {
    /// Commands to the sequencer task.
    tx: mpsc::Sender<Command>,
    /// Fan-out of message changes to Subscribe streams.
    subs: Subscriptions,
    /// `Bearer <DHBUS_API_TOKEN>` when set; every call must carry it.
    expected_auth: Option<String>,
}

impl BusService {
    /// A service forwarding to `tx`.
    pub fn new(tx: mpsc::Sender<Command>, subs: Subscriptions, api_token: Option<String>) -> BusService {
        BusService { tx, subs, expected_auth: api_token.map(|t| format!("Bearer {t}")) }
    }

    fn check_auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(want) = &self.expected_auth else { return Ok(()) };
        let got = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        // Constant-time comparison: the token is a secret.
        let ok = got.is_some_and(|g| g.len() == want.len() && g.bytes().zip(want.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0);
        if ok {
            Ok(())
        } else {
            metrics::counter!("dhbus_errors_total", "kind" => "api_auth").increment(1);
            Err(Status::unauthenticated("missing or wrong bearer token (DHBUS_API_TOKEN)"))
        }
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, Status>>) -> Command) -> Result<Response<T>, Status> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Status::unavailable("bus is shutting down"))?;
        rx.await.map_err(|_| Status::unavailable("bus is shutting down"))?.map(Response::new)
    }
}

#[tonic::async_trait]
impl Bus for BusService {
    async fn publish(&self, req: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        self.check_auth(&req)?;
        self.call(|r| Command::Publish(req.into_inner(), r)).await
    }
    async fn claim(&self, req: Request<pb::ClaimRequest>) -> Result<Response<pb::ClaimResponse>, Status> {
        self.check_auth(&req)?;
        self.call(|r| Command::Claim(req.into_inner(), r)).await
    }
    async fn extend(&self, req: Request<pb::ExtendRequest>) -> Result<Response<pb::LeaseResponse>, Status> {
        self.check_auth(&req)?;
        self.call(|r| Command::Extend(req.into_inner(), r)).await
    }
    async fn ack(&self, req: Request<pb::SettleRequest>) -> Result<Response<pb::SettleResponse>, Status> {
        self.check_auth(&req)?;
        self.call(|r| Command::Ack(req.into_inner(), r)).await
    }
    async fn ack_batch(&self, req: Request<pb::AckBatchRequest>) -> Result<Response<pb::AckBatchResponse>, Status> {
        self.check_auth(&req)?;
        self.call(|r| Command::AckBatch(req.into_inner(), r)).await
    }
    async fn nack(&self, req: Request<pb::NackRequest>) -> Result<Response<pb::SettleResponse>, Status> {
        self.check_auth(&req)?;
        self.call(|r| Command::Nack(req.into_inner(), r)).await
    }
    async fn release(&self, req: Request<pb::SettleRequest>) -> Result<Response<pb::SettleResponse>, Status> {
        self.check_auth(&req)?;
        self.call(|r| Command::Release(req.into_inner(), r)).await
    }
    async fn force_release(&self, req: Request<pb::ForceReleaseRequest>) -> Result<Response<pb::ForceReleaseResponse>, Status> {
        self.check_auth(&req)?;
        self.call(|r| Command::ForceRelease(req.into_inner(), r)).await
    }
    async fn stats(&self, req: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        self.check_auth(&req)?;
        self.call(Command::Stats).await
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::MessageChange, Status>> + Send + 'static>>;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        self.check_auth(&req)?;
        let stream = self.subs.open(req.into_inner())?;
        Ok(Response::new(Box::pin(stream)))
    }
}

//! `grpc.health.v1`, answered by asking what the tier depends on.
//!
//! Readiness is checked when asked, not by a background poller, so a probe
//! always reports the state of the dependency at that moment: the system
//! tier checks its database, the process tier asks the system tier, and the
//! gateway's `/readyz` walks the whole chain.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_client::HealthClient,
    health_server::{Health, HealthServer},
};

use crate::channel::GrpcChannel;

/// A boxed readiness check: `true` while every dependency is reachable.
pub type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// How long a readiness check may take before the dependency counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A `grpc.health.v1.Health` service whose answer comes from `probe`.
///
/// Every service name, including the empty "whole server" name, gets the
/// same answer: a tier is ready only when all it depends on is.
pub fn service(probe: Probe) -> HealthServer<ProbedHealth> {
    HealthServer::new(ProbedHealth { probe })
}

/// Asks a downstream tier's health service whether it is serving.
pub async fn downstream_is_serving(channel: GrpcChannel) -> bool {
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest { service: String::new() });
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Ok(Ok(res)) => res.into_inner().status == ServingStatus::Serving as i32,
        Ok(Err(status)) => {
            tracing::warn!(code = ?status.code(), "downstream health check failed");
            false
        }
        Err(_) => {
            tracing::warn!("downstream health check timed out");
            false
        }
    }
}

/// See [`service`].
pub struct ProbedHealth {
    probe: Probe,
}

impl ProbedHealth {
    async fn status(&self) -> ServingStatus {
        match tokio::time::timeout(PROBE_TIMEOUT, (self.probe)()).await {
            Ok(true) => ServingStatus::Serving,
            _ => ServingStatus::NotServing,
        }
    }
}

type WatchStream = Pin<Box<dyn futures_util::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for ProbedHealth {
    async fn check(&self, _request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let status = self.status().await;
        Ok(Response::new(HealthCheckResponse { status: status as i32 }))
    }

    type WatchStream = WatchStream;

    /// Sends the current status, then every change, probing once a second.
    async fn watch(&self, _request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let probe = self.probe.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let health = ProbedHealth { probe };
            let mut last = None;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let status = health.status().await;
                if last != Some(status) {
                    last = Some(status);
                    let msg = Ok(HealthCheckResponse { status: status as i32 });
                    if tx.send(msg).await.is_err() {
                        return; // the watcher went away
                    }
                } else if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

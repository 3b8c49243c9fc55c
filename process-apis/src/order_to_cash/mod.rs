//! `order_to_cash.v1`: orders from acceptance to cash as durable sagas.
//!
//! # Layout
//! - [`order`]: the order document and the saga's next move.
//! - [`store`]: the saga store (SQLite or PostgreSQL): orders, outbox,
//!   leases, feed cursors.
//! - [`saga`]: the engine that runs steps and compensations.
//! - [`outbox`]: event shapes and the publisher (in-process bus or NATS).
//! - [`feed`]: follows the ERP change feed (shipments done, invoices paid).
//! - [`service`]: the gRPC service.
//! - [`reconcile`]: the invariants `erp-connect reconcile` checks.
//! - [`metrics`]: the flow's metrics (saga outcomes, step durations,
//!   outbox, change-feed lag, orders per status).
//!
//! A PlaceOrder is validated, priced and stored as `accepted` with its
//! `order.accepted` event in one transaction before it is answered; from
//! then on the saga owns it and nothing is lost: every later step is
//! recorded before and after it runs.

use std::{sync::Arc, time::Duration};

use platform::channel::GrpcChannel;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub mod clock;
pub mod feed;
pub mod metrics;
pub mod order;
pub mod outbox;
pub mod reconcile;
pub mod saga;
pub mod service;
pub mod store;

/// Saga tunables (`[process.saga]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How long a replica owns a saga without writing to it; a dead
    /// replica's sagas move to another after this. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Failed attempts of one step before the order is rejected. Default 8.
    pub retry_budget: u32,
    /// First retry delay; doubled per attempt, with jitter. Default 200 ms.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest retry delay. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// How often a replica looks for due sagas of other replicas. Default 250 ms.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often the ERP change feed is polled when idle. Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub feed_poll_interval: Duration,
    /// Sagas running at once on one replica. Default 64.
    pub concurrency: usize,
    /// Credit limit given to a partner's ERP account when the first order
    /// creates it. Default "5000.00".
    pub partner_credit_limit: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15),
            retry_budget: 8,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
            feed_poll_interval: Duration::from_millis(500),
            concurrency: 64,
            partner_credit_limit: "5000.00".into(),
        }
    }
}

/// Errors of the order-to-cash API, converted once to a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: (field, message) pairs.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<(String, String)>),
    /// The idempotency key was used for another request.
    #[error("idempotency key reused with another request")]
    KeyReused,
    /// No such object (or another tenant's).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The object's state forbids the call.
    #[error("{kind} on {subject}: {description}")]
    Precondition {
        /// Stable type, e.g. `ALREADY_SHIPPED`.
        kind: &'static str,
        /// The object's id.
        subject: String,
        /// For the caller.
        description: String,
    },
    /// A system API failed.
    #[error("system API: {0}")]
    Upstream(#[from] Status),
    /// The saga store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A fault on our side.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid(errors) => {
                let mut details = ErrorDetails::new();
                for (field, message) in &errors {
                    details.add_bad_request_violation(field.clone(), message.clone());
                }
                let summary = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; ");
                Status::with_error_details(Code::InvalidArgument, summary, details)
            }
            Error::KeyReused => {
                let mut details = ErrorDetails::new();
                details.add_bad_request_violation("idempotency_key", "already used for a different request");
                Status::with_error_details(
                    Code::AlreadyExists,
                    "idempotency key already used for a different request",
                    details,
                )
            }
            Error::NotFound(what) => Status::not_found(format!("no such {what}")),
            Error::Precondition { kind, subject, description } => {
                let mut details = ErrorDetails::new();
                details.add_precondition_failure_violation(kind, subject, description.clone());
                Status::with_error_details(Code::FailedPrecondition, description, details)
            }
            Error::Upstream(status) => match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "system API unavailable");
                    let mut details = ErrorDetails::new();
                    details.set_retry_info(Some(Duration::from_secs(1)));
                    Status::with_error_details(Code::Unavailable, "a system API is unavailable; retry later", details)
                }
                code => {
                    tracing::error!(?code, message = status.message(), "system API call failed");
                    Status::internal("internal error")
                }
            },
            Error::Store(err) => {
                tracing::error!(error = %err, "saga store failed");
                Status::unavailable("the order store is unavailable; retry later")
            }
            Error::Internal(reason) => {
                tracing::error!(%reason, "order-to-cash fault");
                Status::internal("internal error")
            }
        }
    }
}

/// A running order-to-cash flow: the engine, its background tasks and the
/// gRPC service.
#[derive(Clone)]
pub struct OrderToCash {
    engine: Arc<saga::Engine>,
    bus: outbox::Bus,
    tasks: CancellationToken,
}

/// Why order-to-cash could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The saga store.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The event bus.
    #[error("event bus: {0}")]
    Bus(#[from] outbox::Error),
}

impl OrderToCash {
    /// Opens the store at `database_url` and the bus, and starts the saga
    /// worker, the outbox publisher and the ERP feed follower; they stop
    /// when `tasks` is cancelled.
    pub async fn start(
        database_url: &str,
        settings: Settings,
        events: &outbox::Config,
        system: GrpcChannel,
        system_timeout: Duration,
        tasks: CancellationToken,
    ) -> Result<Self, StartError> {
        let store = store::Store::open(database_url).await?;
        let bus = outbox::Bus::open(events).await?;
        let engine = Arc::new(saga::Engine::new(store.clone(), saga::Systems::new(system, system_timeout), settings));
        metrics::describe();
        tokio::spawn(engine.clone().run_worker(tasks.clone()));
        tokio::spawn(outbox::run_publisher(
            store,
            bus.clone(),
            engine.wake_publisher.clone(),
            events.poll_interval,
            tasks.clone(),
        ));
        tokio::spawn(feed::run(engine.clone(), tasks.clone()));
        tokio::spawn(metrics::run_gauges(engine.store.clone(), tasks.clone()));
        Ok(Self { engine, bus, tasks })
    }

    /// The gRPC service.
    pub fn service(
        &self,
    ) -> erp_connect_proto::order_to_cash::v1::order_to_cash_service_server::OrderToCashServiceServer<service::Service>
    {
        erp_connect_proto::order_to_cash::v1::order_to_cash_service_server::OrderToCashServiceServer::new(
            service::Service::new(self.engine.clone(), self.tasks.clone()),
        )
    }

    /// The event bus (subscribe to the in-process one).
    pub fn bus(&self) -> &outbox::Bus {
        &self.bus
    }

    /// Whether the saga store answers.
    pub async fn is_ready(&self) -> bool {
        self.engine.store.is_ready().await
    }
}

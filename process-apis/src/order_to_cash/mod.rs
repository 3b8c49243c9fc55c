//! `order_to_cash.v1`: orders from acceptance to cash as durable sagas.
//!
//! # Layout
//! - [`order`]: the order document and the saga's next move.
//! - [`store`]: the saga store (SQLite or PostgreSQL): orders, outbox,
//!   leases, feed cursors.
//! - [`saga`]: the engine that runs steps and compensations: records each
//!   before and after it runs, retries, waits out outages, winds back.
//! - [`steps`]: one module per step and compensation, each with its
//!   declared policy and its tests.
//! - [`outbox`]: event shapes and the publisher (in-process bus or NATS).
//! - [`feed`]: follows the ERP change feed (shipments done, invoices paid).
//! - [`service`]: the gRPC service.
//! - [`reconcile`]: the invariants `erp-connect reconcile` checks.
//! - [`metrics`]: the flow's metrics (saga outcomes, step durations,
//!   outbox, change-feed lag, orders per status).
//!
//! A PlaceOrder is validated, priced from the price list and stored as
//! `accepted` with its `order.accepted` event in one transaction before it
//! is answered, without calling the ERP; from then on the saga owns it and
//! nothing is lost: every later step, finding or creating the customer
//! first, is recorded before and after it runs. While a system API is
//! unavailable the order waits in the store and is retried with backoff
//! until it answers.

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
pub mod steps;
pub mod store;

/// Saga tunables (`[process.saga]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How long a replica owns a saga without writing to it; a dead
    /// replica's sagas move to another after this. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Failed attempts of one step (faults such as internal errors, not
    /// outages, which are waited out) before the order is rejected.
    /// Default 8.
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
    /// Tenants whose customers pay by card: a customer their first order
    /// creates gets no credit (limit 0.00). Default `["web"]`.
    pub card_only_tenants: Vec<String>,
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
            card_only_tenants: vec!["web".into()],
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
    /// A system the request needs is unavailable (503, retry later).
    #[error("unavailable: {0}")]
    Unavailable(String),
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
            Error::Invalid(errors) => crate::grpc_status::invalid_argument(&errors),
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
                crate::grpc_status::failed_precondition(kind, &subject, description)
            }
            Error::Unavailable(reason) => {
                tracing::warn!(%reason, "unavailable");
                unavailable()
            }
            Error::Upstream(status) => upstream(status),
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

/// `UNAVAILABLE` with a retry hint, for a system we cannot reach.
fn unavailable() -> Status {
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(Duration::from_secs(1)));
    Status::with_error_details(Code::Unavailable, "a system API is unavailable; retry later", details)
}

/// A system API's refusal or failure, as this API's caller sees it: an
/// outage stays an outage (retry later); the ERP refusing the request (bad
/// input, a state that forbids it, a conflict) is the caller's business
/// problem and keeps its code and the details written for the caller;
/// only what points at a fault of ours (`INTERNAL`, `UNKNOWN`, an
/// `UNAUTHENTICATED` between our own tiers, ...) becomes `INTERNAL`.
fn upstream(status: Status) -> Status {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled => {
            tracing::warn!(code = ?status.code(), message = status.message(), "system API unavailable");
            unavailable()
        }
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Aborted
        | Code::OutOfRange => {
            tracing::info!(code = ?status.code(), message = status.message(), "system API refused");
            // The details (field violations, precondition failures) are
            // written for callers; the message may carry the ERP's own words.
            let details = status.get_error_details();
            let code = if status.code() == Code::OutOfRange { Code::InvalidArgument } else { status.code() };
            let message = match code {
                Code::InvalidArgument => "the ERP refused the request's content",
                Code::NotFound => "the ERP does not know the object",
                Code::AlreadyExists => "the ERP already holds a different object under this key",
                _ => "the ERP refused the request in the object's current state",
            };
            Status::with_error_details(code, message, details)
        }
        code => {
            tracing::error!(?code, message = status.message(), "system API call failed");
            Status::internal("internal error")
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
    partners: Arc<crate::partners::Partners>,
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
        prices: Arc<crate::catalog::prices::PriceList>,
        tasks: CancellationToken,
    ) -> Result<Self, StartError> {
        let store = store::Store::open(database_url).await?;
        let bus = outbox::Bus::open(events).await?;
        let systems = saga::Systems::new(system, system_timeout);
        let engine = Arc::new(saga::Engine::new(store.clone(), systems, settings, prices));
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
        Ok(Self { engine, bus, tasks, partners: Arc::default() })
    }

    /// The gRPC service.
    pub fn service(
        &self,
    ) -> erp_connect_proto::order_to_cash::v1::order_to_cash_service_server::OrderToCashServiceServer<service::Service>
    {
        erp_connect_proto::order_to_cash::v1::order_to_cash_service_server::OrderToCashServiceServer::new(self.orders())
    }

    /// The order API as the process tier's own flows call it (order files).
    pub(crate) fn orders(&self) -> service::Service {
        service::Service::new(self.engine.clone(), self.tasks.clone()).with_partners(self.partners.clone())
    }

    /// The partners' mappings and rules.
    pub(crate) fn partners(&self) -> Arc<crate::partners::Partners> {
        self.partners.clone()
    }

    /// Orders of partner tenants are mapped (their SKUs to ours) and
    /// checked against the rules of `partners`.
    pub fn with_partners(mut self, partners: crate::partners::Partners) -> Self {
        self.partners = Arc::new(partners);
        self
    }

    /// Orders find their customers through `master` from now on.
    pub fn use_master_data(&self, master: crate::master_data::MasterData) {
        let _ = self.engine.master.set(master);
    }

    /// The event bus (subscribe to the in-process one).
    pub fn bus(&self) -> &outbox::Bus {
        &self.bus
    }

    /// The saga store (its outbox feeds the exports).
    pub fn store(&self) -> store::Store {
        self.engine.store.clone()
    }

    /// The saga store's database, which also keeps the webhooks'.
    pub fn database(&self) -> platform::database::Database {
        self.engine.store.database()
    }

    /// Notified after every commit that wrote events.
    pub fn events_committed(&self) -> Arc<tokio::sync::Notify> {
        self.engine.wake_webhooks.clone()
    }

    /// Whether the saga store answers.
    pub async fn is_ready(&self) -> bool {
        self.engine.store.is_ready().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code a system API can answer, as this API passes it on: an
    /// outage stays retryable, a refusal by the ERP keeps its meaning and
    /// its details, only our own faults become `INTERNAL`, and no ERP text
    /// passes.
    #[test]
    fn system_api_statuses_map_to_the_callers_codes() {
        let cases = [
            (Code::Unavailable, Code::Unavailable),
            (Code::DeadlineExceeded, Code::Unavailable),
            (Code::ResourceExhausted, Code::Unavailable),
            (Code::Cancelled, Code::Unavailable),
            (Code::InvalidArgument, Code::InvalidArgument),
            (Code::OutOfRange, Code::InvalidArgument),
            (Code::FailedPrecondition, Code::FailedPrecondition),
            (Code::Aborted, Code::Aborted),
            (Code::NotFound, Code::NotFound),
            (Code::AlreadyExists, Code::AlreadyExists),
            (Code::Internal, Code::Internal),
            (Code::Unknown, Code::Internal),
            (Code::DataLoss, Code::Internal),
            (Code::Unimplemented, Code::Internal),
            (Code::Unauthenticated, Code::Internal),
            (Code::PermissionDenied, Code::Internal),
        ];
        for (from, to) in cases {
            let mut details = ErrorDetails::new();
            details.add_precondition_failure_violation("CREDIT_LIMIT", "party-7", "over the credit limit");
            let status: Status =
                Error::Upstream(Status::with_error_details(from, "UserError at 10.0.0.7", details)).into();
            assert_eq!(status.code(), to, "{from:?}");
            assert!(!status.message().contains("10.0.0.7"), "{from:?} leaked: {}", status.message());
            let kept = status.get_error_details().precondition_failure().is_some();
            assert_eq!(
                kept,
                matches!(
                    to,
                    Code::InvalidArgument
                        | Code::FailedPrecondition
                        | Code::Aborted
                        | Code::NotFound
                        | Code::AlreadyExists
                ),
                "{from:?}"
            );
            let retry = status.get_error_details().retry_info().is_some();
            assert_eq!(retry, to == Code::Unavailable, "{from:?}");
        }
        let status: Status = Error::Unavailable("WIDGET-1 cannot be priced".into()).into();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.get_error_details().retry_info().is_some());
    }
}

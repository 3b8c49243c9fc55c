//! Outbound webhooks for partners, as Standard Webhooks v1: partners
//! subscribe endpoints to business events; every event of the outbox
//! (the saga's and the ERP change feed's) reaches the endpoints that want
//! it, signed, at least once, each order's events in order, retried on a
//! schedule, with a delivery log the owner can replay from.
//!
//! # Layout
//! - [`service`]: `webhooks.v1.WebhookService`: endpoints, the delivery
//!   log, replay, secret rotation, test events.
//! - [`store`]: endpoints, deliveries and attempts in the process tier's
//!   store; fan-out of outbox events; leased claims shared by replicas.
//! - [`worker`]: fan-out and delivery in the background, and what each
//!   attempt's outcome means (retry, dead letter, disabled endpoint).
//! - [`delivery`]: one attempt, `POST`ed signed to a checked target.
//! - [`signature`]: the endpoint secrets (`whsec_...`) and the
//!   `webhook-signature` a receiver verifies, one per secret while a
//!   rotated secret is still in its grace period.
//! - [`target`]: where a webhook may be sent: in `production` mode only
//!   `https` to public addresses, checked after DNS resolution and before
//!   any connection.
//! - [`vault`]: endpoint secrets sealed at rest.
//! - [`metrics`]: data latency, outcomes, the pending backlog.

use std::{path::PathBuf, sync::Arc, time::Duration};

use platform::database::Database;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub mod delivery;
pub mod metrics;
pub mod service;
pub mod signature;
pub mod store;
pub mod target;
pub mod vault;
pub mod worker;

/// `[webhooks]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The waits before each retry of a failed delivery; when they are
    /// used up the delivery fails (a dead letter to replay). A longer
    /// `Retry-After` from the endpoint wins. Default `["5s", "5m", "30m",
    /// "2h", "5h", "10h", "10h"]`.
    pub retry_schedule: Vec<humantime_serde::Serde<Duration>>,
    /// How long a rotated secret keeps signing beside the new one. Default 24 h.
    #[serde(with = "humantime_serde")]
    pub secret_grace: Duration,
    /// An endpoint whose every attempt failed for this long is disabled
    /// (its owner can enable it again). Default 5 days.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// How long an endpoint has to answer. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often each replica looks for due deliveries when nothing woke
    /// it. Default 250 ms.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Attempts in flight at once per replica. Default 64.
    pub concurrency: usize,
    /// File holding the key (base64 of 32 bytes) that seals endpoint
    /// secrets at rest. Production mode needs it (or `secret_key`); dev
    /// mode creates `<data dir>/internal/webhooks.key`.
    pub secret_key_file: Option<PathBuf>,
    /// The same key inline; meant for `ERP_CONNECT__WEBHOOKS__SECRET_KEY`.
    pub secret_key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        let s = Settings::default();
        Self {
            retry_schedule: s.retry_schedule.into_iter().map(Into::into).collect(),
            secret_grace: s.secret_grace,
            disable_after: s.disable_after,
            timeout: s.timeout,
            poll_interval: s.poll_interval,
            concurrency: s.concurrency,
            secret_key_file: None,
            secret_key: None,
        }
    }
}

impl Config {
    /// The settings with the targets `policy` allows and the sealing `key`.
    pub fn settings(&self, policy: target::Policy, key: [u8; 32]) -> Settings {
        Settings {
            retry_schedule: self.retry_schedule.iter().map(|d| **d).collect(),
            secret_grace: self.secret_grace,
            disable_after: self.disable_after,
            timeout: self.timeout,
            poll_interval: self.poll_interval,
            concurrency: self.concurrency,
            policy,
            key,
        }
    }
}

/// What the webhooks run with: [`Config`] resolved by the launcher.
#[derive(Clone)]
pub struct Settings {
    /// See [`Config::retry_schedule`].
    pub retry_schedule: Vec<Duration>,
    /// See [`Config::secret_grace`].
    pub secret_grace: Duration,
    /// See [`Config::disable_after`].
    pub disable_after: Duration,
    /// See [`Config::timeout`].
    pub timeout: Duration,
    /// See [`Config::poll_interval`].
    pub poll_interval: Duration,
    /// See [`Config::concurrency`].
    pub concurrency: usize,
    /// Which targets are allowed (the run mode's).
    pub policy: target::Policy,
    /// Seals endpoint secrets.
    pub key: [u8; 32],
}

impl Default for Settings {
    /// The documented defaults, dev targets and an all-zero key (tests).
    fn default() -> Self {
        let (m, h) = (60, 3600);
        Self {
            retry_schedule: [5, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h].map(Duration::from_secs).to_vec(),
            secret_grace: Duration::from_secs(24 * h),
            disable_after: Duration::from_secs(5 * 24 * h),
            timeout: delivery::TIMEOUT,
            poll_interval: Duration::from_millis(250),
            concurrency: 64,
            policy: target::Policy::Dev,
            key: [0; 32],
        }
    }
}

/// What the service and the worker share.
pub struct Shared {
    store: store::Store,
    vault: vault::Vault,
    sender: delivery::Sender,
    settings: Settings,
}

/// Webhooks of one process replica.
#[derive(Clone)]
pub struct Webhooks {
    shared: Arc<Shared>,
    wake: Arc<Notify>,
}

/// Why webhooks could not start.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StartError(#[from] delivery::Error);

impl Webhooks {
    /// Webhooks over the process tier's store `db`; fan-out and delivery
    /// run until `tasks` is cancelled, woken early by `wake` (notified when
    /// events are committed).
    pub fn start(
        db: Database,
        settings: Settings,
        wake: Arc<Notify>,
        tasks: CancellationToken,
    ) -> Result<Self, StartError> {
        metrics::describe();
        let shared = Arc::new(Shared {
            store: store::Store::new(db),
            vault: vault::Vault::new(&settings.key),
            sender: delivery::Sender::new(settings.policy, settings.timeout)?,
            settings,
        });
        tokio::spawn(worker::run(shared.clone(), wake.clone(), tasks.clone()));
        tokio::spawn(metrics::run_gauges(shared.store.clone(), tasks));
        Ok(Self { shared, wake })
    }

    /// The gRPC service.
    pub fn service(
        &self,
    ) -> erp_connect_proto::webhooks::v1::webhook_service_server::WebhookServiceServer<service::Service> {
        erp_connect_proto::webhooks::v1::webhook_service_server::WebhookServiceServer::new(service::Service::new(
            self.shared.clone(),
            self.wake.clone(),
        ))
    }
}

/// What can go wrong in a webhooks call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: (field, message) pairs.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<(String, String)>),
    /// No such endpoint or event (or another tenant's).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// A limit is reached, e.g. endpoints per tenant.
    #[error("{0}")]
    Limit(String),
    /// The store failed.
    #[error("webhook store: {0}")]
    Store(#[from] store::Error),
    /// A secret could not be made or opened.
    #[error(transparent)]
    Vault(#[from] vault::Error),
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid(errors) => crate::grpc_status::invalid_argument(&errors),
            Error::NotFound(what) => Status::not_found(format!("no such {what}")),
            Error::Limit(what) => crate::grpc_status::failed_precondition("LIMIT", "webhooks", what),
            Error::Store(err) => {
                tracing::warn!(error = %err, "webhook store unavailable");
                Status::unavailable("the webhook store is unavailable; retry later")
            }
            Error::Vault(err) => {
                tracing::error!(error = %err, "webhook secret");
                Status::internal("internal error")
            }
        }
    }
}

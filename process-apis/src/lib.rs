//! The process tier: business flows composed from system APIs. It owns its
//! own state and reaches backend systems only through system APIs (gRPC).
//!
//! # Layout
//! - [`catalog`]: `catalog.v1`, products with price and availability.
//! - [`order_to_cash`]: `order_to_cash.v1`, orders as durable sagas.
//! - [`order_batches`]: `order_batches.v1`, order files and the quarantine.
//! - [`exports`]: invoices and orders out as files.
//! - [`partners`]: each partner's mapping and the validation rules.
//! - [`webhooks`]: `webhooks.v1`, partners' webhook endpoints and the
//!   delivery of business events to them.
//! - [`master_data`]: `master_data.v1`, customers across the CRM and the
//!   ERP (ownership, golden records, data-subject requests).
//! - [`audit_trail`]: `audit.v1`, the tier's audit trail, read-only.
//! - [`ProcessTier`]: the tier's gRPC routes (flows, health, reflection).

use std::{path::Path, sync::Arc, time::Duration};

use platform::channel::GrpcChannel;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub mod audit_trail;
pub mod catalog;
pub mod exports;
mod grpc_status;
pub mod master_data;
pub mod order_batches;
pub mod order_to_cash;
pub mod partners;
pub mod webhooks;

/// `[process]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address for callers of the process APIs (internal teams,
    /// the experience tier). Default `127.0.0.1:8081`.
    pub listen: std::net::SocketAddr,
    /// The system tier, in `serve` mode. Default `http://127.0.0.1:8082`.
    pub system_url: String,
    /// Deadline of one call to the system tier. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub system_timeout: Duration,
    /// The saga store: `sqlite://FILE` or `postgres://...`. Default
    /// `sqlite://<data dir>/process.db`. With PostgreSQL, any number of
    /// process replicas can share it.
    pub database_url: Option<String>,
    /// How long catalogue pages may show a warehouse's stock level that the
    /// ERP change feed has not invalidated (goods received, inventory
    /// counts: stock the feed does not report). `0s` reads stock for every
    /// page. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub catalog_stock_max_age: Duration,
    /// Saga tunables.
    pub saga: order_to_cash::Settings,
    /// Where order events are published.
    pub events: order_to_cash::outbox::Config,
    /// Identity providers trusted to sign the service JWTs (`aud`
    /// `process-apis`) that callers of this tier present in `serve` mode.
    /// The launcher checks them, since this crate links no verifier. Default
    /// none; dev mode also trusts the dev identity provider.
    pub service_issuers: Vec<ServiceIssuer>,
    /// The `sub` values allowed to call, e.g.
    /// `["system:serviceaccount:erp:erp-connect-experience"]`; a valid
    /// token for another subject gets `PERMISSION_DENIED`. Default empty:
    /// any subject a trusted issuer signed a `process-apis` token for (on
    /// Kubernetes that is every service account that asks for one).
    pub service_subjects: Vec<String>,
}

/// A trusted signer of service JWTs (`[[process.service_issuers]]`): the
/// shape of `[[gateway.issuers]]` without `audiences`, because a service
/// token for this tier always names the audience `process-apis`, and a
/// user's token for the HTTP APIs must never pass here. Exactly one of
/// `jwks_file` and `jwks_url` is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceIssuer {
    /// Expected `iss`, e.g. the Kubernetes API server's issuer
    /// (`https://kubernetes.default.svc.cluster.local`).
    pub issuer: String,
    /// A file with the issuer's JWKS, read at start.
    pub jwks_file: Option<std::path::PathBuf>,
    /// The issuer's JWKS URL (`https://`, or `http://` to a loopback
    /// address), fetched at start and refreshed as for the gateway's issuers.
    pub jwks_url: Option<String>,
    /// Signature algorithms accepted from this issuer, out of `EdDSA`,
    /// `ES256` and `RS256` (the default: all three).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
}

fn default_algorithms() -> Vec<String> {
    ["EdDSA", "ES256", "RS256"].map(str::to_owned).to_vec()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8081)),
            system_url: "http://127.0.0.1:8082".into(),
            system_timeout: Duration::from_secs(5),
            database_url: None,
            catalog_stock_max_age: catalog::prices::DEFAULT_STOCK_MAX_AGE,
            saga: order_to_cash::Settings::default(),
            events: order_to_cash::outbox::Config::default(),
            service_issuers: Vec::new(),
            service_subjects: Vec::new(),
        }
    }
}

impl Config {
    /// The saga store's URL, defaulting to a file under `data_dir`.
    pub fn database_url(&self, data_dir: &Path) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", data_dir.join("process.db").display()))
    }
}

/// What the launcher resolves for the tier besides `[process]`: the
/// webhooks' settings (`[webhooks]` with the run mode's targets and the
/// sealing key), the partners' mappings and rules (`[partners.*]`,
/// `[rules]`), the folders (`[files]`) and customer master data
/// (`[master_data]`).
#[derive(Default)]
pub struct Setup {
    /// See [`webhooks::Settings`].
    pub webhooks: webhooks::Settings,
    /// See [`partners::Partners`].
    pub partners: partners::Partners,
    /// See [`FilesConfig`].
    pub files: FilesConfig,
    /// Customer master data (`[master_data]`); none: off.
    pub master_data: Option<master_data::Config>,
}

/// `[files]` in the config file: files in (the inbox) and out (exports).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// The inbox folder (see [`order_batches::inbox`]); none: no inbox.
    pub inbox_dir: Option<std::path::PathBuf>,
    /// How often it is looked at. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub inbox_poll_interval: Duration,
    /// Where exports are written (see [`exports`]); none: no exports.
    pub outbox_dir: Option<std::path::PathBuf>,
    /// What is exported there. Default both.
    pub exports: Vec<exports::Kind>,
    /// `csv` (default) or `jsonl`.
    pub export_format: exports::Format,
    /// How often. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
    /// Events younger than this wait for the next export, so that one whose
    /// transaction committed late is not passed over. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub export_settle: Duration,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            inbox_dir: None,
            inbox_poll_interval: Duration::from_secs(5),
            outbox_dir: None,
            exports: vec![exports::Kind::Invoices, exports::Kind::Orders],
            export_format: exports::Format::Csv,
            export_interval: Duration::from_secs(3600),
            export_settle: exports::SETTLE,
        }
    }
}

/// Why the process tier could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Order-to-cash: its store or its event bus.
    #[error(transparent)]
    OrderToCash(#[from] order_to_cash::StartError),
    /// Webhooks: the HTTPS client.
    #[error(transparent)]
    Webhooks(#[from] webhooks::StartError),
    /// Master data: its configuration.
    #[error("{0}")]
    MasterData(String),
}

/// The process tier over a channel to the system tier.
#[derive(Clone)]
pub struct ProcessTier {
    system: GrpcChannel,
    prices: Arc<catalog::prices::PriceList>,
    order_to_cash: order_to_cash::OrderToCash,
    webhooks: webhooks::Webhooks,
    order_batches: order_batches::OrderBatches,
    master_data: master_data::MasterData,
}

impl ProcessTier {
    /// Starts the tier's flows over `system`: opens the saga store and
    /// starts the background work, which stops when `tasks` is cancelled.
    /// Partner orders are mapped and checked by `partners`.
    pub async fn start(
        config: &Config,
        data_dir: &Path,
        system: GrpcChannel,
        setup: Setup,
        tasks: CancellationToken,
    ) -> Result<Self, StartError> {
        let Setup { webhooks, partners, files, master_data } = setup;
        let prices = catalog::prices::PriceList::with_stock_max_age(
            system.clone(),
            config.system_timeout,
            config.catalog_stock_max_age,
        );
        prices.spawn_fill(tasks.clone());
        let order_to_cash = order_to_cash::OrderToCash::start(
            &config.database_url(data_dir),
            config.saga.clone(),
            &config.events,
            system.clone(),
            config.system_timeout,
            prices.clone(),
            tasks.clone(),
        )
        .await?
        .with_partners(partners);
        let webhooks = webhooks::Webhooks::start(
            order_to_cash.database(),
            webhooks,
            order_to_cash.events_committed(),
            tasks.clone(),
        )?;
        let master_data = master_data::MasterData::start(
            &master_data.unwrap_or_else(master_data::Config::off),
            order_to_cash.store(),
            system.clone(),
            config.system_timeout,
            tasks.clone(),
        )
        .map_err(StartError::MasterData)?;
        if master_data.is_enabled() {
            order_to_cash.use_master_data(master_data.clone());
        }
        let order_batches = order_batches::OrderBatches::start(
            order_to_cash.database(),
            order_to_cash.partners(),
            order_to_cash.orders(),
            &files,
            tasks.clone(),
        );
        if let Some(dir) = &files.outbox_dir {
            let schedule = exports::Schedule {
                kinds: files.exports.clone(),
                format: files.export_format,
                dir: dir.clone(),
                interval: files.export_interval,
                settle: files.export_settle,
            };
            tokio::spawn(exports::run(order_to_cash.store(), schedule, tasks));
        }
        Ok(Self { system, prices, order_to_cash, webhooks, order_batches, master_data })
    }

    /// Order-to-cash, e.g. to subscribe to its in-process event bus.
    pub fn order_to_cash(&self) -> &order_to_cash::OrderToCash {
        &self.order_to_cash
    }

    /// The tier's gRPC routes: `catalog.v1`, `order_to_cash.v1`, `webhooks.v1`,
    /// `order_batches.v1`, `master_data.v1`, `audit.v1`, `grpc.health.v1`, reflection (`v1` and `v1alpha`).
    pub fn routes(&self) -> tonic::service::Routes {
        let (system, flows) = (self.system.clone(), self.order_to_cash.clone());
        let probe: platform::health::Probe = Arc::new(move || {
            let (system, flows) = (system.clone(), flows.clone());
            Box::pin(async move { flows.is_ready().await && platform::health::downstream_is_serving(system).await })
        });
        let routes = tonic::service::Routes::new(catalog::service(self.prices.clone()))
            .add_service(self.order_to_cash.service())
            .add_service(self.webhooks.service())
            .add_service(self.order_batches.service())
            .add_service(self.master_data.service())
            .add_service(audit_trail::service(self.order_to_cash.database()))
            .add_service(platform::health::service(probe));
        let routes = platform::reflection::add(
            routes,
            &[erp_connect_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET],
            &[
                "catalog.v1.CatalogService",
                "order_to_cash.v1.OrderToCashService",
                "webhooks.v1.WebhookService",
                "order_batches.v1.OrderBatchService",
                "master_data.v1.MasterDataService",
                "audit.v1.AuditService",
                "grpc.health.v1.Health",
            ],
        )
        .expect("the embedded descriptor sets are valid"); // checked by the tier tests
        // A server span per call, in the caller's trace (when traced).
        // The caller's deadline bounds the system API calls made for it.
        let routes = platform::deadline::grpc_server(platform::telemetry::grpc_server(routes));
        platform::metrics::instrument_grpc(routes, platform::metrics::Tier::Process)
    }
}

//! The system tier: one gRPC service per backend system, each wrapping the
//! system's own protocol behind a connector trait. No business flows live
//! here; a system API says what the system can do.
//!
//! # Layout
//! - [`erp`]: `erp.v1` over an ERP backend (the embedded reference ERP, or
//!   a Tryton server).
//! - [`payments`]: `payments.v1` over a payment provider (the `sandbox`).
//! - [`crm`]: `crm.v1` over a CRM backend (the embedded reference CRM).
//! - [`SystemTier`]: builds the tier's gRPC routes (services, health,
//!   reflection) from its [`Config`].

use std::path::Path;

use serde::Deserialize;

pub mod crm;
pub mod erp;
pub mod payments;

/// Configuration of the system tier (`[system]` in the config file). The
/// backends it wraps have sections of their own (`[erp]`, `[payments]`,
/// `[crm]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address in `serve` mode. Default `127.0.0.1:8082`.
    pub listen: std::net::SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self { listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8082)) }
    }
}

/// A started system tier: its backends are open and migrated.
#[derive(Clone)]
pub struct SystemTier {
    erp: erp::Erp,
    payments: payments::Payments,
    crm: crm::Crm,
}

/// Why the system tier could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The ERP backend.
    #[error("ERP backend: {0}")]
    Erp(#[from] erp::Error),
    /// The payment provider or its ledger.
    #[error("payments: {0}")]
    Payments(#[from] payments::Error),
    /// The CRM backend.
    #[error("CRM backend: {0}")]
    Crm(#[from] crm::Error),
}

impl SystemTier {
    /// Opens every backend (creating and seeding the embedded ERP, and
    /// creating the embedded CRM, under `data_dir` when they are used).
    pub async fn start(
        erp: &erp::Config,
        payments: &payments::Config,
        crm: &crm::Config,
        data_dir: &Path,
    ) -> Result<Self, StartError> {
        let erp = erp::Erp::open(erp, data_dir).await?;
        let payments = payments::Payments::open(payments, data_dir).await?;
        let crm = crm::Crm::open(crm, data_dir).await?;
        Ok(Self { erp, payments, crm })
    }

    /// The tier's gRPC routes: `erp.v1`, `payments.v1`, `crm.v1`,
    /// `grpc.health.v1` and reflection (`v1` and `v1alpha`).
    pub fn routes(&self) -> tonic::service::Routes {
        let (erp, pay, crm) = (self.erp.clone(), self.payments.clone(), self.crm.clone());
        let probe: platform::health::Probe = std::sync::Arc::new(move || {
            let (erp, pay, crm) = (erp.clone(), pay.clone(), crm.clone());
            Box::pin(async move { erp.is_ready().await && pay.is_ready().await && crm.is_ready().await })
        });
        let routes = self
            .crm
            .add_routes(self.payments.add_routes(self.erp.routes()))
            .add_service(platform::health::service(probe));
        let services: Vec<&str> = erp::SERVICE_NAMES
            .iter()
            .chain(payments::SERVICE_NAMES)
            .chain(crm::SERVICE_NAMES)
            .copied()
            .chain(["grpc.health.v1.Health"])
            .collect();
        let routes = platform::reflection::add(
            routes,
            &[erp_connect_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET],
            &services,
        )
        .expect("the embedded descriptor sets are valid"); // checked by the tier tests
        // A server span per call, in the caller's trace (when traced); the
        // caller's deadline bounds the ERP calls made for it.
        let routes = platform::deadline::grpc_server(platform::telemetry::grpc_server(routes));
        platform::metrics::instrument_grpc(routes, platform::metrics::Tier::System)
    }
}

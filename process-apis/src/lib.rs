//! The process tier: business flows composed from system APIs. It owns its
//! own state and reaches backend systems only through system APIs (gRPC).
//!
//! # Layout
//! - [`catalog`]: `catalog.v1`, products with price and availability.
//! - [`ProcessTier`]: the tier's gRPC routes (flows, health, reflection).
//!
//! Order-to-cash (`order_to_cash.v1`) joins here as its own module.

use std::{sync::Arc, time::Duration};

use platform::channel::GrpcChannel;
use serde::Deserialize;

pub mod catalog;

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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8081)),
            system_url: "http://127.0.0.1:8082".into(),
            system_timeout: Duration::from_secs(5),
        }
    }
}

/// The process tier over a channel to the system tier.
#[derive(Clone)]
pub struct ProcessTier {
    system: GrpcChannel,
}

impl ProcessTier {
    /// A process tier that reaches the system tier through `system`.
    pub fn new(system: GrpcChannel) -> Self {
        Self { system }
    }

    /// The tier's gRPC routes: `catalog.v1`, `grpc.health.v1`, reflection.
    pub fn routes(&self) -> tonic::service::Routes {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(erp_connect_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("catalog.v1.CatalogService")
            .with_service_name("grpc.health.v1.Health")
            .build_v1()
            .expect("the embedded descriptor sets are valid"); // checked by the tier tests
        let system = self.system.clone();
        let probe: platform::health::Probe =
            Arc::new(move || Box::pin(platform::health::downstream_is_serving(system.clone())));
        tonic::service::Routes::new(catalog::service(self.system.clone()))
            .add_service(platform::health::service(probe))
            .add_service(reflection)
    }
}

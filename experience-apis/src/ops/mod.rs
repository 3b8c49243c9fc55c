//! `/ops/v1`: operators' view of and actions on orders of any tenant and
//! on customer master data (scope `ops`, checked by the gateway), and the
//! ops console at `/ops`.
//! Calls to the process tier carry an empty tenant, which it reads as "any
//! tenant".
//!
//! # Layout
//! - [`console`]: the ops console, one page that reads `/ops/v1/...`.
//! - [`orders`]: finding orders of every tenant, one with its saga's record.
//! - [`payments`]: cash application, recording a payment an on-account
//!   customer made against the order's invoice.
//! - [`shipments`]: marking a shipment done, standing in for a warehouse.
//! - [`webhooks`]: every tenant's webhook endpoints and failed deliveries.
//! - [`quarantine`]: what failed in order files, to replay or discard.
//! - [`customers`]: a customer's golden record across the CRM and the ERP,
//!   and the data-subject requests on it (export, erasure).
//! - [`master_data`]: what the master data synchronisation held for an
//!   operator (duplicates, conflicts), its accuracy, and a resync.
//! - [`audit`]: the process tier's audit trail (the gateway answers its
//!   own, `/ops/v1/audit`, itself).

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::Upstreams;

pub mod audit;
pub mod console;
pub mod customers;
pub mod master_data;
pub mod orders;
pub mod payments;
pub mod quarantine;
pub mod shipments;
pub mod webhooks;

/// The tenant of operators' calls: any.
pub const ANY_TENANT: &str = "";

/// Routes under `/ops/v1`, each with its operation.
pub fn router() -> OpenApiRouter<Upstreams> {
    OpenApiRouter::default()
        .routes(routes!(orders::list))
        .routes(routes!(orders::get))
        .routes(routes!(payments::record))
        .routes(routes!(shipments::complete))
        .routes(routes!(webhooks::list))
        .routes(routes!(webhooks::all_deliveries))
        .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::replay))
        .routes(routes!(quarantine::list))
        .routes(routes!(quarantine::get))
        .routes(routes!(quarantine::replay))
        .routes(routes!(quarantine::discard))
        .routes(routes!(customers::get))
        .routes(routes!(customers::export))
        .routes(routes!(customers::erase))
        .routes(routes!(master_data::list))
        .routes(routes!(master_data::get))
        .routes(routes!(master_data::resolve))
        .routes(routes!(master_data::accuracy))
        .routes(routes!(master_data::resync))
        .routes(routes!(audit::list))
}

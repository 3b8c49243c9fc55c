//! `/ops/v1`: operators' view of and actions on orders of any tenant
//! (scope `ops`, checked by the gateway), and the ops console at `/ops`.
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

use axum::{
    Router,
    routing::{get, post},
};

use crate::Upstreams;

pub mod console;
pub mod orders;
pub mod payments;
pub mod quarantine;
pub mod shipments;
pub mod webhooks;

/// The tenant of operators' calls: any.
pub const ANY_TENANT: &str = "";

/// Routes under `/ops/v1`.
pub fn router() -> Router<Upstreams> {
    Router::new()
        .route("/orders", get(orders::list))
        .route("/orders/{id}", get(orders::get))
        .route("/payments", post(payments::record))
        .route("/shipments/{id}/complete", post(shipments::complete))
        .route("/webhooks", get(webhooks::list))
        .route("/webhooks/deliveries", get(webhooks::all_deliveries))
        .route("/webhooks/{id}", get(webhooks::get).patch(webhooks::update).delete(webhooks::delete))
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/webhooks/{id}/replay", post(webhooks::replay))
        .route("/quarantine", get(quarantine::list))
        .route("/quarantine/{id}", get(quarantine::get))
        .route("/quarantine/{id}/replay", post(quarantine::replay))
        .route("/quarantine/{id}/discard", post(quarantine::discard))
}

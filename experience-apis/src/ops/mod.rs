//! `/ops/v1`: operators' actions on orders of any tenant (scope `ops`,
//! checked by the gateway). Calls to the process tier carry an empty
//! tenant, which it reads as "any tenant".
//!
//! # Layout
//! - [`payments`]: cash application, recording a payment an on-account
//!   customer made against the order's invoice.
//! - [`shipments`]: marking a shipment done, standing in for a warehouse.

use axum::{Router, routing::post};

use crate::Upstreams;

pub mod payments;
pub mod shipments;

/// The tenant of operators' calls: any.
pub const ANY_TENANT: &str = "";

/// Routes under `/ops/v1`.
pub fn router() -> Router<Upstreams> {
    Router::new()
        .route("/payments", post(payments::record))
        .route("/shipments/{id}/complete", post(shipments::complete))
}

//! `/web/v1`: the web shop's API, for signed-in end users.
//!
//! # Layout
//! - [`products`]: the catalogue with price and availability.
//! - [`orders`]: the signed-in customer's orders.

use axum::{Router, routing::get};

use crate::Upstreams;

pub mod orders;
pub mod products;

/// Routes under `/web/v1`.
pub fn router() -> Router<Upstreams> {
    Router::new()
        .route("/products", get(products::list))
        .route("/orders", get(orders::list).post(orders::place))
        .route("/orders/{id}", get(orders::get))
}
